"""Packing documents into fixed-length rows (``pack_documents``).

Every document's tokens are followed by one EOS; documents are concatenated and the stream is cut
into rows of exactly ``seq_len + 1`` tokens (``seq_len`` inputs plus the shifted target), the layout of
GPT-2 / nanoGPT pretraining. Rows do not overlap: every token appears in exactly one row. A row
records in ``doc_starts`` the positions where a document begins inside it, so training can block
attention across documents; a row that begins in the middle of a document does not list 0.

**The remainder.** :class:`DocumentPacker` carries the tokens that do not fill a row over to the next
batch (and the next file) of the same packing group and split, so nothing is lost between batches or
files. What is left when a group ends (fewer than ``seq_len + 1`` tokens per group and split) is
dropped and counted exactly: ``dropped_tokens``, and ``dropped_documents`` for documents that *begin*
in the dropped tail (a document cut by the end is counted once, as a document of the rows it begins
in). Groups are fixed contiguous ``doc_id`` ranges read in ``doc_id`` order (``order.plan_groups``),
not "whatever a worker saw" nor "whatever file a row landed in", so the rows are the same on every
rerun with the same worker count.

All of it is NumPy on whole batches: no Python loop over documents or rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

TOKEN_DTYPE = np.int32


@dataclass
class PackedRows:
    """``tokens`` is ``(rows, seq_len + 1)``; ``start_offsets`` / ``start_positions`` are the CSR form
    of ``doc_starts`` (row ``r`` owns ``start_positions[start_offsets[r]:start_offsets[r + 1]]``)."""

    tokens: np.ndarray
    start_offsets: np.ndarray
    start_positions: np.ndarray

    @property
    def num_rows(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def num_documents(self) -> int:
        """Documents that begin in these rows."""
        return int(self.start_positions.shape[0])

    def doc_starts(self) -> list[list[int]]:
        """Per-row lists (for tests and small inspections; the writer uses :meth:`to_arrow`)."""
        o = self.start_offsets
        return [self.start_positions[o[r]:o[r + 1]].tolist() for r in range(self.num_rows)]

    def to_arrow(self) -> pa.Table:
        """``input_ids`` and ``doc_starts`` as ``list<int32>`` columns (the shard contract)."""
        n, width = self.tokens.shape
        row_offsets = pa.array(np.arange(0, n * width + 1, width, dtype=np.int32))
        input_ids = pa.ListArray.from_arrays(row_offsets, pa.array(self.tokens.reshape(-1), pa.int32()))
        doc_starts = pa.ListArray.from_arrays(pa.array(self.start_offsets.astype(np.int32)),
                                              pa.array(self.start_positions.astype(np.int32), pa.int32()))
        return pa.table({"input_ids": input_ids, "doc_starts": doc_starts})


class DocumentPacker:
    """Packs batches of documents into rows, carrying the unfinished row to the next batch."""

    def __init__(self, seq_len: int, eos_id: int):
        if seq_len < 1:
            raise ValueError(f"seq_len must be at least 1, got {seq_len}")
        self.width = seq_len + 1
        self.eos_id = eos_id
        self.carry = np.zeros(0, dtype=TOKEN_DTYPE)  # tokens of the unfinished row
        self.carry_starts = np.zeros(0, dtype=np.int64)  # document starts inside the carry
        self.tokens_in = 0  # tokens including the EOS after each document
        self.documents_in = 0

    def add(self, flat: np.ndarray, lengths: np.ndarray) -> PackedRows:
        """``flat`` holds the documents' tokens back to back (no EOS), ``lengths`` their counts."""
        lengths = np.asarray(lengths, dtype=np.int64)
        flat = np.asarray(flat, dtype=TOKEN_DTYPE)
        if int(lengths.sum()) != flat.shape[0]:
            raise ValueError(f"lengths sum to {int(lengths.sum())} but {flat.shape[0]} tokens were given")
        n_docs = lengths.shape[0]
        ends = np.cumsum(lengths + 1)  # one past each document's EOS, in the new tokens
        with_eos = np.empty(int(ends[-1]) if n_docs else 0, dtype=TOKEN_DTYPE)
        eos_at = ends - 1
        is_token = np.ones(with_eos.shape[0], dtype=bool)
        is_token[eos_at] = False
        with_eos[is_token] = flat
        with_eos[eos_at] = self.eos_id
        self.tokens_in += with_eos.shape[0]
        self.documents_in += n_docs

        stream = np.concatenate([self.carry, with_eos])
        starts = np.concatenate([self.carry_starts, len(self.carry) + ends - (lengths + 1)])
        n_rows = stream.shape[0] // self.width
        cut = n_rows * self.width
        in_rows = starts < cut
        row_of = starts[in_rows] // self.width
        counts = np.bincount(row_of, minlength=n_rows)
        offsets = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        packed = PackedRows(stream[:cut].reshape(n_rows, self.width), offsets, starts[in_rows] % self.width)
        self.carry = stream[cut:]
        self.carry_starts = starts[~in_rows] - cut
        return packed

    def finish(self) -> tuple[int, int]:
        """End of a data file: drop the unfinished row. Returns (dropped tokens, dropped documents)."""
        dropped = (int(self.carry.shape[0]), int(self.carry_starts.shape[0]))
        self.carry = np.zeros(0, dtype=TOKEN_DTYPE)
        self.carry_starts = np.zeros(0, dtype=np.int64)
        return dropped


def pack_documents(documents: list[list[int]] | list[np.ndarray], seq_len: int, eos_id: int) -> tuple[PackedRows, int, int]:
    """Pack one list of token-id documents. Returns the rows, the dropped tail's token count and the
    number of documents that begin in that tail."""
    packer = DocumentPacker(seq_len, eos_id)
    lengths = np.array([len(d) for d in documents], dtype=np.int64)
    flat = np.concatenate([np.asarray(d, dtype=TOKEN_DTYPE) for d in documents]) if documents else np.zeros(0, TOKEN_DTYPE)
    rows = packer.add(flat, lengths)
    dropped_tokens, dropped_docs = packer.finish()
    return rows, dropped_tokens, dropped_docs
