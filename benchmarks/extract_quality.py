"""Main-text extraction: quality and speed of trafilatura alone, resiliparse alone and Gristmill's
`extract` op on 130 real pages with hand-checked main content (issue 17 §1).

    python -m benchmarks.extract_quality [--rounds 3]

The pages: data/extraction-dev (Mozilla Readability's test pages: news, blogs, wikis, documentation
in several languages and scripts; ``expected.html`` is each page's main content as its maintainers
checked it). Quality is bag-of-words F1 of the extracted text against the text of ``expected.html``:
lower-cased words (Unicode ``\\w+``) counted as a multiset, precision = shared / extracted, recall =
shared / expected. A page an engine returns nothing for scores 0.

Sides, all on one core in this process, each page handed over as the HTTP body bytes:

* ``trafilatura``: ``trafilatura.extract(body, **settings)`` with the op's settings (precision mode,
  no comments, tables kept, no fallback, no dedup cache), what FineWeb ran;
* ``resiliparse``: ``extract_plain_text(HTMLTree.parse(decoded), main_content=True, ...)`` with the
  op's `engine: resiliparse` settings (DCLM's extractor), after decoding the body with UTF-8
  (replacement on errors), as a bare script would;
* ``gristmill-<engine>``: the op's own per-page function (``curation.html_text.make_worker``: the
  charset chain, the binary check, title and language, then the engine) as the sandbox child runs
  it, for each engine; ``gristmill-auto`` is the default (resiliparse, and trafilatura too on pages
  where resiliparse keeps under half of the visible text). The JSON also gives how many pages kept
  trafilatura's text under ``auto`` and ``auto``'s mean F1 for other ``route_below`` values.

Speed: every side extracts all 130 pages per round, the sides interleaved round by round; docs/s is
the best round's. Output: JSON on stdout and in ``bench-data/extract-quality.json``, with the load
average before and after.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import statistics
import time
from collections import Counter

from benchmarks.common import BENCH_DATA, DATA, machine
from benchmarks.extract import TRAFILATURA_SETTINGS

WORD = re.compile(r"\w+")


def pages() -> list[tuple[str, bytes, str]]:
    """(name, source body, expected text) of every page with a hand-checked expectation."""
    import lxml.html

    out = []
    for folder in sorted((DATA / "extraction-dev" / "pages").iterdir()):
        expected = folder / "expected.html.gz"
        if not expected.exists():
            continue
        tree = lxml.html.fromstring(gzip.decompress(expected.read_bytes()).decode("utf-8"))
        out.append((folder.name, gzip.decompress((folder / "source.html.gz").read_bytes()),
                    tree.text_content()))
    return out


def f1(extracted: str | None, expected: str) -> float:
    got, want = Counter(WORD.findall((extracted or "").lower())), Counter(WORD.findall(expected.lower()))
    shared = sum((got & want).values())
    if not shared:
        return 0.0
    precision, recall = shared / sum(got.values()), shared / sum(want.values())
    return 2 * precision * recall / (precision + recall)


def sides() -> dict:
    """name → function of the body bytes returning the extracted text."""
    import trafilatura
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    def bare_resiliparse(body: bytes) -> str:
        return extract_plain_text(HTMLTree.parse(body.decode("utf-8", errors="replace")), main_content=True,
                                  alt_texts=False, links=False, form_fields=False, noscript=False,
                                  list_bullets=True, preserve_formatting=True)

    return {"trafilatura": lambda body: trafilatura.extract(body, **TRAFILATURA_SETTINGS),
            "resiliparse": bare_resiliparse,
            "gristmill-auto": op_side("auto"),
            "gristmill-trafilatura": op_side("trafilatura"),
            "gristmill-resiliparse": op_side("resiliparse")}


def op_worker(engine: str, route_below: float = 0.5):
    from curation.extract import ExtractConfig
    from curation.html_text import make_worker

    defaults = ExtractConfig(engine=engine, route_below=route_below)
    return make_worker({"engine": engine, "include_tables": defaults.include_tables, "fallback": defaults.fallback,
                        "route_below": defaults.route_below})


def op_side(engine: str):
    work = op_worker(engine)
    return lambda body: work(("html", body, None))[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    corpus = pages()
    funcs = sides()
    load_before = os.getloadavg()[0]
    scores: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {name: [] for name in funcs}
    for round_no in range(args.rounds):
        for name, fn in funcs.items():
            started = time.perf_counter()
            texts = [fn(body) for _, body, _ in corpus]
            seconds[name].append(time.perf_counter() - started)
            if round_no == 0:
                scores[name] = [f1(text, expected) for text, (_, _, expected) in zip(texts, corpus)]
    results = {"machine": machine(), "pages": len(corpus), "rounds": args.rounds,
               "load": [round(load_before, 2), round(os.getloadavg()[0], 2)], "sides": {}}
    auto = op_worker("auto")
    results["auto_kept_trafilatura"] = sum(auto(("html", body, None))[6] == "trafilatura" for _, body, _ in corpus)
    results["auto_route_below_sweep"] = {
        str(share): round(statistics.mean(f1(op_worker("auto", share)(("html", body, None))[0], expected)
                                          for _, body, expected in corpus), 4)
        for share in (0.3, 0.4, 0.5, 0.6, 0.7)}
    base = len(corpus) / min(seconds["trafilatura"])
    for name in funcs:
        docs_s = len(corpus) / min(seconds[name])
        results["sides"][name] = {
            "f1_mean": round(statistics.mean(scores[name]), 4), "f1_median": round(statistics.median(scores[name]), 4),
            "pages_f1_below_0.5": sum(s < 0.5 for s in scores[name]), "docs_per_s": round(docs_s, 1),
            "speed_vs_trafilatura": round(docs_s / base, 3),
            "seconds_per_round": [round(s, 3) for s in seconds[name]]}
    (BENCH_DATA / "extract-quality.json").parent.mkdir(parents=True, exist_ok=True)
    (BENCH_DATA / "extract-quality.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
