"""A Common-Crawl-like WARC corpus of any size, built from the real pages and texts the project ships.

    python -m benchmarks.scale_corpus --docs 100000 [--files F] [--seed 0] [--jobs 2] [--check]

writes ``bench-data/scale/<N>/part-NNNNN.warc.gz`` (``<N>-f<F>-s<seed>`` when ``--files`` or
``--seed`` differ from the defaults), ``_planted/part-NNNNN.json`` beside them (the planted kind of
every record, and the original of every planted duplicate) and ``_complete.json`` (the parameters,
counts by planted kind, bytes). Files hold ~2,500 records each by default (``ceil(N / 2500)`` files).

**Format.** Each file starts with a ``warcinfo`` record; every other record is a WARC/1.0
``response`` (HTTP/1.1 200, ``Content-Type: text/html; charset=utf-8``, block and payload SHA-1
digests, ``WARC-Identified-Payload-Type``), each record its own gzip member as Common Crawl writes
them (gzip level 6 by default). URLs are on 3,000 synthetic hosts (``<word><word>.<tld>``, IPs in
198.18.0.0/15, the range reserved for benchmarks); a host's popularity is skewed (host index ~
3000·u², u uniform) and each host has one page template. Record ids (uuid4) and dates come from the
seeded RNG.

**Determinism.** Record *g* (its position in the whole corpus) is a pure function of (seed, g):
its own ``random.Random(f"{seed}/{g}")`` draws its kind, host and content, and a planted duplicate
regenerates its original from the original's own seed. A file therefore depends only on (seed,
docs, files, its index): files are written independently by ``--jobs`` processes, each to
``part-NNNNN.warc.gz.tmp`` and then renamed, and a rerun skips the finished ones (delete one and
rerun: only it is written again, byte for byte the same).

**The mix** (rates of records; counts per corpus in ``_complete.json``):

| kind | rate | what |
|---|---|---|
| ``article`` | 80.5% | distinct English article: a real page's boilerplate (one of 153 templates made from the shipped pages, ``data/extraction-dev`` and the HTML responses of ``data/warc``: main content cut out, other text-heavy elements with few links removed, scripts and styles over 2 KB and comments dropped, charset set to UTF-8) around a main content whose paragraphs join 1-3 random stretches (1-3 consecutive sentences each; sentences over 300 characters cut at clause boundaries) of the State of the Union addresses (60%), *Moby-Dick* (20%) and Tiny Shakespeare (20%), then 2% of its words replaced by random words of the same texts; 8% carry a contact line (e-mail, phone, an IP address) for ``pii`` |
| ``multilingual`` | 4% | a stretch (40-90%) of the Universal Declaration of Human Rights in one of ~380 other languages and scripts (``data/multilingual``; English, Scots and Nigerian Pidgin left out) in a template |
| ``boilerplate`` | 3% | a template with no article: a link list (category page, 60%), a stub message (404, log-in, moved; 25%) or nothing (15%) |
| ``spam`` | 3% | keyword stuffing (commercial phrases over a few keywords, 55%) or one paragraph repeated 4-25 times (45%) |
| ``toxic`` | 1% | a "comment thread": a sentence or two of the texts, then 6-20 offensive or hateful tweets (``data/toxicity``, Davidson et al., classes 0-1, mentions and links removed) mixed with a few clean sentences |
| ``real_page`` | 1.5% | a real page from ``data/extraction-dev`` (the 115 under 400 KB), 10% of the words of its text replaced, so copies of one page are distinct (expected word-5-gram Jaccard between two copies ~0.2) |
| ``exact_dup`` | 4% | the same HTML body as an earlier ``article`` (uniform over the records before it), at another URL (a mirror host, or the same host with a query string) |
| ``near_dup`` | 3% | an earlier ``article`` with 1-3% of its words edited (replaced 60%, deleted 20%, inserted 20%), in the original's page, on another host; its word-5-gram Jaccard with the original is recorded (0.75-0.93, median ~0.84, so MinHash LSH at 14 x 8 should find ~96% of them) |

Main text sizes are log-normal: median 2,500 characters (sigma 1.0), plus a 1.5% tail with median
40 KB (sigma 0.8), capped at 400 KB; pages add their template (0.1-112 KB of HTML, median 11 KB).
Per record (5,000 drawn): HTML median 15 KB, 99th percentile 118 KB, largest 336 KB, mean 22 KB;
main text median 3 KB, mean 5.5 KB; ~7 KB of gzipped WARC, so 1,000,000 records are ~7 GB.
Generation runs at roughly 1,000 records/s per process on a 2-core dev box (1M records: ~8 min
with ``--jobs 2``), plus ~3 s to load the sources per run.

The first 20 records are articles; a duplicate's original is drawn uniformly from the articles
before it. Articles are distinct by construction, not by chance alone: ``--check`` at 60,000 records
found no exact and 5 near-duplicate candidates among articles that were not planted (short
articles sharing a stretch with another short article or with a repeated-paragraph spam page; their
number grows about with the square of the corpus size, so perhaps 1,000-2,000 at 1,000,000 records,
0.1-0.2% of the articles), against
all 2,418 planted exact duplicates and 95.5% of 1,865 planted near duplicates found (96% expected
from their Jaccard). Non-English pages drawn from one UDHR text, stub pages and repeated-paragraph
spam do collide with each other, as on the web; langid and the quality filters remove them before
dedup.

``--check`` regenerates every record's main text (no HTML, no gzip) and measures, with the
project's own dedup primitives (NFKC/lower-case/whitespace key; word 5-gram MinHash, 14 bands x 8
rows), the exact and near duplicates that were *not* planted, and how many planted ones are found.
"""

from __future__ import annotations

import argparse
import base64
import csv
import gzip
import hashlib
import html
import json
import math
import multiprocessing
import os
import random
import re
import shutil
import sys
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import BENCH_DATA, DATA, machine

VERSION = 1
PER_FILE = 2500
N_HOSTS = 3000
SCALE_DIR = BENCH_DATA / "scale"
PLANTED_DIR = "_planted"

# (code, kind, rate): the code is the kind's letter in the _planted files.
KINDS = [("a", "article", 0.805), ("m", "multilingual", 0.04), ("b", "boilerplate", 0.03), ("s", "spam", 0.03),
         ("t", "toxic", 0.01), ("r", "real_page", 0.015), ("x", "exact_dup", 0.04), ("n", "near_dup", 0.03)]
