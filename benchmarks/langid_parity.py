"""`langid` against raw fastText lid.176 on the shipped labelled fortunes (12 languages).

Reports, as JSON: the parity rate (same label and bit-identical score as a plain
``model.predict(text.replace("\\n", " "), k=1)`` per document), top-1 accuracy per language against
the file's labels (and the share at or above the default ``min_score``), and docs/s of the op
(batches of ``--batch`` rows through ``LangId.process``) against the raw per-document predict loop,
best of ``--repeat`` timings each, measured in the same process.

    python -m benchmarks.langid_parity [--batch 1024] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import pyarrow as pa

from benchmarks.common import DATA, machine
from curation.langid import LangId, LangIdConfig, load_lid176

FORTUNES = DATA / "langid" / "fortunes-12lang.jsonl"


def raw_predict(model, texts: list[str]) -> list[tuple[str, float]]:
    out = []
    for text in texts:
        labels, probs = model.predict(text.replace("\n", " "), k=1)
        out.append((labels[0].removeprefix("__label__"), float(probs[0])))
    return out


def op_predict(op: LangId, table: pa.Table, batch: int) -> tuple[list[str], list[float]]:
    langs, scores = [], []
    for start in range(0, table.num_rows, batch):
        out = op.process(table.slice(start, batch)).table
        langs += out.column("langid.lang").to_pylist()
        scores += out.column("langid.score").to_pylist()
    return langs, scores


def best_of(repeat: int, fn) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    rows = [json.loads(line) for line in FORTUNES.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [r["text"] for r in rows]
    gold = [r["lang"] for r in rows]
    table = pa.table({"text": pa.array(texts, pa.string())})

    model = load_lid176()
    op = LangId(LangIdConfig())
    op.setup()

    raw = raw_predict(model, texts)
    langs, scores = op_predict(op, table, args.batch)
    # The op renames three lid.176 labels (als, bh, sh); compare on the op's codes.
    from curation.langid import LABEL_TO_CODE

    raw_codes = [LABEL_TO_CODE.get(label, label) for label, _ in raw]
    same_label = sum(a == b for a, b in zip(langs, raw_codes))
    same_both = sum(a == b and s == float(pa.scalar(p, pa.float32()).as_py())
                    for a, b, s, (_, p) in zip(langs, raw_codes, scores, raw))

    per_lang: dict[str, dict[str, float]] = defaultdict(lambda: {"docs": 0, "correct": 0, "confident": 0})
    for g, lang, score in zip(gold, langs, scores):
        stats = per_lang[g]
        stats["docs"] += 1
        stats["correct"] += lang == g
        stats["confident"] += lang == g and score >= LangIdConfig().min_score
    accuracy = {g: {"docs": s["docs"], "accuracy": round(s["correct"] / s["docs"], 4),
                    "correct_and_score_ge_0.65": round(s["confident"] / s["docs"], 4)}
                for g, s in sorted(per_lang.items())}
    overall = sum(s["correct"] for s in per_lang.values()) / len(rows)

    op_s = best_of(args.repeat, lambda: op_predict(op, table, args.batch))
    raw_s = best_of(args.repeat, lambda: raw_predict(model, texts))
    result = {
        "benchmark": "langid_parity",
        "data": str(FORTUNES.relative_to(DATA.parent)),
        "docs": len(rows),
        "parity": {"label": round(same_label / len(rows), 6), "label_and_score": round(same_both / len(rows), 6),
                   "mismatches": len(rows) - same_both},
        "accuracy": {"overall": round(overall, 4), "per_language": accuracy},
        "speed": {"op_docs_per_s": round(len(rows) / op_s), "raw_fasttext_loop_docs_per_s": round(len(rows) / raw_s),
                  "op_over_raw": round(raw_s / op_s, 2), "batch": args.batch, "best_of": args.repeat},
        "machine": machine(),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
