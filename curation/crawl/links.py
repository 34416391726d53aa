"""Links of an HTML page (parsed with selectolax's Lexbor engine, an HTML5 parser): ``<a|area href>``,
``<frame|iframe src>``, ``<meta http-equiv=refresh>``, resolved against ``<base href>``. A page whose
``<meta name=robots>`` says ``nofollow`` or ``none`` (for all robots or for ours) yields none."""

from __future__ import annotations

from selectolax.lexbor import LexborHTMLParser

from curation.crawl.urls import BadURL, normalize_url

MAX_LINKS_PER_PAGE = 2000
_SELECTOR = "a[href], area[href], frame[src], iframe[src], base[href], meta"


def _raw_links(html: str, robots_names: set[str]) -> tuple[list[str], str | None, bool]:
    """(hrefs in document order, the first <base href>, whether a robots meta tag says nofollow)."""
    raw: list[str] = []
    base = None
    for node in LexborHTMLParser(html).css(_SELECTOR):
        tag, attrs = node.tag, node.attributes
        if tag in ("a", "area"):
            raw.append(attrs.get("href") or "")
        elif tag in ("frame", "iframe"):
            raw.append(attrs.get("src") or "")
        elif tag == "base":
            base = base or attrs.get("href")
        elif tag == "meta":
            name = (attrs.get("name") or "").lower()
            content = (attrs.get("content") or "").lower().replace(" ", "")
            if name in robots_names and ("nofollow" in content.split(",") or content == "none"):
                return [], None, True
            if (attrs.get("http-equiv") or "").lower() == "refresh":
                _, _, target = (attrs.get("content") or "").partition(";")
                target = target.strip()
                if target.lower().startswith("url="):
                    raw.append(target[4:].strip().strip("'\""))
    return raw, base, False


def extract_links(html: str, page_url: str, product_token: str = "") -> list[str]:
    """Normalised, de-duplicated links in document order (unparseable ones skipped)."""
    names = {"robots", product_token.lower()} if product_token else {"robots"}
    raw, base_href, nofollow = _raw_links(html, names)
    if nofollow:
        return []
    base = page_url
    if base_href:
        try:
            base = normalize_url(base_href, page_url)
        except BadURL:
            pass
    out: dict[str, None] = {}
    for href in raw:
        href = href.strip()
        if not href or href.startswith(("#", "javascript:", "mailto:", "tel:", "data:")):
            continue
        try:
            out.setdefault(normalize_url(href, base))
        except BadURL:
            continue
        if len(out) >= MAX_LINKS_PER_PAGE:
            break
    return list(out)


def decode_page(body: bytes, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", "replace")
    except LookupError:
        return body.decode("utf-8", "replace")
