"""Report build time and peak memory on a synthesised run directory of 1M documents.

    python -m benchmarks.report_build [--docs 1000000] [--keep-dir bench-data/report-run]

The run directory is synthesised with pyarrow (no Ray run needed): six steps (langid, length_filter,
gopher_quality, toxicity, pii, then minhash_dedup as a global stage), kept and rejected Parquet
with their score columns, URLs over a Zipf-distributed set of 20,000 domains, dedup statistics,
token shards and a training metrics file — the shape a real curate + tokenize + train run leaves.
Texts are drawn from a pool of real passages (bundled State of the Union and Shakespeare text), 3 to
600 words. The report is then built in a fresh process (``gristmill report``), and its wall time and
peak RSS (``ru_maxrss`` of that child) are printed as JSON.

The peer: reading the same Parquet the simplest way (``pyarrow.dataset(...).to_table()`` of every
folder, all columns, the whole thing in memory), which is what a notebook would do first. Its time
and peak RSS, measured the same way, give the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from benchmarks.common import BENCH_DATA, machine, shipped_words

STEPS = [("langid", {"keep": ["en"], "min_score": 0.65}), ("length_filter", {"min_words": 50}),
         ("gopher_quality", {}), ("toxicity", {"max_score": 0.5}), ("pii", {}), ("minhash_dedup", {"threshold": 0.8})]
# Share of all documents each step removes (quarantine first).
REMOVED = {"_ingest": 0.005, "langid": 0.08, "length_filter": 0.10, "gopher_quality": 0.12, "toxicity": 0.03,
           "pii": 0.0, "minhash_dedup": 0.07}
LANGS = np.array(["en", "de", "fr", "es", "ru", "zh", "ja", "pt"])
ROWS_PER_FILE = 50_000


def _text_pool(rng: np.random.Generator, size: int = 4_000) -> pa.Array:
    words = shipped_words()
    texts = []
    for _ in range(size):
        n = int(rng.choice((3, 8, 20, 60, 150, 300, 600)))
        start = int(rng.integers(0, len(words) - n))
        texts.append(" ".join(words[start:start + n]))
    texts[0] = "<script>alert(1)</script> </div> \"quoted\" & 'single' " + texts[0]
    return pa.array(texts, pa.string())


def _columns(rng: np.random.Generator, n: int, outcome: str, order: list[str]) -> dict[str, pa.Array]:
    """Score columns for ``n`` rows whose fate is ``outcome`` (a step label, or "kept"): steps after
    the rejecting one never saw the rows, so their columns are null."""
    seen = order if outcome == "kept" else order[:order.index(outcome) + 1]
    cols: dict[str, pa.Array] = {}

    def put(name: str, values: np.ndarray, kind: pa.DataType, step: str) -> None:
        cols[name] = pa.array(values, kind) if step in seen else pa.nulls(n, kind)

    lang = np.where(rng.random(n) < (0.1 if outcome == "langid" else 0.97), "en", LANGS[rng.integers(1, len(LANGS), n)])
    if outcome == "langid":
        lang = LANGS[rng.integers(0, len(LANGS), n)]
    put("langid.lang", lang, pa.string(), "langid")
    score = rng.uniform(0.2, 0.65, n) if outcome == "langid" else rng.beta(8, 1.2, n) * 0.35 + 0.65
    put("langid.score", score.astype(np.float32), pa.float32(), "langid")
    words = rng.integers(3, 50, n) if outcome == "length_filter" else rng.lognormal(5, 0.9, n).astype(np.int64) + 50
    put("length.words", words, pa.int64(), "length_filter")
    put("length.chars", words * rng.integers(4, 7, n), pa.int64(), "length_filter")
    put("gopher.words", words, pa.int64(), "gopher_quality")
    mwl = rng.normal(4.6, 0.5, n) if outcome != "gopher_quality" else rng.choice([2.2, 11.5], n) + rng.normal(0, 0.4, n)
    put("gopher.mean_word_length", mwl, pa.float64(), "gopher_quality")
    put("gopher.alpha_words_ratio", np.clip(rng.normal(0.93, 0.04, n), 0, 1), pa.float64(), "gopher_quality")
    put("gopher.stop_words", rng.integers(0 if outcome == "gopher_quality" else 2, 9, n), pa.int64(), "gopher_quality")
    tox = rng.uniform(0.5, 1.0, n) if outcome == "toxicity" else rng.beta(1, 12, n) * 0.5
    put("toxicity.score", tox.astype(np.float32), pa.float32(), "toxicity")
    for kind, rate in (("email", 0.05), ("phone", 0.03), ("ip", 0.01)):
        put(f"pii.{kind}", (rng.random(n) < rate).astype(np.int32) * rng.integers(1, 4, n), pa.int32(), "pii")
    return cols


def synthesize_run(folder: Path, docs: int, seed: int = 0) -> dict:
    """Write a run directory of ``docs`` documents; returns what was written (counts per folder)."""
    rng = np.random.default_rng(seed)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    pool = _text_pool(rng)
    domains = np.array([f"site{i}.example" if i % 7 else f"www.blog{i}.example.org" for i in range(20_000)])
    order = [label for label, _ in STEPS]
    fates = ["_ingest"] + order
    probs = np.array([REMOVED[f] for f in fates] + [1 - sum(REMOVED.values())])
    outcome = rng.choice(len(probs), docs, p=probs)
    written: dict[str, dict] = {}
    doc_ids = (np.arange(docs, dtype=np.int64) // 100_000 << 32) | (np.arange(docs, dtype=np.int64) % 100_000)
    for k, fate in enumerate(fates + ["kept"]):
        idx = np.nonzero(outcome == k)[0]
        target = folder / ("data" if fate == "kept" else f"rejected/{fate}")
        target.mkdir(parents=True, exist_ok=True)
        chars = 0
        for part, start in enumerate(range(0, len(idx), ROWS_PER_FILE)):
            rows = idx[start:start + ROWS_PER_FILE]
            n = len(rows)
            cols: dict[str, pa.Array] = {"doc_id": pa.array(doc_ids[rows])}
            if fate == "_ingest":
                cols["text"] = pa.nulls(n, pa.string())
            else:
                cols["text"] = pool.take(pa.array(rng.integers(0, len(pool), n)))
            cols["source"] = pa.array(np.char.add("/data/crawl/part-", (rows // 100_000).astype(str)))
            cols["url"] = pa.array(np.char.add(np.char.add("https://", domains[np.minimum(rng.zipf(1.3, n), 20_000) - 1]),
                                               "/page?ref=%22%3E<script>alert(1)</script>"))
            if fate != "kept":
                cols["record"] = pa.array(doc_ids[rows] & 0xFFFFFFFF)
                reasons = {"_ingest": ["invalid_json", "empty_text"], "langid": ["language_not_kept", "low_language_score"],
                           "length_filter": ["too_few_words"], "gopher_quality": ["gopher_mean_word_length", "gopher_few_stop_words"],
                           "toxicity": ["toxic"], "minhash_dedup": ["near_duplicate", "exact_duplicate"]}[fate]
                cols["reason"] = pa.array(np.array(reasons)[rng.integers(0, len(reasons), n)])
                cols["reason_detail"] = pa.nulls(n, pa.string())
            if fate != "_ingest":
                cols.update(_columns(rng, n, fate, order))
            if fate == "minhash_dedup":
                cols["dedup.duplicate_of"] = pa.array(doc_ids[rng.integers(0, docs, n)])
                cols["dedup.cluster_id"] = pa.array(rng.integers(0, n, n))
                cols["dedup.cluster_size"] = pa.array(rng.integers(2, 12, n))
            table = pa.table(cols)
            chars += int(pa.compute.sum(pa.compute.utf8_length(table.column("text"))).as_py() or 0)
            pq.write_table(table, target / f"part-u{part:06d}-synth.parquet", compression="zstd")
        written[fate] = {"rows": int(len(idx)), "chars": chars}
    _dedup_stats(folder, rng, written["minhash_dedup"]["rows"], docs)
    _shards(folder, rng)
    _metrics(folder, rng)
    _manifest(folder, docs, written)
    return written


def _dedup_stats(folder: Path, rng: np.random.Generator, duplicates: int, docs: int) -> None:
    out = folder / "dedup" / "minhash_dedup"
    out.mkdir(parents=True)
    sizes = np.arange(1, 13)
    clusters = np.maximum((duplicates / np.arange(1, 12) ** 2).astype(np.int64), 1)
    pq.write_table(pa.table({"cluster_size": pa.array(sizes, pa.int64()),
                             "clusters": pa.array(np.concatenate([[docs - duplicates], clusters]), pa.int64())}),
                   out / "cluster_sizes.parquet")
    sources = [f"/data/crawl/part-{i}" for i in range(max(1, docs // 100_000 + 1))]
    per = np.full(len(sources), docs // len(sources))
    dups = (per * rng.uniform(0.03, 0.12, len(sources))).astype(np.int64)
    pq.write_table(pa.table({"source": sources, "documents": pa.array(per, pa.int64()), "duplicates": pa.array(dups, pa.int64())}),
                   out / "source_rates.parquet")


def _shards(folder: Path, rng: np.random.Generator, seq_len: int = 64) -> None:
    out = folder / "shards"
    out.mkdir()
    splits = {}
    for split, files, rows_per in (("train", 2, 500), ("val", 1, 50)):
        names, docs_total = [], 0
        for i in range(files):
            ids = rng.integers(5, 8000, (rows_per, seq_len + 1)).astype(np.int32)
            starts = [sorted(set(rng.integers(0, seq_len + 1, int(rng.integers(0, 4))).tolist())) for _ in range(rows_per)]
            docs_total += sum(len(s) for s in starts)
            name = f"shards/{split}-{i:05d}.parquet"
            pq.write_table(pa.table({"input_ids": pa.array(list(ids), pa.list_(pa.int32())),
                                     "doc_starts": pa.array(starts, pa.list_(pa.int32()))}), folder / name)
            names.append(name)
        splits[split] = {"files": names, "rows": files * rows_per, "tokens": files * rows_per * (seq_len + 1),
                         "documents": docs_total}
    (out / "manifest.json").write_text(json.dumps({
        "format": "gristmill-shards/1", "seq_len": seq_len, "dtype": "int32",
        "tokenizer": {"path": "tokenizer/tokenizer.json", "sha256": "0" * 64, "vocab_size": 8192, "bos_id": 0,
                      "eos_id": 1, "pad_id": 2}, "splits": splits, "dropped_tokens": 17, "seed": 0, "val_fraction": 0.05}))


def _metrics(folder: Path, rng: np.random.Generator, steps: int = 300) -> None:
    (folder / "metrics").mkdir()
    lines = ["step,tokens,loss,lr,grad_norm,tokens_per_s,mfu,val_loss,val_ppl"]
    for s in range(1, steps + 1):
        loss = 9.0 * np.exp(-s / 80) + 3.0 + rng.normal(0, 0.05)
        val = f"{loss + 0.1:.4f},{np.exp(loss + 0.1):.2f}" if s % 50 == 0 else ","
        lines.append(f"{s},{s * 4096},{loss:.4f},{3e-4:.6f},{1.0 + rng.random():.3f},{52000 + rng.normal(0, 900):.0f},0.21,{val}")
    (folder / "metrics" / "train.csv").write_text("\n".join(lines) + "\n")


def _manifest(folder: Path, docs: int, written: dict) -> None:
    stream_labels = ["_ingest"] + [label for label, _ in STEPS[:-1]]

    def counts(labels: list[str], rows_in: int, kept: dict) -> dict:
        steps, alive = [], rows_in
        for label in labels:
            steps.append({"step": label, "in": alive, "rejected": written[label]["rows"],
                          "out": alive - written[label]["rows"]})
            alive -= written[label]["rows"]
        return {"in": rows_in, "kept": kept["rows"], "kept_chars": kept["chars"],
                "rejected": {label: written[label]["rows"] for label in labels},
                "rejected_chars": {label: written[label]["chars"] for label in labels}, "steps": steps}

    after_stream = docs - sum(written[label]["rows"] for label in stream_labels)
    dedup_in = {"rows": after_stream, "chars": written["kept"]["chars"] + written["minhash_dedup"]["chars"]}
    stages = [
        {"id": "01-stream", "kind": "stream", "steps": stream_labels[1:], "status": "done", "output_dir": "stages/01-stream",
         "rejected": stream_labels, "seconds": 812.4, "counts": counts(stream_labels, docs, dedup_in)},
        {"id": "02-minhash_dedup", "kind": "global", "steps": ["minhash_dedup"], "status": "done", "output_dir": "data",
         "rejected": ["minhash_dedup"], "seconds": 95.1, "counts": counts(["minhash_dedup"], after_stream, written["kept"])},
    ]
    rejected = {label: written[label]["rows"] for label, _ in STEPS}
    manifest = {"format": 1, "name": "synthetic-1m" if docs >= 1_000_000 else "synthetic", "kind": "curate",
                "created": "2026-11-27T00:00:00+0000", "updated": "2026-11-27T00:15:07+0000", "status": "done",
                "spec_hash": "synthetic", "inputs": [{"index": i, "location": f"/data/crawl/part-{i}.jsonl.zst", "size": 1 << 28,
                                                      "input": 0} for i in range(docs // 100_000 + 1)],
                "ray": {"nodes": 4, "cpus": 64.0, "gpus": 0.0, "memory_gb": 480.0, "local": False, "ray_version": "2.60.0"},
                "stages": stages,
                "totals": {"read": docs, "kept": written["kept"]["rows"], "kept_chars": written["kept"]["chars"],
                           "rejected": rejected, "quarantined": written["_ingest"]["rows"], "steps": [],
                           "balanced": True}}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    spec = {"kind": "curate", "name": manifest["name"], "description": "synthesised for the report benchmark",
            "input": [{"format": "jsonl", "paths": ["/data/crawl/*.jsonl.zst"], "url_field": "url"}],
            "steps": [{label: cfg} for label, cfg in STEPS]}
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def _child(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process (``os.wait4`` gives that child's own
    ``ru_maxrss``, in KiB on Linux)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} exited {proc.returncode}")
    return seconds, usage.ru_maxrss / 1024


PEER = """
import sys, pyarrow.dataset as ds, pathlib
root = pathlib.Path(sys.argv[1])
tables = [ds.dataset(str(d), format="parquet").to_table() for d in [root / "data", *sorted((root / "rejected").iterdir())]]
print(sum(t.num_rows for t in tables))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--keep-dir", type=Path, default=None, help="where to write the run directory (kept afterwards)")
    parser.add_argument("--reuse", action="store_true", help="with --keep-dir: reuse a run directory synthesised earlier")
    args = parser.parse_args()
    folder = args.keep_dir or Path(tempfile.mkdtemp(prefix="report-bench-", dir=BENCH_DATA if BENCH_DATA.exists() else None)) / "run"
    started = time.perf_counter()
    if args.reuse and (folder / "manifest.json").exists():
        totals = json.loads((folder / "manifest.json").read_text())["totals"]
        written = {"kept": {"rows": totals["kept"]}}
    else:
        written = synthesize_run(folder, args.docs)
    synth_s = time.perf_counter() - started
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    gristmill = str(Path(sys.executable).with_name("gristmill"))
    peer_s, peer_rss = _child([sys.executable, "-c", PEER, str(folder)])
    report_s, report_rss = _child([gristmill, "report", str(folder)])
    stats = json.loads((folder / "report" / "stats.json").read_text())
    result = {"benchmark": "report_build", "docs": args.docs, "run_dir_mib": round(size / (1 << 20), 1),
              "kept": written["kept"]["rows"], "synthesise_s": round(synth_s, 1),
              "report_s": round(report_s, 2), "report_peak_rss_mib": round(report_rss),
              "report_build_s_inside": stats["build_seconds"],
              "peer_read_all_s": round(peer_s, 2), "peer_peak_rss_mib": round(peer_rss),
              "time_ratio_report_over_peer": round(report_s / peer_s, 2),
              "sections": list(stats["sections"]), "machine": machine()}
    print(json.dumps(result, indent=1))
    if args.keep_dir is None:
        shutil.rmtree(folder.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
