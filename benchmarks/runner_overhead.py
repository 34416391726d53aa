"""Runner overhead: docs/s of the fused Ray Data pass (normalize + length_filter) over 200k JSONL
documents, against a plain single-process loop — pyarrow read → the same op functions → Parquet
write — over the same files, in one run. Ray start-up is reported separately.

    python -m benchmarks.runner_overhead [--docs 200000] [--files 16]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from benchmarks.common import jsonl_corpus, machine, timed
from curation.length_filter import LengthFilter
from curation.normalize import Normalize

STEPS = [("normalize", {}), ("length_filter", {"min_words": 10, "max_chars": 100_000})]


def plain_loop(paths: list[Path], out: Path) -> int:
    """The baseline a user would write by hand: no Ray, one process."""
    ops = [Normalize(Normalize.Config()), LengthFilter(LengthFilter.Config(**STEPS[1][1]))]
    for op in ops:
        op.setup()
    out.mkdir(parents=True)
    docs = 0
    for i, path in enumerate(paths):
        table = pajson.read_json(path)
        docs += table.num_rows
        kept_parts, rejected_parts = [], []
        for batch in table.to_batches(max_chunksize=4096):
            alive = pa.Table.from_batches([batch])
            for op in ops:
                decision = op.process(alive)
                alive = decision.table
                if decision.keep is not None:
                    keep = pc.fill_null(decision.keep, True)
                    rejected_parts.append(alive.filter(pc.invert(keep)))
                    alive = alive.filter(keep)
            kept_parts.append(alive)
        pq.write_table(pa.concat_tables(kept_parts, promote_options="permissive"), out / f"kept-{i}.parquet", compression="zstd")
        pq.write_table(pa.concat_tables(rejected_parts, promote_options="permissive"), out / f"rejected-{i}.parquet", compression="zstd")
    return docs


def gristmill_pass(paths: list[Path], out: Path, num_cpus: float) -> dict:
    from pipelines.rundir import RunDir
    from pipelines.runner import CurateRun, Reporter
    from pipelines.specs import validate_spec
    from pipelines.yaml_source import SourceMap

    spec = validate_spec({"kind": "curate", "name": "bench", "input": [{"format": "jsonl", "paths": [str(p) for p in paths]}],
                          "steps": [{name: cfg} for name, cfg in STEPS]}, SourceMap("<bench>"))
    manifest = CurateRun(spec, RunDir.open(str(out)), Reporter(), num_cpus=num_cpus).execute()
    return manifest.data["totals"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--cpus", type=int, default=None, help="CPUs for the local Ray (default: all)")
    args = parser.parse_args()
    paths = jsonl_corpus("runner_overhead", args.docs, args.files)
    results: dict = {"benchmark": "runner_overhead", "docs": args.docs, "files": args.files, "machine": machine()}
    work = Path(tempfile.mkdtemp(prefix="gristmill-bench-"))
    try:
        with timed(results, "plain_seconds"):
            plain_docs = plain_loop(paths, work / "plain")
        import ray

        from pipelines.ray_session import connect

        with timed(results, "ray_start_seconds"):
            session = connect(num_cpus=args.cpus)
        with timed(results, "gristmill_seconds"):
            totals = gristmill_pass(paths, work / "gristmill", session.num_cpus)
        session.close()
        assert totals["read"] == plain_docs == args.docs, (totals, plain_docs)
        plain_kept = pq.ParquetDataset([str(p) for p in (work / "plain").glob("kept-*")]).read(columns=["text"]).num_rows
        results.update(
            ray_cpus=session.num_cpus,
            plain_docs_per_s=round(plain_docs / results["plain_seconds"]),
            gristmill_docs_per_s=round(totals["read"] / results["gristmill_seconds"]),
            kept_plain=plain_kept, kept_gristmill=totals["kept"],
        )
        results["ratio_gristmill_vs_plain"] = round(results["gristmill_docs_per_s"] / results["plain_docs_per_s"], 3)
        results["ratio_including_ray_start"] = round(
            plain_docs / (results["gristmill_seconds"] + results["ray_start_seconds"]) / results["plain_docs_per_s"], 3)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
