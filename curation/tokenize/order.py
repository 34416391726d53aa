"""Packing groups in ``doc_id`` order, so the shards depend on the kept set alone.

The rows of ``data/`` are laid out however the last stage wrote them: a global stage (dedup) writes
in Ray's completion order under random file names, a streaming pass in batch order per input unit.
A resumed run keeps the same documents but may lay them out differently, and packing "file by file"
would then cut other rows. So ``tokenize`` never looks at the layout: it cuts the ``doc_id`` space
(``file_index << 32 | row``, unique and stable across reruns) into contiguous ranges and each packing
group encodes the documents of its range in ``doc_id`` order, whichever files hold them.

The ranges come from a profile of the kept documents: per bin of ``1 << BIN_SHIFT`` consecutive ids,
how many documents and text bytes it holds (:func:`profile_files`, one cheap Ray task per few files;
the driver gets a histogram, never documents). Bins are dealt to groups by bytes, like the previous
"contiguous files of similar size" rule, but the histogram is a function of the kept set, so the
groups and every packed row are the same on every rerun with the same worker count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from curation.ingest.listing import filesystem_for
from curation.operator import DOC_ID, TEXT

# 1,024 consecutive input rows per bin: fine enough to balance groups on a single large input file,
# coarse enough that the histogram of 100 M documents is ~100 k entries on the driver.
BIN_SHIFT = 10
PROFILE_SCHEMA = pa.schema([("location", pa.string()), ("min_id", pa.int64()), ("max_id", pa.int64()),
                            ("bins", pa.list_(pa.int64())), ("bin_docs", pa.list_(pa.int64())),
                            ("bin_bytes", pa.list_(pa.int64()))])


def profile_files(batch: pa.Table) -> pa.Table:
    """A Ray Data task: ``{location}`` rows in, one profile row per data file out (its id range and
    its documents and text bytes per id bin). Reads only ``doc_id`` and ``text``."""
    rows = []
    for location in batch.column("location").to_pylist():
        fs, path = filesystem_for(location)
        table = pads.dataset(path, filesystem=fs, format="parquet").to_table(columns=[DOC_ID, TEXT])
        if table.num_rows == 0:
            continue
        ids = table.column(DOC_ID).to_numpy()
        if table.column(DOC_ID).null_count:
            raise ValueError(f"{location}: {table.column(DOC_ID).null_count} kept row(s) have no doc_id")
        sizes = pc.binary_length(table.column(TEXT)).fill_null(0).to_numpy()
        bins, inverse = np.unique(ids >> BIN_SHIFT, return_inverse=True)
        rows.append({"location": location, "min_id": int(ids.min()), "max_id": int(ids.max()),
                     "bins": bins.tolist(), "bin_docs": np.bincount(inverse).tolist(),
                     "bin_bytes": np.bincount(inverse, weights=sizes).astype(np.int64).tolist()})
    return pa.Table.from_pylist(rows, schema=PROFILE_SCHEMA)


@dataclass
class PackingGroup:
    """Documents with ``lo <= doc_id < hi``, found in ``locations`` (files whose id span meets it)."""

    unit: int
    lo: int
    hi: int
    documents: int
    text_bytes: int
    locations: list[str] = field(default_factory=list)


def plan_groups(profiles: list[dict], workers: int, group_bytes: int) -> list[PackingGroup]:
    """Contiguous ``doc_id`` ranges balanced by text bytes: at least one per worker (so every task
    has work), more when the text exceeds ``group_bytes`` per group. A bin goes to the group its first
    byte falls in, so a bin is never split and the cut depends only on the histogram."""
    docs: dict[int, int] = {}
    sizes: dict[int, int] = {}
    for p in profiles:
        for b, n, s in zip(p["bins"], p["bin_docs"], p["bin_bytes"]):
            docs[b] = docs.get(b, 0) + n
            sizes[b] = sizes.get(b, 0) + s
    if not docs:
        return []
    order = sorted(docs)
    total = max(1, sum(sizes.values()))
    n_groups = min(len(order), max(workers, -(-total // group_bytes)))
    groups: list[PackingGroup] = []
    before = 0
    for b in order:
        index = min(n_groups - 1, before * n_groups // total)
        lo, hi = b << BIN_SHIFT, (b + 1) << BIN_SHIFT
        if groups and groups[-1].unit == index:
            group = groups[-1]
            group.hi, group.documents, group.text_bytes = hi, group.documents + docs[b], group.text_bytes + sizes[b]
        else:
            groups.append(PackingGroup(index, lo, hi, docs[b], sizes[b]))
        before += sizes[b]
    for unit, group in enumerate(groups):  # empty group indices are skipped: number the groups densely
        group.unit = unit
        group.locations = sorted(p["location"] for p in profiles if p["min_id"] < group.hi and p["max_id"] >= group.lo)
    return groups


def read_group_texts(locations: list[str], lo: int, hi: int) -> pa.ChunkedArray:
    """The text of every kept document with ``lo <= doc_id < hi``, in ``doc_id`` order. A group is
    bounded by ``group_mb`` of text, so it fits in a worker's memory; Parquet statistics skip the
    row groups of a file outside the range."""
    parts = []
    for location in locations:
        fs, path = filesystem_for(location)
        in_range = (pc.field(DOC_ID) >= lo) & (pc.field(DOC_ID) < hi)
        parts.append(pads.dataset(path, filesystem=fs, format="parquet").to_table(columns=[DOC_ID, TEXT],
                                                                                 filter=in_range))
    if not parts:
        return pa.chunked_array([], pa.string())
    table = pa.concat_tables(parts, promote_options="permissive").sort_by(DOC_ID)
    return table.column(TEXT)