CODE = {kind: code for code, kind, _ in KINDS}
KIND = {code: kind for code, kind, _ in KINDS}
_CUMULATIVE = []
_acc = 0.0
for _code, _kind, _rate in KINDS:
    _acc += _rate
    _CUMULATIVE.append((_acc, _kind))
assert abs(_acc - 1.0) < 1e-9
FIRST_PLAIN = 20  # the first records are articles: duplicates need something before them

SOURCE_WEIGHTS = (("sotu", 0.6), ("moby", 0.2), ("shakespeare", 0.2))
ARTICLE_SUBSTITUTION = 0.02
REAL_PAGE_SUBSTITUTION = 0.10
REAL_PAGE_MAX_BYTES = 400_000
NEAR_DUP_EDITS = (0.01, 0.03)
PII_SHARE = 0.08
TEXT_MEDIAN, TEXT_SIGMA = 2500, 1.0
TAIL_SHARE, TAIL_MEDIAN, TAIL_SIGMA = 0.015, 40_000, 0.8
TEXT_MIN, TEXT_MAX = 150, 400_000
UDHR_LEFT_OUT = {"eng", "sco", "pcm"}  # English and English-lexified: langid would keep them
TLDS = (("com", 50), ("org", 12), ("net", 10), ("co.uk", 5), ("de", 4), ("info", 4), ("io", 3), ("blog", 3),
        ("news", 3), ("us", 2), ("ca", 2), ("com.au", 2))
SERVERS = ("nginx", "Apache", "cloudflare", "Apache/2.4.41 (Ubuntu)", "nginx/1.18.0", "Microsoft-IIS/10.0",
           "LiteSpeed", "openresty")
SECTIONS = ("news", "blog", "politics", "culture", "world", "opinion", "articles", "stories", "history",
            "archive", "features", "local", "books", "essays")
SPAM_TERMS = ("cheap", "best price", "buy now", "discount", "free shipping", "online pharmacy", "casino bonus",
              "payday loans", "replica watches", "weight loss", "work from home", "limited offer", "lowest price",
              "order today", "no prescription", "100% guaranteed", "click here", "hot deals", "crypto signals",
              "seo services", "cheap flights", "miracle cure", "make money fast", "free trial")
STUBS = ("404 Not Found. The page you requested could not be found.",
         "Please log in to continue. Username Password Remember me Forgot your password?",
         "This page has moved. If you are not redirected automatically, follow this link.",
         "Access denied. You do not have permission to view this page.",
         "We use cookies to improve your experience. Accept all Manage preferences",
         "Sorry, no posts matched your criteria.", "Coming soon!", "Under construction.")
FIRST_NAMES = ("james", "mary", "john", "linda", "robert", "susan", "michael", "karen", "david", "lisa", "maria",
               "wei", "anna", "ahmed", "olga", "pierre", "yuki", "carlos", "fatima", "peter")
# Templates in which trafilatura (as `extract` runs it) finds none of a 300-word article: left out.
# `--vet-templates` measures every template (article words found, extracted words not the
# article's); the other 153 find >= 99% of the article with <= 1% other words.
TEMPLATE_EXCLUDED = frozenset({"blogger", "engadget", "firefox-nightly-blog", "royal-road"})

MARK_TITLE, MARK_MAIN = "GMSCALETITLEMARK", "GMSCALEMAINMARK"
_RE_COMMENT = re.compile(r"<!--.*?-->", re.S)
_RE_BIG = re.compile(r"<(script|style|svg|noscript)\b.*?</\1\s*>", re.S | re.I)
_RE_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z])")
_RE_CLAUSE = re.compile(r"(?<=[;:,])\s+")
_RE_WORD = re.compile(r"[A-Za-z][a-z]{1,11}")
_RE_TAG_SPLIT = re.compile(r"(<[^>]*>)")
_RE_TWEET_JUNK = re.compile(r"(?:\bRT\b:?)|(?:@\w+:?)|(?:https?://\S+)|(?:&#\d+;)")
_RE_SPACE = re.compile(r"\s+")


# ------------------------------------------------------------------------------------------ layout


def corpus_dir(docs: int, files: int | None = None, seed: int = 0) -> Path:
    name = str(docs) if files in (None, default_files(docs)) and seed == 0 else f"{docs}-f{files}-s{seed}"
    return SCALE_DIR / name


def default_files(docs: int) -> int:
    return max(1, math.ceil(docs / PER_FILE))


def file_name(index: int) -> str:
    return f"part-{index:05d}.warc.gz"


def file_bounds(docs: int, files: int, index: int) -> tuple[int, int]:
    """(first global record, records) of file ``index``."""
    base, extra = divmod(docs, files)
    first = index * base + min(index, extra)
    return first, base + (1 if index < extra else 0)


def locate(docs: int, files: int, g: int) -> tuple[int, int]:
    """Global record ``g`` → (file index, record number in that file as the WARC reader counts it:
    the warcinfo record is 0, so the j-th response is j + 1)."""
    base, extra = divmod(docs, files)
    big = extra * (base + 1)
    if g < big:
        f, j = divmod(g, base + 1)
    else:
        f, j = extra + (g - big) // base, (g - big) % base
    return f, j + 1


# ----------------------------------------------------------------------------------------- sources


@dataclass
class Template:
    name: str
    pre: str   # up to the <title> text
    mid: str   # from </title> to the main content
    post: str  # after the main content

    def render(self, title: str, main_html: str) -> str:
        return self.pre + html.escape(title, quote=False) + self.mid + main_html + self.post


@dataclass
class RealPage:
    name: str
    segments: list[str]        # tags and text, alternating as re.split gives them
    text_segments: list[int]   # indices of text segments outside script/style that hold words


@dataclass
class Sources:
    sentences: dict[str, list[str]]
    vocab: list[str]
    tweets: list[str]
    udhr: list[tuple[str, list[str]]]
    templates: list[Template]
    real_pages: list[RealPage]
    hosts: list[str]
    host_template: list[int]
    stats: dict[str, Any] = field(default_factory=dict)


_SOURCES: Sources | None = None


def sources() -> Sources:
    global _SOURCES
    if _SOURCES is None:
        _SOURCES = _load_sources()
    return _SOURCES


