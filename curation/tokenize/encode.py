"""Encoding and packing, one *group* of kept-documents Parquet files at a time, in Ray tasks.

The kept documents are cut into contiguous ``doc_id`` ranges of similar text size
(:mod:`curation.tokenize.order`). Each worker process loads the tokenizer once, then for every group
it is handed: reads the group's documents in ``doc_id`` order, splits each batch into train / val by
text hash, encodes each part with one ``encode_batch_fast`` call (the tokenizers Rust pool; no
offsets are computed), packs the ids with a :class:`~curation.tokenize.pack.DocumentPacker` per split
(the unfinished row carries over from file to file), and writes the rows, sorted by a per-row shuffle
key, to ``<work>/packed/<split>-u<group>.parquet``. It returns one summary row per (group, split): the
driver sees counts, never tokens.
"""

from __future__ import annotations

import posixpath
import uuid
from functools import lru_cache
from itertools import chain

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.ingest.listing import filesystem_for
from curation.tokenize.order import read_group_texts
from curation.tokenize.pack import TOKEN_DTYPE, DocumentPacker, PackedRows
from curation.tokenize.split import val_mask
from curation.tokenize.train import for_documents, load_tokenizer, special_token_ids

SPLITS = ("train", "val")
SUMMARY_SCHEMA = pa.schema([
    ("unit", pa.int64()), ("split", pa.string()), ("file", pa.string()), ("documents_in", pa.int64()),
    ("tokens_in", pa.int64()), ("rows", pa.int64()), ("documents", pa.int64()),
    ("dropped_tokens", pa.int64()), ("dropped_documents", pa.int64()),
])
PACKED_SCHEMA = pa.schema([("key", pa.int64()), ("input_ids", pa.list_(pa.int32())),
                           ("doc_starts", pa.list_(pa.int32()))])


