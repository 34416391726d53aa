"""How long a small curate run takes once Ray is up: 500 real documents through extract, the quality
filters, exact and MinHash dedup and tokenize (issue 17's "small runs feel instant": goal ≤ 20 s on
2 cores).

    python -m benchmarks.small_run [--rounds 3]

The 500 documents: the 130 hand-checked pages of data/extraction-dev as one WARC.gz (written once
under ``bench-data/small-run/``), the 20 Common Crawl documents of data/warc (JSONL), the 233 State
of the Union addresses and the first 97 Moby-Dick chapters (one text file each, as users often
have them) and the 20-document dedup mirror (JSONL): 500 records in 353 files, the shape of
``make demo``'s curate stage without the crawl.

Every round is a fresh process, as ``gristmill run`` is: it starts an embedded Ray (timed apart: Ray's
start is not the run's) and runs the spec in that process with a silent reporter. ``after_ray_s`` is
everything from the connected Ray to the finished manifest (planning, listing, every stage, the
manifest writes); ``stages`` are the manifest's own seconds per stage. The report build that
``gristmill run`` adds afterwards is not included (it is measured in BENCHMARKS "report").

Output: JSON on stdout and in ``bench-data/small-run/results.json``, with the load average around
every round.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import BENCH_DATA, DATA, REPO, machine

FOLDER = BENCH_DATA / "small-run"

STEPS = """
steps:
  - extract: {}
  - normalize: {}
  - langid: {keep: [en], min_score: 0.65}
  - gopher_quality: {}
  - gopher_repetition: {}
  - fineweb_quality: {}
  - pii: {}
  - exact_dedup: {}
  - minhash_dedup: {ngram: 5, bands: 14, rows: 8}
  - tokenize:
      tokenizer: {train: {vocab_size: 4096}}
      seq_len: 256
      val_fraction: 0.02
"""


def write_inputs() -> Path:
    """The WARC of the hand-checked pages and the spec (written once); returns the spec's path."""
    from benchmarks.extract_stage import real_pages, write_warc

    FOLDER.mkdir(parents=True, exist_ok=True)
    warc = FOLDER / "pages.warc.gz"
    if not warc.exists():
        pages = [p for p in real_pages() if p[3].startswith("https://extraction-dev.example/")]
        assert len(pages) == 130, len(pages)
        write_warc(warc, pages)
    chapters = sorted((DATA / "text" / "moby-dick").glob("chapter_*.txt"),
                      key=lambda p: int(p.stem.split("_")[1]))[:97]
    text_files = sorted(str(p) for p in (DATA / "text" / "sotu").glob("*.txt")) + [str(p) for p in chapters]
    spec = FOLDER / "spec.yaml"
    spec.write_text(f"""kind: curate
name: small-run
input:
  - format: warc
    paths: ["{warc}"]
  - format: jsonl
    paths: ["{DATA}/warc/cc_en_head-*.jsonl"]
    url_field: id
  - format: text
    paths: {json.dumps(text_files)}
  - format: jsonl
    paths: ["{DATA}/dedup/moby-dick-mirror.jsonl"]
ray: {{num_cpus: 2}}
{STEPS}""", encoding="utf-8")
    return spec


def one_round(spec: Path, out: Path) -> dict:
    """In this process: start Ray, run the spec, return the timings."""
    from pipelines.dispatch import execute_spec
    from pipelines.ray_session import connect
    from pipelines.rundir import RunDir
    from pipelines.runner import Reporter
    from pipelines.specs import load_spec

    loaded = load_spec(str(spec), [])
    run_dir = RunDir.open(str(out))
    run_dir.clear()
    run_dir.makedirs()
    started = time.perf_counter()
    session = connect(None, None, 2)
    connected = time.perf_counter()
    try:
        manifest = execute_spec(loaded, run_dir, Reporter(), session)
    finally:
        finished = time.perf_counter()
        session.close()
    data = manifest.data
    return {"ray_start_s": round(connected - started, 2), "after_ray_s": round(finished - connected, 2),
            "stages": {s["id"]: s["seconds"] for s in data["stages"]},
            "read": data["totals"]["read"], "kept": data["totals"]["kept"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_round(Path(args.child), FOLDER / "run")))
        return
    spec = write_inputs()
    rounds = []
    for i in range(args.rounds):
        load_before = os.getloadavg()[0]
        proc = subprocess.run([sys.executable, "-m", "benchmarks.small_run", "--child", str(spec)], cwd=REPO,
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"round {i} failed:\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["load"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        rounds.append(result)
        print(json.dumps(result), flush=True)
    report = {"machine": machine(), "rounds": rounds,
              "after_ray_s_min": min(r["after_ray_s"] for r in rounds),
              "after_ray_s_median": sorted(r["after_ray_s"] for r in rounds)[len(rounds) // 2]}
    (FOLDER / "results.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("after_ray_s_min", "after_ray_s_median")}))


if __name__ == "__main__":
    main()
