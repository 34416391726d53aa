"""`minhash_dedup`: near-duplicate removal with MinHash LSH and connected components on Ray Data.

Rounds, each a verified resume point under ``work/<stage_id>/`` (see ``rounds``):

1. ``signatures``: one pass over the documents; per batch, vectorised MinHash signatures
   (``signatures``), cut into ``bands`` band keys and written as ``(band, band_key, doc_id)`` in one
   folder per group of ``bands_per_round`` bands; plus ``(doc_id, source[, score])`` for keepers.
2. ``lsh-NNN``: per band group, a hash shuffle on ``(band, band_key)``; each partition turns its
   buckets into star edges (``lsh``). A shuffle only ever holds ``bands_per_round`` bands. A group of
   at most ``local_max_band_rows`` rows (``lsh: auto``) is bucketed in one Ray task that reads the
   group's files instead: the same edges without a shuffle's fixed cost (Ray Data starts hash-shuffle
   aggregator actors per shuffle, seconds each on a small machine).
   ``verify`` (with ``verify: true``): the exact Jaccard of every candidate edge on the documents'
   shingles (written by the signature pass); edges below the threshold are dropped (``verify``).
3. ``cc-…``: connected components of the edges (``components``): large-star / small-star rounds on
   Ray Data, or one union-find task when the edges are few (``components: auto``).
4. ``removals``: (member, root) rows joined with the documents' source and score, shuffled on the
   cluster, one keeper per cluster (``clusters``), and one removal list per input file.
5. The final filter reads each batch's own files' lists and marks ``near_duplicate`` rows.

Defaults: word 5-grams, 14 bands x 8 rows = 112 permutations, 64-bit hashes (FineWeb). With
``threshold: J`` the bands x rows split of ``num_perm`` permutations is datasketch's
``MinHashLSH`` choice (minimising the equally weighted false positive and negative areas).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from curation.dedup import clusters
from curation.dedup.clusters import SCORE, KeepHighest, apply_removals, pick_keepers, score_column
from curation.dedup.components import component_roots, distributed_components, local_components
from curation.dedup.exact import default_partitions
from curation.dedup.lsh import band_keys, band_table, bucket_edges
from curation.dedup.rounds import WorkDir, parquet_files, write_table
from curation.dedup.signatures import MinHashSignatures
from curation.dedup.stats import add_file_counts, documents_by_file, write_stats
from curation.dedup.verify import ROUND as VERIFY_ROUND
from curation.dedup.verify import SHINGLES, implied_threshold, signatures_and_shingles, verify_round
from curation.faults import fault_point
from curation.operator import DOC_ID, SOURCE, TEXT, GlobalContext, GlobalOp, OpConfig, register_op


# One LSH round shuffles at most this many (band, band_key, doc_id) rows (20 bytes each: ~400 MB).
ROUND_ROWS = 20_000_000


class MinHashDedupConfig(OpConfig):
    ngram: int = Field(5, ge=1, description="shingle length in tokens (FineWeb: 5 words)")
    tokenize: Literal["words", "chars"] = Field("words", description="shingles of words or of characters")
    bands: int = Field(14, ge=1, description="LSH bands (FineWeb: 14)")
    rows: int = Field(8, ge=1, description="signature values per band (FineWeb: 8)")
    threshold: float | None = Field(None, gt=0, lt=1, description="derive bands x rows for this Jaccard "
                                    "threshold (datasketch's optimal parameters) instead of giving them")
    num_perm: int = Field(112, ge=2, description="permutations available to `threshold`")
    seed: int = Field(1, description="seed of the hash permutations")
    keep: Literal["lowest_doc_id"] | KeepHighest = Field(
        "lowest_doc_id", description="which document of a cluster survives: lowest_doc_id, or {highest: <score column>}")
    bands_per_round: int | None = Field(None, ge=1, description="bands shuffled together in one LSH round; "
                                        "default: as many as keep a round under 20 M (band, key, doc) rows")
    lsh: Literal["auto", "shuffle", "local"] = Field(
        "auto", description="LSH buckets of a band group by a Ray Data hash shuffle, or in one task reading the "
        "group's rows; `auto`: one task when the group holds at most `local_max_band_rows` rows")
    local_max_band_rows: int = Field(5_000_000, ge=0, description="`lsh: auto` buckets a band group in one task up "
                                     "to this many (band, key, doc) rows (20 bytes each: ~100 MB, ~0.5 GB to sort)")
    max_bucket_size: int = Field(100_000, ge=2, description="members of one LSH bucket that get edges; larger "
                                 "buckets are capped and counted")
    components: Literal["auto", "distributed", "local"] = Field(
        "auto", description="connected components on Ray Data, in one union-find task, or local when edges are few")
    local_max_edges: int = Field(5_000_000, ge=0, description="`auto` uses the union-find task up to this many edges")
    partitions: int | None = Field(None, ge=1, description="shuffle partitions; default from input size and CPUs")
    verify: bool = Field(False, description="exact Jaccard of every candidate edge on the same shingles; edges "
                         "below `threshold` (given, or (1/bands)^(1/rows)) are dropped, so false positives are kept")
    local_max_verify_mb: int = Field(512, ge=0, description="`verify` checks every edge in one task while the "
                                     "edges' endpoints hold at most this much shingle data (8 bytes per distinct "
                                     "n-gram), else by two shuffles; 0: always shuffle")

    @property
    def verify_threshold(self) -> float:
        return self.threshold if self.threshold is not None else implied_threshold(self.bands, self.rows)

    @model_validator(mode="after")
    def _derive_bands(self):
        if self.threshold is not None:
            if {"bands", "rows"} & self.model_fields_set:
                if self.verify:  # bands x rows shape the LSH, `threshold` is the exact cut-off
                    return self
                raise ValueError("give either `threshold` or `bands`/`rows`, not both (unless `verify: true`, "
                                 "where `threshold` is the exact Jaccard cut-off)")
            from datasketch.lsh import _optimal_param

            self.bands, self.rows = _optimal_param(self.threshold, self.num_perm, 0.5, 0.5)
        return self


def write_signatures(batch: pa.Table, cfg: MinHashDedupConfig, work: WorkDir, score: str | None) -> pa.Table:
    """One batch of documents → band rows per band group, and the keeper columns."""
    hasher = MinHashSignatures(cfg.bands * cfg.rows, cfg.ngram, cfg.seed, cfg.tokenize)
    doc_ids = batch.column(DOC_ID).to_numpy()
    extra_rows = 0
    if cfg.verify:  # the verify round needs each document's shingles: tokenised once, kept here
        sig, has, sets = signatures_and_shingles(hasher, batch.column(TEXT))
        kept = pa.table({DOC_ID: pa.array(doc_ids, pa.int64()), SHINGLES: sets}).filter(pa.array(has))
        if kept.num_rows:
            write_table(work.fs, work.path("signatures", SHINGLES), kept)
        extra_rows = kept.num_rows
    else:
        sig, has = hasher.of_batch(batch.column(TEXT))  # no tokens, no signature: nobody's near duplicate
    keys = band_keys(sig[has], cfg.bands, cfg.rows)
    rows = 0
    for group, first in enumerate(range(0, cfg.bands, cfg.bands_per_round)):
        table = band_table(keys, doc_ids[has], range(first, min(cfg.bands, first + cfg.bands_per_round)))
        if table.num_rows:
            write_table(work.fs, work.path("signatures", f"bands-{group:03d}"), table)
        rows += table.num_rows
    meta_rows = 0
    if score:  # the keeper rule needs each member's score later
        meta = pa.table({DOC_ID: batch.column(DOC_ID), SCORE: batch.column(score).cast(pa.float64())}).filter(pa.array(has))
        if meta.num_rows:
            write_table(work.fs, work.path("signatures", "docs"), meta)
        meta_rows = meta.num_rows
    # per input file: documents seen (for source_rates); the rows written go on the first line
    counts = documents_by_file(batch)
    written = [rows + meta_rows + extra_rows] + [0] * (counts.num_rows - 1) if counts.num_rows else []
    return counts.append_column("rows", pa.array(written, pa.int64()))


def write_edges(table: pa.Table, work: WorkDir, out: str, max_bucket_size: int) -> pa.Table:
    edges, stats = bucket_edges(table, max_bucket_size)
    if edges.num_rows:
        write_table(work.fs, work.path(out), edges)
    return pa.table({"rows": [edges.num_rows], **{k: [v] for k, v in stats.items()}})


def local_bucket_task(work: WorkDir, source: str, out: str, max_bucket_size: int) -> dict[str, int]:
    """One band group's rows read and bucketed in one task (a small group): the same star edges as
    the shuffle, whose partitions each hold whole buckets too."""
    files = parquet_files(work.fs, work.path(source))
    table = pa.concat_tables([pq.read_table(f, filesystem=work.fs) for f in files])
    summary = write_edges(table, work, out, max_bucket_size)
    return {name: int(summary.column(name)[0].as_py()) for name in summary.column_names}


def members_of(edges: pa.Table) -> pa.Table:
    """(member, root) edges → (doc_id, cluster_id) rows for members and roots alike."""
    src, dst = edges.column("src"), edges.column("dst")
    return pa.table({DOC_ID: pa.chunked_array(src.chunks + dst.chunks, pa.int64()),
                     "cluster_id": pa.chunked_array(dst.chunks + dst.chunks, pa.int64())})


def with_null_score(table: pa.Table) -> pa.Table:
    return table.append_column(SCORE, pa.nulls(table.num_rows, pa.float64()))


def as_docs(meta: pa.Table) -> pa.Table:
    return pa.table({DOC_ID: meta.column(DOC_ID), "cluster_id": pa.nulls(meta.num_rows, pa.int64()),
                     SCORE: meta.column(SCORE)})


def join_scores(table: pa.Table) -> pa.Table:
    """One doc_id partition of the union of members and (doc_id, score) rows: each member's score."""
    is_member = pa.compute.is_valid(table.column("cluster_id"))
    members = table.filter(is_member).select([DOC_ID, "cluster_id"])
    docs = table.filter(pa.compute.invert(is_member)).select([DOC_ID, SCORE])
    return members.join(docs, DOC_ID, join_type="left outer")


