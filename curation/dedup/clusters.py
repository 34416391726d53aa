"""From clusters to decisions: one keeper per cluster, removal lists per input file, the filter.

Keeper rule (``keep``): the lowest ``doc_id`` (the first-seen document: ids follow the sorted input
listing, so this is deterministic and matches datatrove's "keep the first"), or ``{highest: COL}``,
the document with the highest value of a numeric score column (ties, and documents whose score is
null, fall back to the lowest ``doc_id``).

Membership rows ``(doc_id, cluster_id, cluster_size, duplicate_of)`` exist for every document in a
cluster of two or more; ``cluster_id`` is the cluster's lowest ``doc_id`` whatever the keeper rule,
``duplicate_of`` is null for the keeper. They are written under ``removals/`` in one folder per
input file. The input file is ``doc_id >> 32`` (DESIGN.md: ``doc_id = file_index << 32 | row``), so
no round needs the ``source`` string of a member, and the final filter, running over the
documents, reads only the lists of the files its batch came from.
"""

from __future__ import annotations

import posixpath
from collections import OrderedDict
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from curation.operator import DOC_ID, REASON, set_column
from curation.dedup.rounds import WorkDir, parquet_files, write_table

DUPLICATE_OF = "dedup.duplicate_of"
CLUSTER_ID = "dedup.cluster_id"
CLUSTER_SIZE = "dedup.cluster_size"
SCORE = "_score"
MEMBER_SCHEMA = pa.schema([(DOC_ID, pa.int64()), ("cluster_id", pa.int64()), ("cluster_size", pa.int64()),
                           ("duplicate_of", pa.int64())])
REMOVALS = "removals"


class KeepHighest(BaseModel):
    """``keep: {highest: quality.score}``: keep the cluster's document with the highest score."""

    model_config = ConfigDict(extra="forbid")
    highest: str


KeepRule = KeepHighest | None  # None: lowest doc_id


def score_column(keep: Any) -> str | None:
    return keep.highest if isinstance(keep, KeepHighest) else None


def pick_keepers(table: pa.Table) -> pa.Table:
    """Rows ``(doc_id, cluster_id[, _score])`` holding whole clusters (the caller partitioned
    by ``cluster_id``), possibly with repeated documents → one membership row per document."""
    if table.num_rows == 0:
        return MEMBER_SCHEMA.empty_table()
    doc = table.column(DOC_ID).to_numpy()
    cluster = table.column("cluster_id").to_numpy()
    if SCORE in table.column_names:
        # highest first; a null score ranks below every real one
        score = pc.fill_null(table.column(SCORE).cast(pa.float64()), -np.inf).to_numpy()
        score = np.nan_to_num(score, nan=-np.inf)
        order = np.lexsort((doc, -score, cluster))
    else:
        order = np.lexsort((doc, cluster))
    doc, cluster = doc[order], cluster[order]
    _, first = np.unique(doc, return_index=True)  # a document may come from several edges
    keep = np.zeros(len(doc), dtype=bool)
    keep[first] = True
    order, doc, cluster = order[keep], doc[keep], cluster[keep]
    new = np.ones(len(doc), dtype=bool)
    new[1:] = cluster[1:] != cluster[:-1]
    starts = np.flatnonzero(new)
    sizes = np.diff(np.append(starts, len(doc)))
    run = np.cumsum(new) - 1
    keeper = doc[starts][run]
    size = sizes[run]
    multi = size > 1  # clusters of one (possible after a capped bucket) decide nothing
    duplicate_of = pa.array(keeper[multi], pa.int64(), mask=(doc[multi] == keeper[multi]))
    return pa.table({
        DOC_ID: doc[multi], "cluster_id": cluster[multi], "cluster_size": size[multi].astype(np.int64), "duplicate_of": duplicate_of,
    }, schema=MEMBER_SCHEMA)


def file_index(doc_ids) -> np.ndarray:
    """The input file of each document: the high 32 bits of its id."""
    return np.asarray(doc_ids, dtype=np.int64) >> 32


def file_folder(index: int) -> str:
    """The removal-list folder of one input file."""
    return posixpath.join(REMOVALS, f"file-{int(index)}")


STATS_SCHEMA = pa.schema([("kind", pa.string()), ("key", pa.string()), ("value", pa.int64())])


