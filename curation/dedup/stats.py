"""Dedup statistics as data, for the report: ``<run>/dedup/<step>/``.

* ``cluster_sizes.parquet``: ``cluster_size`` (int64), ``clusters`` (int64); size 1 counts the
  documents that are in no cluster;
* ``source_rates.parquet``: ``source`` (string), ``documents`` (int64), ``duplicates`` (int64);
* ``summary.json``: the rounds' own counts (candidate buckets, edges, capped buckets, rounds).

Built from the small per-task summaries the rounds already returned (one number per cluster size
and per input file), so the driver never reads documents to make them.
"""

from __future__ import annotations

import json
import posixpath

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.dedup.rounds import _fs_and_path

CLUSTER_SIZES = pa.schema([("cluster_size", pa.int64()), ("clusters", pa.int64())])
SOURCE_RATES = pa.schema([("source", pa.string()), ("documents", pa.int64()), ("duplicates", pa.int64())])


FILE_COUNTS = pa.schema([("file", pa.int64()), ("source", pa.string()), ("documents", pa.int64())])


def documents_by_file(batch: pa.Table) -> pa.Table:
    """Per input file (``doc_id >> 32``) of a batch: its ``source`` and how many documents."""
    if batch.num_rows == 0:
        return FILE_COUNTS.empty_table()
    table = pa.table({"file": pc.shift_right(batch.column("doc_id"), 32),
                      "source": batch.column("source").cast(pa.string())})
    grouped = table.group_by(["file", "source"]).aggregate([("file", "count")])
    return pa.table({"file": grouped.column("file"), "source": grouped.column("source"),
                     "documents": grouped.column("file_count").cast(pa.int64())}, schema=FILE_COUNTS)


def add_file_counts(totals: dict[str, list], batch: pa.Table) -> None:
    """Accumulate ``documents_by_file`` rows into {file: [source, documents]} (JSON-friendly keys)."""
    for file, source, n in zip(*(batch.column(c).to_pylist() for c in ("file", "source", "documents"))):
        entry = totals.setdefault(str(file), [source or "", 0])
        entry[1] += n


def write_stats(run_root: str | None, filesystem, step: str, files: dict[str, list], removals: dict,
                summary: dict) -> None:
    """``files``: {file index: [source, documents]}; ``removals``: the removals round's marker."""
    if run_root is None:
        return
    fs, root = _fs_and_path(run_root, filesystem)
    folder = posixpath.join(root, "dedup", step)
    fs.create_dir(folder, recursive=True)
    members_by_size = {int(k): v for k, v in removals.get("members_by_size", {}).items()}
    total = sum(n for _, n in files.values())
    singletons = total - sum(members_by_size.values())
    sizes = sorted((({1: singletons} if singletons else {}) | {s: m // s for s, m in members_by_size.items()}).items())
    pq.write_table(pa.table({"cluster_size": [s for s, _ in sizes], "clusters": [c for _, c in sizes]},
                            schema=CLUSTER_SIZES), posixpath.join(folder, "cluster_sizes.parquet"), filesystem=fs)
    documents: dict[str, int] = {}
    duplicates: dict[str, int] = {}
    dups_by_file = removals.get("duplicates_by_file", {})
    for index, (source, n) in files.items():  # one source per file, but sum defensively
        documents[source] = documents.get(source, 0) + n
        duplicates[source] = duplicates.get(source, 0) + dups_by_file.get(index, 0)
    sources = sorted(documents)
    pq.write_table(pa.table({"source": sources, "documents": [documents[s] for s in sources],
                             "duplicates": [duplicates[s] for s in sources]}, schema=SOURCE_RATES),
                   posixpath.join(folder, "source_rates.parquet"), filesystem=fs)
    with fs.open_output_stream(posixpath.join(folder, "summary.json")) as f:
        f.write(json.dumps(summary, indent=1, sort_keys=True).encode())
