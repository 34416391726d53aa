"""What each row op holds per row and per batch: peak memory over its input, measured.

    python -m benchmarks.op_memory [--mib 16] [--ops normalize,langid,...] [--json out.json]

For every row op, in a fresh process each (so one op's allocations cannot hide another's): build
the input, note the peak resident set (VmHWM), run ``setup()`` then ``process()`` once, and report
what the peak grew by, divided by the input's text size. Two inputs:

* ``block``: one block as the readers cut them, ~``--mib`` MiB of real documents (shipped State of
  the Union, Shakespeare and Moby-Dick text cut into 2-40 KB documents);
* ``row``: one document of ``--mib`` MiB (the same text, concatenated), the worst case per row.

``extract`` gets the same text as HTML paragraphs in ``content``. The multiplier times the input
caps (reader ``max_bytes``, a block's BATCH_BYTES) is the bound stated in the spec reference's
"Memory" section; the model each op loads once per worker (lid.176, the toxicity model) is counted
in ``setup_mib`` apart. Numbers are MiB of resident memory; single run per op and input.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import time

from benchmarks.common import DATA, machine

SKIP = {"quality_classifier": "needs a trained model file", "format_chat": "reads chat messages, not text",
        "decontaminate": "its state is the eval items' n-gram hashes (2.4 MB for the shipped tasks), not measured here"}


def _peak_mib() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _texts(mib: int, whole: bool) -> list[str]:
    pool = []
    for path in sorted((DATA / "text").rglob("*.txt")):
        pool.append(path.read_text(encoding="utf-8"))
    text = "\n\n".join(pool)
    target = mib << 20
    big = (text * (target // len(text) + 1))[:target]
    if whole:
        return [big]
    rng = random.Random(0)
    docs, pos = [], 0
    while pos < len(big):
        n = rng.randint(2_000, 40_000)
        docs.append(big[pos:pos + n])
        pos += n
    return docs


def _measure(op_name: str, mib: int, whole: bool) -> dict:
    import pyarrow as pa

    from curation.operator import get_op

    texts = _texts(mib, whole)
    columns = {"text": pa.array(texts, pa.string())}
    if op_name == "extract":
        html = ["<html><body>" + "".join(f"<p>{p}</p>" for p in t.split("\n\n")) + "</body></html>" for t in texts]
        columns = {"content": pa.array([h.encode() for h in html], pa.binary()),
                   "content_type": pa.array(["text/html"] * len(html)), "text": pa.nulls(len(html), pa.string())}
    table = pa.table(columns)
    del texts, columns
    input_mib = sum(len(t.encode()) for t in table.column("text").to_pylist() if t) / (1 << 20) if op_name != "extract" \
        else sum(len(b) for b in table.column("content").to_pylist()) / (1 << 20)
    cls = get_op(op_name)
    config = {"max_bytes": 64 << 20} if op_name == "extract" else {}
    op = cls(cls.Config(**config))
    before_setup = _peak_mib()
    op.setup()
    before = _peak_mib()
    start = time.perf_counter()
    decision = op.process(table)
    seconds = time.perf_counter() - start
    after = _peak_mib()
    kept = None if decision.keep is None else sum(decision.keep.to_pylist())
    op.teardown()
    return {"op": op_name, "input": "row" if whole else "block", "rows": table.num_rows,
            "input_mib": round(input_mib, 1), "setup_mib": round(before - before_setup, 1),
            "peak_growth_mib": round(after - before, 1), "per_input_mib": round((after - before) / input_mib, 2),
            "seconds": round(seconds, 2), "kept": kept}


def _child(conn, op_name: str, mib: int, whole: bool) -> None:
    try:
        conn.send(_measure(op_name, mib, whole))
    except Exception as exc:  # reported in the table, not fatal for the other ops
        conn.send({"op": op_name, "input": "row" if whole else "block", "error": f"{type(exc).__name__}: {exc}"})


def measure(op_name: str, mib: int, whole: bool) -> dict:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, op_name, mib, whole))
    proc.start()
    result = parent.recv() if parent.poll(1800) else {"op": op_name, "error": "timed out"}
    proc.join(30)
    return result


def main(argv: list[str] | None = None) -> int:
    from curation.operator import registered_ops

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=16)
    parser.add_argument("--ops", default="")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    ops = [n for n, op in registered_ops().items() if getattr(op, "kind", "row") == "row"]
    if args.ops:
        ops = [o for o in ops if o in args.ops.split(",")]
    results = {"machine": machine(), "load_start": os.getloadavg(), "mib": args.mib, "ops": []}
    for name in ops:
        if name in SKIP:
            results["ops"].append({"op": name, "skipped": SKIP[name]})
            continue
        for whole in (False, True):
            row = measure(name, args.mib, whole)
            print(json.dumps(row), flush=True)
            results["ops"].append(row)
    results["load_end"] = os.getloadavg()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