def local_clusters_task(work: WorkDir, edge_dirs: list[str]) -> pa.Table:
    """Union-find over all edges in one task, keeper = lowest doc_id = the component's root, and the
    per-file removal lists written directly: no shuffle at all for edge sets that fit one worker."""
    nodes, roots = component_roots(work, edge_dirs)
    _, label, sizes = np.unique(roots, return_inverse=True, return_counts=True)
    members = pa.table({DOC_ID: nodes, "cluster_id": roots, "cluster_size": sizes[label].astype(np.int64),
                        "duplicate_of": pa.array(roots, pa.int64(), mask=nodes == roots)}, schema=clusters.MEMBER_SCHEMA)
    return clusters.write_removal_lists(members, work)


@register_op
class MinHashDedup(GlobalOp):
    """Remove near-duplicate documents (MinHash LSH, connected components), keeping one per cluster."""

    name = "minhash_dedup"
    memory = ("per document its shingle hashes (8 bytes per token) and one permutation block (~4 MiB); per "
              "document kept: bands x rows x 8 bytes of signature (896 B by default); LSH in one task up to "
              "local_max_band_rows band rows (5 M), union-find up to local_max_edges edges (5 M); beyond, Ray "
              "shuffles (object store, spills to disk)")
    Config = MinHashDedupConfig
    defaults_from = "FineWeb MinHash: word 5-grams, 14 bands x 8 rows, 64-bit hashes; Kiveris et al. 2014 components"
    reason = "near_duplicate"

    def apply(self, ds: Any, context: GlobalContext) -> Any:
        import ray

        from curation.dedup.rounds import sum_summaries

        cfg = self.config
        work = WorkDir(context.work_dir, context.filesystem)
        score = score_column(cfg.keep)
        # The signature pass counts documents per input file as it goes: no extra pass over the data.
        sig_info = work.finished("signatures")
        if sig_info is None:
            # ds.count() of a Parquet read comes from the footers; it sizes the LSH rounds
            per_round = cfg.bands_per_round or max(1, min(cfg.bands, ROUND_ROWS // max(1, ds.count())))
            cfg = cfg.model_copy(update={"bands_per_round": per_round})
            work.begin("signatures")
            columns = [DOC_ID, TEXT, SOURCE] + ([score] if score else [])
            by_file: dict[str, list] = {}
            rows = 0
            summaries = ds.select_columns(columns).map_batches(
                write_signatures, batch_format="pyarrow", fn_kwargs={"cfg": cfg, "work": work, "score": score})
            for batch in summaries.iter_batches(batch_format="pyarrow", batch_size=None):
                fault_point("dedup.signatures.batch")  # inside the signature round, files half written
                add_file_counts(by_file, batch)
                rows += sum(batch.column("rows").to_pylist())
            sig_info = work.finish("signatures", rows, documents_by_file=by_file, bands_per_round=per_round)
        by_file = sig_info["documents_by_file"]
        documents = sum(n for _, n in by_file.values())
        per_round = sig_info["bands_per_round"]  # a resumed run keeps the grouping its files were written with
        cfg = cfg.model_copy(update={"bands_per_round": per_round})
        groups = math.ceil(cfg.bands / per_round)
        partitions = cfg.partitions or default_partitions(documents * per_round, context.num_cpus)
        summary: dict[str, Any] = {"bands": cfg.bands, "rows": cfg.rows, "partitions": partitions}
        read = {"filesystem": work.ray_filesystem()}

        if work.finished(clusters.REMOVALS) is None:
            edge_dirs = []
            for group in range(groups):
                name = f"lsh-{group:03d}"
                info = work.finished(name)
                if info is None:
                    work.begin(name)
                    source = work.path("signatures", f"bands-{group:03d}")
                    group_rows = documents * (min(cfg.bands, (group + 1) * per_round) - group * per_round)
                    if work.fs.get_file_info(source).type.name == "NotFound":
                        info = work.finish(name, 0, buckets=0, capped_buckets=0, capped_docs=0)
                    elif cfg.lsh == "local" or (cfg.lsh == "auto" and group_rows <= cfg.local_max_band_rows):
                        totals = ray.get(ray.remote(num_cpus=1)(local_bucket_task).remote(
                            work, f"signatures/bands-{group:03d}", name, cfg.max_bucket_size))
                        info = work.finish(name, totals.pop("rows"), backend="local", **totals)
                    else:
                        bands = ray.data.read_parquet(work.uri("signatures", f"bands-{group:03d}"), **read)
                        totals = sum_summaries(bands.repartition(partitions, keys=["band", "band_key"]).map_batches(
                            write_edges, batch_format="pyarrow", batch_size=None,
                            fn_kwargs={"work": work, "out": name, "max_bucket_size": cfg.max_bucket_size}))
                        info = work.finish(name, totals.pop("rows", 0), backend="shuffle", **totals)
                for key in ("rows", "buckets", "capped_buckets", "capped_docs"):
                    summary[f"lsh_{key}"] = summary.get(f"lsh_{key}", 0) + info.get(key, 0)
                summary["lsh_local_rounds"] = summary.get("lsh_local_rounds", 0) + (info.get("backend") == "local")
                if info["rows"]:
                    edge_dirs.append(name)

            edges = summary.get("lsh_rows", 0)
            if cfg.verify:
                summary["verify_threshold"] = cfg.verify_threshold
                if edge_dirs:
                    info = verify_round(work, edge_dirs, partitions, cfg.verify_threshold,
                                        cfg.local_max_verify_mb * 2**20)
                    edge_dirs, edges = ([VERIFY_ROUND] if info["rows"] else []), info["rows"]
                    summary["verify_candidate_edges"] = info["candidates"]
                    summary["verify_removed_edges"] = info["removed"]
                    summary["verify_backend"] = info.get("backend")
                else:
                    summary["verify_candidate_edges"] = summary["verify_removed_edges"] = 0
            backend = cfg.components
            if backend == "auto":
                backend = "local" if edges <= cfg.local_max_edges else "distributed"
            summary["components_backend"] = backend
            if not edge_dirs or (backend == "local" and not score):
                final: list[str] = []
            elif backend == "local":
                final = local_components(work, edge_dirs)["final"]
            else:
                result = distributed_components(work, edge_dirs, partitions)
                final, summary["components_rounds"] = result["final"], result["rounds"]

            work.begin(clusters.REMOVALS)
            if edge_dirs and backend == "local" and not score:
                stats = ray.get(ray.remote(num_cpus=1)(local_clusters_task).remote(work, edge_dirs))
                totals = clusters.add_stats({}, stats)  # a few rows: summed here, no Ray Data pass
                work.finish(clusters.REMOVALS, totals.pop("rows", {}).get("", 0), **totals)
            elif final:
                members = ray.data.read_parquet(final, **read).map_batches(members_of, batch_format="pyarrow")
                if score:
                    # Ray's Dataset.join needs polars; a union shuffled on doc_id and Arrow's hash
                    # join per partition is the same plan without it.
                    docs = ray.data.read_parquet(work.uri("signatures", "docs"), **read).map_batches(
                        as_docs, batch_format="pyarrow")
                    members = members.map_batches(with_null_score, batch_format="pyarrow").union(docs)
                    joined = members.repartition(partitions, keys=[DOC_ID]).map_batches(
                        join_scores, batch_format="pyarrow", batch_size=None)
                else:
                    joined = members
                picked = joined.repartition(partitions, keys=["cluster_id"]).map_batches(
                    pick_keepers, batch_format="pyarrow", batch_size=None)
                clusters.removal_round(picked, work, partitions)
            else:
                work.finish(clusters.REMOVALS, 0)
        if cfg.verify and "verify_threshold" not in summary:  # resumed after the verify round
            verified = work.finished(VERIFY_ROUND) or {}
            summary.update(verify_threshold=cfg.verify_threshold,
                           verify_candidate_edges=verified.get("candidates", 0),
                           verify_removed_edges=verified.get("removed", 0))
        info = work.finished(clusters.REMOVALS)
        summary["members"] = info["rows"]
        write_stats(context.run_root, context.filesystem, self.step_label, by_file, info, summary)
        return ds.map_batches(apply_removals, batch_format="pyarrow", fn_kwargs={"work": work, "reason": self.reason})
