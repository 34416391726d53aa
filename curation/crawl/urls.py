"""URL normalisation and crawl scope.

Normal form (what de-duplication compares and what the WARC records as ``WARC-Target-URI``):

- only ``http`` and ``https``; scheme and host lower-cased; IDN hosts in their ASCII (punycode)
  form; a trailing dot on the host dropped; user name and password dropped (a crawler never sends
  credentials found in links); default ports (80, 443) dropped;
- the path has its dot segments resolved (RFC 3986 §5.2.4) and is ``/`` when empty;
- percent-escapes are upper-cased, escapes of unreserved characters decoded (``%7E`` → ``~``) and
  characters that may not appear raw (spaces, non-ASCII) percent-encoded as UTF-8;
- the fragment is dropped (it never reaches the server);
- the query is kept **in its original order**: sorting parameters would merge URLs that some servers
  treat differently (order-sensitive APIs, repeated keys), and the gain for de-duplication is small.
  An empty query (``?`` alone) is dropped. Tracking parameters (``utm_*``) are kept: removing them is
  a content decision, not a normalisation.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit, urlunsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Characters kept raw in a path / query (RFC 3986 pchar plus "/" and "?"), besides unreserved ones.
_PATH_SAFE = frozenset(b"!$&'()*+,;=:@/")
_QUERY_SAFE = _PATH_SAFE | frozenset(b"?")
_HEX = frozenset(b"0123456789abcdefABCDEF")


class BadURL(ValueError):
    """A URL that cannot be crawled; ``reason`` is a stable code for the crawl log."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def _fix_escapes(part: str, safe: frozenset[int]) -> str:
    raw = part.encode("utf-8", "surrogatepass")
    out = bytearray()
    i = 0
    while i < len(raw):
        b = raw[i]
        if b == 0x25 and i + 2 < len(raw) and raw[i + 1] in _HEX and raw[i + 2] in _HEX:
            value = int(raw[i + 1:i + 3], 16)
            if value in _UNRESERVED:
                out.append(value)
            else:
                out += b"%" + raw[i + 1:i + 3].upper()
            i += 3
            continue
        if b in _UNRESERVED or b in safe:
            out.append(b)
        else:
            out += b"%%%02X" % b
        i += 1
    return out.decode("ascii")


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, on a path that starts with '/'."""
    out: list[str] = []
    segments = path.split("/")[1:]
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == ".":
            if last:
                out.append("")
        elif seg == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(seg)
    return "/" + "/".join(out)


def normalize_host(host: str) -> str:
    host = host.strip().rstrip(".").lower()
    if not host:
        raise BadURL("bad_url", "empty host")
    if host.startswith("["):  # IPv6 literal
        inner = host[1:-1] if host.endswith("]") else host[1:]
        try:
            return f"[{ipaddress.IPv6Address(inner.split('%', 1)[0]).compressed}]"
        except ValueError as e:
            raise BadURL("bad_url", f"bad IPv6 host {host!r}") from e
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError as e:
        raise BadURL("bad_url", f"host {host!r} is not a valid internationalised name") from e
    if not re.fullmatch(r"[a-z0-9_.\-]+", host) or ".." in host:
        raise BadURL("bad_url", f"bad host {host!r}")
    return host


def normalize_url(url: str, base: str | None = None) -> str:
    """The normal form of ``url`` (resolved against ``base`` when given). Raises :class:`BadURL`."""
    url = url.strip()
    if base is not None:
        url = urljoin(base, url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise BadURL("bad_url", f"unparseable URL {url!r}: {e}") from e
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise BadURL("unsupported_scheme", f"scheme {scheme or '(none)'!r} is not crawled: {url!r}")
    if not parts.hostname:
        raise BadURL("bad_url", f"no host in {url!r}")
    raw_host = parts.netloc.rsplit("@", 1)[-1]
    raw_host = raw_host[: raw_host.rindex("]") + 1] if raw_host.startswith("[") else raw_host.split(":", 1)[0]
    host = normalize_host(raw_host)
    netloc = host if port is None or port == DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = _remove_dot_segments("/" + parts.path.lstrip("/") if parts.path else "/")
    path = _fix_escapes(path, _PATH_SAFE)
    query = _fix_escapes(parts.query, _QUERY_SAFE) if parts.query else ""
    return urlunsplit((scheme, netloc, path, query, ""))


def host_of(url: str) -> str:
    """The politeness key of a normalised URL: its host name (ports of one host share it)."""
    netloc = urlsplit(url).netloc
    return netloc[: netloc.rindex("]") + 1] if netloc.startswith("[") else netloc.split(":", 1)[0]


def origin_of(url: str) -> str:
    """``scheme://host[:port]``: robots.txt applies per origin (RFC 9309)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def domain_matches(host: str, domain: str) -> bool:
    return host == domain or host.endswith("." + domain)


@dataclass
class Scope:
    """Which normalised URLs a crawl may follow. ``reason(url)`` is None when in scope."""

    seed_hosts: set[str]
    same_host: bool = True
    allowed_domains: list[str] = field(default_factory=list)
    include: list[re.Pattern] = field(default_factory=list)
    exclude: list[re.Pattern] = field(default_factory=list)

    def reason(self, url: str) -> str | None:
        host = host_of(url)
        if self.same_host or self.allowed_domains:
            ok = (self.same_host and host in self.seed_hosts) or any(
                domain_matches(host, d) for d in self.allowed_domains)
            if not ok:
                return "out_of_scope"
        if self.include and not any(p.search(url) for p in self.include):
            return "not_included"
        if any(p.search(url) for p in self.exclude):
            return "excluded"
        return None
