"""The data stage of ``kind: finetune``: JSONL records → rendered chats → training rows, on Ray Data.

Every non-blank JSONL line is a record; each ends up kept (in a training row) or rejected with a
reason (``invalid_json``, ``bad_chat``, ``too_long``) in ``rejected/prepare/``, so records in = kept +
rejected. Kept rows are written as token shards (``shards/{train,val}-NNNNN.parquet`` + the
``gristmill-shards/1`` manifest, with the extra columns of :mod:`training.finetune.data`), which the
pretraining launcher reads as it reads pretraining shards.

Validation records are the ``data.val`` files, or else the train records whose xxh64 hash falls in
the lowest ``val_fraction`` (stable under reordering and reruns). Rows are ordered by the same hash
before packing, so a file's order does not become the training order.
"""

from __future__ import annotations

import json
import posixpath
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from curation.chat import ChatError, conversation_of, preference_of, render
from training.finetune.data import PREFERENCE_COLUMNS, SFT_COLUMNS, pack_rows, preference_rows, tokenize_with_mask

SHARDS = "shards"
REJECTED = "rejected/prepare"
PREFERENCE_METHODS = ("reward", "dpo")
_HASH_SPACE = 2**64


def extra_columns(method: str) -> tuple[str, ...]:
    return PREFERENCE_COLUMNS if method in PREFERENCE_METHODS else SFT_COLUMNS


