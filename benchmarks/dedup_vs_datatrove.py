"""End-to-end near-duplicate removal: Gristmill's ``minhash_dedup`` (the ``gristmill`` command, a
local Ray) against datatrove 0.10.1's four-stage MinHash (signatures, buckets, cluster, filter,
``LocalPipelineExecutor``), same corpus, same parameters (word 5-grams, 14 bands x 8 rows, 64-bit
hashes), same machine, one run each, side by side.

    python -m benchmarks.dedup_vs_datatrove [--originals 6000 [24000 ...]] [--files 4] [--verify] [--json out.json]

datatrove is never a dependency: it runs in ``.venv-datatrove`` (``make datatrove-env``; see
``benchmarks/peer_envs.py``).

The corpus: originals of 250 words of shipped text (State of the Union, Shakespeare, Moby-Dick)
that are not near duplicates of each other at any size (``tests.dedup_corpus.distinct_documents``),
and for a third of them a copy with word insertions/deletions/substitutions at known rates. Every
copy's exact 5-gram Jaccard to its original is computed, so both tools are scored the same way:
recall = removed copies / copies with J >= 0.85 (one of each pair removed), false positives =
removed documents among copies with J < 0.5 and originals. Wall-clock times include each tool's
start-up (Ray's, and datatrove's spaCy tokenizer); Gristmill's stage time alone is reported too.
Both use the machine's cores (datatrove: ``workers`` = CPUs). ``--verify`` adds a third run,
Gristmill with ``verify: true``: its time, the candidate edges whose exact Jaccard was computed, the
edges dropped (LSH false positives kept), and the same recall / false-positive scores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks.common import REPO, machine
from benchmarks.peer_envs import DATATROVE_HOW, DATATROVE_PYTHON
from tests.dedup_corpus import distinct_documents, edit, jaccard, shipped_word_pool

DT_PYTHON = str(DATATROVE_PYTHON)
RATES = [0.0, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3]

DT_SCRIPT = r'''
import sys, time
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import MinhashDedupSignature, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import HashConfig

def main():
    src, work, tasks, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    cfg = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8, seed=1, hash_config=HashConfig(precision=64))
    reader = lambda: JsonlReader(src, id_key="id")
    start = time.perf_counter()
    stages = [
        ([reader(), MinhashDedupSignature(output_folder=f"{work}/signatures", config=cfg)], tasks),
        ([MinhashDedupBuckets(input_folder=f"{work}/signatures", output_folder=f"{work}/buckets", config=cfg)], cfg.num_buckets),
        ([MinhashDedupCluster(input_folder=f"{work}/buckets", output_folder=f"{work}/remove_ids", config=cfg)], 1),
        ([reader(), MinhashDedupFilter(input_folder=f"{work}/remove_ids",
                                       exclusion_writer=JsonlWriter(f"{work}/removed", compression=None)),
          JsonlWriter(f"{work}/kept", compression=None)], tasks),
    ]
    for i, (pipeline, n) in enumerate(stages):
        LocalPipelineExecutor(pipeline=pipeline, tasks=n, workers=min(workers, n),
                              logging_dir=f"{work}/logs/{i}", skip_completed=False).run()
    print("SECONDS", time.perf_counter() - start)


if __name__ == "__main__":  # datatrove's workers are spawned processes
    main()
'''


def build_corpus(folder: Path, originals: int, files: int, words: int = 250, seed: int = 0) -> dict[str, float]:
    """JSONL files with ids; returns {copy id: Jaccard to its original}."""
    rng = random.Random(seed)
    pool = shipped_word_pool()
    docs, truth = [], {}
    for i, text in enumerate(distinct_documents(originals, words, seed, pool)):
        docs.append((f"o{i}", text))
        if i % 3 == 0:
            rate = RATES[(i // 3) % len(RATES)]
            copy = edit(text, rate, rng, pool[:5000])
            docs.append((f"c{i}", copy))
            truth[f"c{i}"] = jaccard(text, copy)
    rng.shuffle(docs)
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        with (folder / f"part-{f:03d}.jsonl").open("w") as out:
            for doc_id, text in docs[f::files]:
                out.write(json.dumps({"id": doc_id, "text": text}) + "\n")
    return truth


def score(removed: set[str], truth: dict[str, float], total: int) -> dict:
    high = {c for c, j in truth.items() if j >= 0.85}
    low = {c for c, j in truth.items() if j < 0.5}
    originals_removed = {d for d in removed if d.startswith("o")}
    # of a pair, either member may be removed: credit the pair
    pair_removed = {c for c in truth if c in removed or "o" + c[1:] in removed}
    return {"removed": len(removed), "pairs_j_ge_0.85": len(high),
            "recall_j_ge_0.85": round(len(pair_removed & high) / max(1, len(high)), 4),
            "false_positive_rate_j_lt_0.5": round(len((pair_removed & low)) / max(1, len(low)), 4),
            "removed_originals_without_copy": len({d for d in originals_removed if "c" + d[1:] not in truth})}


def run_gristmill(corpus: Path, tmp: Path, extra: str = "", name: str = "gm-run") -> dict:
    spec = tmp / f"{name}.yaml"
    spec.write_text(f"""kind: curate
