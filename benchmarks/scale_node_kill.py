"""The scale corpus curated on a local multi-node Ray cluster, one worker node killed mid-run: does the
run complete, with the kept set of a single-node run?

    python -m benchmarks.scale_node_kill --docs 100000 [--nodes 3] [--cpus-per-node 1] [--kill-at 0.3]

Nodes are separate raylets on this machine (``ray.cluster_utils.Cluster`` in a child process, see
tests/ray_cluster.py), each with its own object store, so blocks and tasks live on different nodes as
on a real cluster. The spec is benchmarks/scale_curate.py's chain without ``tokenize`` (a sink: the
kept set is what must agree). Once ``--kill-at`` of the streaming pass's input files are committed,
the newest worker node is killed without warning (its raylet, workers and object store gone). The
run must finish by itself; if it fails instead, the same command is run again on the surviving
nodes (a resume), and the output says which happened. Then kept doc_ids and rejected (doc_id,
reason) pairs are compared with the same spec run on one embedded node.

Output: JSON on stdout and in ``bench-data/scale-results/node-kill-<N>.json``: both runs' wall times
and exit codes, the fraction committed when the node died, resumes needed, and the comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import scale_corpus
from benchmarks.common import BENCH_DATA, REPO, machine
from benchmarks.scale_curate import RESULTS, STEPS, spec_for, spec_text

RUNS = BENCH_DATA / "scale-node-kill"


def _gristmill() -> str:
    return str(Path(sys.executable).with_name("gristmill"))


def _outcome(run: Path) -> dict:
    import pyarrow.dataset as ds

    def ids(folder: Path, columns: list[str]) -> list[tuple]:
        if not folder.exists() or not any(folder.rglob("*.parquet")):
            return []
        table = ds.dataset(str(folder), format="parquet").to_table(columns=columns)
        return sorted(zip(*(table.column(c).to_pylist() for c in columns)))

    rejected = []
    for step in sorted((run / "rejected").glob("*")):
        rejected += ids(step, ["doc_id", "reason"])
    return {"kept": [i for (i,) in ids(run / "data", ["doc_id"])], "rejected": sorted(rejected)}


def _run(cmd: list[str], env: dict, log: Path) -> tuple[int, float]:
    start = time.perf_counter()
    with log.open("a") as out:
        rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    return rc, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    from tests.ray_cluster import clean_env, local_cluster

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=None, help="corpus files (default: the generator's)")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--cpus-per-node", type=int, default=1)
    parser.add_argument("--kill-at", type=float, default=0.3, help="fraction of input files committed")
    args = parser.parse_args(argv)

    stamp = scale_corpus.generate(args.docs, files=args.files, log=lambda m: print(m, file=sys.stderr))
    corpus = Path(stamp["folder"])
    files = sorted(corpus.glob("part-*.warc.gz"))
    folder = RUNS / f"{args.docs}-{len(files)}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    spec = spec_for(args.docs, corpus, None)
    spec["steps"] = [s for s in STEPS if "tokenize" not in s]
    spec_path = folder / "spec.yaml"
    spec_path.write_text(spec_text(spec))
    env = {**clean_env(), "OMP_NUM_THREADS": "1"}
    result: dict = {"docs": args.docs, "files": len(files), "nodes": args.nodes, "cpus_per_node": args.cpus_per_node,
                    "machine": machine(), "load_start": os.getloadavg()}

    reference = folder / "one-node"
    rc, seconds = _run([_gristmill(), "run", str(spec_path), "--out", str(reference)], env, folder / "one-node.log")
    result["one_node"] = {"exit": rc, "seconds": round(seconds, 1)}

    killed = folder / "cluster"
    progress = killed / "_progress"  # the streaming pass commits one u<unit>.json per input file
    with local_cluster(args.nodes, args.cpus_per_node) as address:
        cmd = [_gristmill(), "run", str(spec_path), "--out", str(killed), "--address", address]
        start = time.perf_counter()
        with (folder / "cluster.log").open("a") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
            committed = 0
            while proc.poll() is None:
                committed = len(list(progress.glob("*/u*.json"))) if progress.exists() else 0
                if committed >= max(1, int(args.kill_at * len(files))):
                    address.kill_worker_node()
                    result["killed_at"] = {"files_committed": committed, "of": len(files),
                                           "seconds": round(time.perf_counter() - start, 1)}
                    break
                time.sleep(0.2)
            rc = proc.wait()
        runs = [{"exit": rc, "seconds": round(time.perf_counter() - start, 1)}]
        if "killed_at" not in result:
            result["note"] = "the run finished before the kill point: raise --docs or lower --kill-at"
        while rc != 0 and len(runs) < 3:  # resume on the surviving nodes
            rc, seconds = _run(cmd, env, folder / "cluster.log")
            runs.append({"exit": rc, "seconds": round(seconds, 1)})
        result["cluster"] = {"invocations": runs, "completed_without_resume": runs[0]["exit"] == 0}

    ours, theirs = _outcome(killed), _outcome(reference)
    result["same_kept"] = ours["kept"] == theirs["kept"]
    result["same_rejected"] = ours["rejected"] == theirs["rejected"]
    result["kept"] = {"cluster": len(ours["kept"]), "one_node": len(theirs["kept"])}
    result["load_end"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"node-kill-{args.docs}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0 if result["same_kept"] and result["same_rejected"] and rc == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
