"""The data stage of ``kind: finetune``: JSONL records → rendered chats → training rows, on Ray Data.

Every non-blank JSONL line is a record; each ends up kept (in a training row) or rejected with a
reason (``invalid_json``, ``bad_chat``, ``too_long``) in ``rejected/prepare/``, so records in = kept +
rejected. Kept rows are written as token shards (``shards/{train,val}-NNNNN.parquet`` + the
``gristmill-shards/1`` manifest, with the extra columns of :mod:`training.finetune.data`), which the
pretraining launcher reads as it reads pretraining shards.

Validation records are the ``data.val`` files, or else the train records whose xxh64 hash falls in
the lowest ``val_fraction`` (stable under reordering and reruns). Rows are ordered by the same hash
before packing, so a file's order does not become the training order, and conversations are packed
together within fixed ranges of that hash, so every run writes the same rows.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from curation.chat import ChatError, conversation_of, preference_of, render
from training.finetune.data import PREFERENCE_COLUMNS, SFT_COLUMNS, pack_rows, preference_rows, tokenize_with_mask

SHARDS = "shards"
REJECTED = "rejected/prepare"
# Conversations packed together: about this many consecutive records (in hash order) share rows.
PACK_GROUP_RECORDS = 2048
PREFERENCE_METHODS = ("reward", "dpo")
_HASH_SPACE = 2**64


def extra_columns(method: str) -> tuple[str, ...]:
    return PREFERENCE_COLUMNS if method in PREFERENCE_METHODS else SFT_COLUMNS


@lru_cache(maxsize=4)
def _tokenizer(path: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


def render_batch(batch: pa.Table, method: str, template: str, tokenizer_path: str, val_fraction: float,
                 forced_split: str | None, width: int) -> pa.Table:
    """Parse, validate and render a batch of JSONL lines; tokenize with assistant masks.

    Output columns: ``split``, ``order`` (uint64 hash), ``reason``/``detail`` (null when kept),
    ``status`` (the reason, or ``kept:<split>``: one column to count everything by), ``truncated``
    (an SFT conversation longer than a row), ``line`` (the record, for the rejected folder) and the
    token lists (``ids``/``mask``, and ``rejected_ids``/``rejected_mask`` for preference methods)."""
    import xxhash

    lines = batch.column("text").to_pylist()
    n = len(lines)
    preference = method in PREFERENCE_METHODS
    reasons: list[str | None] = [None] * n
    details: list[str | None] = [None] * n
    texts: list[list[str]] = [[], []]
    spans: list[list[list[tuple[int, int]]]] = [[], []]
    ok_rows: list[int] = []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            reasons[i], details[i] = "invalid_json", str(exc)
            continue
        if not isinstance(record, dict):
            reasons[i], details[i] = "invalid_json", "the line is not a JSON object"
            continue
        try:
            conversations = preference_of(record) if preference else (conversation_of(record),)
            rendered = [render(c, template) for c in conversations]
        except ChatError as exc:
            reasons[i], details[i] = "bad_chat", str(exc)
            continue
        for k, (text, marks) in enumerate(rendered):
            texts[k].append(text)
            spans[k].append(marks)
        ok_rows.append(i)
    tok = _tokenizer(tokenizer_path)
    eos = tok.token_to_id("<|eos|>")
    hashes = np.fromiter((xxhash.xxh64_intdigest(line.encode("utf-8")) for line in lines), dtype=np.uint64, count=n)
    if forced_split:
        split = [forced_split] * n
    else:
        cut = np.uint64(min(_HASH_SPACE - 1, int(val_fraction * _HASH_SPACE)))
        split = np.where(hashes < cut, "val", "train").tolist()

    def scatter(tokenized):
        ids: list[Any] = [None] * n
        mask: list[Any] = [None] * n
        for j, i in enumerate(ok_rows):
            ids[i], mask[i] = tokenized.row(j)
        return pa.array(ids, pa.list_(pa.int32())), pa.array(mask, pa.list_(pa.int8()))

    truncated = np.zeros(n, dtype=bool)
    columns: dict[str, Any] = {"split": pa.array(split, pa.string()), "order": pa.array(hashes, pa.uint64()),
                               "line": pa.array(lines, pa.string())}
    chosen = tokenize_with_mask(tok, texts[0], spans[0], append_id=None if preference else eos)
    columns["ids"], columns["mask"] = scatter(chosen)
    if preference:
        rejected = tokenize_with_mask(tok, texts[1], spans[1])
        columns["rejected_ids"], columns["rejected_mask"] = scatter(rejected)
        # A pair row keeps the first width - 1 tokens of each side; a side whose response starts
        # beyond that has nothing left to compare.
        for j, i in enumerate(ok_rows):
            if not (chosen.row(j)[1][:width - 1].any() and rejected.row(j)[1][:width - 1].any()):
                reasons[i], details[i] = "too_long", f"the prompt fills the {width - 1}-token row; no response token fits"
    else:
        lengths = chosen.lengths
        for j, i in enumerate(ok_rows):
            truncated[i] = lengths[j] > width
    columns["reason"] = pa.array(reasons, pa.string())
    columns["detail"] = pa.array(details, pa.string())
    columns["status"] = pa.array([r if r is not None else f"kept:{s}" for r, s in zip(reasons, split)], pa.string())
    columns["truncated"] = pa.array(truncated.astype(np.int64))
    return pa.table(columns)


def rows_batch(batch: pa.Table, method: str, width: int, pad_id: int, packing: bool) -> pa.Table:
    """Kept records of one split → training rows."""
    from training.finetune.data import Tokenized

    def flat(ids_col: str, mask_col: str) -> Tokenized:
        ids = batch.column(ids_col).combine_chunks()
        mask = batch.column(mask_col).combine_chunks()
        offsets = ids.offsets.to_numpy().astype(np.int64)
        offsets = offsets - offsets[0]
        return Tokenized(ids.flatten().to_numpy(zero_copy_only=False).astype(np.int32),
                         mask.flatten().to_numpy(zero_copy_only=False).astype(np.int8), offsets)

    if method in PREFERENCE_METHODS:
        table, ok = preference_rows(flat("ids", "mask"), flat("rejected_ids", "rejected_mask"), width, pad_id)
        if not ok.all():  # render_batch rejected these already; a mismatch is a bug, not data
            raise AssertionError("a too-long pair reached the row builder")
        return table
    table, _ = pack_rows(flat("ids", "mask"), width, pad_id, packing)
    return table


def status_counts(batch: pa.Table) -> pa.Table:
    """One block's records and truncated conversations per ``status`` (a few rows)."""
    grouped = batch.group_by("status").aggregate([("status", "count"), ("truncated", "sum")])
    return pa.table({"status": grouped.column("status"), "count": grouped.column("status_count"),
                     "truncated": grouped.column("truncated_sum")})


