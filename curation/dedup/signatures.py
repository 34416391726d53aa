"""MinHash signatures for whole batches of documents, vectorised with NumPy.

Per batch, with no loop over shingles or documents in Python:

1. **Tokens.** ``words``: the lower-cased batch as one array of code points; words are maximal
   runs of Unicode letters, marks and digits (a lookup table), hashed from their characters with
   array operations (see ``word_token_hashes``). ``chars``: every code point is a token, hashed
   with the 64-bit finaliser below.
2. **Shingles.** The hash of an n-gram folds its n token hashes in order,
   ``h = fmix64(h * K + t)``, computed for every position of the batch at once; n-grams that cross a
   document boundary are masked out. A document shorter than n tokens has one shingle (all its
   tokens), as in datatrove; a document with no tokens has no shingles and no signature.
3. **Permutations.** ``h_k(x) = a_k * x + b_k  (mod 2^64)`` with odd ``a_k``: the multiply-add
   family of Dietzfelbinger et al. (1997), which is universal in its *high* bits, and the high bits
   are what decides which value is the minimum. ``x`` is already an avalanche-mixed 64-bit hash, so
   the minimum behaves as under a random permutation (checked against datasketch in
   ``tests/test_dedup_signatures.py``). Two array passes per (shingle, permutation) pair, against
   datasketch's five including a 64-bit modulo, and 64-bit outputs rather than 32.
4. **Minimum per document** with ``np.minimum.reduceat`` over the shingle ranges, a block of
   permutations at a time (one contiguous row each) so the working matrix stays in cache.

Defaults (5-word shingles, 112 permutations as 14 bands x 8 rows, 64-bit hashes) are FineWeb's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)
_C1 = np.uint64(0xFF51AFD7ED558CCD)
_C2 = np.uint64(0xC4CEB9FE1A85EC53)
_FOLD = np.uint64(0x9E3779B97F4A7C15)
# Working set of one permutation block (elements of uint64): ~4 MiB keeps it in L2/L3.
_BLOCK_ELEMENTS = 1 << 19
# Documents tokenised together: bounds a worker's memory whatever the block size (~50 MB at 1,000
# documents of a few thousand characters).
CHUNK_DOCS = 1000


def fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: a bijection with full avalanche (new array)."""
    x = x ^ (x >> np.uint64(33))
    x *= _C1
    x ^= x >> np.uint64(33)
    x *= _C2
    x ^= x >> np.uint64(33)
    return x


def _as_string_array(text) -> pa.Array:
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    if pa.types.is_large_string(text.type):
        text = text.cast(pa.string())
    return pc.fill_null(text, "")


_WORD_TABLE: np.ndarray | None = None


def _word_table() -> np.ndarray:
    """Which Basic Multilingual Plane code points make words: Unicode letters, marks, digits.
    Built once per process (65,536 lookups in ``unicodedata``, ~20 ms)."""
    global _WORD_TABLE
    if _WORD_TABLE is None:
        import unicodedata

        _WORD_TABLE = np.fromiter((unicodedata.category(chr(c))[0] in "LMN" for c in range(0x10000)),
                                  dtype=bool, count=0x10000)
    return _WORD_TABLE


