"""A small, deterministic website built from the shipped real text, to crawl on localhost.

    python -m curation.crawl.demo_site build OUT [--seed 0]
    python -m curation.crawl.demo_site serve OUT [--host 127.0.0.1] [--port 8000]

What it holds (``manifest.json`` lists every page with its ``kind`` and link ``depth`` from ``/``):

- ``index``: the home page and one index per section;
- ``article``: State of the Union excerpts (``/articles/``) and Moby-Dick chapters (``/books/``),
  wrapped in header, navigation, related-links and footer boilerplate;
- ``near_duplicate``: some of those articles again (``/mirror/``) with a few words changed, dropped or
  swapped and a different site template (``of`` names the original);
- ``language``: pages of Debian fortunes in 12 languages (``/intl/<lang>/``, ``<html lang>`` set);
- ``spam``: keyword stuffing, link farms (with links to other sites) and near-empty pages
  (``/deals/``);
- ``toxic``: forum threads of tweets labelled hate speech or offensive (Davidson et al.,
  ``/forum/``);
- ``private``: pages under ``/private/``, linked from the home page but disallowed by ``robots.txt``.

The home page also links to a page that does not exist (a 404) and to an outside site (out of scope).
Sources and licences: ``data/SOURCES.md``.
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import random
import re
import shutil
import threading
from collections import deque
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "data"
SITE_NAME = "The Gristmill Gazette"
SECTIONS = [("/articles/", "Addresses"), ("/books/", "Books"), ("/mirror/", "Syndicated"),
            ("/intl/", "International"), ("/deals/", "Deals"), ("/forum/", "Forum")]
LANGS = ["bg", "cs", "de", "en", "eo", "es", "ga", "it", "pl", "pt", "ru", "zh"]
ROBOTS = "User-agent: *\nDisallow: /private/\n"


# ------------------------------------------------------------------------------------------ text


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if s]


def _paragraphs(text: str, words: int, rng: random.Random) -> list[str]:
    """About ``words`` words of ``text`` in paragraphs of 3–6 sentences."""
    out, para, count = [], [], 0
    sentences = _sentences(text)
    for s in sentences:
        para.append(s)
        count += len(s.split())
        if len(para) >= rng.randint(3, 6):
            out.append(" ".join(para))
            para = []
        if count >= words:
            break
    if para:
        out.append(" ".join(para))
    return out


def _edit(paragraphs: list[str], rng: random.Random, rate: float = 0.02) -> list[str]:
    """A near-duplicate: about ``rate`` of the words replaced, dropped or swapped with a neighbour."""
    out = []
    for p in paragraphs:
        words = p.split()
        i = 0
        while i < len(words):
            if rng.random() < rate:
                op = rng.choice(("replace", "drop", "swap"))
                if op == "replace":
                    words[i] = rng.choice(words)
                elif op == "drop" and len(words) > 1:
                    del words[i]
                elif op == "swap" and i + 1 < len(words):
                    words[i], words[i + 1] = words[i + 1], words[i]
            i += 1
        out.append(" ".join(words))
    return out


# ------------------------------------------------------------------------------------- templates


def _nav() -> str:
    return "".join(f'<li><a href="{path}">{name}</a></li>' for path, name in SECTIONS)


def _page(title: str, body: str, lang: str = "en", template: str = "gazette", related: list[tuple[str, str]] = ()) -> str:
    t = html.escape(title)
    rel = "".join(f'<li><a href="{p}">{html.escape(n)}</a></li>' for p, n in related)
    if template == "gazette":
        return (f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8"><title>{t} | {SITE_NAME}</title></head>\n'
                f'<body><header><a href="/">{SITE_NAME}</a> <form action="/search"><input name="q"></form></header>\n'
                f'<nav><ul>{_nav()}</ul></nav>\n<main><article><h1>{t}</h1>\n{body}\n</article>\n'
                + (f'<aside><h2>Related</h2><ul>{rel}</ul></aside>\n' if rel else "")
                + f'</main>\n<footer><p>&copy; {SITE_NAME}. All rights reserved. <a href="/">Home</a> · '
                  f'Subscribe to our newsletter · Cookie settings</p></footer></body></html>\n')
    # the syndication template of near-duplicates: different chrome around the same article
    return (f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8"><title>{t} - Daily Syndicate</title></head>\n'
            f'<body><div class="top">Daily Syndicate — news you can reuse · <a href="/mirror/">All stories</a></div>\n'
            f'<div class="content"><h2>{t}</h2>\n{body}\n</div>\n<div class="sidebar"><h3>Trending</h3><ul>{rel}</ul>'
            f'<p>Advertisement</p></div>\n<div class="bottom">Syndicated content. Republished with permission. '
            f'<a href="../">Front page</a></div></body></html>\n')


def _paras_html(paragraphs: list[str]) -> str:
    return "\n".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)


def _index_body(links: list[tuple[str, str]], intro: str) -> str:
    items = "".join(f'<li><a href="{p}">{html.escape(n)}</a></li>' for p, n in links)
    return f"<p>{html.escape(intro)}</p><ul>{items}</ul>"


# ------------------------------------------------------------------------------------------ build


def build(out: str | Path, seed: int = 0) -> dict:
    """Write the site into ``out`` (replacing it); returns the manifest (also in manifest.json)."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rng = random.Random(seed)
    pages: dict[str, dict] = {}  # url path -> {kind, title, html, links, ...}

    def add(path: str, kind: str, title: str, page_html: str, **meta) -> None:
        pages[path] = {"kind": kind, "title": title, "html": page_html, **meta}

    # articles: State of the Union excerpts
    sotu = sorted((DATA / "text" / "sotu").glob("*.txt"))
    chosen = sorted(rng.sample(sotu, 20))
    articles = []
    for f in chosen:
        year, *name, _party = f.stem.split("_")
        path = f"/articles/{year}-{name[-1]}.html"
        title = f"State of the Union, {year}: {' '.join(n.capitalize() for n in name)}"
        articles.append((path, title, _paragraphs(f.read_text(encoding="utf-8"), rng.randint(350, 800), rng)))
    # books: Moby-Dick chapters
    chapters = sorted(rng.sample(range(1, 136), 12))
    books = []
    for n in chapters:
        text = (DATA / "text" / "moby-dick" / f"chapter_{n}.txt").read_text(encoding="utf-8")
        head, _, rest = text.partition("\n")
        paras = [" ".join(p.split()) for p in rest.split("\n\n") if p.strip()]
        books.append((f"/books/moby-dick/chapter-{n}.html", f"Moby-Dick, {head.strip()}", paras))
    for group in (articles, books):
        for i, (path, title, paras) in enumerate(group):
            related = [(group[(i + k) % len(group)][0], group[(i + k) % len(group)][1]) for k in (1, 2)]
            add(path, "article", title, _page(title, _paras_html(paras), related=related))
    add("/articles/", "index", "Addresses", _page("Addresses", _index_body(
        [(p, t) for p, t, _ in articles], "State of the Union addresses, 1790–2018.")))
    add("/books/", "index", "Books", _page("Books", _index_body(
        [(p, t) for p, t, _ in books], "Chapters of Moby-Dick; or, The Whale, by Herman Melville.")))

    # near-duplicates: the same text, a few words edited, another template
    mirrors = []
    for path, title, paras in rng.sample(articles, 8) + rng.sample(books, 4):
        mpath = "/mirror/" + path.strip("/").replace("/", "-")
        mirrors.append((mpath, title))
        related = [(p, t) for p, t, _ in rng.sample(articles, 3)]
        add(mpath, "near_duplicate", title, _page(title, _paras_html(_edit(paras, rng)), template="syndicate",
                                                  related=related), of=path)
    add("/mirror/", "index", "Syndicated", _page("Syndicated stories", _index_body(mirrors, "Stories from our partners.")))

    # languages: fortunes
    fortunes: dict[str, list[str]] = {lang: [] for lang in LANGS}
    with open(DATA / "langid" / "fortunes-12lang.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["lang"] in fortunes:
                fortunes[row["lang"]].append(row["text"])
    intl = []
    for lang in LANGS:
        picked = rng.sample(fortunes[lang], 16)
        for k in range(2):
            path = f"/intl/{lang}/{k + 1}.html"
            title = f"Sayings ({lang}) {k + 1}"
            body = "\n".join(f"<blockquote>{html.escape(t).replace(chr(10), '<br>')}</blockquote>"
                             for t in picked[k * 8:(k + 1) * 8])
            intl.append((path, title))
            add(path, "language", title, _page(title, body, lang=lang), lang=lang)
    add("/intl/", "index", "International", _page("International", _index_body(intl, "Sayings from around the world.")))

    # spam: keyword stuffing, link farms, near-empty pages
    deals = []
    stuffing = ["cheap watches", "best price", "buy now", "free shipping", "replica watches", "discount",
                "limited offer", "casino bonus", "win big", "lowest price guaranteed"]
    for k in range(4):
        words = []
        for _ in range(rng.randint(120, 250)):
            words.append(rng.choice(stuffing))
        body = f"<p>{html.escape(' '.join(words))}</p><p><b>BUY NOW!!! $$$ CLICK HERE $$$</b></p>"
        path = f"/deals/offer-{k + 1}.html"
        deals.append((path, f"Cheap watches best price {k + 1}"))
        add(path, "spam", deals[-1][1], _page(deals[-1][1], body))
    for k in range(3):
        links = [(f"http://casino-bonus-{j}.example/win?ref={k}", f"best casino bonus {j}") for j in range(25)]
        links += [(f"/deals/offer-{j % 4 + 1}.html", f"cheap deal {j}") for j in range(15)]
        rng.shuffle(links)
        body = "<ul>" + "".join(f'<li><a href="{html.escape(p)}">{n}</a></li>' for p, n in links) + "</ul>"
        path = f"/deals/links-{k + 1}.html"
        deals.append((path, f"Top links {k + 1}"))
        add(path, "spam", deals[-1][1], _page(deals[-1][1], body))
    for k, text in enumerate(["Click here!", "Win now.", "Under construction"]):
        path = f"/deals/short-{k + 1}.html"
        deals.append((path, text))
        add(path, "spam", text, f"<html><head><title>{text}</title></head><body><p>{text}</p></body></html>\n")
    add("/deals/", "index", "Deals", _page("Deals", _index_body(deals, "Today's offers.")))

    # toxic: forum threads of labelled tweets (0 = hate speech, 1 = offensive language)
    with open(DATA / "toxicity" / "davidson-labeled_data.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    by_class = {c: [html.unescape(r["tweet"]) for r in rows if r["class"] == c] for c in ("0", "1")}
    threads = []
    for k in range(6):
        label = "0" if k < 3 else "1"
        posts = rng.sample(by_class[label], 8)
        body = "\n".join(f'<div class="post"><span class="user">user{rng.randint(100, 999)}</span> '
                         f"<p>{html.escape(p)}</p></div>" for p in posts)
        path = f"/forum/thread-{k + 1}.html"
        title = f"Forum thread {k + 1}"
        threads.append((path, title))
        add(path, "toxic", title, _page(title, body), label="hate_speech" if label == "0" else "offensive_language")
    add("/forum/", "index", "Forum", _page("Forum", _index_body(threads, "Community discussions.")))

    # private: linked from the home page, disallowed by robots.txt
    private = []
    for k, (path, title, paras) in enumerate(rng.sample(articles, 3)):
        ppath = f"/private/draft-{k + 1}.html"
        private.append((ppath, f"Draft: {title}"))
        add(ppath, "private", private[-1][1], _page(private[-1][1], _paras_html(paras[:2])))
    add("/private/", "private", "Drafts", _page("Drafts", _index_body(private, "Unpublished drafts.")))

    home_links = [(p, n) for p, n in SECTIONS] + [("/private/", "Drafts"), ("/old/archive.html", "Archive (moved)"),
                                                  ("https://www.example.org/partner", "Our partner")]
    add("/", "index", SITE_NAME, _page(SITE_NAME, _index_body(home_links, "Welcome to the Gazette.")))

    # write files; link depths from / by breadth-first search over the pages' own links
    for path, page in pages.items():
        target = out / (path.lstrip("/") + "index.html" if path.endswith("/") else path.lstrip("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(page["html"], encoding="utf-8")
    (out / "robots.txt").write_text(ROBOTS, encoding="utf-8")
    depth = _depths(pages)
    manifest = {
        "seed": seed,
        "robots_disallow": ["/private/"],
        "missing": ["/old/archive.html"],
        "pages": [{"path": p, "kind": v["kind"], "title": v["title"], "depth": depth.get(p),
                   **{k: v[k] for k in ("of", "lang", "label") if k in v}} for p, v in sorted(pages.items())],
    }
    manifest["kinds"] = {}
    for page in manifest["pages"]:
        manifest["kinds"].setdefault(page["kind"], []).append(page["path"])
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    return manifest


def _depths(pages: dict[str, dict]) -> dict[str, int]:
    from urllib.parse import urljoin, urlsplit

    depth = {"/": 0}
    queue = deque(["/"])
    while queue:
        path = queue.popleft()
        for href in re.findall(r'href="([^"]+)"', pages[path]["html"]):
            parts = urlsplit(urljoin("http://site" + path, html.unescape(href)))
            if parts.netloc != "site":
                continue
            target = parts.path
            if target.endswith("/index.html"):
                target = target[: -len("index.html")]
            if target in pages and target not in depth:
                depth[target] = depth[path] + 1
                queue.append(target)
    return depth


# ----------------------------------------------------------------------------------------- serve


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


def serve(folder: str | Path, host: str = "127.0.0.1", port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """Serve ``folder`` from a background thread; returns the server (call ``shutdown()`` and
    ``server_close()`` when done) and its base URL (no trailing slash)."""
    handler = partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="demo-site", daemon=True)
    thread.start()
    h, p = server.server_address[:2]
    return server, f"http://{h if ':' not in h else f'[{h}]'}:{p}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m curation.crawl.demo_site", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write the site into a folder")
    b.add_argument("out")
    b.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("serve", help="serve a built site until interrupted")
    s.add_argument("folder")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    if args.command == "build":
        manifest = build(args.out, args.seed)
        counts = {k: len(v) for k, v in manifest["kinds"].items()}
        print(f"built {len(manifest['pages'])} pages into {args.out}: {counts}")
    else:
        server, url = serve(args.folder, args.host, args.port)
        print(f"serving {args.folder} at {url}/ (Ctrl-C to stop)")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.shutdown()
            server.server_close()


if __name__ == "__main__":
    main()