def hash_ranges(records: int, per_group: int = PACK_GROUP_RECORDS) -> list[int]:
    """Boundaries cutting the uint64 ``order`` hash into equal ranges of ~``per_group`` records each
    (the hash is uniform): the packing groups, the same on every run whatever the blocks. At least
    two: Ray Data takes an empty list for no boundaries and samples them."""
    groups = max(2, -(-records // per_group))
    return [(i << 64) // groups for i in range(1, groups)]


def _select(ds: Any, rejected: bool, split: str | None = None) -> Any:
    def pick(batch: pa.Table) -> pa.Table:
        mask = pc.is_valid(batch.column("reason")) if rejected else pc.is_null(batch.column("reason"))
        if split is not None:
            mask = pc.and_(mask, pc.equal(batch.column("split"), split))
        return batch.filter(mask)

    return ds.map_batches(pick, batch_format="pyarrow")


def expand(patterns: list[str]) -> list[str]:
    import glob

    out: list[str] = []
    for p in patterns:
        matches = sorted(glob.glob(p)) if any(c in p for c in "*?[") else [p]
        out += matches
    return out


def prepare(run: Any, method: str, train_files: list[str], val_files: list[str], val_fraction: float,
            template: str, tokenizer_path: str, seq_len: int, packing: bool, seed: int,
            rows_per_file: int = 8192) -> dict[str, Any]:
    """Write ``shards/`` and ``rejected/prepare/`` into the run directory; return the counts.

    Four Ray Data passes: render (materialised, it feeds the rest), one map for every count (per-block
    counts by status, summed on the driver), the rejected rows, and per split a hash sort + packing +
    write."""
    import ray.data

    from training.shards import SHARDS_FORMAT

    tok = _tokenizer(tokenizer_path)
    pad_id = tok.token_to_id("<|pad|>")
    missing = [t for t in ("<|eos|>", "<|pad|>") if tok.token_to_id(t) is None]
    if missing:
        raise ValueError(f"the tokenizer {tokenizer_path} lacks the special tokens {missing}")
    width = seq_len + 1
    sources = [(train_files, None if not val_files else "train")] + ([(val_files, "val")] if val_files else [])
    parts = []
    for files, forced in sources:
        ds = ray.data.read_text(files)  # drops empty lines: they are not records
        parts.append(ds.map_batches(render_batch, batch_format="pyarrow", batch_size=512, fn_kwargs=dict(
            method=method, template=template, tokenizer_path=tokenizer_path,
            val_fraction=0.0 if forced else val_fraction, forced_split=forced, width=width)))
    rendered = (parts[0] if len(parts) == 1 else parts[0].union(parts[1])).materialize()

    # A handful of statuses: a few rows per block, added up here. A Ray Data group-by would start
    # hash-shuffle aggregator actors for them (seconds each on a small machine).
    by_status: dict[str, dict[str, int]] = {}
    for row in rendered.map_batches(status_counts, batch_format="pyarrow", batch_size=None).take_all():
        entry = by_status.setdefault(row["status"], {"count": 0, "truncated": 0})
        entry["count"] += int(row["count"])
        entry["truncated"] += int(row["truncated"] or 0)
    records = sum(r["count"] for r in by_status.values())
    kept = {s: by_status.get(f"kept:{s}", {}).get("count", 0) for s in ("train", "val")}
    reasons = {k: r["count"] for k, r in by_status.items() if not k.startswith("kept:")}
    truncated = sum(r["truncated"] for k, r in by_status.items() if k.startswith("kept:"))

    for name in (SHARDS, REJECTED):
        if run.exists(name):
            run.fs.delete_dir(run.path(name))
    if reasons:
        _select(rendered, rejected=True).select_columns(["line", "reason", "detail", "split"]) \
            .write_parquet(run.uri(REJECTED))

    splits: dict[str, Any] = {}
    for split in ("train", "val"):
        files: list[str] = []
        rows = 0
        if kept[split]:
            tmp = f"{SHARDS}/.tmp-{split}"
            # Packing groups are fixed ranges of the hash, not whatever blocks a sampled sort cut
            # (those differed run to run, and with them the rows and the loss curve); each range is
            # one block, packed whole, and written in hash order.
            rows_ds = _select(rendered, rejected=False, split=split) \
                .sort("order", boundaries=hash_ranges(kept[split])) \
                .map_batches(rows_batch, batch_format="pyarrow", batch_size=None,
                             fn_kwargs=dict(method=method, width=width, pad_id=pad_id, packing=packing))
            rows_ds.context.execution_options.preserve_order = True
            rows_ds.write_parquet(run.uri(tmp), min_rows_per_file=rows_per_file)
            written = sorted(i.path for i in run.fs.get_file_info(pafs.FileSelector(run.path(tmp)))
                             if i.path.endswith(".parquet"))
            for k, path in enumerate(written):
                rel = f"{SHARDS}/{split}-{k:05d}.parquet"
                run.fs.move(path, run.path(rel))
                files.append(rel)
                with run.fs.open_input_file(run.path(rel)) as f:
                    rows += pq.ParquetFile(f).metadata.num_rows
            run.fs.delete_dir(run.path(tmp))
        splits[split] = {"files": files, "rows": rows, "tokens": rows * width, "documents": kept[split]}
    manifest = {
        "format": SHARDS_FORMAT, "seq_len": seq_len, "dtype": "int32",
        "tokenizer": {"path": "tokenizer/tokenizer.json", "sha256": _sha256(tokenizer_path),
                      "vocab_size": tok.get_vocab_size(), "bos_id": tok.token_to_id("<|bos|>"),
                      "eos_id": tok.token_to_id("<|eos|>"), "pad_id": pad_id},
        "splits": splits, "dropped_tokens": 0, "seed": seed, "val_fraction": val_fraction,
        "finetune": {"method": method, "columns": list(extra_columns(method)), "packing": packing,
                     "records": records, "rejected": reasons, "truncated": truncated},
    }
    run.write_json(f"{SHARDS}/manifest.json", manifest)
    kept_records = kept["train"] + kept["val"]
    return {"in": records, "kept": kept_records, "rejected": reasons, "truncated": truncated,
            "rows": {s: splits[s]["rows"] for s in splits}, "balanced": kept_records + sum(reasons.values()) == records}


def _sha256(path: str) -> str:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()
