"""Throughput of the filter chain langid -> gopher_quality -> gopher_repetition -> c4_quality ->
fineweb_quality, Gristmill against datatrove 0.10.1's same five filters (``LanguageFilter`` keeping
``en`` at 0.65, both sides on the same lid.176 model file), on the same documents, one run each, one
process each (docs/s on one core).

    python -m benchmarks.quality_speed [--limit N] [--batch-rows 1024]

Our side runs the ops the way the runner's fused row-wise pass does (``pipelines.row_ops.apply_row_ops``
on Arrow batches: each op sees only the rows still alive). datatrove's side runs in its own virtual
environment (see ``benchmarks.quality_parity``) and calls each filter's ``filter()`` per document,
stopping at the first filter that drops it, exactly what its pipeline does minus stats and writers.
Reading the corpus is not timed on either side; both warm up first (spaCy loads lazily, our tokenizer
builds its rules once). The corpus is ``benchmarks.quality_parity.build_corpus``. c4_badwords is not part of this chain.
datatrove's ``LanguageFilter`` asks fastText for all 176 labels per document (``k=-1``, its default)
where ours asks for the top one: that is how each is shipped, and part of what is measured.
"""

from __future__ import annotations

import argparse
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc

from benchmarks.common import machine
from benchmarks.quality_parity import build_corpus, run_datatrove

CHAIN = ("langid", "gopher_quality", "gopher_repetition", "c4_quality", "fineweb_quality")


def run_ours(docs: list[dict], batch_rows: int) -> dict:
    from curation.operator import REJECTED_BY, get_op
    from curation.operator import load_builtin_ops
    from pipelines.row_ops import apply_row_ops

    load_builtin_ops()
    configs = {"langid": {"keep": ["en"], "min_score": 0.65}}
    ops = []
    for name in CHAIN:
        cls = get_op(name)
        op = cls(cls.Config(**configs.get(name, {})), step_label=name)
        op.setup()
        ops.append(op)
    warm = pa.table({"text": ["Warm up the tokenizer. It loads once.\n" * 10],
                     REJECTED_BY: pa.nulls(1, pa.string())})
    apply_row_ops(warm, ops)
    table = pa.table({"text": pa.array([d["text"] for d in docs], pa.string()),
                      REJECTED_BY: pa.nulls(len(docs), pa.string())})
    batches = [table.slice(i, batch_rows) for i in range(0, table.num_rows, batch_rows)]
    kept = 0
    start, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        out = apply_row_ops(batch, ops)
        kept += pc.sum(pc.is_null(out.column(REJECTED_BY)).cast(pa.int64())).as_py() or 0
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
            "docs": len(docs), "kept": kept}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, help="use only the first N documents")
    parser.add_argument("--batch-rows", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    docs = build_corpus(args.seed)
    if args.limit:
        docs = docs[:args.limit]
    chars = sum(len(d["text"]) for d in docs)
    print(f"chain: {' -> '.join(CHAIN)}")
    print(f"corpus: {len(docs)} documents, {chars / 1e6:.1f} M characters; {machine()}")
    theirs = run_datatrove(docs, "chain")
    ours = run_ours(docs, args.batch_rows)
    print(f"\n{'':<22}{'seconds':>9}{'cpu s':>9}{'docs/s/core':>13}{'MB/s/core':>11}{'kept':>7}")
    for label, r in (("datatrove 0.10.1", theirs), ("gristmill", ours)):
        print(f"{label:<22}{r['seconds']:>9.2f}{r['cpu_seconds']:>9.2f}{r['docs'] / r['cpu_seconds']:>13.0f}"
              f"{chars / 1e6 / r['cpu_seconds']:>11.2f}{r['kept']:>7}")
    ratio = theirs["cpu_seconds"] / ours["cpu_seconds"]
    print(f"\ngristmill / datatrove throughput: {ratio:.2f}x (by CPU time; wall-clock {theirs['seconds'] / ours['seconds']:.2f}x)")
    if ours["kept"] != theirs["kept"]:
        print(f"note: kept counts differ ({ours['kept']} vs {theirs['kept']}); see benchmarks.quality_parity")


if __name__ == "__main__":
    sys.exit(main())