def encode_texts(tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of ``texts`` back to back (int32) and the per-document counts."""
    if not texts:
        return np.zeros(0, TOKEN_DTYPE), np.zeros(0, np.int64)
    return _flatten([e.ids for e in tokenizer.encode_batch_fast(texts, add_special_tokens=False)])


def _flatten(ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(chain.from_iterable(ids), dtype=TOKEN_DTYPE, count=int(lengths.sum()))
    return flat, lengths


class DocumentEncoder:
    """Encodes document text literally (a page that contains ``<|eos|>`` gets those characters, not
    an EOS) at the tokenizer's full speed.

    Literal encoding is ``encode_special_tokens = True`` (:func:`for_documents`), which makes
    ``tokenizers`` ~1.7× slower on plain text (measured on the tokenize benchmark's corpus). A text
    that contains no added token's string is encoded the same either way, so only documents that
    contain the first two characters of one (``<|`` for the contract's tokens; an Arrow substring
    scan) take the literal tokenizer."""

    def __init__(self, tokenizer_json: bytes):
        self.fast = load_tokenizer(tokenizer_json)
        self.literal = for_documents(load_tokenizer(tokenizer_json))
        added = [t.content for t in self.fast.get_added_tokens_decoder().values()]
        self.markers = sorted({t[:2] for t in added if t})

    def _needs_literal(self, texts: pa.Array) -> np.ndarray:
        mask = np.zeros(len(texts), dtype=bool)
        for marker in self.markers:
            mask |= pc.fill_null(pc.match_substring(texts, marker), False).to_numpy(zero_copy_only=False)
        return mask

    def encode(self, texts: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """Token ids back to back (int32) and per-document counts, in the order of ``texts``."""
        n = len(texts)
        if n == 0:
            return np.zeros(0, TOKEN_DTYPE), np.zeros(0, np.int64)
        literal = self._needs_literal(texts)
        strings = texts.to_pylist()
        if not literal.any():
            return encode_texts(self.fast, strings)
        ids: list[list[int]] = [[]] * n
        for tokenizer, where in ((self.fast, np.flatnonzero(~literal)), (self.literal, np.flatnonzero(literal))):
            if len(where):
                encoded = tokenizer.encode_batch_fast([strings[i] for i in where], add_special_tokens=False)
                for i, e in zip(where.tolist(), encoded):
                    ids[i] = e.ids
        return _flatten(ids)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A bijective 64-bit mixer (Steele et al., SplitMix64): consecutive inputs → uniform keys."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def shuffle_keys(seed: int, split: str, unit: int, first_row: int, n: int) -> np.ndarray:
    """Sort keys for rows ``first_row .. first_row + n`` of one (file, split): a function of the seed
    and the row's identity only, so the global shuffle is the same on every rerun. Non-negative
    int64 so every engine sorts them the same way."""
    stream = (seed & 0xFFFFFFFF) << 32 | SPLITS.index(split) << 31 | (unit & 0x7FFFFFFF)
    base = _splitmix64(np.array([stream], dtype=np.uint64))[0]
    with np.errstate(over="ignore"):
        rows = np.arange(first_row, first_row + n, dtype=np.uint64) + base
    return (_splitmix64(rows) >> np.uint64(1)).astype(np.int64)


class _SplitWriter:
    """Collects one (group, split)'s packed rows and writes them sorted by shuffle key, in small row
    groups, so a shard writer reading one key range skips the rest by row-group statistics. A group
    is bounded (``group_mb``), so its rows fit in a worker's memory."""

    ROW_GROUP_ROWS = 1024

    def __init__(self, fs, folder: str, split: str, unit: int, seed: int, compression: str):
        self.fs, self.split, self.unit, self.seed = fs, split, unit, seed
        self.final = posixpath.join(folder, f"{split}-u{unit:06d}.parquet")
        self.tmp = posixpath.join(folder, f".tmp-{uuid.uuid4().hex[:8]}-{split}-u{unit:06d}.parquet")
        self.compression = None if compression == "none" else compression
        self.tables: list[pa.Table] = []
        self.rows = self.documents = 0

    def write(self, packed: PackedRows) -> None:
        if packed.num_rows == 0:
            return
        keys = shuffle_keys(self.seed, self.split, self.unit, self.rows, packed.num_rows)
        self.tables.append(packed.to_arrow().add_column(0, "key", pa.array(keys, pa.int64())).cast(PACKED_SCHEMA))
        self.rows += packed.num_rows
        self.documents += packed.num_documents

    def close(self) -> str | None:
        if not self.tables:
            return None
        table = pa.concat_tables(self.tables).sort_by("key")
        self.tables = []
        pq.write_table(table, self.tmp, filesystem=self.fs, compression=self.compression,
                       row_group_size=self.ROW_GROUP_ROWS)
        self.fs.move(self.tmp, self.final)
        return self.final


def encode_pack_groups(batch: pa.Table, **settings) -> pa.Table:
    """Ray Data task: ``{unit, lo, hi, locations}`` rows in (packing groups), one summary row per
    (group, split) out. The encoder is built once per worker process and kept for the tasks after it
    (Ray reuses the process): an actor pool paid a fresh worker process's start-up (~2 s on 2 cores)
    before the first group, in a stage whose other passes had already warmed the workers up."""
    return _encoder(**settings)(batch)


@lru_cache(maxsize=1)  # one encoder per process at a time: a stage's tokenizer and settings
def _encoder(**settings) -> "EncodePackFiles":
    return EncodePackFiles(**settings)


class EncodePackFiles:
    """``{unit, lo, hi, locations}`` rows in (a packing group: a ``doc_id`` range and the files that
    hold it), one summary row per (group, split) out; see :func:`encode_pack_groups`."""

    def __init__(self, tokenizer_json: bytes, seq_len: int, val_fraction: float, seed: int, batch_docs: int,
                 packed_location: str, compression: str):
        self.encoder = DocumentEncoder(tokenizer_json)
        self.eos_id = special_token_ids(self.encoder.fast)["eos_id"]
        self.seq_len, self.val_fraction, self.seed, self.batch_docs = seq_len, val_fraction, seed, batch_docs
        self.fs, self.folder = filesystem_for(packed_location)
        self.compression = compression
        self.fs.create_dir(self.folder, recursive=True)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows: list[dict] = []
        columns = (batch.column(c).to_pylist() for c in ("unit", "locations", "lo", "hi"))
        for unit, locations, lo, hi in zip(*columns):
            rows += self.encode_group(unit, locations, lo, hi)
        return pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA)

    def _texts(self, locations: list[str], lo: int, hi: int):
        """The group's documents in ``doc_id`` order, in slices of ``batch_docs``."""
        texts = read_group_texts(locations, lo, hi)
        for start in range(0, len(texts), self.batch_docs):
            yield texts.slice(start, self.batch_docs)

    def encode_group(self, unit: int, locations: list[str], lo: int, hi: int) -> list[dict]:
        packers = {s: DocumentPacker(self.seq_len, self.eos_id) for s in SPLITS}
        writers = {s: _SplitWriter(self.fs, self.folder, s, unit, self.seed, self.compression) for s in SPLITS}
        for texts in self._texts(locations, lo, hi):
            is_val = val_mask(texts, self.val_fraction)
            for split, mask in (("train", ~is_val), ("val", is_val)):
                if not mask.any():
                    continue
                flat, lengths = self.encoder.encode(texts.filter(pa.array(mask)))
                writers[split].write(packers[split].add(flat, lengths))
        out = []
        for split in SPLITS:
            dropped_tokens, dropped_documents = packers[split].finish()
            file = writers[split].close()
            out.append({"unit": unit, "split": split, "file": file, "documents_in": packers[split].documents_in,
                        "tokens_in": packers[split].tokens_in, "rows": writers[split].rows,
                        "documents": writers[split].documents, "dropped_tokens": dropped_tokens,
                        "dropped_documents": dropped_documents})
        return out
