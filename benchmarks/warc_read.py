"""WARC ingestion: docs/s of the `warc` reader through the gristmill pipeline (a curate run with no
steps: read, quarantine, write Parquet) against a bare FastWARC loop and a bare warcio loop over the
same files, in one run. Ray start-up is reported separately.

The corpus is the shipped real WARC.gz files (sample-0000, sample-0001, whirlwind) concatenated
``--copies`` times into each of ``--files`` files under bench-data/ (gzip members concatenate into
a valid multi-member file). "Docs" are the response and resource records, i.e. the rows the reader
yields (documents plus quarantined records) and the records the bare loops read the body of.

    python -m benchmarks.warc_read [--files 8] [--copies 30] [--cpus N] [--warcio-files N]

Reported: docs/s of each loop; the gristmill pass twice (``cold``: Ray starts its workers during the
pass; then warm), ``reader_only`` (the reader in this process, no Ray, no Parquet: the reader's own
cost; ``reader_fast_path`` says how many files its FastWARC fast path read to the end),
``reader_careful`` (the same with the fast path off: every file through the careful path), and
ratios against the bare loops. The bare loops use one core; the pipeline uses ``--cpus``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from benchmarks.common import BENCH_DATA, DATA, REPO, machine, timed

SHIPPED = ["sample-0000.warc.gz", "sample-0001.warc.gz", "whirlwind.warc.gz"]


def corpus(files: int, copies: int) -> list[Path]:
    folder = BENCH_DATA / "warc_read"
    paths = [folder / f"part-{i:03d}.warc.gz" for i in range(files)]
    stamp = folder / "_complete.json"
    meta = {"files": files, "copies": copies, "shipped": SHIPPED}
    if stamp.exists() and json.loads(stamp.read_text()) == meta:
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    one = b"".join((DATA / "warc" / name).read_bytes() for name in SHIPPED)
    for path in paths:
        path.write_bytes(one * copies)
    stamp.write_text(json.dumps(meta))
    return paths


def fastwarc_loop(paths: list[Path]) -> int:
    """What a user would write with FastWARC: response + resource records, HTTP parsed, body read."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    docs = 0
    for path in paths:
        with open(path, "rb") as f:
            for rec in ArchiveIterator(f, record_types=WarcRecordType.response | WarcRecordType.resource,
                                       parse_http=True):
                rec.reader.read()
                docs += 1
    return docs


def warcio_loop(paths: list[Path]) -> int:
    from warcio.archiveiterator import ArchiveIterator

    docs = 0
    for path in paths:
        with open(path, "rb") as f:
            for rec in ArchiveIterator(f):
                if rec.rec_type in ("response", "resource"):
                    rec.content_stream().read()
                    docs += 1
    return docs


def reader_loop(paths: list[Path], fast_path: bool = True) -> dict:
    """The gristmill reader alone, in this process: no Ray, no Parquet. ``fast_path=False``: every
    file the careful way (Python zlib per gzip member)."""
    import pyarrow.fs as pafs

    from curation.ingest import warc

    reader = warc.WarcReader(warc.WarcConfig(format="warc", paths=["unused"]))
    fs = pafs.LocalFileSystem()
    rows = quarantined = 0
    warc.fast_path_counts.clear()
    warc.FAST_PATH = fast_path
    try:
        for i, path in enumerate(paths):
            for table in reader.read_file(str(path), i, fs):
                rows += table.num_rows
                quarantined += table.num_rows - table.column("reason").null_count
    finally:
        warc.FAST_PATH = True
    return {"rows": rows, "quarantined": quarantined, "fast_path": dict(warc.fast_path_counts)}


