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
import pyarrow.parquet as pq

from curation.dedup.rounds import _fs_and_path

CLUSTER_SIZES = pa.schema([("cluster_size", pa.int64()), ("clusters", pa.int64())])
SOURCE_RATES = pa.schema([("source", pa.string()), ("documents", pa.int64()), ("duplicates", pa.int64())])


def write_stats(run_root: str | None, filesystem, step: str, documents_by_source: dict[str, int],
                removals: dict, summary: dict) -> None:
    if run_root is None:
        return
    fs, root = _fs_and_path(run_root, filesystem)
    folder = posixpath.join(root, "dedup", step)
    fs.create_dir(folder, recursive=True)
    members_by_size = {int(k): v for k, v in removals.get("members_by_size", {}).items()}
    total = sum(documents_by_source.values())
    singletons = total - sum(members_by_size.values())
    sizes = sorted((({1: singletons} if singletons else {}) | {s: m // s for s, m in members_by_size.items()}).items())
    pq.write_table(pa.table({"cluster_size": [s for s, _ in sizes], "clusters": [c for _, c in sizes]},
                            schema=CLUSTER_SIZES), posixpath.join(folder, "cluster_sizes.parquet"), filesystem=fs)
    dups = removals.get("duplicates_by_source", {})
    sources = sorted(documents_by_source)
    pq.write_table(pa.table({"source": sources, "documents": [documents_by_source[s] for s in sources],
                             "duplicates": [dups.get(s, 0) for s in sources]}, schema=SOURCE_RATES),
                   posixpath.join(folder, "source_rates.parquet"), filesystem=fs)
    with fs.open_output_stream(posixpath.join(folder, "summary.json")) as f:
        f.write(json.dumps(summary, indent=1, sort_keys=True).encode())