def _split_sentences(text: str, longest: int = 300) -> list[str]:
    """Sentences; one longer than ``longest`` characters (old addresses run to 3,800) is cut at its
    clause boundaries into pieces of about that size, so that no single draw dominates a document."""
    text = _RE_SPACE.sub(" ", text).strip()
    out = []
    for sentence in _RE_SENTENCE.split(text):
        if len(sentence) <= longest:
            if len(sentence) > 1:
                out.append(sentence)
            continue
        piece = ""
        for clause in _RE_CLAUSE.split(sentence):
            if piece and len(piece) + len(clause) > longest:
                out.append(piece)
                piece = ""
            piece = f"{piece} {clause}" if piece else clause
        if piece:
            out.append(piece)
    return out


def _load_texts() -> dict[str, list[str]]:
    sotu: list[str] = []
    for path in sorted((DATA / "text" / "sotu").glob("*.txt")):
        sotu += _split_sentences(path.read_text(encoding="utf-8"))
    moby: list[str] = []
    for path in sorted((DATA / "text" / "moby-dick").glob("chapter_*.txt"),
                       key=lambda p: int(p.stem.split("_")[1])):
        moby += _split_sentences(path.read_text(encoding="utf-8"))
    shakespeare: list[str] = []
    raw = (DATA / "text" / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    for speech in raw.split("\n\n"):
        lines = speech.strip().split("\n")
        if len(lines) >= 2:  # "Speaker:" then the lines of the speech
            shakespeare += _split_sentences(" ".join(lines[1:]))
    return {"sotu": sotu, "moby": moby, "shakespeare": shakespeare}


def _load_tweets() -> list[str]:
    out = []
    with (DATA / "toxicity" / "davidson-labeled_data.csv").open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["class"] not in ("0", "1"):  # 0 hate speech, 1 offensive language
                continue
            text = _RE_TWEET_JUNK.sub(" ", html.unescape(row["tweet"]))
            text = _RE_SPACE.sub(" ", text).strip(" !:\"")
            if len(text.split()) < 4:
                continue
            if text[-1] not in ".!?":
                text += "."
            out.append(text[0].upper() + text[1:])
    return out


def _load_udhr() -> list[tuple[str, list[str]]]:
    out = []
    with gzip.open(DATA / "multilingual" / "udhr2.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row["iso639_3"] in UDHR_LEFT_OUT or row["chars"] < 3000:
                continue
            lines = [_RE_SPACE.sub(" ", s).strip() for s in row["text"].split("\n")]
            out.append((row["id"], [s for s in lines if s]))
    return out


def _shipped_pages() -> list[tuple[str, bytes]]:
    """(name, raw HTML body) of every real page shipped: the extraction-dev set, then the HTML
    responses of the bundled WARC files."""
    from fastwarc.stream_io import GZipStream, FileStream
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    pages = [(p.parent.name, gzip.decompress(p.read_bytes()))
             for p in sorted((DATA / "extraction-dev" / "pages").glob("*/source.html.gz"))]
    for path in sorted((DATA / "warc").glob("*.warc.gz")):
        stream = GZipStream(FileStream(str(path), "rb"))
        for i, rec in enumerate(ArchiveIterator(stream, record_types=WarcRecordType.response, parse_http=True)):
            ctype = (rec.http_headers.get("Content-Type") or "") if rec.http_headers else ""
            if "html" not in ctype.lower() or (rec.http_headers.get("Content-Encoding") or "identity") != "identity":
                continue
            body = rec.reader.read()
            if len(body) > 2000:
                pages.append((f"{path.name.split('.')[0]}#{i}", body))
    return pages


def _decode(body: bytes) -> str:
    from curation.html_text import decode_body

    return decode_body(body)[0]


def make_template(name: str, page: str) -> Template | None:
    """A real page's boilerplate: its main content (the element whose <p> children hold the most
    text) emptied and marked, other text-heavy elements with few links removed, big scripts/styles
    and comments dropped, the charset set to UTF-8 and the title marked."""
    import lxml.html

    page = _RE_COMMENT.sub("", page)
    page = _RE_BIG.sub(lambda m: "" if len(m.group(0)) > 2048 or m.group(1).lower() == "noscript" else m.group(0),
                       page)
    try:
        doc = lxml.html.document_fromstring(page)
    except Exception:  # noqa: BLE001 - an unparsable page is no template
        return None
    scores: dict[Any, int] = {}
    for p in doc.iter("p"):
        parent = p.getparent()
        if parent is not None:
            scores[parent] = scores.get(parent, 0) + len(p.text_content())
    if not scores:
        return None
    main = max(scores, key=scores.get)
    if main.tag in ("html", "head"):
        return None
    for child in list(main):
        main.remove(child)
    main.text = MARK_MAIN
    keep = set(main.iterancestors()) | {main}
    content_tags = ("p", "pre", "blockquote", "table", "dl", "figure", "ul", "ol", "h1", "h2", "h3", "h4", "h5",
                    "h6", "article", "section", "aside", "header", "footer", "div", "span", "td", "li", "font",
                    "center", "em", "strong", "b", "i")
    for el in list(doc.iter(*content_tags)):
        if el in keep or el.getparent() is None:
            continue
        if el.tag in ("h1", "h2", "h3"):
            el.drop_tree()
            continue
        text = el.text_content().strip()
        if len(text) < 60:
            continue
        links = sum(len(a.text_content()) for a in el.iter("a"))
        if links < 0.5 * len(text):
            if any(a in keep for a in el.iter()):
                continue
            el.drop_tree()
    for el in doc.iter():
        if el is main or not isinstance(el.tag, str) or el.tag in ("script", "style", "title"):
            continue
        if el.text and len(el.text.strip()) > 60:
            el.text = None
        if el.tail and len(el.tail.strip()) > 60:
            el.tail = None
    head = doc.find("head")
    if head is None:
        head = doc.makeelement("head")
        doc.insert(0, head)
    for meta in list(head.iter("meta")):
        if meta.get("charset") is not None or (meta.get("http-equiv") or "").lower() == "content-type":
            meta.drop_tree()
    for title in list(doc.iter("title")):
        title.drop_tree()
    title = head.makeelement("title")
    title.text = MARK_TITLE
    head.insert(0, title)
    charset = head.makeelement("meta", {"charset": "utf-8"})
    head.insert(0, charset)
    out = lxml.html.tostring(doc, encoding="unicode", doctype="<!DOCTYPE html>")
    if out.count(MARK_TITLE) != 1 or out.count(MARK_MAIN) != 1 or out.index(MARK_TITLE) > out.index(MARK_MAIN):
        return None
    pre, rest = out.split(MARK_TITLE)
    mid, post = rest.split(MARK_MAIN)
    return Template(name, pre, mid, post)


def make_real_page(name: str, page: str) -> RealPage:
    page = re.sub(r"<meta[^>]+charset[^>]*>", '<meta charset="utf-8">', page, count=1, flags=re.I)
    segments = _RE_TAG_SPLIT.split(page)
    text_segments, skip = [], False
    for i, seg in enumerate(segments):
        if i % 2:  # a tag
            low = seg[:8].lower()
            if low.startswith(("<script", "<style")):
                skip = not seg.endswith("/>")
            elif low.startswith(("</script", "</style")):
                skip = False
            continue
        if not skip and _RE_WORD.search(seg):
            text_segments.append(i)
    return RealPage(name, segments, text_segments)


def _load_sources() -> Sources:
    started = time.perf_counter()
    sentences = _load_texts()
    rng = random.Random("gristmill-scale-sources")
    words = [w for s in rng.sample(sentences["sotu"], 6000) + rng.sample(sentences["moby"], 1500)
             + rng.sample(sentences["shakespeare"], 1500) for w in s.split()]
    vocab = [w for w in words if _RE_WORD.fullmatch(w.strip(".,;:!?\"'()"))]
    tweets = _load_tweets()
    udhr = _load_udhr()
    templates, real_pages = [], []
    for name, body in _shipped_pages():
        page = _decode(body)
        if name in TEMPLATE_EXCLUDED:
            template = None
        else:
            template = make_template(name, page)
        if template is not None:
            templates.append(template)
        if "#" not in name and len(body) <= REAL_PAGE_MAX_BYTES:
            real_pages.append(make_real_page(name, page))
    names = sorted({w.lower() for w in vocab if 4 <= len(w) <= 8 and w.isalpha()})
    hosts, seen = [], set()
    tld_total = sum(w for _, w in TLDS)
    while len(hosts) < N_HOSTS:
        pick = rng.random() * tld_total
        for tld, weight in TLDS:
            pick -= weight
            if pick < 0:
                break
        host = f"{rng.choice(names)}{rng.choice(('', '-'))}{rng.choice(names)}.{tld}"
        if rng.random() < 0.4:
            host = "www." + host
        if host not in seen:
            seen.add(host)
            hosts.append(host)
    host_template = [rng.randrange(len(templates)) for _ in hosts]
    stats = {"sentences": {k: len(v) for k, v in sentences.items()}, "tweets": len(tweets), "udhr_texts": len(udhr),
             "templates": len(templates), "real_pages": len(real_pages), "hosts": len(hosts),
             "load_s": round(time.perf_counter() - started, 2)}
    return Sources(sentences, vocab, tweets, udhr, templates, real_pages, hosts, host_template, stats)


# --------------------------------------------------------------------------------------- documents


@dataclass
class Doc:
    g: int
    kind: str
    host: int
    url: str
    title: str = ""
    paragraphs: list[str] = field(default_factory=list)  # main text, one string per block
    main_html: str = ""
    body: str | None = None   # the whole page, when not template + title + main (real pages)
    original: int | None = None
    edit_rate: float | None = None
    jaccard: float | None = None
    template_host: int | None = None  # whose page template: the host's own unless a copy keeps its original's

    def main_text(self) -> str:
        if self.body is not None and not self.paragraphs:
            return ""
        return "\n".join(([self.title] if self.title else []) + self.paragraphs)

    def html(self, src: Sources) -> str:
        if self.body is not None:
            return self.body
        host = self.host if self.template_host is None else self.template_host
        return src.templates[src.host_template[host]].render(self.title, self.main_html)


def record_rng(seed: int, g: int) -> random.Random:
    return random.Random(f"{seed}/{g}")


def _kind_from(u: float, g: int) -> str:
    if g < FIRST_PLAIN:
        return "article"
    for edge, kind in _CUMULATIVE:
        if u < edge:
            return kind
    return "article"


def kind_of(seed: int, g: int) -> str:
    return _kind_from(record_rng(seed, g).random(), g)


def make_doc(seed: int, g: int, src: Sources | None = None) -> Doc:
    src = src or sources()
    rng = record_rng(seed, g)
    kind = _kind_from(rng.random(), g)
    host = _pick_host(rng)
    if kind == "article":
        return _article(rng, src, g, host)
    if kind in ("exact_dup", "near_dup"):
        return _duplicate(rng, src, seed, g, host, kind)
    maker = {"multilingual": _multilingual, "boilerplate": _boilerplate, "spam": _spam, "toxic": _toxic,
             "real_page": _real_page}[kind]
    return maker(rng, src, g, host)


def _pick_host(rng) -> int:
    return min(N_HOSTS - 1, int(N_HOSTS * rng.random() ** 2))


def _url(rng, src: Sources, host: int, title: str, g: int) -> str:
    slug = "-".join(w.lower() for w in re.findall(r"[A-Za-z0-9]+", title)[:8]) or "page"
    return (f"https://{src.hosts[host]}/{rng.choice(SECTIONS)}/{rng.randint(2005, 2024)}/{rng.randint(1, 12):02d}/"
            f"{slug}-{g}.html")


def _text_size(rng) -> int:
    if rng.random() < TAIL_SHARE:
        size = rng.lognormvariate(math.log(TAIL_MEDIAN), TAIL_SIGMA)
    else:
        size = rng.lognormvariate(math.log(TEXT_MEDIAN), TEXT_SIGMA)
    return int(min(TEXT_MAX, max(TEXT_MIN, size)))


def _pick_source(rng, src: Sources) -> list[str]:
    u = rng.random()
    for name, weight in SOURCE_WEIGHTS:
        u -= weight
        if u < 0:
            return src.sentences[name]
    return src.sentences[SOURCE_WEIGHTS[-1][0]]


def _stretch(rng, src: Sources, max_sentences: int = 3) -> str:
    sents = _pick_source(rng, src)
    k = rng.randint(1, max_sentences)
    i = rng.randrange(len(sents) - k)
    return " ".join(sents[i:i + k])


def _substitute(rng, src: Sources, paragraphs: list[str], rate: float) -> list[str]:
    out = []
    vocab = src.vocab
    for para in paragraphs:
        words = para.split(" ")
        n = len(words) * rate
        n = int(n) + (1 if rng.random() < n - int(n) else 0)
        for p in rng.sample(range(len(words)), min(n, len(words))):
            words[p] = vocab[rng.randrange(len(vocab))]
        out.append(" ".join(words))
    return out


def _title_from(text: str, rng) -> str:
    words = re.findall(r"[A-Za-z][A-Za-z'-]*", text)[: rng.randint(4, 10)]
    return " ".join(w.capitalize() if len(w) > 3 else w for w in words) or "Untitled"


def _paragraphs_html(title: str, paragraphs: list[str], rng, subheads: bool = True) -> str:
    parts = [f"<article>\n<h1>{html.escape(title, quote=False)}</h1>\n"]
    for i, para in enumerate(paragraphs):
        if subheads and i and i % 5 == 0 and rng.random() < 0.5:
            parts.append(f"<h2>{html.escape(_title_from(para, rng), quote=False)}</h2>\n")
        parts.append(f"<p>{html.escape(para, quote=False)}</p>\n")
    parts.append("</article>")
    return "".join(parts)


def _contact_line(rng) -> str:
    first, last = rng.choice(FIRST_NAMES), rng.choice(FIRST_NAMES)
    domain = rng.choice(("example.com", "mailhost.net", "newsroom.org", "pressoffice.co.uk"))
    phone = f"({rng.randint(201, 989)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}"
    ip = f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    return (f"For questions about this story contact {first}.{last}@{domain} or call {phone}. "
            f"Comments are logged from {ip}.")


def _article_text(rng, src: Sources) -> tuple[str, list[str]]:
    target = _text_size(rng)
    paragraphs, total = [], 0
    while total < target:
        para = " ".join(_stretch(rng, src) for _ in range(rng.randint(1, 3)))
        paragraphs.append(para)
        total += len(para) + 1
    paragraphs = _substitute(rng, src, paragraphs, ARTICLE_SUBSTITUTION)
    if rng.random() < PII_SHARE:
        paragraphs.append(_contact_line(rng))
    return _title_from(paragraphs[0], rng), paragraphs


def _article(rng, src: Sources, g: int, host: int) -> Doc:
    title, paragraphs = _article_text(rng, src)
    doc = Doc(g, "article", host, _url(rng, src, host, title, g), title, paragraphs)
    doc.main_html = _paragraphs_html(title, paragraphs, rng)
    return doc


def _pick_original(rng, seed: int, g: int) -> int:
    for _ in range(64):
        o = rng.randrange(g)
        if kind_of(seed, o) == "article":
            return o
    return 0  # records before FIRST_PLAIN are articles


def _duplicate(rng, src: Sources, seed: int, g: int, host: int, kind: str) -> Doc:
    o = _pick_original(rng, seed, g)
    orig = make_doc(seed, o, src)
    if host == orig.host:
        host = (host + 1 + rng.randrange(N_HOSTS - 1)) % N_HOSTS
    if kind == "exact_dup":
        if rng.random() < 0.5:  # a mirror: another host, same path
            url = f"https://{src.hosts[host]}/" + orig.url.split("/", 3)[3]
        else:  # the same page again, tracking parameters appended
            host = orig.host
            url = orig.url + rng.choice(("?utm_source=feed", "?ref=home", "?amp=1", "?page=1", "#comments"))
        return Doc(g, kind, host, url, orig.title, orig.paragraphs, orig.main_html, None, o,
                   template_host=orig.host)
    rate = rng.uniform(*NEAR_DUP_EDITS)
    paragraphs = _edit_words(rng, src, orig.paragraphs, rate)
    doc = Doc(g, kind, host, _url(rng, src, host, orig.title, g), orig.title, paragraphs, "", None, o, round(rate, 4),
              template_host=orig.host)  # the original's page, edited
    doc.main_html = _paragraphs_html(orig.title, paragraphs, rng)
    doc.jaccard = round(word_jaccard(orig.main_text(), doc.main_text()), 4)
    return doc


def _edit_words(rng, src: Sources, paragraphs: list[str], rate: float) -> list[str]:
    split = [p.split(" ") for p in paragraphs]
    positions = [(i, j) for i, words in enumerate(split) for j in range(len(words))]
    n = max(1, round(len(positions) * rate))
    edits: dict[tuple[int, int], str] = {}
    for pos in rng.sample(positions, min(n, len(positions))):
        u = rng.random()
        word = src.vocab[rng.randrange(len(src.vocab))]
        edits[pos] = "replace:" + word if u < 0.6 else ("delete:" if u < 0.8 else "insert:" + word)
    out = []
    for i, words in enumerate(split):
        new = []
        for j, w in enumerate(words):
            op = edits.get((i, j))
            if op is None:
                new.append(w)
            elif op.startswith("replace:"):
                new.append(op[8:])
            elif op.startswith("insert:"):
                new += [op[7:], w]
        out.append(" ".join(new) if new else words[0])
    return out


def word_jaccard(a: str, b: str, n: int = 5) -> float:
    def shingles(text: str) -> set[tuple[str, ...]]:
        words = re.findall(r"\w+", text.lower())
        return {tuple(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}

    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb) if sa or sb else 1.0


def _multilingual(rng, src: Sources, g: int, host: int) -> Doc:
    _id, lines = src.udhr[rng.randrange(len(src.udhr))]
    start = rng.randrange(max(1, len(lines) // 3))
    end = min(len(lines), start + max(3, int(len(lines) * rng.uniform(0.4, 0.9))))
    paragraphs = lines[start:end]
    title = lines[0][:80]
    doc = Doc(g, "multilingual", host, _url(rng, src, host, f"udhr {_id} {g}", g), title, paragraphs)
    doc.main_html = _paragraphs_html(title, paragraphs, rng, subheads=False)
    return doc


def _link_title(rng, src: Sources) -> str:
    return " ".join(src.vocab[rng.randrange(len(src.vocab))] for _ in range(rng.randint(2, 7))).capitalize()


def _boilerplate(rng, src: Sources, g: int, host: int) -> Doc:
    u = rng.random()
    title = _link_title(rng, src)
    if u < 0.6:
        items = [_link_title(rng, src) for _ in range(rng.randint(15, 60))]
        section = rng.choice(SECTIONS)
        links = "".join(f'<li><a href="/{section}/{re.sub(r"[^a-z0-9]+", "-", t.lower())}.html">'
                        f"{html.escape(t, quote=False)}</a></li>\n" for t in items)
        pages = rng.randint(2, 40)
        main = (f"<h1>{html.escape(title, quote=False)}</h1>\n<ul>\n{links}</ul>\n"
                f'<div class="pager">Page {rng.randint(1, pages)} of {pages} <a href="?page=2">Next »</a></div>')
        paragraphs = items
    elif u < 0.85:
        stub = rng.choice(STUBS)
        main, paragraphs = f"<h1>{html.escape(title, quote=False)}</h1>\n<p>{stub}</p>", [stub]
    else:
        main, paragraphs = "", []
    doc = Doc(g, "boilerplate", host, _url(rng, src, host, title, g), title, paragraphs)
    doc.main_html = main
    return doc


def _spam(rng, src: Sources, g: int, host: int) -> Doc:
    if rng.random() < 0.55:
        terms = rng.sample(SPAM_TERMS, rng.randint(4, 9))
        products = [src.vocab[rng.randrange(len(src.vocab))].lower().strip(".,;:!?\"'()") for _ in range(3)]
        patterns = ("Buy {p} {t} online.", "{T} {p}, {t} {p}!", "Best {p} {t} {t2}.", "{T} {p} {t2} today!",
                    "{p} {p} {t} {p}.", "Get {t} on {p} now.", "{T}: {p} {t2} {p}.")
        lines = []
        for _ in range(rng.randint(20, 120)):
            t, t2, p = rng.choice(terms), rng.choice(terms), rng.choice(products)
            line = rng.choice(patterns).format(p=p, t=t, t2=t2, T=t.capitalize())
            lines.append(line[0].upper() + line[1:])
        per = rng.randint(1, 6)
        paragraphs = [" ".join(lines[i:i + per]) for i in range(0, len(lines), per)]
        title = " ".join(terms[:3]).title() + " " + products[0]
    else:
        block = _stretch(rng, src, 3)
        paragraphs = [block] * rng.randint(4, 25)
        title = _title_from(block, rng)
    doc = Doc(g, "spam", host, _url(rng, src, host, title, g), title, paragraphs)
    doc.main_html = _paragraphs_html(title, paragraphs, rng, subheads=False)
    return doc


def _toxic(rng, src: Sources, g: int, host: int) -> Doc:
    paragraphs = [_stretch(rng, src, 2)]
    posts = [src.tweets[rng.randrange(len(src.tweets))] for _ in range(rng.randint(6, 20))]
    for _ in range(rng.randint(0, 5)):
        posts.insert(rng.randrange(len(posts) + 1), _stretch(rng, src, 1))
    paragraphs += posts
    title = _title_from(paragraphs[0], rng)
    doc = Doc(g, "toxic", host, _url(rng, src, host, title, g), title, paragraphs)
    doc.main_html = _paragraphs_html(title, paragraphs, rng, subheads=False)
    return doc


def _real_page(rng, src: Sources, g: int, host: int) -> Doc:
    page = src.real_pages[rng.randrange(len(src.real_pages))]
    segments = list(page.segments)
    vocab = src.vocab
    texts = []
    for i in page.text_segments:
        words = segments[i].split(" ")
        for j, w in enumerate(words):
            if w and rng.random() < REAL_PAGE_SUBSTITUTION:
                words[j] = vocab[rng.randrange(len(vocab))]
        segments[i] = " ".join(words)
        texts.append(segments[i])
    doc = Doc(g, "real_page", host, _url(rng, src, host, page.name.replace("-", " "), g), page.name,
              [_RE_SPACE.sub(" ", html.unescape(t)).strip() for t in texts])
    doc.body = "".join(segments)
    return doc


# ------------------------------------------------------------------------------------------- WARC


def _digest(data: bytes) -> str:
    return "sha1:" + base64.b32encode(hashlib.sha1(data).digest()).decode()


def _warc_date(rng) -> str:
    t = 1715990400 + rng.randrange(14 * 86400)  # 2024-05-18 … 2024-05-31 (UTC)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _http_date(warc_date: str) -> str:
    t = time.strptime(warc_date, "%Y-%m-%dT%H:%M:%SZ")
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", t)


def _record(headers: list[tuple[str, str]], block: bytes, level: int) -> bytes:
    head = "WARC/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + f"Content-Length: {len(block)}\r\n\r\n"
    comp = zlib.compressobj(level, zlib.DEFLATED, 31)
    return comp.compress(head.encode("utf-8")) + comp.compress(block) + comp.compress(b"\r\n\r\n") + comp.flush()


def _uuid(rng) -> str:
    return f"<urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}>"


def response_record(doc: Doc, src: Sources, rng, warcinfo_id: str, level: int) -> tuple[bytes, int]:
    payload = doc.html(src).encode("utf-8")
    date = _warc_date(rng)
    http_head = (f"HTTP/1.1 200 OK\r\nDate: {_http_date(date)}\r\nServer: {rng.choice(SERVERS)}\r\n"
                 f"Content-Type: text/html; charset=utf-8\r\nContent-Length: {len(payload)}\r\n"
                 f"Connection: close\r\n\r\n").encode("ascii")
    block = http_head + payload
    ip = f"198.{18 + (doc.host >> 16)}.{(doc.host >> 8) & 255}.{doc.host & 255}"
    headers = [("WARC-Type", "response"), ("WARC-Date", date), ("WARC-Record-ID", _uuid(rng)),
               ("Content-Type", "application/http; msgtype=response"), ("WARC-Warcinfo-ID", warcinfo_id),
               ("WARC-IP-Address", ip), ("WARC-Target-URI", doc.url), ("WARC-Payload-Digest", _digest(payload)),
               ("WARC-Block-Digest", _digest(block)), ("WARC-Identified-Payload-Type", "text/html")]
    return _record(headers, block, level), len(payload)


def warcinfo_record(name: str, params: dict[str, Any], rng, level: int) -> tuple[bytes, str]:
    record_id = _uuid(rng)
    fields = (f"software: gristmill benchmarks/scale_corpus.py v{VERSION}\r\n"
              f"isPartOf: gristmill-scale-{params['docs']}-s{params['seed']}\r\n"
              "description: synthetic Common-Crawl-like corpus made from the real pages and texts the project "
              "ships (see data/SOURCES.md)\r\n"
              "format: WARC File Format 1.0\r\n"
              "conformsTo: https://iipc.github.io/warc-specifications/specifications/warc-format/warc-1.0/\r\n")
    headers = [("WARC-Type", "warcinfo"), ("WARC-Date", "2024-05-18T00:00:00Z"), ("WARC-Filename", name),
               ("WARC-Record-ID", record_id), ("Content-Type", "application/warc-fields")]
    return _record(headers, fields.encode("utf-8"), level), record_id


def write_file(folder: Path, params: dict[str, Any], index: int) -> dict[str, Any]:
    """Write file ``index`` (and its _planted sidecar); returns the sidecar."""
    src = sources()
    seed, docs, files, level = params["seed"], params["docs"], params["files"], params["gzip_level"]
    first, count = file_bounds(docs, files, index)
    name = file_name(index)
    file_rng = record_rng(seed, -1 - index)
    kinds, dups, counts = [], [], {kind: 0 for _, kind, _ in KINDS}
    html_bytes = text_chars = 0
    target, tmp = folder / name, folder / (name + ".tmp")
    with tmp.open("wb") as out:
        info, info_id = warcinfo_record(name, params, file_rng, level)
        out.write(info)
        for j in range(count):
            g = first + j
            doc = make_doc(seed, g, src)
            rec_rng = random.Random(f"{seed}/{g}/warc")
            data, size = response_record(doc, src, rec_rng, info_id, level)
            out.write(data)
            kinds.append(CODE[doc.kind])
            counts[doc.kind] += 1
            html_bytes += size
            text_chars += len(doc.main_text())
            if doc.original is not None:
                o_file, o_record = locate(docs, files, doc.original)
                dups.append({"record": j + 1, "g": g, "original": doc.original, "original_file": o_file,
                             "original_record": o_record, "edit_rate": doc.edit_rate, "jaccard": doc.jaccard})
    sidecar = {"version": VERSION, "file": index, "name": name, "first": first, "records": count,
               "kinds": "".join(kinds), "duplicates": dups, "counts": counts, "warc_bytes": tmp.stat().st_size,
               "html_bytes": html_bytes, "text_chars": text_chars}
    planted = folder / PLANTED_DIR / (name.replace(".warc.gz", ".json"))
    planted_tmp = planted.with_suffix(".json.tmp")
    planted_tmp.write_text(json.dumps(sidecar))
    os.replace(planted_tmp, planted)
    os.replace(tmp, target)
    return sidecar


def _write_file_job(args: tuple[str, dict[str, Any], int]) -> dict[str, Any]:
    folder, params, index = args
    return write_file(Path(folder), params, index)


# --------------------------------------------------------------------------------------- top level


def params_for(docs: int, files: int | None, seed: int, gzip_level: int) -> dict[str, Any]:
    return {"version": VERSION, "docs": docs, "files": files or default_files(docs), "seed": seed,
            "gzip_level": gzip_level, "rates": {kind: rate for _, kind, rate in KINDS}}


def read_planted(folder: Path, index: int) -> dict[str, Any]:
    return json.loads((folder / PLANTED_DIR / file_name(index).replace(".warc.gz", ".json")).read_text())


def generate(docs: int, files: int | None = None, seed: int = 0, jobs: int = 2, gzip_level: int = 6,
             folder: Path | None = None, log=print) -> dict[str, Any]:
    """Generate (or finish, or reuse) the corpus; returns the contents of ``_complete.json`` plus
    ``written`` (the file indices written by this call) and ``seconds`` (this call's wall time)."""
    params = params_for(docs, files, seed, gzip_level)
    files = params["files"]
    if not 1 <= files <= docs:
        raise ValueError(f"--files must be between 1 and --docs ({docs}), got {files}")
    folder = Path(folder) if folder else corpus_dir(docs, files, seed)
    started = time.perf_counter()
    stamp_path, params_path = folder / "_complete.json", folder / "_params.json"
    if params_path.exists() and json.loads(params_path.read_text()) != params:
        log(f"{folder}: made with other parameters; starting it over")
        shutil.rmtree(folder)
    (folder / PLANTED_DIR).mkdir(parents=True, exist_ok=True)
    params_path.write_text(json.dumps(params))
    for tmp in list(folder.glob("*.tmp")) + list((folder / PLANTED_DIR).glob("*.tmp")):
        tmp.unlink()  # a killed earlier run's half-written files
    pending = [i for i in range(files)
               if not (folder / file_name(i)).exists()
               or not (folder / PLANTED_DIR / file_name(i).replace(".warc.gz", ".json")).exists()]
    if pending:
        log(f"generating {len(pending)} of {files} WARC file(s) ({docs:,} records) into {folder} with "
            f"{min(jobs, len(pending))} process(es)")
        src = sources()  # loaded before forking, shared by the workers
        log(f"sources: {json.dumps(src.stats)}")
        done = 0
        if jobs <= 1 or len(pending) == 1:
            for i in pending:
                write_file(folder, params, i)
                done += 1
                log(f"  {done}/{len(pending)} files")
        else:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(min(jobs, len(pending))) as pool:
                for _ in pool.imap_unordered(_write_file_job, [(str(folder), params, i) for i in pending]):
                    done += 1
                    if done == len(pending) or done % max(1, len(pending) // 20) == 0:
                        log(f"  {done}/{len(pending)} files, {time.perf_counter() - started:.0f}s")
    gen_seconds = round(time.perf_counter() - started, 2)
    if stamp_path.exists() and not pending:
        stamp = json.loads(stamp_path.read_text())
        if stamp.get("params") == params:
            return {**stamp, "written": [], "seconds": gen_seconds}
    sidecars = [read_planted(folder, i) for i in range(files)]
    counts = {kind: sum(s["counts"][kind] for s in sidecars) for _, kind, _ in KINDS}
    near = [d["jaccard"] for s in sidecars for d in s["duplicates"] if d["jaccard"] is not None]
    stamp = {"params": params, "folder": str(folder), "files": [file_name(i) for i in range(files)],
             "records": sum(s["records"] for s in sidecars), "counts": counts,
             "shares": {k: round(v / docs, 4) for k, v in counts.items()},
             "warc_bytes": sum(s["warc_bytes"] for s in sidecars),
             "html_bytes": sum(s["html_bytes"] for s in sidecars),
             "text_chars": sum(s["text_chars"] for s in sidecars),
             "near_dup_jaccard": _quantiles(near),
             "near_dup_expected_lsh_recall_14x8": round(sum(1 - (1 - j ** 8) ** 14 for j in near) / len(near), 4)
             if near else None,
             "generated": {"seconds_last_call": gen_seconds, "files_written_last_call": len(pending), "jobs": jobs,
                           "machine": machine()}}
    tmp = stamp_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(stamp, indent=1))
    os.replace(tmp, stamp_path)
    return {**stamp, "written": pending, "seconds": gen_seconds}


def _quantiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    v = sorted(values)
    pick = lambda q: v[min(len(v) - 1, int(q * len(v)))]  # noqa: E731
    return {"min": v[0], "p10": pick(0.1), "median": pick(0.5), "p90": pick(0.9), "max": v[-1]}


# ------------------------------------------------------------------------------------------- check


def check(docs: int, seed: int = 0, files: int | None = None) -> dict[str, Any]:
    """Planted vs found duplicates on the generated main texts (no extraction): exact keys as
    exact_dedup makes them, near duplicates as MinHash LSH candidates (14 x 8 on word 5-grams)."""
    import numpy as np
    import pyarrow as pa

    from curation.dedup.lsh import band_keys
    from curation.dedup.signatures import MinHashSignatures
    from curation.dedup.text_key import TextNormalization, normalized_text, text_keys

    started = time.perf_counter()
    src = sources()
    texts, kinds, originals, jaccards = [], [], [], []
    for g in range(docs):
        doc = make_doc(seed, g, src)
        texts.append(doc.main_text())
        kinds.append(doc.kind)
        originals.append(-1 if doc.original is None else doc.original)
        jaccards.append(doc.jaccard)
    text = pa.array(texts, pa.string())
    keys = text_keys(normalized_text(text, TextNormalization())).to_pylist()
    first_by_key: dict[bytes, int] = {}
    exact = {"planted": 0, "planted_found": 0, "unplanted_duplicates": {}}
    for g, key in enumerate(keys):
        if not texts[g]:
            continue
        first = first_by_key.setdefault(key, g)
        if kinds[g] == "exact_dup":
            exact["planted"] += 1
            exact["planted_found"] += int(first == originals[g] or keys[originals[g]] == key)
        elif first != g:
            exact["unplanted_duplicates"][kinds[g]] = exact["unplanted_duplicates"].get(kinds[g], 0) + 1
    sigs, has = MinHashSignatures().of_batch(text)
    bands = band_keys(sigs, 14, 8)
    candidate_of_earlier = np.zeros(docs, bool)
    found_original = np.zeros(docs, bool)
    buckets: dict[tuple[int, int], list[int]] = {}
    for g in range(docs):
        if not has[g]:
            continue
        for b in range(14):
            buckets.setdefault((b, int(bands[g, b])), []).append(g)
    for members in buckets.values():
        if len(members) < 2:
            continue
        for g in members[1:]:
            candidate_of_earlier[g] = True
            if originals[g] >= 0 and originals[g] in members:
                found_original[g] = True
    near = {"planted": 0, "planted_found_with_original": 0, "unplanted_candidates": {}}
    for g in range(docs):
        if kinds[g] == "near_dup":
            near["planted"] += 1
            near["planted_found_with_original"] += int(found_original[g])
        elif kinds[g] != "exact_dup" and candidate_of_earlier[g]:
            near["unplanted_candidates"][kinds[g]] = near["unplanted_candidates"].get(kinds[g], 0) + 1
    counts = {kind: kinds.count(kind) for _, kind, _ in KINDS}
    return {"docs": docs, "seed": seed, "counts": counts, "exact": exact, "near_lsh_14x8": near,
            "note": "on the generated main texts (title + blocks), before extraction; multilingual copies of one "
                    "UDHR text and spam are expected to collide (langid and the quality filters remove them "
                    "before dedup)", "seconds": round(time.perf_counter() - started, 1)}


def vet_templates(limit: int | None = None) -> list[dict[str, Any]]:
    """Each template with a known 300-word article through trafilatura as ``extract`` runs it: the
    share of the article's words found and of extracted words that are not the article's."""
    import trafilatura

    src = sources()
    rng = random.Random(1)
    out = []
    for template in src.templates[:limit]:
        title, paragraphs = _article_text(rng, src)
        while sum(len(p.split()) for p in paragraphs) < 300:
            paragraphs.append(_stretch(rng, src))
        page = template.render(title, _paragraphs_html(title, paragraphs, rng))
        text = trafilatura.extract(page, favor_precision=True, include_comments=False, include_tables=True,
                                   deduplicate=False, fast=True) or ""
        want = re.findall(r"\w+", " ".join(paragraphs).lower())
        got = re.findall(r"\w+", text.lower())
        want_set = set(want)
        out.append({"template": template.name, "html_bytes": len(page.encode()),
                    "article_found": round(len(want_set & set(got)) / len(want_set), 3),
                    "extra_words": round(sum(w not in want_set for w in got) / max(1, len(got)), 3)})
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=None, help="default: ceil(docs / 2500)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--gzip-level", type=int, default=6, choices=range(1, 10))
    parser.add_argument("--out", default=None, help="folder (default bench-data/scale/<docs>)")
    parser.add_argument("--check", action="store_true", help="also measure unplanted exact/near duplicates")
    parser.add_argument("--vet-templates", action="store_true", help="only: how each template extracts")
    args = parser.parse_args(argv)
    if args.vet_templates:
        for row in vet_templates():
            print(json.dumps(row))
        return
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    result = generate(args.docs, args.files, args.seed, args.jobs, args.gzip_level,
                      Path(args.out) if args.out else None, log)
    result["records_per_s_this_call"] = (round(result["records"] * len(result["written"]) / result["params"]["files"]
                                               / result["seconds"], 1) if result["written"] else None)
    result["written"] = len(result["written"])
    if args.check:
        result["check"] = check(args.docs, args.seed, args.files)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
