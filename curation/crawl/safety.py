"""Which addresses a crawler may connect to (server-side request forgery protection).

A URL from the web may name any host, and a host name may resolve to any address, so the check runs
on the **resolved** addresses, for every request (each redirect hop is a request of its own), and
the connection then goes to the address that was checked — never to a second resolution of the name,
which a DNS-rebinding server could answer differently (see :mod:`curation.crawl.fetch`).

Refused unless ``allow_private``: loopback, private (RFC 1918, ULA ``fc00::/7``), link-local,
multicast, reserved, unspecified, shared (CGNAT ``100.64/10``) and any other non-global address, and
the cloud metadata endpoints. IPv4 addresses embedded in IPv6 ones (IPv4-mapped ``::ffff:a.b.c.d``,
6to4 ``2002::/16``, NAT64 ``64:ff9b::/96``) are checked as the IPv4 address they reach.
``allow_networks`` exempts chosen networks (an intranet crawl); metadata endpoints are never exempt.
When a name resolves to several addresses, the refused ones are dropped and the crawl connects to
an allowed one; if none is allowed the request is refused.
"""

from __future__ import annotations

import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable, Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]

# Instance metadata services: reachable from inside a cloud VM, they hand out credentials.
METADATA_ADDRESSES = {
    ipaddress.ip_address("169.254.169.254"): "AWS / GCP / Azure / OpenStack / Oracle instance metadata",
    ipaddress.ip_address("169.254.170.2"): "AWS ECS task metadata",
    ipaddress.ip_address("fd00:ec2::254"): "AWS instance metadata over IPv6",
    ipaddress.ip_address("100.100.100.200"): "Alibaba Cloud metadata",
    ipaddress.ip_address("168.63.129.16"): "Azure WireServer",
    ipaddress.ip_address("192.0.0.192"): "Oracle Cloud metadata",
}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SHARED = ipaddress.ip_network("100.64.0.0/10")


class AddressRefused(Exception):
    """A request the policy will not send; ``reason`` is the crawl log's code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if ip.version != 6:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _kind(ip: IPAddress) -> str | None:
    if ip in METADATA_ADDRESSES:
        return "cloud metadata"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_reserved:
        return "reserved"
    if ip.version == 4 and ip in _SHARED:
        return "shared (CGNAT)"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "not global"
    return None


def address_problem(address: str | IPAddress, allow_networks: Iterable[ipaddress._BaseNetwork] = ()) -> str | None:
    """Why a crawler must not connect to ``address`` (None: it may)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
    # An IPv6 address that embeds an IPv4 one reaches that IPv4 address: judge it alone.
    inner = _embedded_ipv4(ip)
    candidates = [ip] if inner is None else [ip, inner]
    for candidate in candidates:
        if candidate in METADATA_ADDRESSES:
            return f"cloud metadata: {METADATA_ADDRESSES[candidate]}"
    allow_networks = list(allow_networks)
    if any(c in net for c in candidates for net in allow_networks if c.version == net.version):
        return None
    kind = _kind(candidates[-1])
    if kind and inner is not None:
        return f"{kind} ({inner} embedded)"
    return kind


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[str] = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and sockaddr[0] not in out:
            out.append(sockaddr[0])
    return out


# getaddrinfo has no timeout of its own: it runs here so a request can give up on it.
_DNS_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="crawl-dns")


class AddressPolicy:
    def __init__(self, allow_private: bool = False, allow_networks: Iterable[str] = (),
                 resolver: Resolver | None = None):
        self.allow_private = allow_private
        self.allow_networks = [ipaddress.ip_network(n, strict=False) for n in allow_networks]
        self.resolver = resolver or system_resolver

    def resolve(self, host: str, port: int, timeout: float) -> list[str]:
        """The addresses a request to ``host`` may connect to, in resolver order. Raises
        :class:`AddressRefused` (reason ``address_refused``, ``dns_error`` or ``timeout``)."""
        literal = host[1:-1] if host.startswith("[") else host
        try:
            addresses = [str(ipaddress.ip_address(literal))]
        except ValueError:
            future = _DNS_POOL.submit(self.resolver, literal, port)
            try:
                addresses = list(future.result(timeout=max(timeout, 0.001)))
            except FutureTimeout:
                raise AddressRefused("timeout", f"DNS lookup of {literal} took longer than {timeout:.1f}s") from None
            except (OSError, UnicodeError) as e:
                raise AddressRefused("dns_error", f"cannot resolve {literal}: {e}") from None
        if not addresses:
            raise AddressRefused("dns_error", f"{literal} has no address")
        if self.allow_private:
            return addresses
        allowed, problems = [], []
        for address in addresses:
            problem = address_problem(address, self.allow_networks)
            if problem is None:
                allowed.append(address)
            else:
                problems.append(f"{address} is {problem}")
        if not allowed:
            shown = literal if [literal] == addresses else f"{literal} resolves to " + ", ".join(addresses)
            raise AddressRefused("address_refused", f"{shown}: " + "; ".join(problems)
                                 + " (set allow_private: true to crawl such addresses)")
        return allowed
