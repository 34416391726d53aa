"""Token shards → training rows: the manifest, a deterministic row order, and segment ids.

Shards are the tokenize stage's contract (``gristmill-shards/1``): Parquet files of fixed-length
packed rows, ``input_ids`` (``seq_len + 1`` int32 tokens, EOS after every document) and
``doc_starts`` (positions where a document begins inside the row).

The order rows are trained in is a pure function of the seed: epoch ``e`` visits the train files in
a permutation drawn from ``(seed, e)`` and each file's rows in stored order (the tokenize stage has
already shuffled rows across files). So "where training is" is a single number, the rows consumed
(= steps × global batch rows), and a resumed run re-enters the stream at exactly that row.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

SHARDS_FORMAT = "gristmill-shards/1"
MANIFEST_NAME = "manifest.json"


class ShardError(ValueError):
    """The shards are missing or do not follow the contract."""


class ShardsMissing(ShardError):
    """No shard manifest at the location (yet: the run that writes it may not have run)."""


@dataclass(frozen=True)
class ShardFile:
    path: str  # inside the filesystem
    rows: int


@dataclass(frozen=True)
class ShardSet:
    """One run's shards: where they live and what the manifest says about them."""

    fs: pafs.FileSystem
    root: str  # the run directory the manifest's relative paths start from
    manifest: dict[str, Any]
    train: tuple[ShardFile, ...]
    val: tuple[ShardFile, ...]

    @property
    def seq_len(self) -> int:
        return int(self.manifest["seq_len"])

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["tokenizer"]["vocab_size"])

    @property
    def train_rows(self) -> int:
        return sum(f.rows for f in self.train)


def locate_manifest(location: str) -> tuple[pafs.FileSystem, str]:
    """``location`` is a shards folder (holding manifest.json) or a run directory holding
    ``shards/``. Returns the filesystem and the manifest's path."""
    if "://" in location:
        fs, path = pafs.FileSystem.from_uri(location)
    else:
        import os

        fs, path = pafs.LocalFileSystem(), os.path.abspath(location)
    path = path.rstrip("/")
    # A run directory has a manifest.json of its own: its shards/ comes first.
    for candidate in (posixpath.join(path, "shards", MANIFEST_NAME), posixpath.join(path, MANIFEST_NAME)):
        if fs.get_file_info(candidate).type == pafs.FileType.File:
            return fs, candidate
    raise ShardsMissing(f"no shard manifest in {location} (looked for {MANIFEST_NAME} and shards/{MANIFEST_NAME}); "
                     "run a curate spec with a `tokenize` step first, or point `data` at its run directory")


def open_shards(location: str) -> ShardSet:
    """Read and check the manifest; row counts come from the Parquet footers (no data is read)."""
    fs, manifest_path = locate_manifest(location)
    with fs.open_input_stream(manifest_path) as f:
        try:
            manifest = json.loads(f.read())
        except json.JSONDecodeError as exc:
            raise ShardError(f"{manifest_path} is not JSON: {exc}") from None
    if manifest.get("format") != SHARDS_FORMAT:
        raise ShardError(f"{manifest_path}: format {manifest.get('format')!r}, expected {SHARDS_FORMAT!r}")
    for key in ("seq_len", "tokenizer", "splits"):
        if key not in manifest:
            raise ShardError(f"{manifest_path}: missing {key!r}")
    # Paths in the manifest are relative to the run directory, which holds shards/manifest.json.
    shards_dir = posixpath.dirname(manifest_path)
    root = posixpath.dirname(shards_dir)
    splits = {}
    for split in ("train", "val"):
        files = manifest["splits"].get(split, {}).get("files", [])
        splits[split] = tuple(ShardFile(p, _footer_rows(fs, p)) for p in (_resolve(fs, root, shards_dir, f) for f in files))
    if not splits["train"] or sum(f.rows for f in splits["train"]) == 0:
        raise ShardError(f"{manifest_path}: no train rows")
    return ShardSet(fs, root, manifest, splits["train"], splits["val"])


def _resolve(fs: pafs.FileSystem, root: str, shards_dir: str, rel: str) -> str:
    for base in (root, shards_dir):  # contract: relative to the run directory; tolerate shards-relative
        path = posixpath.join(base, rel)
        if fs.get_file_info(path).type == pafs.FileType.File:
            return path
    raise ShardError(f"shard file {rel!r} listed in the manifest is missing under {root}")


def _footer_rows(fs: pafs.FileSystem, path: str) -> int:
    with fs.open_input_file(path) as f:
        return pq.ParquetFile(f).metadata.num_rows


# --------------------------------------------------------------------------------------------------
# the deterministic stream


def epoch_file_order(n_files: int, seed: int, epoch: int) -> list[int]:
    """Train files of epoch ``epoch`` in the order they are visited (a seeded permutation)."""
    return [int(i) for i in np.random.default_rng([seed, epoch]).permutation(n_files)]


@dataclass(frozen=True)
class StreamSlice:
    """The part of the endless row stream a run still has to read: whole files from ``files`` after
    skipping ``skip_rows`` rows at its start (rows of the first file consumed before a resume)."""

    files: list[str]
    skip_rows: int
    rows: int  # rows in ``files`` after the skip


