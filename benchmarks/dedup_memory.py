"""Peak memory of ``minhash_dedup`` as the corpus grows 1x -> 4x -> 16x: the driver (the process
that drives Ray Data and adds up per-task summaries) and the largest Ray worker.

    python -m benchmarks.dedup_memory [--base 2000] [--json out.json]

Each size runs in a fresh process with its own local Ray (2 CPUs), so the driver's figure is that
size's alone (one process running the sizes in turn would report the largest peak so far: Ray Data
keeps per-execution state and Python rarely returns freed memory to the OS).

The corpus is synthesised from the shipped text with controlled duplicates: three quarters of the
documents are distinct 200-word documents of shipped text (``tests.dedup_corpus.distinct_documents``:
none a near duplicate of another, at any size), a quarter are edited copies (0-2% word edits) of
one of them. The corpus is written as Parquet files of 4,000 documents, so 16x the corpus is 16x
the files, as a growing crawl would be. A sampler thread reads every Ray worker's resident memory
minus its shared pages (the object store is shared memory and would otherwise be counted once per
process) every 0.1 s; the driver's is read the same way. Goal: the driver flat, a worker bounded by
block size (Ray Data's 128 MiB target blocks), not by the corpus.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from benchmarks.common import REPO, machine
from tests.dedup_corpus import distinct_documents, edit, shipped_word_pool


FILE_DOCS = 4000


def build(folder: Path, docs: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    pool = shipped_word_pool()
    distinct = iter(distinct_documents(docs - docs // 4, 200, seed, pool))
    texts, sources = [], []
    for i in range(docs):
        if i % 4 == 3:
            texts.append(edit(texts[rng.randrange(len(texts))], rng.choice([0.0, 0.005, 0.02]), rng, pool[:3000]))
        else:
            texts.append(next(distinct))
        sources.append(f"part-{i % 8}")
    folder.mkdir(parents=True, exist_ok=True)
    for k, first in enumerate(range(0, docs, FILE_DOCS)):
        rows = range(first, min(docs, first + FILE_DOCS))
        table = pa.table({"doc_id": pa.array([k << 32 | (i - first) for i in rows], pa.int64()),
                          "text": texts[first:rows.stop], "source": sources[first:rows.stop]})
        pq.write_table(table, folder / f"part-{k:05d}.parquet", row_group_size=2000)


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


def measure(corpus: Path, root: Path) -> dict:
    """One size, in this (fresh) process: start Ray, run the op, drive its output to the end."""
    import ray

    from curation.operator import GlobalContext, get_op

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    baseline = private_rss(psutil.Process())
    op_cls = get_op("minhash_dedup")
    op = op_cls(op_cls.Config())
    sampler = Sampler()
    sampler.start()
    start = time.perf_counter()
    ds = ray.data.read_parquet(str(corpus))
    out = op.apply(ds, GlobalContext(str(root / "work"), pafs.LocalFileSystem(), 2, run_root=str(root)))
    removed = documents = 0
    for batch in out.select_columns(["reason"]).iter_batches(batch_format="pyarrow", batch_size=None):
        removed += batch.num_rows - batch.column("reason").null_count
        documents += batch.num_rows
    seconds = time.perf_counter() - start
    sampler.stop = True
    sampler.join()
    ray.shutdown()
    return {"documents": documents, "files": len(list(corpus.glob("*.parquet"))), "seconds": round(seconds, 1),
            "removed": removed, "driver_after_ray_init_mib": round(baseline / 2**20, 1),
            "driver_peak_mib": round(sampler.driver / 2**20, 1), "worker_peak_mib": round(sampler.worker / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", type=int, default=2000)
    parser.add_argument("--json")
    parser.add_argument("--one", nargs=2, metavar=("CORPUS", "ROOT"), help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(measure(Path(args.one[0]), Path(args.one[1]))), flush=True)
        return
    results = {}
    with tempfile.TemporaryDirectory(prefix="dedup-mem-") as tmp_name:
        tmp = Path(tmp_name)
        for scale in (1, 4, 16):
            corpus = tmp / f"corpus-{scale}"
            build(corpus, args.base * scale)
            load = round(os.getloadavg()[0], 1)
            proc = subprocess.run([sys.executable, "-m", "benchmarks.dedup_memory", "--one", str(corpus), str(tmp / f"run-{scale}")],
                                  capture_output=True, text=True, cwd=REPO)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode or not lines:
                raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
            results[f"{scale}x"] = {**json.loads(lines[0][7:]), "load_average_1min": load}
            print(scale, results[f"{scale}x"], flush=True)
    out = {"results": results, "machine": machine()}
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
