"""Peak memory of ``minhash_dedup`` as the corpus grows 1x -> 4x -> 16x: the driver (this process,
which only drives Ray Data and adds up per-task summaries) and the largest Ray worker.

    python -m benchmarks.dedup_memory [--base 2000] [--json out.json]

The corpus is synthesised from the shipped text (State of the Union + Shakespeare passages of 200
words) with controlled duplicates: a quarter of the documents are edited copies (0-2% word edits)
of another. A sampler thread reads every Ray worker's resident memory minus its shared pages (the
object store is shared memory and would otherwise be counted once per process) every 0.1 s; the
driver's is read the same way. Goal: the driver flat, a worker bounded by block size (Ray Data's
128 MiB target blocks), not by the corpus.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from benchmarks.common import machine, shipped_words
from tests.dedup_corpus import edit


def build(path: Path, docs: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    pool = shipped_words()
    texts, sources = [], []
    for i in range(docs):
        if i % 4 == 3:
            texts.append(edit(texts[rng.randrange(len(texts))], rng.choice([0.0, 0.005, 0.02]), rng, pool[:3000]))
        else:
            start = rng.randrange(len(pool) - 200)
            texts.append(" ".join(pool[start:start + 200]))
        sources.append(f"part-{i % 8}")
    table = pa.table({"doc_id": pa.array(range(docs), pa.int64()), "text": texts, "source": sources})
    pq.write_table(table, path, row_group_size=2000)


def private_rss(proc: psutil.Process) -> int:
    info = proc.memory_info()
    return info.rss - getattr(info, "shared", 0)


class Sampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.me = psutil.Process()
        self.driver = 0
        self.worker = 0
        self.stop = False

    def run(self):
        while not self.stop:
            self.driver = max(self.driver, private_rss(self.me))
            for child in self.me.children(recursive=True):
                try:
                    if "ray::" in " ".join(child.cmdline()[:1]) or "default_worker" in " ".join(child.cmdline()):
                        self.worker = max(self.worker, private_rss(child))
                except psutil.Error:
                    pass
            time.sleep(0.1)


def measure(ray, corpus: Path, root: Path) -> dict:
    from curation.operator import GlobalContext, get_op

    op_cls = get_op("minhash_dedup")
    op = op_cls(op_cls.Config())
    sampler = Sampler()
    sampler.start()
    start = time.perf_counter()
    ds = ray.data.read_parquet(str(corpus))
    out = op.apply(ds, GlobalContext(str(root / "work"), pafs.LocalFileSystem(), 2, run_root=str(root)))
    removed = 0
    for batch in out.select_columns(["reason"]).iter_batches(batch_format="pyarrow", batch_size=None):
        removed += batch.num_rows - batch.column("reason").null_count
    seconds = time.perf_counter() - start
    sampler.stop = True
    sampler.join()
    return {"seconds": round(seconds, 1), "removed": removed,
            "driver_peak_mib": round(sampler.driver / 2**20, 1), "worker_peak_mib": round(sampler.worker / 2**20, 1)}


def main() -> None:
    import ray

    parser = argparse.ArgumentParser()
    parser.add_argument("--base", type=int, default=2000)
    parser.add_argument("--json")
    args = parser.parse_args()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    results = {}
    with tempfile.TemporaryDirectory(prefix="dedup-mem-") as tmp_name:
        tmp = Path(tmp_name)
        for scale in (1, 4, 16):
            corpus = tmp / f"corpus-{scale}.parquet"
            build(corpus, args.base * scale)
            results[f"{scale}x"] = {"documents": args.base * scale, **measure(ray, corpus, tmp / f"run-{scale}")}
            print(scale, results[f"{scale}x"], flush=True)
    out = {"results": results, "machine": machine()}
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