def stream_from(shards: ShardSet, seed: int, start_row: int, rows_needed: int) -> StreamSlice:
    """The train files (repeated over epochs as needed) that cover rows
    ``[start_row, start_row + rows_needed)`` of the seeded stream."""
    per_epoch = shards.train_rows
    epoch, offset = divmod(start_row, per_epoch)
    files: list[str] = []
    skip = 0
    available = 0
    while available < rows_needed:
        for i in epoch_file_order(len(shards.train), seed, epoch):
            f = shards.train[i]
            if offset >= f.rows:  # wholly consumed before the resume point: not read at all
                offset -= f.rows
                continue
            if not files:
                skip = offset
            offset = 0
            files.append(f.path)
            available += f.rows - (skip if len(files) == 1 else 0)
            if available >= rows_needed:
                break
        epoch += 1
    return StreamSlice(files, skip, available)


# --------------------------------------------------------------------------------------------------
# rows → model inputs (batch-wise, on Ray Data workers)


def to_model_inputs(batch: pa.Table, block_documents: bool, extra_columns: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """A batch of shard rows → ``input_ids`` [rows, seq_len+1] int64 and, when attention is blocked
    across documents, ``segment_ids`` [rows, seq_len+1] int32 (position p's document number inside
    its row: the count of ``doc_starts`` ≤ p). Pure NumPy over the Arrow buffers, no per-row Python."""
    ids_col = batch.column("input_ids").combine_chunks()
    rows = len(ids_col)
    lengths = pc.list_value_length(ids_col)
    width = pc.max(lengths).as_py() or 0 if rows else 0
    if rows and pc.min(lengths).as_py() != width:
        raise ShardError("rows of unequal length in input_ids; every row must hold seq_len + 1 tokens")
    flat = ids_col.flatten().to_numpy(zero_copy_only=False)
    out = {"input_ids": flat.reshape(rows, width).astype(np.int64)}
    if block_documents:
        starts = batch.column("doc_starts").combine_chunks()
        marks = np.zeros((rows, width), dtype=np.int32)
        pos = starts.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
        parent = pc.list_parent_indices(starts).to_numpy(zero_copy_only=False)
        if pos.size and (pos.min() < 0 or pos.max() >= width):
            raise ShardError(f"doc_starts outside [0, {width - 1}]")
        np.add.at(marks, (parent, pos), 1)
        out["segment_ids"] = np.cumsum(marks, axis=1, dtype=np.int32)
    for name in extra_columns:  # fine-tuning rows: loss masks, rejected ids (same width as input_ids)
        column = batch.column(name).combine_chunks()
        values = column.flatten().to_numpy(zero_copy_only=False)
        if rows and values.size != rows * width:
            raise ShardError(f"column {name!r} must hold {width} values per row, like input_ids")
        out[name] = values.reshape(rows, width).astype(np.int64)
    return out


# --------------------------------------------------------------------------------------------------
# Ray Data: the driver builds the datasets, each Train worker cuts its micro-batches from them


def read_rows(fs: pafs.FileSystem, files: list[str], block_documents: bool, extra_columns: tuple[str, ...] = ()):
    """A Ray Data dataset of model inputs from shard files (in order; a file may repeat across
    epochs). Order is kept by the trainer's ``preserve_order`` execution option."""
    import ray.data

    columns = (["input_ids", "doc_starts"] if block_documents else ["input_ids"]) + list(extra_columns)
    ds = ray.data.read_parquet(files, filesystem=fs, columns=columns)
    return ds.map_batches(to_model_inputs, batch_format="pyarrow",
                          fn_kwargs={"block_documents": block_documents, "extra_columns": tuple(extra_columns)})


class RankBatches:
    """This worker's micro-batches from the ordered row stream.

    Every worker reads the same ordered stream and keeps its own ``micro_batch`` rows out of each
    ``world × micro_batch`` rows (rank r takes rows ``[r·m, (r+1)·m)``). So the rows of global step s
    are rows ``[s·G, (s+1)·G)`` of the stream whatever the block layout, the number of read tasks or
    where the stream was entered: a requirement of exact resume that Ray's dynamic
    ``streaming_split`` cannot give. The price is that each worker decodes the whole token stream,
    which costs far less than a training step (token rows are a few KB).

    ``skip_rows`` drops rows at the start (those consumed before the checkpoint this worker resumes
    from, when the stream was opened at an earlier point).
    """

    def __init__(self, iterator: Any, world: int, rank: int, micro_batch: int, skip_rows: int = 0,
                 limit_rounds: int | None = None) -> None:
        self.iterator, self.world, self.rank, self.micro = iterator, world, rank, micro_batch
        self.skip_rows, self.limit_rounds = skip_rows, limit_rounds

    def __iter__(self):
        import torch

        per_round = self.world * self.micro
        skip = self.skip_rows
        rounds = 0
        pending: dict[str, Any] | None = None
        for batch in self.iterator.iter_torch_batches(batch_size=per_round, prefetch_batches=2):
            if skip:
                n = batch["input_ids"].shape[0]
                if skip >= n:
                    skip -= n
                    continue
                batch = {k: v[skip:] for k, v in batch.items()}
                skip = 0
            pending = batch if pending is None else {k: torch.cat([pending[k], batch[k]]) for k in batch}
            while pending is not None and pending["input_ids"].shape[0] >= per_round:
                round_rows = {k: v[:per_round] for k, v in pending.items()}
                rest = pending["input_ids"].shape[0] - per_round
                pending = {k: v[per_round:] for k, v in pending.items()} if rest else None
                yield {k: v[self.rank * self.micro:(self.rank + 1) * self.micro] for k, v in round_rows.items()}
                rounds += 1
                if self.limit_rounds is not None and rounds >= self.limit_rounds:
                    return
        if pending is not None and self.limit_rounds is not None:
            # Validation uses the tail too (a partial round: some ranks may get no rows).
            yield {k: v[self.rank * self.micro:(self.rank + 1) * self.micro] for k, v in pending.items()}
