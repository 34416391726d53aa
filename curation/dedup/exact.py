"""`exact_dedup`: documents whose normalised text is identical; one of each group is kept.

Each document's text is normalised (``normalization``, see ``text_key``) and hashed to 128 bits
(xxh3-128: a collision among 10^12 documents has probability ~10^-15). The ``keys`` round writes
narrow rows ``(doc_id, key[, score])`` under ``work/`` (and counts documents per input file on the
way). The ``removals`` round groups them: up to ``local_max_rows`` key rows (``grouping: auto``) in
one Ray task that reads them all — a hash shuffle's aggregator start-up costs tens of seconds, far
more than grouping a few million 24-byte rows — and beyond that by a Ray Data hash shuffle on
``key``, so every group lands whole in one partition. Keepers are picked with NumPy and the
membership rows go into one removal list per input file. The final filter runs over the documents
where they are (their text never moves) and reads only the lists of its batch's files.

Removed documents go to ``rejected/<step>/`` with reason ``exact_duplicate``, ``dedup.duplicate_of``
(the kept ``doc_id``), ``dedup.cluster_id`` (the group's lowest ``doc_id``) and
``dedup.cluster_size``. The ``keys`` and ``removals`` rounds under ``work/`` are the resume points.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from curation.dedup import clusters
from curation.dedup.clusters import (SCORE, KeepHighest, apply_removals, pick_keepers, score_column,
                                     write_removal_lists)
from curation.dedup.rounds import WorkDir, parquet_files, write_table
from curation.dedup.stats import add_file_counts, documents_by_file, write_stats
from curation.dedup.text_key import TextNormalization, normalized_text, text_keys
from curation.operator import DOC_ID, SOURCE, TEXT, GlobalContext, GlobalOp, OpConfig, register_op


class ExactDedupConfig(OpConfig):
    normalization: TextNormalization = Field(default_factory=TextNormalization,
                                             description="what differences do not count (see text_key)")
    keep: Literal["lowest_doc_id"] | KeepHighest = Field(
        "lowest_doc_id", description="which duplicate survives: lowest_doc_id, or {highest: <score column>}")
    partitions: int | None = Field(None, ge=1, description="shuffle partitions; default from input size and CPUs")
    grouping: Literal["auto", "shuffle", "local"] = Field(
        "auto", description="key groups by a Ray Data hash shuffle, or in one task reading every key row; "
        "`auto`: one task up to `local_max_rows` documents")
    local_max_rows: int = Field(5_000_000, ge=0, description="`grouping: auto` groups in one task up to this many "
                                "key rows (~24 bytes each in memory)")


def default_partitions(rows: int, num_cpus: float, rows_per_partition: int = 1_000_000) -> int:
    """Enough partitions that one holds ~1 M narrow rows (tens of MB), and at least two per CPU."""
    return max(2 * max(1, int(num_cpus)), -(-rows // rows_per_partition))


def key_rows(batch: pa.Table, normalization: TextNormalization, score: str | None) -> pa.Table:
    columns = {DOC_ID: batch.column(DOC_ID), "key": text_keys(normalized_text(batch.column(TEXT), normalization))}
    if score:
        columns[SCORE] = batch.column(score).cast(pa.float64())
    table = pa.table(columns)
    return table.filter(pc.is_valid(table.column("key")))


def exact_groups(table: pa.Table) -> pa.Table:
    """One partition of key rows (whole key groups) → membership rows of groups of two or more."""
    if table.num_rows == 0:
        return pick_keepers(table.append_column("cluster_id", pa.array([], pa.int64())))
    keys = table.column("key").combine_chunks()
    # group ids from the 16-byte keys, then each group's lowest doc_id as its cluster id
    codes = pc.dictionary_encode(keys).indices.to_numpy()
    doc = table.column(DOC_ID).to_numpy()
    lowest = np.full(codes.max() + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(lowest, codes, doc)
    sizes = np.bincount(codes)
    in_group = sizes[codes] > 1
    table = table.drop_columns(["key"]).append_column("cluster_id", pa.array(lowest[codes], pa.int64()))
    return pick_keepers(table.filter(pa.array(in_group)))


KEYS = "keys"


def write_keys(batch: pa.Table, work: WorkDir, normalization: TextNormalization, score: str | None) -> pa.Table:
    """One batch of documents → its key rows written under ``keys/``; returns the batch's documents per
    input file, with the rows written on the first line (a few integers reach the driver)."""
    keyed = key_rows(batch, normalization, score)
    if keyed.num_rows:
        write_table(work.fs, work.path(KEYS, "rows"), keyed)  # the round marker sits in keys/
    counts = documents_by_file(batch)
    written = [keyed.num_rows] + [0] * (counts.num_rows - 1) if counts.num_rows else []
    return counts.append_column("rows", pa.array(written, pa.int64()))


def local_groups_task(work: WorkDir) -> pa.Table:
    """Every key row read and grouped in one task (a small corpus): the same membership rows as the
    shuffle, whose partitions each hold whole groups too; returns the removal lists' stats rows."""
    files = parquet_files(work.fs, work.path(KEYS, "rows"))
    if not files:
        return write_removal_lists(clusters.MEMBER_SCHEMA.empty_table(), work)
    keyed = pa.concat_tables([pq.read_table(f, filesystem=work.fs) for f in files])
    return write_removal_lists(exact_groups(keyed), work)


