"""What runs inside the extraction sandbox: decode an HTTP body, refuse binary, extract main text
(engines ``auto``, ``trafilatura``, ``resiliparse``; see :data:`TRAFILATURA_MIN_SHARE` for ``auto``).

Kept free of pyarrow and pydantic so the sandbox child stays small (~50 MB of address space at rest,
against ~430 MB with pyarrow loaded), which is what makes a tight ``RLIMIT_AS`` workable.

**Charset chain.** The chain, first match wins (``source`` names the step that decided):

1. ``bom``: a UTF-8/16/32 byte-order mark. Unambiguous, and browsers put it above everything else
   (WHATWG "decode": the BOM overrides the transport layer), so a UTF-16 page served as
   ``charset=iso-8859-1`` still decodes.
2. ``header``: the charset of the HTTP ``Content-Type``.
3. ``meta``: ``<meta charset>``, ``<meta http-equiv="Content-Type" content="…; charset=…">`` or an XML
   declaration in the first :data:`META_SCAN_BYTES` bytes. A UTF-16/32 label read from ASCII-readable
   markup is a lie and means UTF-8 (WHATWG prescan rule).
4. ``detected``: content sniffing with resiliparse's ``detect_encoding`` (uchardet; a declared
   dependency, unlike charset-normalizer, which is only present transitively).
5. ``fallback``: UTF-8 with U+FFFD for undecodable bytes.

A declared label (2, 3) is checked, not trusted, because servers lie, mostly by defaulting to
ISO-8859-1 or UTF-8:

* if decoding with it produces more than :data:`MAX_ERROR_SHARE` undecodable sequences, the next
  step is tried (a UTF-8 header on a Windows-1251 page);
* if the label names a legacy ASCII-compatible charset but the body is valid UTF-8 containing
  non-ASCII text, the body is UTF-8 (``source = "utf8_valid"``): legacy-encoded text practically
  never validates as UTF-8 by chance, while mislabelled UTF-8 is common. Bodies with no usable label
  that validate as UTF-8 (pure ASCII included) take the same shortcut and skip the detector.

Labels are mapped to decoders as browsers do (WHATWG "names and labels", via resiliparse's
``map_encoding_to_html5``: ISO-8859-1 and US-ASCII mean Windows-1252, GB2312 means GBK, …), then to
the superset Python codec browsers actually implement (GBK → GB18030, Shift_JIS → CP932,
EUC-KR → CP949, Big5 → Big5-HKSCS). The charset reported is Python's canonical codec name.

**Binary content.** Control bytes other than whitespace (``\\t \\n \\v \\f \\r``) and ESC (used by
ISO-2022) are all but absent from text in any ASCII-compatible charset, and about 10% of compressed
or random bytes: more than :data:`MAX_CONTROL_SHARE` of them (in the decoded text for UTF-16/32)
means binary. So does more than :data:`MAX_UNDECODABLE_SHARE` of U+FFFD after the chain gave up.
"""

from __future__ import annotations

import codecs
import re
from typing import Callable

from resiliparse.parse.encoding import detect_encoding, map_encoding_to_html5

META_SCAN_BYTES = 8192  # WHATWG prescans 1024; real pages often put a long <script> or comment first
MAX_ERROR_SHARE = 0.001  # undecodable sequences per character tolerated under a declared label
DETECT_BYTES = 65536  # what uchardet sees (resiliparse takes half from the start, half from the end)
MAX_CONTROL_SHARE = 0.02  # control bytes per byte
MAX_UNDECODABLE_SHARE = 0.05  # U+FFFD per character after the charset chain gave up
_CONTROL_BYTES = bytes([*range(0x00, 0x09), *range(0x0E, 0x1B), *range(0x1C, 0x20)])
MAX_TITLE_CHARS = 1000

