"""`c4_quality` and `c4_badwords`: the Colossal Clean Crawled Corpus heuristics.

Defaults come from Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified
Text-to-Text Transformer" (JMLR 21), section 2.2, and the TensorFlow Datasets ``c4_utils`` code it
released (which adds the policy/cookie lines and the 1,000-character word rule), as implemented by
datatrove 0.10.1's ``C4QualityFilter`` and ``C4BadWordsFilter``, whose keep/drop decisions (and, for
``c4_quality``, rewritten text) these ops reproduce (``python -m benchmarks.quality_parity``).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pyarrow as pa
from pydantic import Field

from curation.operator import TEXT, Decision, OpConfig, RowOp, register_op, set_column
from curation.quality.text_stats import first_failure, texts_of
from curation.quality.words import english_words

# Wikipedia-style citation marks: [1], [], [edit], [citation needed]
_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
_END_PUNCTUATION = (".", "?", "!", '"', "'")
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


class C4QualityConfig(OpConfig):
    remove_citations: bool = Field(True, description="delete [1], [edit], [citation needed] from lines")
    filter_no_terminal_punct: bool = Field(
        True, description="drop lines that do not end in . ? ! \" ' (or that end in ...)")
    min_num_sentences: int | None = Field(5, ge=0, description="drop documents with fewer sentences left")
    min_words_per_line: int | None = Field(3, ge=0, description="drop lines with fewer words")
    max_word_length: int | None = Field(1000, ge=1, description="drop lines with a longer word (characters)")
    filter_lorem_ipsum: bool = Field(True, description="drop documents containing 'lorem ipsum'")
    filter_javascript: bool = Field(True, description="drop lines mentioning javascript")
    filter_curly_bracket: bool = Field(True, description="drop documents containing '{' (code)")
    filter_policy: bool = Field(True, description="drop lines about terms of use, privacy or cookie policies")


C4_LINES, C4_LINES_REMOVED, C4_CHARS_REMOVED = "c4.lines", "c4.lines_removed", "c4.chars_removed"
C4_SENTENCES = "c4.sentences"
C4_LINE_RULES = ("long_word", "no_terminal_punct", "too_few_words", "javascript", "policy")
C4_LOREM, C4_CURLY = "c4.lorem_ipsum", "c4.curly_bracket"


def line_rule_column(rule: str) -> str:
    return f"c4.lines_{rule}"


@register_op
class C4Quality(RowOp):
    """Keep only the lines C4 keeps (rewriting ``text``), then drop documents left with too few
    sentences, or that contain "lorem ipsum" or a curly bracket in a line that survived the line rules.

    Lines are ``str.splitlines()`` lines, stripped. In order, a line is removed when a word (split on
    whitespace) is longer than ``max_word_length``, when (after citation marks are removed) it does not
    end in terminal punctuation or ends in "...", when it has fewer than ``min_words_per_line`` words, or
    when it mentions javascript or a terms-of-use / privacy / cookie policy; "lorem ipsum" and "{" in a
    line that got that far condemn the whole document. Sentences are counted in the kept lines by
    spaCy's rule-based sentencizer, as datatrove does. Kept documents get the kept lines joined by
    newlines as their ``text``; dropped documents keep their original text.

    Columns: ``c4.lines``, ``c4.lines_removed``, ``c4.chars_removed`` (characters the rewrite removes),
    ``c4.sentences`` (in the kept lines), ``c4.lines_<rule>`` per line rule, ``c4.lorem_ipsum`` and
    ``c4.curly_bracket`` (a surviving line had it). Reasons: ``c4_lorem_ipsum`` / ``c4_curly_bracket``
    (whichever line comes first) else ``c4_too_few_sentences``.
    Not ported: datatrove's ``split_paragraph=False`` mode (rules per sentence instead of per line).
    """

    name = "c4_quality"
    memory = ("per document ~7x its text (lines and their words); per block ~2.3x")
    Config = C4QualityConfig
    defaults_from = ("C4 (Raffel et al. 2020, sec. 2.2) and TFDS c4_utils: lines need terminal punctuation "
                     "and >= 3 words, no javascript/policy lines, no word > 1000 chars; documents need >= 5 "
                     "sentences, no 'lorem ipsum', no '{'; as datatrove 0.10.1 C4QualityFilter")

    def process(self, batch: pa.Table) -> Decision:
        cfg: C4QualityConfig = self.config  # type: ignore[assignment]
        count_sentences = english_words().count_sentences
        out_text, n_lines, lines_removed, chars_removed, sentences = [], [], [], [], []
        per_rule = {rule: [] for rule in C4_LINE_RULES}
        lorem_col, curly_col, doc_reasons = [], [], []
        min_words = cfg.min_words_per_line or 0
        max_len = cfg.max_word_length
        for text in texts_of(batch):
            original = text or ""
            lines = original.splitlines()
            kept: list[str] = []
            removed = dict.fromkeys(C4_LINE_RULES, 0)
            n_sent = 0
            doc_reason = None
            lorem = curly = False
            for line in lines:
                line = line.strip()
                words = line.split()
                if max_len is not None and any(len(w) > max_len for w in words):
                    removed["long_word"] += 1
                    continue
                if cfg.remove_citations and "[" in line:
                    line = _CITATION.sub("", line)
                if cfg.filter_no_terminal_punct and (not line.endswith(_END_PUNCTUATION) or line.endswith("...")):
                    removed["no_terminal_punct"] += 1
                    continue
                if len(words) < min_words:
                    removed["too_few_words"] += 1
                    continue
                low = line.lower()
                if cfg.filter_lorem_ipsum and "lorem ipsum" in low:
                    lorem = True
                    doc_reason = doc_reason or "c4_lorem_ipsum"
                    continue
                if cfg.filter_javascript and "javascript" in low:
                    removed["javascript"] += 1
                    continue
                if cfg.filter_curly_bracket and "{" in line:
                    curly = True
                    doc_reason = doc_reason or "c4_curly_bracket"
                    continue
                if cfg.filter_policy and any(p in low for p in _POLICY):
                    removed["policy"] += 1
                    continue
                if cfg.min_num_sentences is not None:
                    n_sent += count_sentences(line)
                kept.append(line)
            new_text = "\n".join(kept).strip()
            if doc_reason is None and cfg.min_num_sentences is not None and n_sent < cfg.min_num_sentences:
                doc_reason = "c4_too_few_sentences"
            doc_reasons.append(doc_reason)
            out_text.append(new_text if doc_reason is None else text)
            n_lines.append(len(lines))
            lines_removed.append(len(lines) - len(kept))
            chars_removed.append(len(original) - len(new_text))
            sentences.append(n_sent if cfg.min_num_sentences is not None else None)
            for rule in C4_LINE_RULES:
                per_rule[rule].append(removed[rule])
            lorem_col.append(lorem)
            curly_col.append(curly)
        table = set_column(batch, TEXT, pa.array(out_text, pa.string()))
        for name, values, kind in ((C4_LINES, n_lines, pa.int64()), (C4_LINES_REMOVED, lines_removed, pa.int64()),
                                   (C4_CHARS_REMOVED, chars_removed, pa.int64()),
                                   (C4_SENTENCES, sentences, pa.int64()),
                                   *((line_rule_column(r), per_rule[r], pa.int64()) for r in C4_LINE_RULES),
                                   (C4_LOREM, lorem_col, pa.bool_()), (C4_CURLY, curly_col, pa.bool_())):
            table = set_column(table, name, pa.array(values, kind))
        reason = pa.array(doc_reasons, pa.string())
        return Decision(table, keep=pa.array([r is None for r in doc_reasons], pa.bool_()), reason=reason)


# --- bad words ------------------------------------------------------------------------------------

# One list per language code (28 languages, as C4 and datatrove use them), shipped with the package.
LISTS_DIR = Path(__file__).resolve().parent / "ldnoobw"
# Languages written without spaces: a bad word matches anywhere, not only between non-word characters.
_UNSPACED = ("ja", "th", "zh")
# Common subwords of the unspaced languages that would each drop >10% of their documents (as in C4's
# and datatrove's code); removed from every list.
_ALLOWED = {"sm", "グロ", "女の子", "性"}
LANG_COLUMN = "langid.lang"


class C4BadWordsConfig(OpConfig):
    keep_fraction: float = Field(0.0, ge=0, le=1, description="fraction of documents with a bad word to keep anyway")
    seed: int | None = Field(None, description="seed of the keep_fraction draw (per document, from its text)")
    default_language: str = Field("en", description="language of rows without a langid.lang value")
    fail_on_missing_language: bool = Field(
        False, description="raise on a language without a list (default: keep those documents)")
    lists_dir: str | None = Field(None, description="folder of one-word-a-line lists named by language code")


def _trie_pattern(words: list[str]) -> str:
    """One regex alternative for a set of words, as a trie: the same strings as ``a|b|c`` matches,
    without re trying hundreds of alternatives at each position."""
    trie: dict = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict) -> str:
        ends = "" in node
        branches = [re.escape(ch) + emit(child) for ch, child in sorted(node.items()) if ch != ""]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 and not ends else "(?:" + "|".join(branches) + ")"
        if ends:
            body = body + "?" if body.startswith("(?:") else "(?:" + body + ")?"
        return body

    return emit(trie)


def load_badwords(lang: str, lists_dir: Path = LISTS_DIR) -> re.Pattern | None:
    path = lists_dir / lang
    if not path.is_file():
        return None
    words = {line.strip() for line in path.read_text(encoding="utf-8").splitlines()} - _ALLOWED
    words.discard("")  # (a blank line would otherwise match everything)
    if not words:
        return None
    alternatives = _trie_pattern(sorted(words))
    if lang in _UNSPACED:
        return re.compile(alternatives)
    return re.compile(r"(?:\W|^)(" + alternatives + r")(?:\W|$)")


def _uniform(seed: int | None, text: str) -> float:
    digest = hashlib.blake2b(f"{seed}\x00{text}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@register_op
class C4BadWords(RowOp):
    """Drop documents containing a word from the LDNOOBW list of their language (C4's bad-words rule).

    The language is the row's ``langid.lang`` (when that column exists and the value is not null),
    else ``default_language``. Words must stand between non-word characters, except in Japanese, Thai
    and Chinese, which are matched anywhere; matching is on the lower-cased text. ``keep_fraction``
    keeps that share of the offending documents, drawn per document from a hash of ``seed`` and the text
    (reproducible on any worker; datatrove draws from one random stream per process instead). Rows in a
    language without a list are kept (``fail_on_missing_language`` raises instead, datatrove's default).

    Columns: ``c4_badwords.lang`` (the list used; null when none) and ``c4_badwords.word`` (a bad word
    found, null when none). Reason: ``c4_badwords``.
    """

    name = "c4_badwords"
    memory = ("per document ~7x its text (its word list); per block ~0.3x")
    Config = C4BadWordsConfig
    defaults_from = ("C4 (Raffel et al. 2020, sec. 2.2): drop pages with any word from the List of Dirty, "
                     "Naughty, Obscene or Otherwise Bad Words; keep_fraction 0; as datatrove 0.10.1 "
                     "C4BadWordsFilter")

    def setup(self) -> None:
        self._patterns: dict[str, re.Pattern | None] = {}

    def _pattern(self, lang: str) -> re.Pattern | None:
        if lang not in self._patterns:
            cfg: C4BadWordsConfig = self.config  # type: ignore[assignment]
            folder = Path(cfg.lists_dir) if cfg.lists_dir else LISTS_DIR
            pattern = load_badwords(lang, folder) if "/" not in lang and lang not in ("", ".", "..") else None
            if pattern is None and cfg.fail_on_missing_language:
                raise ValueError(f"c4_badwords: no bad-words list for language {lang!r} in {folder}; "
                                 "set fail_on_missing_language: false to keep such documents")
            self._patterns[lang] = pattern
        return self._patterns[lang]

    def process(self, batch: pa.Table) -> Decision:
        if not hasattr(self, "_patterns"):
            self.setup()
        cfg: C4BadWordsConfig = self.config  # type: ignore[assignment]
        texts = texts_of(batch)
        if LANG_COLUMN in batch.column_names:
            langs = [lang or cfg.default_language for lang in batch.column(LANG_COLUMN).to_pylist()]
        else:
            langs = [cfg.default_language] * len(texts)
        used, found, dropped = [], [], []
        for text, lang in zip(texts, langs):
            pattern = self._pattern(lang)
            word = None
            if pattern is not None and text:
                m = pattern.search(text.lower())
                if m is not None:
                    word = m.group(1) if m.groups() else m.group(0)
            used.append(lang if pattern is not None else None)
            found.append(word)
            drop = word is not None and not (cfg.keep_fraction > 0 and _uniform(cfg.seed, text) < cfg.keep_fraction)
            dropped.append(drop)
        table = set_column(batch, "c4_badwords.lang", pa.array(used, pa.string()))
        table = set_column(table, "c4_badwords.word", pa.array(found, pa.string()))
        reason = first_failure(batch.num_rows, [("c4_badwords", dropped)])
        return Decision(table, keep=pa.array([not d for d in dropped], pa.bool_()), reason=reason)