name: dedup-bench
input:
  - {{format: jsonl, paths: ["{corpus}/*.jsonl"], id_field: id}}
steps:
  - minhash_dedup: {{ngram: 5, bands: 14, rows: 8{extra}}}
""")
    run = tmp / name
    start, start_wall = time.perf_counter(), time.time()
    proc = subprocess.run([str(Path(sys.executable).with_name("gristmill")), "run", str(spec), "--out", str(run)],
                          capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(proc.stdout + proc.stderr)
    manifest = json.loads((run / "manifest.json").read_text())
    stage = [s for s in manifest["stages"] if s["id"].endswith("minhash_dedup")][0]
    rejected = pq.read_table(run / "rejected" / "minhash_dedup").column("source_id").to_pylist()
    # where the stage's time goes: each round's marker is written when the round ends; the first
    # round is timed from the stage's start (manifest), the filter pass to the stage's end
    stage_start = datetime.fromisoformat(stage["started"]).timestamp() if stage.get("started") else start_wall
    markers = sorted(run.glob("work/*/*/_round.json"), key=lambda p: p.stat().st_mtime)
    ends = [(p.parent.name, p.stat().st_mtime) for p in markers]
    rounds = {name: round(t - (ends[i - 1][1] if i else stage_start), 2) for i, (name, t) in enumerate(ends)}
    if ends:
        rounds["filter and write"] = round(stage_start + stage["seconds"] - ends[-1][1], 2)
    summary = json.loads((run / "dedup" / "minhash_dedup" / "summary.json").read_text())
    return {"seconds": round(seconds, 2), "stage_seconds": stage["seconds"], "removed_ids": set(rejected),
            "rounds_seconds": rounds, "summary": summary}


def run_datatrove(corpus: Path, tmp: Path) -> dict:
    script = tmp / "dt.py"
    script.write_text(DT_SCRIPT)
    work = tmp / "dt-work"
    cpus = os.cpu_count() or 1
    start = time.perf_counter()
    proc = subprocess.run([DT_PYTHON, str(script), str(corpus), str(work), str(cpus), str(cpus)],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
    removed = set()
    for path in (work / "removed").glob("*.jsonl"):
        removed |= {json.loads(line)["id"] for line in path.read_text().splitlines() if line}
    return {"seconds": round(seconds, 2), "removed_ids": removed}


def compare(originals: int, files: int, verify: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="dedup-bench-") as tmp_name:
        tmp = Path(tmp_name)
        truth = build_corpus(tmp / "corpus", originals, files)
        total = originals + len(truth)
        load = [round(os.getloadavg()[0], 1)]
        gm = run_gristmill(tmp / "corpus", tmp)
        load.append(round(os.getloadavg()[0], 1))
        dt = run_datatrove(tmp / "corpus", tmp)
        load.append(round(os.getloadavg()[0], 1))
        gv = run_gristmill(tmp / "corpus", tmp, ", verify: true", "gm-verify") if verify else None
        if verify:
            load.append(round(os.getloadavg()[0], 1))
    result = {
        "documents": total, "planted_copies": len(truth),
        "gristmill": {"seconds": gm["seconds"], "stage_seconds": gm["stage_seconds"],
                      "rounds_seconds": gm["rounds_seconds"], **score(gm["removed_ids"], truth, total)},
        "datatrove": {"seconds": dt["seconds"], **score(dt["removed_ids"], truth, total)},
        "speedup_wall": round(dt["seconds"] / gm["seconds"], 2),
        "speedup_vs_stage": round(dt["seconds"] / gm["stage_seconds"], 2),
        "load_average_1min (before, between, after)": load,
    }
    if gv:
        result["gristmill_verify"] = {
            "seconds": gv["seconds"], "stage_seconds": gv["stage_seconds"], "rounds_seconds": gv["rounds_seconds"],
            "candidate_edges_checked": gv["summary"].get("verify_candidate_edges"),
            "edges_below_threshold_dropped": gv["summary"].get("verify_removed_edges"),
            "threshold": gv["summary"].get("verify_threshold"),
            "documents_kept_that_plain_lsh_removed": len(gm["removed_ids"] - gv["removed_ids"]),
            **score(gv["removed_ids"], truth, total)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--originals", type=int, nargs="+", default=[6000],
                        help="originals per corpus (documents = 4/3 of it); several sizes run in turn")
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--verify", action="store_true", help="also run Gristmill with verify: true")
    parser.add_argument("--json")
    args = parser.parse_args()
    if not Path(DT_PYTHON).exists():
        raise SystemExit(f"no datatrove environment at {DT_PYTHON}: {DATATROVE_HOW}")
    results = []
    for originals in args.originals:
        results.append(compare(originals, args.files, args.verify))
        print(json.dumps(results[-1], indent=1), flush=True)
    out = {"results": results, "machine": machine()}
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