_BOMS = (  # UTF-32 first: its little-endian BOM starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# What browsers decode under these WHATWG names is the Windows superset of the nominal charset.
_SUPERSETS = {"gbk": "gb18030", "gb2312": "gb18030", "shift_jis": "cp932", "euc_kr": "cp949", "big5": "big5hkscs"}
# Bounded quantifiers only: this runs on hostile bytes.
_META = re.compile(
    rb"""<meta\b[^>]{0,512}?charset\s{0,8}=\s{0,8}["']?\s{0,8}([A-Za-z0-9_.:+\-]{1,40})"""
    rb"""|<\?xml\b[^>]{0,200}?encoding\s{0,8}=\s{0,8}["']([A-Za-z0-9_.:+\-]{1,40})""",
    re.IGNORECASE)


def codec_for(label: str | None) -> str | None:
    """A charset label from a header or markup → the Python codec browsers would use, or None."""
    if not label:
        return None
    label = label.strip().strip("\"'").strip()
    mapped = map_encoding_to_html5(label, fallback_utf8=False) if label else None
    if mapped is None:  # not a WHATWG label; UTF-32 is still worth honouring
        mapped = label.lower() if label.lower().replace("_", "-") in ("utf-32", "utf-32le", "utf-32be") else None
    if mapped is None:
        return None
    mapped = _SUPERSETS.get(mapped, mapped)
    try:
        return codecs.lookup(mapped).name
    except LookupError:
        return None


def meta_charset(data: bytes) -> str | None:
    """The charset label declared in the markup near the start of the document, if any."""
    match = _META.search(data, 0, META_SCAN_BYTES)
    if match is None:
        return None
    return (match.group(1) or match.group(2)).decode("ascii")


def _is_wide(codec: str) -> bool:
    return codec.startswith(("utf-16", "utf-32"))


def _decode_checked(data: bytes, codec: str) -> str | None:
    """Decode with replacement; None when the label is clearly wrong for these bytes."""
    text = data.decode(codec, "replace")
    errors = text.count("\ufffd")
    if errors and codec == "utf-8":
        errors -= data.count(b"\xef\xbf\xbd")  # a real U+FFFD in the page is not an error
    if errors > max(2, MAX_ERROR_SHARE * len(text)):
        return None
    return text


def decode_body(data: bytes, header_charset: str | None = None) -> tuple[str, str, str]:
    """Decode an HTTP body. Returns ``(text, charset, source)``; see the module docstring."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return data[len(bom):].decode(codec, "replace"), codecs.lookup(codec).name, "bom"
    utf8: str | None | bool = False  # False: not tried yet; None: invalid UTF-8

    def as_utf8() -> str | None:
        nonlocal utf8
        if utf8 is False:
            try:
                utf8 = data.decode("utf-8")
            except UnicodeDecodeError:
                utf8 = None
        return utf8

    for source, label in (("header", header_charset), ("meta", None)):
        if source == "meta":
            label = meta_charset(data)
        codec = codec_for(label)
        if codec is None:
            continue
        if source == "meta" and _is_wide(codec):
            codec = "utf-8"  # the label was readable as ASCII, so the page is not UTF-16/32
        if codec == "utf-8":
            text = as_utf8()
            if text is not None:
                return text, "utf-8", source
        elif not _is_wide(codec) and not data.isascii() and as_utf8() is not None:
            return utf8, "utf-8", "utf8_valid"  # type: ignore[return-value]
        text = _decode_checked(data, codec)
        if text is not None:
            return text, codec, source
    # Valid UTF-8 (ASCII included) needs no detector; NUL bytes may mean UTF-16 without a BOM.
    if b"\x00" not in data[:4096] and as_utf8() is not None:
        return utf8, "utf-8", "utf8_valid"  # type: ignore[return-value]
    detected = codec_for(detect_encoding(data, max_len=DETECT_BYTES, html5_compatible=True))
    if detected is not None and detected != "utf-8":
        text = _decode_checked(data, detected)
        if text is not None:
            return text, detected, "detected"
    return data.decode("utf-8", "replace"), "utf-8", "fallback"


def binary_problem(body: bytes, text: str, charset: str) -> str | None:
    """Why this body is not text, or None."""
    if charset.startswith(("utf-16", "utf-32")):  # NULs are normal there: look at the decoded text
        body = text[:65536].encode("utf-8", "replace")
    if body:
        controls = len(body) - len(body.translate(None, _CONTROL_BYTES))
        if controls > MAX_CONTROL_SHARE * len(body):
            return f"binary content: {controls / len(body):.0%} control bytes"
    if text:
        undecodable = text.count("\ufffd")
        if undecodable > MAX_UNDECODABLE_SHARE * len(text):
            return f"binary content: {undecodable / len(text):.0%} undecodable characters"
    return None


def _clean(value: str | None, limit: int = MAX_TITLE_CHARS) -> str | None:
    value = " ".join(value.split())[:limit] if value else None
    return value or None


# The `auto` engine: resiliparse answers every page (DCLM's extractor, ~8× trafilatura's speed); when
# its main text is under ``route_below`` of the page's visible text, the page is boilerplate-heavy,
# the case where resiliparse keeps navigation and teasers around the article, and trafilatura is asked
# too. Its answer wins unless it is under this share of resiliparse's: trafilatura in precision mode
# then cut the article short (a lazily loaded chapter, a page of short paragraphs), not boilerplate.
# Measured on the 130 hand-checked pages of data/extraction-dev (BENCHMARKS.md).
TRAFILATURA_MIN_SHARE = 0.3

WARM_PAGE = "<html><head><title>warm</title></head><body><p>warm up</p><p>the extractor</p></body></html>"
ExtractResult = tuple[str | None, str | None, str | None, str]  # text, title, lang hint, engine used


def _trafilatura_options(cfg: dict) -> dict:
    return dict(favor_precision=True, include_comments=False, include_tables=cfg["include_tables"],
                deduplicate=False, fast=not cfg["fallback"])


def _trafilatura_engine(cfg: dict) -> Callable[[str], ExtractResult]:
    import trafilatura
    from trafilatura.utils import load_html

    options = _trafilatura_options(cfg)

    def run(html: str) -> ExtractResult:
        # Parse once, read title and language from the tree, then extract from it (trafilatura
        # copies a tree it is given, so the tree we read stays intact).
        tree = load_html(html)
        if tree is None:
            return None, None, None, "trafilatura"
        title = tree.find(".//title")
        title = _clean(title.text_content()) if title is not None else None
        lang = tree.get("lang") or tree.get("{http://www.w3.org/XML/1998/namespace}lang")
        head = tree.find("head")
        if not lang and head is not None:
            for meta in head.iterfind("meta"):
                if (meta.get("http-equiv") or "").lower() == "content-language":
                    lang = meta.get("content")
                    break
        return trafilatura.extract(tree, **options), title, _clean(lang, 64), "trafilatura"

    return run


def _resiliparse_parts(cfg: dict):
    """``(parse(html) → tree, text_of(tree, main_content), title_and_lang(tree))`` for the engines
    built on resiliparse."""
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    skip = None if cfg["include_tables"] else ["table"]

    def text_of(tree, main_content: bool) -> str:
        return extract_plain_text(tree, main_content=main_content, alt_texts=False, links=False, form_fields=False,
                                  noscript=False, list_bullets=True, preserve_formatting=True,
                                  skip_elements=skip)

    def title_and_lang(tree) -> tuple[str | None, str | None]:
        root = tree.document.query_selector("html") if tree.document is not None else None
        lang = root.getattr("lang") if root is not None else None
        if not lang and tree.head is not None:
            meta = tree.head.query_selector('meta[http-equiv="content-language" i]')
            lang = meta.getattr("content") if meta is not None else None
        return _clean(tree.title), _clean(lang, 64)

    return HTMLTree.parse, text_of, title_and_lang


def _resiliparse_engine(cfg: dict) -> Callable[[str], ExtractResult]:
    parse, text_of, title_and_lang = _resiliparse_parts(cfg)

    def run(html: str) -> ExtractResult:
        tree = parse(html)
        return text_of(tree, True), *title_and_lang(tree), "resiliparse"

    return run


def _auto_engine(cfg: dict) -> Callable[[str], ExtractResult]:
    import trafilatura

    parse, text_of, title_and_lang = _resiliparse_parts(cfg)
    options = _trafilatura_options(cfg)
    route_below = cfg["route_below"]
    trafilatura.extract(WARM_PAGE, **options)  # its first call compiles XPath expressions: not per page

    def run(html: str) -> ExtractResult:
        tree = parse(html)
        title, lang = title_and_lang(tree)
        text = text_of(tree, True)
        if route_below == 0 or len(text) >= route_below * len(text_of(tree, False)):
            return text, title, lang, "resiliparse"
        second = trafilatura.extract(html, **options)
        if second and len(second) >= TRAFILATURA_MIN_SHARE * len(text):
            return second, title, lang, "trafilatura"
        return text, title, lang, "resiliparse"

    return run


ENGINES = {"auto": _auto_engine, "trafilatura": _trafilatura_engine, "resiliparse": _resiliparse_engine}


def make_worker(cfg: dict) -> Callable[[tuple], tuple]:
    """Sandbox factory: ``(kind, body, header_charset)`` →
    ``(text, title, lang_hint, charset, charset_source, problem, engine)``; ``engine`` names the
    extractor whose text was kept (null for text/plain and refused bodies)."""
    engine = ENGINES[cfg["engine"]](cfg)
    engine(WARM_PAGE)

    def work(request: tuple) -> tuple:
        kind, body, header_charset = request
        text, charset, source = decode_body(body, header_charset)
        problem = binary_problem(body, text, charset)
        if problem is not None:
            return None, None, None, charset, source, problem, None
        if kind == "plain":
            return text, None, None, charset, source, None, None
        extracted, title, lang, used = engine(text)
        return extracted, title, lang, charset, source, None, used

    return work