def _codepoints(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(every code point of the lower-cased batch back to back as uint32, code points per document)."""
    text = pc.utf8_lower(_as_string_array(text))
    counts = pc.utf8_length(text).to_numpy(zero_copy_only=False).astype(np.int64)
    # The values buffer of the (possibly sliced) array is the documents' UTF-8 back to back.
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int32)[text.offset:text.offset + len(text) + 1]
    data = text.buffers()[2]
    raw = data.to_pybytes()[offsets[0]:offsets[-1]] if data is not None else b""
    return np.frombuffer(raw.decode("utf-8").encode("utf-32-le"), dtype=np.uint32), counts


def word_token_hashes(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(token hashes, per-document token counts) for lower-cased words: maximal runs of letters,
    marks and digits (code points beyond the BMP count as word characters).

    Entirely array operations over the batch's code points: word boundaries from a lookup table,
    and each word's hash is the sum of its characters mixed with their position in the word, mixed
    once more (a per-word Python hash or a regex split costs 2-3x as much)."""
    cps, char_counts = _codepoints(text)
    n_docs = len(char_counts)
    if len(cps) == 0:
        return np.empty(0, np.uint64), np.zeros(n_docs, np.int64)
    is_word = np.ones(len(cps), dtype=bool)
    bmp = cps < 0x10000
    is_word[bmp] = _word_table()[cps[bmp]]
    boundary = np.zeros(len(cps), dtype=bool)  # a word never runs across two documents
    boundary[(np.cumsum(char_counts) - char_counts)[char_counts > 0]] = True
    starts_word = is_word.copy()
    starts_word[1:] &= ~is_word[:-1] | boundary[1:]
    first = np.flatnonzero(starts_word)
    if len(first) == 0:
        return np.empty(0, np.uint64), np.zeros(n_docs, np.int64)
    word_chars = np.flatnonzero(is_word)
    token = (np.cumsum(starts_word) - 1)[word_chars]
    position = (word_chars - first[token]).astype(np.uint64)
    mixed = fmix64(cps[word_chars].astype(np.uint64) * _FOLD + position)
    segments = np.flatnonzero(np.r_[True, token[1:] != token[:-1]])
    hashes = fmix64(np.add.reduceat(mixed, segments))
    doc_of_char = np.repeat(np.arange(n_docs), char_counts)
    return hashes, np.bincount(doc_of_char[first], minlength=n_docs).astype(np.int64)


def char_token_hashes(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(token hashes, per-document token counts) with one token per Unicode code point."""
    codepoints, counts = _codepoints(text)
    return fmix64(codepoints.astype(np.uint64) + _FOLD), counts


def shingle_hashes(tokens: np.ndarray, counts: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """(shingle hashes in document order, shingles per document)."""
    n_docs = len(counts)
    ends = np.cumsum(counts)
    starts = ends - counts
    total = int(ends[-1]) if n_docs else 0
    if total == 0:
        return np.empty(0, np.uint64), np.zeros(n_docs, np.int64)
    # folds[j] = hash of the (j+1)-gram starting at each position (positions past the end dropped)
    fold = tokens.copy()
    folds = [fold]
    for j in range(1, ngram):
        if len(fold) <= 1:
            break
        fold = fmix64(fold[:-1] * _FOLD + tokens[j:])
        folds.append(fold)
    full = ngram <= len(folds)
    per_doc = np.where(counts >= ngram, counts - ngram + 1, np.minimum(counts, 1))
    doc_of = np.repeat(np.arange(n_docs), per_doc)
    first = np.repeat(starts, per_doc)
    within = np.arange(len(doc_of)) - np.repeat(np.cumsum(per_doc) - per_doc, per_doc)
    positions = first + within
    out = np.empty(len(doc_of), np.uint64)
    long_doc = counts[doc_of] >= ngram
    if full and long_doc.any():
        out[long_doc] = folds[ngram - 1][positions[long_doc]]
    short = ~long_doc
    if short.any():  # shorter than n tokens: one shingle of all its tokens
        lengths = counts[doc_of[short]]
        for length in np.unique(lengths):
            pick = np.flatnonzero(short)[lengths == length]
            out[pick] = folds[length - 1][positions[pick]]
    return out, per_doc.astype(np.int64)


@dataclass
class MinHashSignatures:
    """A seeded family of ``num_perm`` permutations; ``of_texts`` gives a (docs x num_perm) uint64
    matrix. Rows of documents without shingles are all ``EMPTY``."""

    num_perm: int = 112
    ngram: int = 5
    seed: int = 1
    tokenize: Literal["words", "chars"] = "words"
    a: np.ndarray = field(init=False, repr=False)
    b: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        top = np.iinfo(np.uint64).max
        self.a = rng.integers(1, top, size=self.num_perm, dtype=np.uint64, endpoint=True) | np.uint64(1)
        self.b = rng.integers(0, top, size=self.num_perm, dtype=np.uint64, endpoint=True)

    def shingles(self, text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        tokens, counts = (word_token_hashes if self.tokenize == "words" else char_token_hashes)(text)
        return shingle_hashes(tokens, counts, self.ngram)

    def of_texts(self, text: pa.Array) -> np.ndarray:
        return self.of_shingles(*self.shingles(text))

    def of_batch(self, text, chunk_docs: int = CHUNK_DOCS) -> tuple[np.ndarray, np.ndarray]:
        """(signatures, whether each document had shingles) for a batch of any size. Works through
        ``chunk_docs`` documents at a time: tokenising keeps ~50 bytes of arrays per character, so
        a whole 128 MiB Ray block at once would need gigabytes."""
        if isinstance(text, pa.ChunkedArray):
            text = text.combine_chunks()
        sigs, has = [np.empty((0, self.num_perm), np.uint64)], [np.empty(0, bool)]
        for start in range(0, len(text), chunk_docs):
            hashes, per_doc = self.shingles(text.slice(start, chunk_docs))
            sigs.append(self.of_shingles(hashes, per_doc))
            has.append(per_doc > 0)
        return np.concatenate(sigs), np.concatenate(has)

    def of_shingles(self, hashes: np.ndarray, per_doc: np.ndarray) -> np.ndarray:
        n_docs = len(per_doc)
        sig = np.full((n_docs, self.num_perm), EMPTY, dtype=np.uint64)
        has = per_doc > 0
        if not has.any():
            return sig
        starts = (np.cumsum(per_doc) - per_doc)[has]
        block = max(1, min(self.num_perm, _BLOCK_ELEMENTS // max(1, len(hashes))))
        rows = np.flatnonzero(has)
        # One row per permutation, the shingles along it: each row is contiguous, so the minimum per
        # document is a reduceat along a contiguous axis. The other layout (shingles x permutations,
        # reduced along axis 0) made NumPy walk a strided axis and cost 13x more.
        buf = np.empty((block, len(hashes)), dtype=np.uint64)
        for k in range(0, self.num_perm, block):
            width = min(block, self.num_perm - k)
            view = buf[:width]
            np.multiply(self.a[k:k + width, None], hashes[None, :], out=view)
            np.add(view, self.b[k:k + width, None], out=view)
            sig[rows, k:k + width] = np.minimum.reduceat(view, starts, axis=1).T
        return sig


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Fraction of permutations on which two signatures agree."""
    return float(np.mean(sig_a == sig_b))