def write_removal_lists(table: pa.Table, work: WorkDir) -> pa.Table:
    """One block of membership rows: one file per input file in the block. Returns long-format
    stats: rows written, members by cluster size, duplicates by input file."""
    kinds, keys, values = ["rows"], [""], [table.num_rows]
    if table.num_rows:
        files = file_index(table.column(DOC_ID).to_numpy())
        is_dup = table.column("duplicate_of").is_valid().to_numpy(zero_copy_only=False)
        for index in np.unique(files):
            mine = files == index
            write_table(work.fs, work.path(file_folder(index)), table.filter(pa.array(mine)))
            kinds.append("duplicates_by_file")
            keys.append(str(int(index)))
            values.append(int((is_dup & mine).sum()))
        sizes, members = np.unique(table.column("cluster_size").to_numpy(), return_counts=True)
        kinds += ["members_by_size"] * len(sizes)
        keys += [str(int(v)) for v in sizes]
        values += [int(v) for v in members]
    return pa.table({"kind": kinds, "key": keys, "value": values}, schema=STATS_SCHEMA)


def add_stats(out: dict[str, dict[str, int]], batch: pa.Table) -> dict[str, dict[str, int]]:
    """Add one table of the writers' long-format stats into ``out``."""
    for kind, key, value in zip(*(batch.column(c).to_pylist() for c in ("kind", "key", "value"))):
        bucket = out.setdefault(kind, {})
        bucket[key] = bucket.get(key, 0) + value
    return out


def drive_stats(ds: Any) -> dict[str, dict[str, int]]:
    """Add up the writers' long-format stats (a few rows per source; never documents)."""
    out: dict[str, dict[str, int]] = {}
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        add_stats(out, batch)
    return out


def removal_round(members: Any, work: WorkDir, partitions: int) -> dict:
    """Write the per-file lists as the ``removals`` round. Each cluster partition writes one file per
    input file it holds into that file's folder (at most ``partitions`` files per folder), which
    saves a shuffle and still lets the filter read only its own files' lists."""
    work.begin(REMOVALS)
    stats = members.map_batches(
        write_removal_lists, batch_format="pyarrow", batch_size=None, fn_kwargs={"work": work})
    totals = drive_stats(stats)
    rows = totals.pop("rows", {}).get("", 0)
    return work.finish(REMOVALS, rows, **totals)


# ---------------------------------------------------------------------------- the final filter

_LISTS: "OrderedDict[tuple[str, int], pa.Table]" = OrderedDict()
_LISTS_CACHED = 32  # per worker process; one list holds only that file's clustered documents


def _removal_list(work: WorkDir, index: int) -> pa.Table:
    key = (work.location, int(index))
    if key in _LISTS:
        _LISTS.move_to_end(key)
        return _LISTS[key]
    files = parquet_files(work.fs, work.path(file_folder(index)))
    table = pa.concat_tables([pq.read_table(f, filesystem=work.fs) for f in files]) if files else MEMBER_SCHEMA.empty_table()
    _LISTS[key] = table
    if len(_LISTS) > _LISTS_CACHED:
        _LISTS.popitem(last=False)
    return table


def apply_removals(batch: pa.Table, work: WorkDir, reason: str) -> pa.Table:
    """Mark the batch's duplicates: ``reason`` and the dedup columns (kept cluster members carry
    their cluster id and size too; documents in no cluster get nulls)."""
    files = np.unique(file_index(batch.column(DOC_ID).to_numpy())) if batch.num_rows else []
    lists = [_removal_list(work, f) for f in files]
    members = pa.concat_tables(lists) if lists else MEMBER_SCHEMA.empty_table()
    at = pc.index_in(batch.column(DOC_ID), value_set=members.column(DOC_ID).combine_chunks())
    duplicate_of = members.column("duplicate_of").take(at)
    is_dup = pc.fill_null(pc.is_valid(duplicate_of), False)
    old_reason = batch.column(REASON) if REASON in batch.column_names else pa.nulls(batch.num_rows, pa.string())
    batch = set_column(batch, REASON, pc.if_else(is_dup, pa.scalar(reason), old_reason.cast(pa.string())))
    batch = set_column(batch, DUPLICATE_OF, duplicate_of.cast(pa.int64()))
    batch = set_column(batch, CLUSTER_ID, members.column("cluster_id").take(at).cast(pa.int64()))
    return set_column(batch, CLUSTER_SIZE, members.column("cluster_size").take(at).cast(pa.int64()))
