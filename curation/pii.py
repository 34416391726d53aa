"""`pii`: replace e-mail addresses, public IP addresses, phone numbers and URL credentials with typed
placeholders. Rewrites ``text``; never drops a row.

Adds per-type counts of what was replaced, ``pii.email``, ``pii.ip``, ``pii.phone`` and
``pii.url_credentials`` (int32; null where that type is switched off, so "not looked for" never
reads as "none found").

What counts as each type (the passes run in this order; the default placeholders hold no digit,
``@``, ``.`` or ``:``, so a later pass never re-matches an earlier placeholder):

1. ``url_credentials`` (off by default): ``scheme://user:password@host`` → ``scheme://<CREDENTIALS>@host``.
   A user name alone (``ssh://git@github.com``) is not a credential and stays.
2. ``email``: ``local@domain.tld`` with ``+``/``.``/``%`` in the local part and any depth of
   subdomains; the TLD is letters only. Not redacted: a URL's user name (``ftp://anna@host``: that
   is ``url_credentials``' business), and ``name@2x.png``-style asset names (the "TLD" is a file
   extension). A fediverse handle ``@anna@social.example`` holds an address-shaped part and is
   redacted like one. Obfuscated forms ("name at example dot com") are not looked for.
3. ``ip``: IPv6 first, then IPv4; every candidate is parsed by :mod:`ipaddress`, so only real
   addresses count, and only **public** ones are redacted. IPv4: ``is_global`` and not multicast
   (private, loopback, link-local, shared 100.64/10, benchmarking, documentation TEST-NETs and
   reserved ranges stay). IPv6: inside the global-unicast block 2000::/3 and ``is_global``, so
   ``::1``, ``fe80::``, ``fc00::/7`` and the documentation prefix ``2001:db8::/32`` stay (an
   address from a documentation range is never a person's); an IPv4-mapped address (``::ffff:a.b.c.d``)
   follows its IPv4 rule. Requiring 2000::/3 also keeps hex-and-colon words such as ``dead::beef``
   or ``a::b`` (valid IPv6 syntax, but outside any allocated unicast block) out. Version numbers: a
   dotted quad is valid IPv4 syntax (``1.2.3.4`` is even a public address), so a quad counts as an
   address only if all four parts are 0-255 without leading zeros (``ipaddress``' rule), it is not
   part of a longer dotted run (``1.2.3.4.5``) and it does not follow ``v``/``version``/``ver.``/
   ``release``/``build``/``rev``. A bare ``1.2.3.4`` in prose is redacted: nothing tells it apart.
4. ``phone``, three shapes (each digit group separated by a space, dot or dash):

   * international: ``+`` country code and groups, 8-15 digits in all (E.164 allows 15):
     ``+44 20 7946 0958``, ``+1 (555) 123-4567``, ``+49 (0)30 12345678``, ``+12025550123``;
   * North American: ``(555) 123-4567``, ``555-123-4567``, ``555.123.4567``, ``555 123 4567``
     (one separator throughout), optionally ``1-`` before; the area code starts with 2-9;
   * national with a trunk 0 (UK, France, Germany, Italy...): ``020 7946 0958``,
     ``01 23 45 67 89``, ``(030) 1234 5678``; 9-12 digits in at least two groups.

   Not phones: dates (a match holding ``2023-01-15``, ``12/05/2024`` or ``15.01.2023`` is
   rejected), version numbers and IP addresses (no 3-3-4 or trunk-0 shape; IPs are replaced first
   anyway), ISBNs (``978-3-16-148410-0``: no phone shape), long digit IDs and card numbers (a run
   that goes on with more digits, or is glued to letters, is not matched at all), prices
   (``$555.123.4567`` after a currency sign is left), seven-digit local numbers (``555-1234``: too
   ambiguous). The rules favour precision: a phone number directly followed by another digit group
   ("call 020 7946 0958 24 hours") may be missed or take the extra group with it.

Where the defaults come from: e-mail and public-IP replacement as in datatrove's ``PIIFormatter``,
used by FineWeb, which leaves private IPs alone (``only_remove_public_ips``) but substitutes
realistic fake values (``email@example.com``, ``22.214.171.124``). This op writes typed placeholders
(``<EMAIL>``, ``<IP_ADDRESS>``, ``<PHONE>``, ``<CREDENTIALS>``, in the manner of StarCoder's
``<EMAIL>``/``<KEY>``/``<PASSWORD>`` tokens) so that the text says something was removed rather
than showing a fake address; the placeholders are configurable (``placeholders: {email: ...}``).
Phone numbers are on by default here (datatrove does not touch them); URL credentials are off.

Implementation: each pattern is compiled once at import. Per batch, Arrow regex kernels pick the
rows that can hold each type at all (an ``@``, a digit-dot-digit run, ...), and only those rows go
through the Python patterns and their ``ipaddress`` checks.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curation.operator import TEXT, Decision, OpConfig, RowOp, register_op, set_column

EMAIL = "pii.email"
IP = "pii.ip"
PHONE = "pii.phone"
URL_CREDENTIALS = "pii.url_credentials"


class Placeholders(OpConfig):
    email: str = "<EMAIL>"
    ip: str = "<IP_ADDRESS>"
    phone: str = "<PHONE>"
    url_credentials: str = "<CREDENTIALS>"


class PiiConfig(OpConfig):
    email: bool = Field(True, description="replace e-mail addresses")
    ip: bool = Field(True, description="replace public IPv4 and IPv6 addresses (private ones stay)")
    phone: bool = Field(True, description="replace phone numbers")
    url_credentials: bool = Field(False, description="replace user:password in scheme://user:password@host")
    placeholders: Placeholders = Field(default_factory=Placeholders, description="replacement text per type")


# ------------------------------------------------------------------------------------------ patterns

_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{0,15}://)[^\s/?#@:]+:[^\s/?#@]+@(?=[\w\[])")

_EMAIL = re.compile(
    r"(?<![\w.%+-])[\w%+-]+(?:\.[\w%+-]+)*"  # local part: no leading, trailing or double dot
    r"@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+"  # domain labels (Unicode letters allowed)
    r"([^\W\d_]{2,63})"  # TLD: letters only
    r"(?![\w-]|\.[^\W_])")
_FILE_EXTENSIONS = frozenset("png jpg jpeg gif svg webp bmp ico tif tiff avif js css".split())
_URL_USERINFO = re.compile(r"(?i)[a-z][a-z0-9+.-]*://[^\s/?#]*$")

_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
_VERSION_BEFORE = re.compile(r"(?i)(?:\bv|\bver(?:sion)?|\brelease|\bbuild|\brev(?:ision)?)\.?[\s:]*$")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?(?![\w:]|\.\d)")
_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")

_SEP = r"[ .-]"
_PHONE = re.compile(
    # not inside a word or a number, not after a currency sign, a plus, a slash or a decimal point
    r"(?<![\w+$€£¥./-])(?<!\d[ .,-])(?:"
    # after the country code, groups are split by a separator or a bracketed area code, so a long
    # digit run can be cut only a few ways (no catastrophic backtracking)
    r"(?P<intl>\+[1-9]\d{0,2}\)?(?:[ .-]?\(\d{1,4}\)\d{0,10}|[ .-]?\d{1,12})"
    r"(?:[ .-]?\(\d{1,4}\)\d{0,10}|[ .-]\d{1,10}){0,5})"
    r"|(?P<nanp>(?:1" + _SEP + r")?(?:\([2-9]\d{2}\) ?\d{3}" + _SEP + r"\d{4}"
    r"|[2-9]\d{2}(?P<s>" + _SEP + r")\d{3}(?P=s)\d{4}))"
    r"|(?P<natl>(?:\(0\d{1,4}\)|0\d{1,4})(?:" + _SEP + r"\d{2,8}){1,4})"
    r")(?!\w|[.-]\d)")
_DATE = re.compile(r"(?:19|20)\d\d[-./](?:0?[1-9]|1[0-2])[-./]\d{1,2}|\b\d{1,2}[-./]\d{1,2}[-./](?:19|20)\d\d")
_DIGIT_COUNT = {"intl": (8, 15), "nanp": (10, 11), "natl": (9, 12)}

# RE2 (Arrow) prefilters: a row that fails one cannot hold that type. Kept deliberately loose.
_PREFILTER = {
    "url_credentials": r"://[^\s/@]+:[^\s/@]*@",
    "email": r"@",
    "ip": r"\d\.\d{1,3}\.\d{1,3}\.\d|[0-9A-Fa-f]?:[0-9A-Fa-f]{0,4}:",
    "phone": r"\+\d|\d[ .)-]{1,2}\(?\d{2}",
}


def _is_public_ipv4(addr: ipaddress.IPv4Address) -> bool:
    return addr.is_global and not addr.is_multicast


def _email(m: re.Match) -> bool:
    if m.group(1).lower() in _FILE_EXTENSIONS:
        return False
    before = m.string[max(0, m.start() - 256):m.start()]
    return not _URL_USERINFO.search(before)  # inside scheme://…@: a URL's user name, not an address


def _ipv4(m: re.Match) -> bool:
    try:
        addr = ipaddress.IPv4Address(m.group(0))
    except ValueError:
        return False  # an octet above 255 or with a leading zero: not an address
    if _VERSION_BEFORE.search(m.string, max(0, m.start() - 24), m.start()):
        return False
    return _is_public_ipv4(addr)


def _ipv6(m: re.Match) -> bool:
    try:
        addr = ipaddress.IPv6Address(m.group(0))
    except ValueError:
        return False  # times (12:30:45), MAC addresses, C++ scopes...
    if addr.ipv4_mapped is not None:
        return _is_public_ipv4(addr.ipv4_mapped)
    return addr in _GLOBAL_UNICAST and addr.is_global


def _phone(m: re.Match) -> bool:
    kind = next(k for k in ("intl", "nanp", "natl") if m.group(k) is not None)
    low, high = _DIGIT_COUNT[kind]
    text = m.group(0)
    return low <= sum(c.isdigit() for c in text) <= high and not _DATE.search(text)


def _substitute(pattern: re.Pattern, text: str, placeholder: str | Callable[[re.Match], str],
                accept: Callable[[re.Match], bool] | None) -> tuple[str, int]:
    count = 0

    def replace(m: re.Match) -> str:
        nonlocal count
        if accept is not None and not accept(m):
            return m.group(0)
        count += 1
        return placeholder(m) if callable(placeholder) else placeholder

    return pattern.sub(replace, text), count


def redact(text: str, cfg: PiiConfig, types: tuple[str, ...] | None = None) -> tuple[str, dict[str, int]]:
    """Redact one text; ``types`` limits the passes (the op passes those its prefilters let through).
    Returns the new text and the number of replacements per enabled type."""
    ph = cfg.placeholders
    counts: dict[str, int] = {}
    for kind in types if types is not None else _enabled(cfg):
        if kind == "url_credentials":
            text, counts[kind] = _substitute(_URL_CREDENTIALS, text,
                                             lambda m: m.group(1) + ph.url_credentials + "@", None)
        elif kind == "email":
            text, counts[kind] = _substitute(_EMAIL, text, ph.email, _email)
        elif kind == "ip":
            text, v6 = _substitute(_IPV6, text, ph.ip, _ipv6)
            text, v4 = _substitute(_IPV4, text, ph.ip, _ipv4)
            counts[kind] = v6 + v4
        elif kind == "phone":
            text, counts[kind] = _substitute(_PHONE, text, ph.phone, _phone)
    return text, counts


_ORDER = ("url_credentials", "email", "ip", "phone")
_COLUMNS = {"email": EMAIL, "ip": IP, "phone": PHONE, "url_credentials": URL_CREDENTIALS}


def _enabled(cfg: PiiConfig) -> tuple[str, ...]:
    return tuple(kind for kind in _ORDER if getattr(cfg, kind))


@register_op
class Pii(RowOp):
    """Replace e-mail addresses, public IPs, phone numbers (and optionally URL credentials) with
    typed placeholders; count each type per document. Never drops a document."""

    name = "pii"
    memory = ("per document ~6.5x its text (regex matches, the rewritten text); per block ~1.5x")
    Config = PiiConfig
    defaults_from = ("e-mail and public-IP replacement of datatrove's PIIFormatter (FineWeb), with typed "
                     "placeholders in the manner of StarCoder's PII tokens; phones on, URL credentials off")

    def process(self, batch: pa.Table) -> Decision:
        cfg: PiiConfig = self.config  # type: ignore[assignment]
        column = batch.column(TEXT).combine_chunks()
        n = len(column)
        enabled = _enabled(cfg)
        counts = {kind: [0] * n for kind in enabled}
        # Which rows each type's prefilter lets through; rows with none of them are never touched.
        candidates = {kind: pc.fill_null(pc.match_substring_regex(column, _PREFILTER[kind]), False)
                      for kind in enabled}
        any_candidate = pa.array([False] * n, pa.bool_())
        for mask in candidates.values():
            any_candidate = pc.or_(any_candidate, mask)
        rows = pc.indices_nonzero(any_candidate).to_pylist() if n else []
        table = batch
        if rows:
            texts = column.take(pa.array(rows, pa.int64())).to_pylist()
            flags = {kind: candidates[kind].take(pa.array(rows, pa.int64())).to_pylist() for kind in enabled}
            new_texts = []
            for j, (i, text) in enumerate(zip(rows, texts)):
                types = tuple(kind for kind in enabled if flags[kind][j])
                text, found = redact(text, cfg, types)
                for kind, c in found.items():
                    counts[kind][i] = c
                new_texts.append(text)
            replaced = pc.replace_with_mask(column, any_candidate, pa.array(new_texts, column.type))
            table = set_column(table, TEXT, replaced)
        for kind in _ORDER:
            values = (pa.array(counts[kind], pa.int32()) if kind in counts
                      else pa.nulls(n, pa.int32()))
            table = set_column(table, _COLUMNS[kind], values)
        return Decision(table)
