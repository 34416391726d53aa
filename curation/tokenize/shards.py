"""Global shuffle of packed rows into shard files, and ``shards/manifest.json``.

Every packed row carries a shuffle key: a 63-bit hash of the seed and the row's identity (see
:func:`~curation.tokenize.encode.shuffle_keys`), uniform over the key space. Shard ``i`` of ``S`` is
the sorted set of rows whose key falls in the ``i``-th equal range, so the global shuffle is a range
partition: one Ray task per shard reads its key range from every packed file (each file is sorted by
key in small row groups, so Parquet statistics skip the rest), sorts it and writes it. Because the
ranges are fixed by the key space and the row count, a seed gives the same shards on every rerun,
on any cluster. (Ray Data's ``sort`` / ``random_shuffle`` would do the same all-to-all, but their
shuffle machinery costs tens of seconds of fixed overhead per split on a small node; plain map
tasks cost one task per shard.)

Shards are written under ``.tmp-`` names, renamed to ``<split>-00000.parquet`` … in key order by the
driver, and the manifest is written last, so a killed run never leaves a shard set that looks
finished.
"""

from __future__ import annotations

import posixpath
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from curation.faults import fault_point
from curation.ingest.listing import filesystem_for

FORMAT = "gristmill-shards/1"
SHARD_COLUMNS = ("input_ids", "doc_starts")
SHARD_SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("doc_starts", pa.list_(pa.int32()))])
WRITTEN_SCHEMA = pa.schema([("index", pa.int64()), ("tmp", pa.string()), ("rows", pa.int64()),
                            ("documents", pa.int64())])
KEY_SPACE = 1 << 63


def rows_per_shard(shard_target_mb: float, seq_len: int) -> int:
    """Rows whose token bytes (int32, before compression) make about ``shard_target_mb``."""
    return max(1, int(shard_target_mb * (1 << 20)) // ((seq_len + 1) * 4))


def key_ranges(total_rows: int, rows_per_file: int) -> list[tuple[int, int | None]]:
    """``[lo, hi)`` key ranges of equal width, one per shard (``hi`` None: up to the end)."""
    shards = max(1, -(-total_rows // rows_per_file))
    bounds = [i * KEY_SPACE // shards for i in range(shards)]
    return [(lo, bounds[i + 1] if i + 1 < shards else None) for i, lo in enumerate(bounds)]


def write_range_shards(batch: pa.Table, packed_files: list[str], packed_fs: pafs.FileSystem, split: str,
                       shards_location: str, attempt: str, compression: str) -> pa.Table:
    """A Ray Data task: for each ``{index, lo, hi}`` row, the rows whose key is in ``[lo, hi)``,
    sorted by key, as one shard under a temporary name (none for an empty range)."""
    fs, folder = filesystem_for(shards_location)
    fs.create_dir(folder, recursive=True)
    dataset = pads.dataset(packed_files, filesystem=packed_fs, format="parquet")
    out = []
    for index, lo, hi in zip(*(batch.column(c).to_pylist() for c in ("index", "lo", "hi"))):
        condition = pc.field("key") >= lo
        if hi is not None:
            condition &= pc.field("key") < hi
        table = dataset.to_table(filter=condition).sort_by("key")
        if table.num_rows == 0:
            continue
        table = table.select(list(SHARD_COLUMNS)).cast(SHARD_SCHEMA)
        tmp = posixpath.join(folder, f".tmp-{attempt}-{split}-{index:05d}.parquet")
        pq.write_table(table, tmp, filesystem=fs, compression=None if compression == "none" else compression)
        documents = pc.sum(pc.list_value_length(table.column("doc_starts"))).as_py() or 0
        out.append({"index": index, "tmp": tmp, "rows": table.num_rows, "documents": documents})
    return pa.Table.from_pylist(out, schema=WRITTEN_SCHEMA)


def shuffle_into_shards(packed_files: list[str], packed_fs: pafs.FileSystem, split: str, shards_location: str,
                        total_rows: int, rows_per_file: int, attempt: str, compression: str,
                        num_cpus: float) -> list[dict[str, Any]]:
    """Write the shards of one split; returns the written files in key order."""
    import ray

    if not packed_files or total_rows == 0:
        return []
    ranges = key_ranges(total_rows, rows_per_file)
    ds = ray.data.from_items([{"index": i, "lo": lo, "hi": hi} for i, (lo, hi) in enumerate(ranges)],
                             override_num_blocks=len(ranges))
    ds = ds.map_batches(write_range_shards, batch_size=1, batch_format="pyarrow", num_cpus=num_cpus,
                        fn_kwargs={"packed_files": packed_files, "packed_fs": packed_fs, "split": split,
                                   "shards_location": shards_location, "attempt": attempt,
                                   "compression": compression})
    written = []
    for summary in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        written += summary.to_pylist()
    return sorted(written, key=lambda w: w["index"])


def commit_shards(fs: pafs.FileSystem, shards_dir: str, split: str, written: list[dict[str, Any]]) -> list[str]:
    """Rename the temporary shards of one split to ``<split>-NNNNN.parquet``, in key order."""
    names = []
    for i, w in enumerate(written):
        name = f"{split}-{i:05d}.parquet"
        fs.move(w["tmp"], posixpath.join(shards_dir, name))
        fault_point("tokenize.shard_committed")  # shard writing: some shards renamed, no manifest yet
        names.append(name)
    return names


def shard_manifest(seq_len: int, tokenizer_info: dict[str, Any], splits: dict[str, dict[str, Any]],
                   dropped_tokens: int, seed: int, val_fraction: float) -> dict[str, Any]:
    """The ``gristmill-shards/1`` manifest (file paths relative to the run directory)."""
    return {"format": FORMAT, "seq_len": seq_len, "dtype": "int32", "tokenizer": tokenizer_info,
            "splits": splits, "dropped_tokens": dropped_tokens, "seed": seed, "val_fraction": val_fraction}
