"""`gopher_quality` and `gopher_repetition`: the document heuristics of Gopher's MassiveWeb.

Defaults come from Rae et al. 2021, "Scaling Language Models: Methods, Analysis & Insights from
Training Gopher", appendix A (MassiveWeb quality filters; table A1: repetition thresholds), as
implemented by datatrove 0.10.1's ``GopherQualityFilter`` / ``GopherRepetitionFilter``, whose keep/drop
decisions these ops reproduce (``python -m benchmarks.quality_parity``). Words are datatrove's English
words (spaCy's rule-based segmentation, see :mod:`curation.quality.words`): punctuation marks are
words of their own, which matters for every ratio below.

Both ops compute every statistic for every document (no early exit), so a threshold can be changed
later and the decision re-derived from the columns; the first rule a document fails names its reason.
A threshold set to ``null`` switches its rule off (datatrove also treats 0 as "off"; here 0 is a bound).
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from curation.operator import Decision, OpConfig, RowOp, register_op, set_column
from curation.quality.text_stats import (duplicate_ngram_chars, duplicates, first_failure, is_symbol_word,
                                         iter_ngram_ids, ngram_window_sums, texts_of, top_ngram_chars)
from curation.quality.words import LONG_CHUNK, english_words

# Gopher's stop words (Rae et al. 2021, appendix A): a document needs at least two of them.
GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
_CACHE_LIMIT = 300_000


class GopherQualityConfig(OpConfig):
    min_doc_words: int | None = Field(50, ge=0, description="fewest words (punctuation-only words not counted)")
    max_doc_words: int | None = Field(100_000, ge=0, description="most words")
    min_avg_word_length: float | None = Field(3, ge=0, description="lowest mean word length (characters)")
    max_avg_word_length: float | None = Field(10, ge=0, description="highest mean word length")
    max_symbol_word_ratio: float | None = Field(
        0.1, ge=0, description="most '#' per word, and separately most '...'/'…' per word")
    max_bullet_lines_ratio: float | None = Field(0.9, ge=0, le=1, description="most lines starting with • or -")
    max_ellipsis_lines_ratio: float | None = Field(0.3, ge=0, le=1, description="most lines ending in ... or …")
    min_alpha_words_ratio: float | None = Field(
        0.8, ge=0, le=1, description="fewest words with an alphabetic character (datatrove: max_non_alpha_words_ratio)")
    min_stop_words: int | None = Field(2, ge=0, description="fewest distinct stop words present")
    stop_words: list[str] = Field(list(GOPHER_STOP_WORDS), description="the stop words (matched case-sensitively)")


# column names
G_TOKENS, G_WORDS, G_MEAN = "gopher.tokens", "gopher.words", "gopher.mean_word_length"
G_HASH, G_ELLIPSIS = "gopher.hash_word_ratio", "gopher.ellipsis_word_ratio"
G_BULLETS, G_END_ELLIPSIS = "gopher.bullet_lines_ratio", "gopher.ellipsis_lines_ratio"
G_ALPHA, G_STOP = "gopher.alpha_words_ratio", "gopher.stop_words"


@register_op
class GopherQuality(RowOp):
    """Drop documents that are too short or long, have implausible word lengths, are mostly symbols,
    bullets or trailing ellipses, have too few alphabetic words, or lack English stop words.

    Columns: ``gopher.tokens`` (all words, punctuation included), ``gopher.words`` (words with a
    non-punctuation character), ``gopher.mean_word_length`` (over those), ``gopher.hash_word_ratio`` and
    ``gopher.ellipsis_word_ratio`` (per token), ``gopher.bullet_lines_ratio``,
    ``gopher.ellipsis_lines_ratio``, ``gopher.alpha_words_ratio`` (per token), ``gopher.stop_words``.
    Reasons, in the order checked: ``gopher_short_doc``, ``gopher_long_doc``, ``gopher_below_avg_word_len``,
    ``gopher_above_avg_word_len``, ``gopher_too_many_hashes``, ``gopher_too_many_ellipsis``,
    ``gopher_too_many_bullets``, ``gopher_too_many_end_ellipsis``, ``gopher_below_alpha_words``,
    ``gopher_few_stop_words``.
    """

    name = "gopher_quality"
    memory = ("per document ~24x its text (its word list as Python strings); per block ~2.5x")
    Config = GopherQualityConfig
    defaults_from = ("Gopher (Rae et al. 2021, appendix A): 50-100,000 words, mean word length 3-10, "
                     "symbol/word <= 0.1, bullet lines <= 0.9, ellipsis lines <= 0.3, >= 80% alphabetic "
                     "words, >= 2 stop words; as datatrove 0.10.1 GopherQualityFilter")

    def setup(self) -> None:
        self._words = english_words()
        self._stop_bits = {w: 1 << i for i, w in enumerate(dict.fromkeys(self.config.stop_words))}
        # per whitespace chunk: (tokens, words, characters in words, alphabetic tokens, stop-word bits)
        self._chunks: dict[str, tuple[int, int, int, int, int]] = {}

    def _chunk_stats(self, piece: str) -> tuple[int, int, int, int, int]:
        tokens = self._words.chunk(piece).tokens
        # a huge chunk (a megabyte without spaces) repeats its few distinct tokens: count those once
        counted = Counter(tokens).items() if len(tokens) > 64 else ((t, 1) for t in tokens)
        n_words = chars = alpha = stop = 0
        for t, k in counted:
            if not is_symbol_word(t):
                n_words += k
                chars += k * len(t)
            if any(c.isalpha() for c in t):
                alpha += k
            stop |= self._stop_bits.get(t, 0)
        stats = (len(tokens), n_words, chars, alpha, stop)
        if len(piece) <= LONG_CHUNK:
            if len(self._chunks) >= _CACHE_LIMIT:
                self._chunks.clear()
            self._chunks[piece] = stats
        return stats

    def process(self, batch: pa.Table) -> Decision:
        if not hasattr(self, "_chunks"):
            self.setup()
        cfg: GopherQualityConfig = self.config  # type: ignore[assignment]
        texts = texts_of(batch)
        cols: dict[str, list] = {k: [] for k in (G_TOKENS, G_WORDS, G_MEAN, G_HASH, G_ELLIPSIS, G_BULLETS,
                                                  G_END_ELLIPSIS, G_ALPHA, G_STOP)}
        cache, compute = self._chunks, self._chunk_stats
        for text in texts:
            text = text or ""
            # Each distinct whitespace chunk once, weighted by its count: a text repeats most of its
            # words, and the per-chunk work is Python (2.8x faster on the small-run corpus, the same sums).
            n_tok = n_words = chars = alpha = stop = 0
            for piece, k in Counter(text.split()).items():
                tokens, words, word_chars, alphabetic, bits = cache.get(piece) or compute(piece)
                n_tok += k * tokens
                n_words += k * words
                chars += k * word_chars
                alpha += k * alphabetic
                stop |= bits
            lines = text.splitlines()
            n_lines = len(lines)
            cols[G_TOKENS].append(n_tok)
            cols[G_WORDS].append(n_words)
            cols[G_MEAN].append(chars / n_words if n_words else None)
            cols[G_HASH].append(text.count("#") / n_tok if n_tok else None)
            cols[G_ELLIPSIS].append((text.count("...") + text.count("…")) / n_tok if n_tok else None)
            cols[G_BULLETS].append(
                sum(1 for s in lines if s.lstrip().startswith(("•", "-"))) / n_lines if n_lines else None)
            cols[G_END_ELLIPSIS].append(
                sum(1 for s in lines if s.rstrip().endswith(("...", "…"))) / n_lines if n_lines else None)
            cols[G_ALPHA].append(alpha / n_tok if n_tok else None)
            cols[G_STOP].append(bin(stop).count("1"))

        def above(col, bound):
            return [v is not None and v > bound for v in cols[col]] if bound is not None else None

        def below(col, bound):
            return [v is not None and v < bound for v in cols[col]] if bound is not None else None

        rules = [(name, failed) for name, failed in (
            ("gopher_short_doc", below(G_WORDS, cfg.min_doc_words)),
            ("gopher_long_doc", above(G_WORDS, cfg.max_doc_words)),
            ("gopher_below_avg_word_len", below(G_MEAN, cfg.min_avg_word_length)),
            ("gopher_above_avg_word_len", above(G_MEAN, cfg.max_avg_word_length)),
            ("gopher_too_many_hashes", above(G_HASH, cfg.max_symbol_word_ratio)),
            ("gopher_too_many_ellipsis", above(G_ELLIPSIS, cfg.max_symbol_word_ratio)),
            ("gopher_too_many_bullets", above(G_BULLETS, cfg.max_bullet_lines_ratio)),
            ("gopher_too_many_end_ellipsis", above(G_END_ELLIPSIS, cfg.max_ellipsis_lines_ratio)),
            ("gopher_below_alpha_words", below(G_ALPHA, cfg.min_alpha_words_ratio)),
            ("gopher_few_stop_words", below(G_STOP, cfg.min_stop_words)),
        ) if failed is not None]
        table = batch
        for name, values in cols.items():
            kind = pa.int64() if name in (G_TOKENS, G_WORDS, G_STOP) else pa.float64()
            table = set_column(table, name, pa.array(values, kind))
        reason = first_failure(batch.num_rows, rules)
        return Decision(table, keep=pa.array([r is None for r in reason.to_pylist()], pa.bool_()), reason=reason)


# --- repetition -----------------------------------------------------------------------------------

_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
_LINE_BREAK = re.compile(r"\n+")


class GopherRepetitionConfig(OpConfig):
    dup_para_frac: float | None = Field(0.30, ge=0, le=1, description="most paragraphs that repeat an earlier one")
    dup_para_char_frac: float | None = Field(0.20, ge=0, le=1, description="most characters in repeated paragraphs")
    dup_line_frac: float | None = Field(0.30, ge=0, le=1, description="most lines that repeat an earlier one")
    dup_line_char_frac: float | None = Field(0.20, ge=0, le=1, description="most characters in repeated lines")
    top_n_grams: dict[int, float] = Field(
        {2: 0.20, 3: 0.18, 4: 0.16},
        description="n -> most characters covered by the most frequent word n-gram")
    dup_n_grams: dict[int, float] = Field(
        {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10},
        description="n -> most characters inside repeated word n-grams")

    @field_validator("top_n_grams", "dup_n_grams")
    @classmethod
    def _sane_n(cls, value: dict[int, float]) -> dict[int, float]:
        for n, frac in value.items():
            if not 1 <= n <= 32:
                raise ValueError(f"n-gram size must be between 1 and 32, got {n}")
            if not 0 <= frac <= 1:
                raise ValueError(f"fraction for {n}-grams must be between 0 and 1, got {frac}")
        return dict(sorted(value.items()))


R_PARA, R_PARA_CHAR = "gopher_rep.dup_para_frac", "gopher_rep.dup_para_char_frac"
R_LINE, R_LINE_CHAR = "gopher_rep.dup_line_frac", "gopher_rep.dup_line_char_frac"


def top_column(n: int) -> str:
    return f"gopher_rep.top_{n}_gram_char_frac"


def dup_column(n: int) -> str:
    return f"gopher_rep.dup_{n}_gram_char_frac"


def repetition_stats(words: list[str], text_len: int, top_ns: list[int], dup_ns: list[int]
                     ) -> tuple[list[float], list[float]]:
    """Fractions of ``text_len`` covered by the top n-gram (per n in ``top_ns``) and by repeated
    n-grams (per n in ``dup_ns``)."""
    vocab: dict[str, int] = {}
    ids = np.fromiter((vocab.setdefault(w, len(vocab)) for w in words), np.int64, len(words))
    lengths = np.fromiter((len(w) for w in vocab), np.int64, len(vocab))[ids]
    del vocab
    top: dict[int, float] = {}
    dup: dict[int, float] = {}
    for n, grams in iter_ngram_ids(ids, max(top_ns + dup_ns, default=1)):
        if n in top_ns:  # the n-gram's text is its words joined by single spaces
            top[n] = top_ngram_chars(grams, ngram_window_sums(lengths, n) + (n - 1)) / text_len
        if n in dup_ns:  # repeated n-grams are measured without the spaces between their words
            dup[n] = duplicate_ngram_chars(grams, ngram_window_sums(lengths, n), n) / text_len
    return [top[n] for n in top_ns], [dup[n] for n in dup_ns]


@register_op
class GopherRepetition(RowOp):
    """Drop documents that repeat themselves: duplicated paragraphs or lines (by count and by
    characters), one n-gram covering too much of the text, or too much text inside repeated n-grams.

    Paragraphs are separated by two or more newlines, lines by one or more; fractions by characters
    are over the whole text. Columns ``gopher_rep.dup_para_frac``, ``gopher_rep.dup_para_char_frac``,
    ``gopher_rep.dup_line_frac``, ``gopher_rep.dup_line_char_frac``, ``gopher_rep.top_<n>_gram_char_frac``
    and ``gopher_rep.dup_<n>_gram_char_frac`` (null for an empty document); reasons ``gopher_rep_empty``,
    ``dup_para_frac``, ``dup_para_char_frac``, ``dup_line_frac``, ``dup_line_char_frac``, ``top_<n>_gram``,
    ``dup_<n>_gram``, checked in that order.

    N-grams are compared as word sequences. datatrove compares repeated 5..10-grams by their words
    glued together without spaces, so two different splits of the same letters ("ab c" / "a bc")
    would count as a repeat there and not here; no document of the parity corpus has one.
    """

    name = "gopher_repetition"
    memory = ("per document ~33x its text (words, then one n-gram id level at a time); per block ~1.2x")
    Config = GopherRepetitionConfig
    defaults_from = ("Gopher (Rae et al. 2021, table A1): duplicate line/paragraph fraction 0.30/0.30, by "
                     "characters 0.20/0.20; top 2/3/4-gram 0.20/0.18/0.16; duplicate 5..10-grams "
                     "0.15..0.10; as datatrove 0.10.1 GopherRepetitionFilter")

    def process(self, batch: pa.Table) -> Decision:
        cfg: GopherRepetitionConfig = self.config  # type: ignore[assignment]
        words_of = english_words().words
        top_ns, dup_ns = list(cfg.top_n_grams), list(cfg.dup_n_grams)
        names = ([R_PARA, R_PARA_CHAR, R_LINE, R_LINE_CHAR] + [top_column(n) for n in top_ns]
                 + [dup_column(n) for n in dup_ns])
        rows: list[list[float] | None] = []
        for text in texts_of(batch):
            if not text:
                rows.append(None)
                continue
            # one split of the text alive at a time: a long document costs its largest, not their sum
            paragraphs = _PARAGRAPH_BREAK.split(text.strip())
            para_dups, para_chars, n_paragraphs = *duplicates(paragraphs), len(paragraphs)
            del paragraphs
            lines = _LINE_BREAK.split(text)
            line_dups, line_chars, n_lines = *duplicates(lines), len(lines)
            del lines
            top, dup = repetition_stats(words_of(text), len(text), top_ns, dup_ns)
            rows.append([para_dups / n_paragraphs, para_chars / len(text),
                         line_dups / n_lines, line_chars / len(text), *top, *dup])
        thresholds = ([cfg.dup_para_frac, cfg.dup_para_char_frac, cfg.dup_line_frac, cfg.dup_line_char_frac]
                      + [cfg.top_n_grams[n] for n in top_ns] + [cfg.dup_n_grams[n] for n in dup_ns])
        reasons = (["dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac"]
                   + [f"top_{n}_gram" for n in top_ns] + [f"dup_{n}_gram" for n in dup_ns])
        rules = [("gopher_rep_empty", [r is None for r in rows])]
        rules += [(reason, [r is not None and r[i] > bound for r in rows])
                  for i, (reason, bound) in enumerate(zip(reasons, thresholds)) if bound is not None]
        table = batch
        for i, name in enumerate(names):
            table = set_column(table, name, pa.array([r[i] if r is not None else None for r in rows], pa.float64()))
        reason = first_failure(batch.num_rows, rules)
        return Decision(table, keep=pa.array([r is None for r in reason.to_pylist()], pa.bool_()), reason=reason)
