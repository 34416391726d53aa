"""Shared by the quality filters: character sets, duplicate counting, n-gram repetition, and the
small Arrow helpers that turn per-document statistics into columns and reasons.

The character sets restate the ones datatrove 0.10.1 uses (``datatrove.utils.text``) so that
"symbol-only word" and "line ends in terminal punctuation" mean the same thing here and there.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from curation.quality.words import SENTENCE_END_TOKENS

# Sentence-final punctuation of every script (Unicode's Sentence_Terminal characters, as datatrove
# lists them): spaCy's sentencizer set plus a few newer ones (Khmer, Syriac, Sogdian, ...).
TERMINAL_PUNCTUATION = frozenset(SENTENCE_END_TOKENS | set(
    "\u061d\u061e\u0837\u0839\u083d\u083e\u17d4\u17d5\u17d6\u17d9\u17da\u1b7d\u1b7e\u2e53\u2e54"
    "\U00010f55\U00010f56\U00010f57\U00010f58\U00010f59\U00010f86\U00010f87\U00010f88\U00010f89"
    "\U00011944\U00011946\U00011ef7\U00011ef8\U00011f43\U00011f44\U00016e98"))
TERMINAL_PUNCTUATION_TUPLE = tuple(TERMINAL_PUNCTUATION)  # for str.endswith

# Characters a "word" may consist of entirely and still not count as a word (Gopher's symbols):
# ASCII and CJK punctuation, a few dashes and arrows, C0/C1 control characters except tab and
# newline — and, as in datatrove, the full-width digit one.
PUNCTUATION_CHARS = frozenset(
    "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»"
    + "".join(map(chr, [*range(0, 9), 11, 12, *range(13, 32), *range(127, 160)]))
) | TERMINAL_PUNCTUATION


def is_symbol_word(word: str) -> bool:
    """True when every character of ``word`` is punctuation (see :data:`PUNCTUATION_CHARS`)."""
    return not any(c not in PUNCTUATION_CHARS for c in word)


def duplicates(items: Iterable[str]) -> tuple[int, int]:
    """(elements, characters) that repeat an earlier element: the second "a" in a, b, a counts."""
    seen: set[str] = set()
    n_dup = chars = 0
    for item in items:
        if item in seen:
            n_dup += 1
            chars += len(item)
        else:
            seen.add(item)
    return n_dup, chars


# --- n-gram repetition (Gopher, Rae et al. 2021, table A1) ----------------------------------------

def iter_ngram_ids(word_ids: np.ndarray, n_max: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(n, ids)`` for n = 1..n_max, where ``ids`` gives every n-gram of ``word_ids`` a dense id:
    equal ids exactly when the n-grams are equal (pairs are re-labelled level by level, so nothing
    can collide). One level at a time: a caller that drops each level before the next holds two
    arrays of the document's word count, not n_max of them."""
    if n_max >= 1:
        yield 1, word_ids
    prev = word_ids
    for n in range(2, n_max + 1):
        if len(word_ids) < n:
            yield n, np.empty(0, np.int64)
            continue
        pair = prev[:-1] * (len(word_ids) + 1) + word_ids[n - 1:]
        _, prev = np.unique(pair, return_inverse=True)
        del pair
        yield n, prev


def ngram_ids(word_ids: np.ndarray, n_max: int) -> list[np.ndarray]:
    """Every level of :func:`iter_ngram_ids` at once: ``out[n]`` (``out[0]`` is empty)."""
    return [np.empty(0, np.int64)] + [ids for _, ids in iter_ngram_ids(word_ids, n_max)]


def top_ngram_chars(ids: np.ndarray, char_len: np.ndarray) -> int:
    """Characters covered by the most frequent n-gram, counted once per occurrence: its length (words
    joined by single spaces) times its count. Ties go to the n-gram that occurs first."""
    if len(ids) == 0:
        return 0
    counts = np.bincount(ids)
    best = counts.max()
    # the first position whose n-gram has the top count
    first = int(np.argmax(counts[ids] == best))
    return int(char_len[first]) * int(best)


def duplicate_ngram_chars(ids: np.ndarray, char_len: np.ndarray, n: int) -> int:
    """Characters inside n-grams that repeat an earlier n-gram, scanning left to right; after a
    repeat the scan jumps past it, so overlapping repeats are not counted twice (Gopher's rule).

    Only positions whose n-gram occurs more than once can ever repeat, so the Python loop visits just
    those; the skipped positions hold unique n-grams, which never matter to the scan."""
    if len(ids) == 0:
        return 0
    counts = np.bincount(ids)
    candidates = np.flatnonzero(counts[ids] > 1)
    if len(candidates) == 0:
        return 0
    seen: set[int] = set()
    repeated = 0
    next_pos = 0
    ids_list = ids[candidates].tolist()
    lens_list = char_len[candidates].tolist()
    for pos, key, length in zip(candidates.tolist(), ids_list, lens_list):
        if pos < next_pos:
            continue
        if key in seen:
            repeated += length
            next_pos = pos + n
        else:
            seen.add(key)
    return repeated


def ngram_window_sums(values: np.ndarray, n: int) -> np.ndarray:
    """Sum of every window of ``n`` consecutive values (empty when there are fewer than n)."""
    if len(values) < n:
        return np.empty(0, np.int64)
    c = np.concatenate(([0], np.cumsum(values)))
    return c[n:] - c[:-n]


# --- columns and reasons --------------------------------------------------------------------------

def texts_of(batch: pa.Table, column: str = "text") -> list[str | None]:
    return batch.column(column).combine_chunks().to_pylist()


def first_failure(n_rows: int, rules: Sequence[tuple[str, Sequence[bool]]]) -> pa.Array:
    """The reason of the first rule (in order) each row fails; null where it fails none."""
    reasons: list[str | None] = [None] * n_rows
    for name, failed in reversed(rules):  # earlier rules overwrite later ones
        for i, f in enumerate(failed):
            if f:
                reasons[i] = name
    return pa.array(reasons, pa.string())