def gristmill_pass(paths: list[Path], out: Path, num_cpus: float) -> dict:
    from pipelines.rundir import RunDir
    from pipelines.runner import CurateRun, Reporter
    from pipelines.specs import validate_spec
    from pipelines.yaml_source import SourceMap

    spec = validate_spec({"kind": "curate", "name": "bench-warc",
                          "input": [{"format": "warc", "paths": [str(p) for p in paths]}], "steps": []},
                         SourceMap("<bench>"))
    manifest = CurateRun(spec, RunDir.open(str(out)), Reporter(), num_cpus=num_cpus).execute()
    return manifest.data["totals"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--copies", type=int, default=30, help="copies of the shipped WARCs per file")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs for the local Ray (default: all)")
    parser.add_argument("--warcio-files", type=int, default=None, help="files the warcio loop reads (default: all)")
    args = parser.parse_args()
    paths = corpus(args.files, args.copies)
    results: dict = {"benchmark": "warc_read", "files": args.files, "copies": args.copies,
                     "compressed_mb": round(sum(p.stat().st_size for p in paths) / 2**20, 1), "machine": machine()}
    for path in paths:  # the page cache holds every file before anything is timed
        path.read_bytes()
    # Imports and first allocations out of the timings: whichever in-process loop ran first paid them
    # (~0.4 s on 2 cores), which made the first reader pass look slower than the second.
    fastwarc_loop(paths[:1])
    reader_loop(paths[:1])
    reader_loop(paths[:1], fast_path=False)
    work = Path(tempfile.mkdtemp(prefix="gristmill-bench-"))
    try:
        with timed(results, "fastwarc_seconds"):
            docs = fastwarc_loop(paths)
        with timed(results, "warcio_seconds"):
            warcio_docs = warcio_loop(paths[:args.warcio_files or len(paths)])
        with timed(results, "reader_only_seconds"):
            reader = reader_loop(paths)
        assert reader["rows"] == docs, (reader, docs)
        with timed(results, "reader_careful_seconds"):
            careful = reader_loop(paths, fast_path=False)
        assert careful["rows"] == docs and careful["quarantined"] == reader["quarantined"], (careful, reader)
        results["reader_fast_path"] = f"{reader['fast_path'].get('fast', 0)}/{len(paths)} files"

        import ray

        from pipelines.ray_session import connect

        with timed(results, "ray_start_seconds"):
            session = connect(num_cpus=args.cpus)
        # First pass: Ray starts its worker processes (imports included) on the way. Second pass, into
        # a fresh run directory: warm workers, as in any run after the first on a long-lived cluster.
        with timed(results, "gristmill_cold_seconds"):
            totals = gristmill_pass(paths, work / "cold", session.num_cpus)
        assert totals["read"] == docs, (totals, docs)
        with timed(results, "gristmill_seconds"):
            totals = gristmill_pass(paths, work / "warm", session.num_cpus)
        ray.shutdown()
        assert totals["read"] == docs and totals["quarantined"] == reader["quarantined"], (totals, docs, reader)
        rate = {key: docs / results[f"{key}_seconds"]
                for key in ("fastwarc", "reader_only", "reader_careful", "gristmill_cold", "gristmill")}
        results.update(
            ray_cpus=session.num_cpus, docs=docs, quarantined=totals["quarantined"],
            warcio_docs=warcio_docs, warcio_docs_per_s=round(warcio_docs / results["warcio_seconds"]),
            **{f"{key}_docs_per_s": round(value) for key, value in rate.items()},
            ratio_gristmill_vs_fastwarc=round(rate["gristmill"] / rate["fastwarc"], 3),
            ratio_gristmill_cold_vs_fastwarc=round(rate["gristmill_cold"] / rate["fastwarc"], 3),
            ratio_gristmill_vs_warcio=round(rate["gristmill"] / (warcio_docs / results["warcio_seconds"]), 3),
            ratio_reader_only_vs_fastwarc=round(rate["reader_only"] / rate["fastwarc"], 3),
            ratio_reader_careful_vs_fastwarc=round(rate["reader_careful"] / rate["fastwarc"], 3),
            ratio_including_ray_start=round(
                docs / (results["gristmill_cold_seconds"] + results["ray_start_seconds"]) / rate["fastwarc"], 3),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