@register_op
class ExactDedup(GlobalOp):
    """Remove documents whose normalised text is identical to a kept one."""

    name = "exact_dedup"
    memory = ("a 128-bit key, doc_id and file per document (~40 bytes) in the keys round; grouping in one task "
              "holds every key row up to local_max_rows (5 M: ~200 MB), beyond it Ray's hash shuffle (object "
              "store, spills to disk)")
    Config = ExactDedupConfig
    defaults_from = "normalise-then-hash exact dedup as in CCNet and datatrove's ExactDedup; xxh3-128 keys"
    reason = "exact_duplicate"

    def apply(self, ds: Any, context: GlobalContext) -> Any:
        cfg = self.config
        work = WorkDir(context.work_dir, context.filesystem)
        score = score_column(cfg.keep)
        keys_info = work.finished(KEYS)
        if keys_info is None:
            work.begin(KEYS)
            columns = [DOC_ID, TEXT, SOURCE] + ([score] if score else [])
            written = ds.select_columns(columns).map_batches(
                write_keys, batch_format="pyarrow",
                fn_kwargs={"work": work, "normalization": cfg.normalization, "score": score})
            by_file: dict[str, list] = {}
            rows = 0
            for batch in written.iter_batches(batch_format="pyarrow", batch_size=None):
                add_file_counts(by_file, batch)
                rows += sum(batch.column("rows").to_pylist())
            keys_info = work.finish(KEYS, rows, documents_by_file=by_file)
        by_file, key_count = keys_info["documents_by_file"], keys_info["rows"]
        partitions = cfg.partitions or default_partitions(sum(n for _, n in by_file.values()), context.num_cpus)
        local = cfg.grouping == "local" or (cfg.grouping == "auto" and key_count <= cfg.local_max_rows)
        info = work.finished(clusters.REMOVALS)
        if info is None and local:
            import ray

            work.begin(clusters.REMOVALS)
            totals = clusters.add_stats({}, ray.get(ray.remote(num_cpus=1)(local_groups_task).remote(work)))
            info = work.finish(clusters.REMOVALS, totals.pop("rows", {}).get("", 0), **totals)
        elif info is None:
            keyed = ray_read_parquet(work)
            members = keyed.repartition(partitions, keys=["key"]).map_batches(
                exact_groups, batch_format="pyarrow", batch_size=None)
            info = clusters.removal_round(members, work, partitions)
        write_stats(context.run_root, context.filesystem, self.step_label, by_file, info,
                    {"members": info["rows"], "grouping": "local" if local else "shuffle",
                     "partitions": None if local else partitions})
        return ds.map_batches(apply_removals, batch_format="pyarrow",
                              fn_kwargs={"work": work, "reason": self.reason})


def ray_read_parquet(work: WorkDir) -> Any:
    import ray

    return ray.data.read_parquet(work.uri(KEYS, "rows"), filesystem=work.ray_filesystem())
