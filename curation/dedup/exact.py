"""`exact_dedup`: documents whose normalised text is identical; one of each group is kept.

Each document's text is normalised (``normalization``, see ``text_key``) and hashed to 128 bits
(xxh3-128: a collision among 10^12 documents has probability ~10^-15). Rows ``(doc_id, key[,
score])`` are hash-shuffled on ``key`` with Ray Data, so every group lands whole in one partition;
each partition picks keepers with NumPy and writes the membership rows into one removal list per
input file. The final filter runs over the documents where they
are (their text never moves) and reads only the lists of its batch's files.

Removed documents go to ``rejected/<step>/`` with reason ``exact_duplicate``, ``dedup.duplicate_of``
(the kept ``doc_id``), ``dedup.cluster_id`` (the group's lowest ``doc_id``) and
``dedup.cluster_size``. The ``removals`` round under ``work/`` is the resume point.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curation.dedup import clusters
from curation.dedup.clusters import SCORE, KeepHighest, apply_removals, pick_keepers, score_column
from curation.dedup.rounds import WorkDir
from curation.dedup.stats import add_file_counts, documents_by_file, write_stats
from curation.dedup.text_key import TextNormalization, normalized_text, text_keys
from curation.operator import DOC_ID, SOURCE, TEXT, GlobalContext, GlobalOp, OpConfig, register_op


class ExactDedupConfig(OpConfig):
    normalization: TextNormalization = Field(default_factory=TextNormalization,
                                             description="what differences do not count (see text_key)")
    keep: Literal["lowest_doc_id"] | KeepHighest = Field(
        "lowest_doc_id", description="which duplicate survives: lowest_doc_id, or {highest: <score column>}")
    partitions: int | None = Field(None, ge=1, description="shuffle partitions; default from input size and CPUs")


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


def count_by_file(ds: Any) -> dict[str, list]:
    """{input file index: [source, documents]} (one row per file reaches the driver)."""
    totals: dict[str, list] = {}
    counts = ds.select_columns([DOC_ID, SOURCE]).map_batches(documents_by_file, batch_format="pyarrow", batch_size=None)
    for batch in counts.iter_batches(batch_format="pyarrow", batch_size=None):
        add_file_counts(totals, batch)
    return totals


@register_op
class ExactDedup(GlobalOp):
    """Remove documents whose normalised text is identical to a kept one."""

    name = "exact_dedup"
    Config = ExactDedupConfig
    defaults_from = "normalise-then-hash exact dedup as in CCNet and datatrove's ExactDedup; xxh3-128 keys"
    reason = "exact_duplicate"

    def apply(self, ds: Any, context: GlobalContext) -> Any:
        cfg = self.config
        work = WorkDir(context.work_dir, context.filesystem)
        score = score_column(cfg.keep)
        by_file = count_by_file(ds)
        partitions = cfg.partitions or default_partitions(sum(n for _, n in by_file.values()), context.num_cpus)
        info = work.finished(clusters.REMOVALS)
        if info is None:
            columns = [DOC_ID, TEXT] + ([score] if score else [])
            keyed = ds.select_columns(columns).map_batches(
                key_rows, batch_format="pyarrow", fn_kwargs={"normalization": cfg.normalization, "score": score})
            members = keyed.repartition(partitions, keys=["key"]).map_batches(
                exact_groups, batch_format="pyarrow", batch_size=None)
            info = clusters.removal_round(members, work, partitions)
        write_stats(context.run_root, context.filesystem, self.step_label, by_file, info,
                    {"members": info["rows"], "partitions": partitions})
        return ds.map_batches(apply_removals, batch_format="pyarrow",
                              fn_kwargs={"work": work, "reason": self.reason})
