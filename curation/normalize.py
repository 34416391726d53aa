"""`normalize`: repair and tidy document text before anything measures it.

Steps, in this order (each can be switched off):

1. ``fix_mojibake``: ftfy repairs text that was decoded with the wrong codec ("schÃ¶n" → "schön").
   Only non-ASCII documents can hold mojibake, so pure-ASCII ones skip ftfy, which is by far the
   most expensive step. ftfy reads stray C1 controls as the Windows-1252 characters they nearly
   always are (``\x85`` → "…"), so with this step on they are repaired rather than removed.
2. ``remove_control_chars``: C0/C1 control characters (except ``\\n`` and ``\\t``), DEL, the
   zero-width space (U+200B) and the BOM (U+FEFF) are removed. The zero-width non-joiner and joiner
   (U+200C, U+200D) stay: they carry meaning in Persian and Indic scripts and in emoji. Line
   breaks in disguise (``\\r\\n``, ``\\r``, vertical tab, form feed) become ``\\n`` rather than being
   deleted, which would glue words together.
3. ``unicode_form``: NFC (canonical composition: "e" + combining acute → "é") by default; NFKC also
   folds compatibility forms (ligatures, full-width letters, NBSP → space), as FineWeb-Edu and many
   tokenizer pipelines do; ``none`` leaves code points alone.
4. ``collapse_whitespace``: line endings become ``\\n``, every run of horizontal whitespace (spaces,
   tabs, NBSP and the other Unicode space separators) becomes one space, spaces before a line end
   go, three or more newlines become two (paragraph breaks survive), and the document is stripped.

Where the defaults come from: the ftfy settings follow datatrove's ``FTFYFormatter`` (repair broken
encodings, never enforce a house style: no quote uncurling, no ligature or width folding); three or
more newlines become two as in NeMo Curator's ``NewlineNormalizer``; NFC rather than NFKC keeps the
text's meaning and look intact. Steps 2-4 run as vectorised Arrow kernels over the whole batch; only ftfy runs per
document. A document left empty is dropped with reason ``empty_after_normalize``; null text is
treated as empty. Adds ``normalize.changed`` (bool): whether the text was rewritten.
"""

from __future__ import annotations

from typing import Literal

import ftfy
import pyarrow as pa
import pyarrow.compute as pc

from curation.operator import TEXT, Decision, OpConfig, RowOp, register_op, set_column

CHANGED = "normalize.changed"

# ftfy does more than mojibake repair by default. Switched off here, and why:
# - normalization=None: `unicode_form` normalises once, after ftfy, for every document (ftfy only
#   sees non-ASCII ones), and `none` must really mean none.
# - uncurl_quotes, fix_latin_ligatures, fix_character_width: these rewrite correct text (curly
#   quotes, ligatures, full-width forms); the last two are what NFKC does when a user asks for it.
# - unescape_html: "&lt;" in a code sample or an already-extracted page is content, not markup.
# - fix_line_breaks, remove_control_chars: done below for all documents alike, ASCII or not.
# - explain: we never read the explanation; building it costs time.
# What stays on is the repair itself: fix_encoding, restore_byte_a0, replace_lossy_sequences,
# decode_inconsistent_utf8, fix_c1_controls (mojibake often shows up as C1 controls, so ftfy must
# run before they are removed), fix_surrogates, remove_terminal_escapes.
FTFY_CONFIG = ftfy.TextFixerConfig(
    unescape_html=False,
    fix_latin_ligatures=False,
    fix_character_width=False,
    uncurl_quotes=False,
    fix_line_breaks=False,
    remove_control_chars=False,
    normalization=None,
    explain=False,
)

# RE2 patterns (Arrow's regex engine). Written out rather than using \s because RE2's \s is ASCII.
_LINE_BREAKS = r"\r\n?|[\x0b\x0c]"
_CONTROLS = r"[\x00-\x08\x0e-\x1f\x7f-\x{9f}\x{200b}\x{feff}]+"
_HSPACE = r"[ \t\x{a0}\x{1680}\x{2000}-\x{200a}\x{202f}\x{205f}\x{3000}]+"


class NormalizeConfig(OpConfig):
    unicode_form: Literal["NFC", "NFKC", "none"] = "NFC"
    fix_mojibake: bool = True
    collapse_whitespace: bool = True
    remove_control_chars: bool = True


def normalize_texts(texts: pa.Array, cfg: NormalizeConfig) -> pa.Array:
    """Normalise an Arrow string array (no nulls) as configured; same length and order."""
    if cfg.fix_mojibake and len(texts):
        non_ascii = pc.invert(pc.string_is_ascii(texts))
        if pc.any(non_ascii).as_py():
            fixed = [ftfy.fix_text(t, FTFY_CONFIG) for t in texts.filter(non_ascii).to_pylist()]
            texts = pc.replace_with_mask(texts, non_ascii, pa.array(fixed, texts.type))
    if cfg.remove_control_chars:
        texts = pc.replace_substring_regex(texts, _LINE_BREAKS, "\n")
        texts = pc.replace_substring_regex(texts, _CONTROLS, "")
    if cfg.unicode_form != "none":
        texts = pc.utf8_normalize(texts, cfg.unicode_form)
    if cfg.collapse_whitespace:
        texts = pc.replace_substring_regex(texts, _LINE_BREAKS, "\n")
        texts = pc.replace_substring_regex(texts, _HSPACE, " ")
        texts = pc.replace_substring(texts, " \n", "\n")  # at most one space is left before a newline
        texts = pc.replace_substring_regex(texts, r"\n{3,}", "\n\n")
        texts = pc.utf8_trim_whitespace(texts)
    return texts


@register_op
class Normalize(RowOp):
    """Repair mojibake, remove control characters, Unicode-normalise and collapse whitespace."""

    name = "normalize"
    memory = ("per document ~10x its text (ftfy and Unicode normalisation copies); per block ~4x")
    Config = NormalizeConfig
    defaults_from = "ftfy settings of datatrove's FTFYFormatter; newline collapsing of NeMo Curator's NewlineNormalizer"

    def process(self, batch: pa.Table) -> Decision:
        cfg: NormalizeConfig = self.config  # type: ignore[assignment]
        column = batch.column(TEXT).combine_chunks()
        original = pc.fill_null(column, "")
        texts = normalize_texts(original, cfg)
        changed = pc.not_equal(texts, original)
        empty = pc.or_(pc.equal(pc.binary_length(texts), 0), pc.utf8_is_space(texts))
        # Null text stays null (there was nothing to rewrite); it is dropped as empty below.
        texts = pc.if_else(pc.is_null(column), pa.scalar(None, texts.type), texts)
        table = set_column(batch, TEXT, texts)
        table = set_column(table, CHANGED, changed)
        if not pc.any(empty).as_py():
            return Decision(table)
        reason = pc.if_else(empty, pa.scalar("empty_after_normalize"), pa.scalar(None, pa.string()))
        return Decision(table, keep=pc.invert(empty), reason=reason)