@lru_cache(maxsize=4)
def _tokenizer(path: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


def render_batch(batch: pa.Table, method: str, template: str, tokenizer_path: str, val_fraction: float,
                 forced_split: str | None) -> pa.Table:
    """Parse, validate and render a batch of JSONL lines; tokenize with assistant masks.

    Output columns: ``split``, ``order`` (uint64 hash), ``reason``/``detail`` (null when kept),
    ``line`` (the record, kept for the rejected folder) and the token lists (``ids``/``mask``, and
    ``rejected_ids``/``rejected_mask`` for preference methods)."""
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

    def scatter(tokenized, kind):
        ids = [None] * n
        mask = [None] * n
        for j, i in enumerate(ok_rows):
            row_ids, row_mask = tokenized.row(j)
            ids[i], mask[i] = row_ids, row_mask
        return (pa.array(ids, pa.list_(pa.int32())), pa.array(mask, pa.list_(pa.int8())))

    columns: dict[str, Any] = {"split": pa.array(split, pa.string()), "order": pa.array(hashes, pa.uint64()),
                               "line": pa.array(lines, pa.string())}
    chosen = tokenize_with_mask(tok, texts[0], spans[0], append_id=None if preference else eos)
    columns["ids"], columns["mask"] = scatter(chosen, "chosen")
    if preference:
        rejected = tokenize_with_mask(tok, texts[1], spans[1])
        columns["rejected_ids"], columns["rejected_mask"] = scatter(rejected, "rejected")
        # Preference rows keep at most seq_len real tokens; a response that is cut away entirely is
        # decided in rows_batch (it knows the width).
    columns["reason"] = pa.array(reasons, pa.string())
    columns["detail"] = pa.array(details, pa.string())
    return pa.table(columns)


def rows_batch(batch: pa.Table, method: str, width: int, pad_id: int, packing: bool) -> pa.Table:
    """Kept records of one split → training rows (``too_long`` pairs get ``reason`` set instead)."""
    from training.finetune.data import Tokenized

    def flat(ids_col: str, mask_col: str) -> Tokenized:
        ids = batch.column(ids_col).combine_chunks()
        mask = batch.column(mask_col).combine_chunks()
        offsets = ids.offsets.to_numpy().astype(np.int64)
        offsets = offsets - offsets[0]
        return Tokenized(ids.flatten().to_numpy(zero_copy_only=False).astype(np.int32),
                         mask.flatten().to_numpy(zero_copy_only=False).astype(np.int8), offsets)

    if batch.num_rows == 0:
        return _empty_rows(method)
    if method in PREFERENCE_METHODS:
        table, ok = preference_rows(flat("ids", "mask"), flat("rejected_ids", "rejected_mask"), width, pad_id)
        if table.num_rows == 0:  # the counts ride on a row: keep one only to carry them
            return _empty_rows(method) if ok.all() else _count_only(method, int((~ok).sum()))
        return _with_counts(table, 0, int((~ok).sum()))
    table, truncated = pack_rows(flat("ids", "mask"), width, pad_id, packing)
    return _with_counts(table, truncated, 0)


def _with_counts(table: pa.Table, truncated: int, dropped: int) -> pa.Table:
    """Per-batch counts ride on the first row (0 elsewhere), so the driver sums a column instead of
    collecting rows."""
    n = table.num_rows
    first = np.zeros(n, dtype=np.int64)
    t, d = first.copy(), first.copy()
    if n:
        t[0], d[0] = truncated, dropped
    return table.append_column("_truncated", pa.array(t)).append_column("_dropped", pa.array(d))


def _count_only(method: str, dropped: int) -> pa.Table:
    """A batch whose every pair was too long: no rows, but the count must reach the driver. A row
    with an empty ``input_ids`` carries it and is removed before writing."""
    table = _empty_rows(method).drop_columns(["_truncated", "_dropped"])
    row = {name: pa.array([[]], table.schema.field(name).type) for name in table.column_names}
    return _with_counts(pa.table(row), 0, dropped)


def _empty_rows(method: str) -> pa.Table:
    ints = pa.list_(pa.int32())
    cols = {"input_ids": pa.array([], ints), "doc_starts": pa.array([], ints), "loss_mask": pa.array([], pa.list_(pa.int8()))}
    if method in PREFERENCE_METHODS:
        cols["rejected_ids"] = pa.array([], ints)
        cols["rejected_loss_mask"] = pa.array([], pa.list_(pa.int8()))
    return _with_counts(pa.table(cols), 0, 0)


def _select(ds: Any, rejected: bool, split: str | None = None) -> Any:
    def pick(batch: pa.Table) -> pa.Table:
        mask = pc.is_valid(batch.column("reason")) if rejected else pc.is_null(batch.column("reason"))
        if split is not None:
            mask = pc.and_(mask, pc.equal(batch.column("split"), split))
        return batch.filter(mask)

    return ds.map_batches(pick, batch_format="pyarrow")


def _drop_carriers(batch: pa.Table) -> pa.Table:
    """Rows of ``_count_only`` (empty input_ids) have done their job once the counts are summed."""
    lengths = pc.list_value_length(batch.column("input_ids"))
    return batch.filter(pc.greater(lengths, 0))


def expand(patterns: list[str]) -> list[str]:
    import glob

    out: list[str] = []
    for p in patterns:
        matches = sorted(glob.glob(p)) if any(c in p for c in "*?[") else [p]
        out += matches
    return out


def prepare(run: Any, method: str, train_files: list[str], val_files: list[str], val_fraction: float,
            template: str, tokenizer_path: str, seq_len: int, packing: bool, seed: int,
            rows_per_file: int = 4096) -> dict[str, Any]:
    """Write ``shards/`` and ``rejected/prepare/`` into the run directory; return the counts."""
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
            val_fraction=0.0 if forced else val_fraction, forced_split=forced)))
    rendered = parts[0] if len(parts) == 1 else parts[0].union(parts[1])
    rendered = rendered.materialize()
    records = rendered.count()

    for name in (SHARDS, REJECTED):
        if run.exists(name):
            run.fs.delete_dir(run.path(name))
    rejected = _select(rendered, rejected=True)
    rejected_count = rejected.count()
    reasons: dict[str, int] = {}
    if rejected_count:
        rejected.select_columns(["line", "reason", "detail", "split"]).write_parquet(run.uri(REJECTED))
        for row in rejected.groupby("reason").count().take_all():  # a handful of reasons
            reasons[row["reason"]] = int(row["count()"])

    splits: dict[str, Any] = {}
    truncated = dropped = 0
    for split in ("train", "val"):
        kept = _select(rendered, rejected=False, split=split).sort("order")
        rows = kept.map_batches(rows_batch, batch_format="pyarrow", batch_size=2048,
                                fn_kwargs=dict(method=method, width=width, pad_id=pad_id, packing=packing)).materialize()
        records_in = kept.count()
        if rows.count():
            truncated += int(rows.sum("_truncated") or 0)
            dropped += int(rows.sum("_dropped") or 0)
        rows = rows.map_batches(_drop_carriers, batch_format="pyarrow").materialize()
        n_rows = rows.count()
        tmp = f"{SHARDS}/.tmp-{split}"
        files = []
        if n_rows:
            rows.drop_columns(["_truncated", "_dropped"]).repartition(max(1, -(-n_rows // rows_per_file))) \
                .write_parquet(run.uri(tmp))
            written = sorted(i.path for i in run.fs.get_file_info(pafs.FileSelector(run.path(tmp)))
                             if i.path.endswith(".parquet"))
            for k, path in enumerate(written):
                rel = f"{SHARDS}/{split}-{k:05d}.parquet"
                run.fs.move(path, run.path(rel))
                files.append(rel)
            run.fs.delete_dir(run.path(tmp))
        splits[split] = {"files": files, "rows": int(n_rows), "tokens": int(n_rows * width), "documents": int(records_in)}
    if dropped:
        reasons["too_long"] = dropped
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
    kept_records = splits["train"]["documents"] + splits["val"]["documents"] - dropped
    return {"in": records, "kept": kept_records, "rejected": reasons, "truncated": truncated,
            "rows": {s: splits[s]["rows"] for s in splits}, "balanced": kept_records + sum(reasons.values()) == records}


def _sha256(path: str) -> str:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()
