"""Classifier ops: `quality_classifier` and `toxicity`.

Both hold a fastText model (:class:`Resources` ``loads_model=True``): ``setup()`` loads it once per
worker process and every batch is scored with one batched ``predict(k=-1)``.
Texts go through :func:`~curation.classifiers.text_prep.prepare_text` with the settings stored next
to the model (``config.json`` → ``text_prep``, written by
:func:`~curation.classifiers.train.train_classifier`), so a model is applied exactly as it was
trained. A model without that file (one trained elsewhere) is applied with the op's ``text_prep``,
or the default one. An empty or null text has no words, and fastText gives it probability 0 for
every label.

``model`` may name a model file (``model.bin``/``model.ftz``) or the folder a ``kind: classifier`` run
wrote (``runs/<name>/model``); a relative path is relative to the working directory (the spec layer
makes spec paths absolute), and a filesystem URI is copied to local disk first.

``toxicity`` also has ``method: wordlist``: the LDNOOBW lists (the "bad words" list C4 filters with,
in 28 languages) shipped in ``data/toxicity/ldnoobw``. See :class:`Wordlists` for the matching rules.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from curation.classifiers.text_prep import DEFAULT_PREP, TextPrep, prepare_texts
from curation.operator import MODEL_BLOCK_BYTES, TEXT, Decision, OpConfig, Resources, RowOp, register_op, set_column

LABEL_PREFIX = "__label__"
MODEL_FILES = ("model.ftz", "model.bin")
LDNOOBW = Path(__file__).resolve().parent.parent.parent / "data" / "toxicity" / "ldnoobw"

QUALITY_PREFIX = "quality_classifier"
TOXICITY_SCORE = "toxicity.score"
LANG_COLUMN = "langid.lang"


# ------------------------------------------------------------------------------------ fastText


@dataclass
class ModelFolder:
    """A fastText model file and what its training run wrote beside it (when it did)."""

    model_file: str
    text_prep: TextPrep | None  # None: the model came without a config.json
    positive_label: str | None
    scratch: str | None = None  # local copy of a remote model, removed once loaded


def _local_copy(uri: str) -> str:
    """Copy a model file or folder from a pyarrow filesystem URI into a local temporary folder."""
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(uri)
    local = tempfile.mkdtemp(prefix="gristmill-model-")
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"classifier model not found: {uri}")
    if info.type == pafs.FileType.File:
        names = [(path, os.path.basename(path))]
        folder = path.rsplit("/", 1)[0]
        names += [(f"{folder}/{n}", n) for n in ("config.json", "labels.json")
                  if fs.get_file_info(f"{folder}/{n}").type == pafs.FileType.File]
        target = os.path.join(local, os.path.basename(path))
    else:
        names = [(f"{path.rstrip('/')}/{n}", n) for n in (*MODEL_FILES, "config.json", "labels.json")
                 if fs.get_file_info(f"{path.rstrip('/')}/{n}").type == pafs.FileType.File]
        target = local
    for source, name in names:
        pafs.copy_files(source, os.path.join(local, name), source_filesystem=fs,
                        destination_filesystem=pafs.LocalFileSystem())
    return target


def resolve_model(location: str) -> ModelFolder:
    """Find the model file and read ``config.json``/``labels.json`` next to it when present."""
    scratch = None
    if "://" in location:
        location = _local_copy(location)
        scratch = location if os.path.isdir(location) else os.path.dirname(location)
    path = Path(location).expanduser().resolve()
    if path.is_dir():
        folder = path
        named = None
        if (folder / "config.json").is_file():
            named = json.loads((folder / "config.json").read_text()).get("model_file")
        candidates = [named] if named else list(MODEL_FILES)
        found = [folder / c for c in candidates if (folder / c).is_file()]
        if not found:
            raise FileNotFoundError(f"no {' or '.join(candidates)} in the model folder {folder}")
        model_file = found[0]
    elif path.is_file():
        model_file, folder = path, path.parent
    else:
        raise FileNotFoundError(f"classifier model not found: {location}")
    config = labels = None
    if (folder / "config.json").is_file():
        config = json.loads((folder / "config.json").read_text())
        if config.get("model_file") not in (None, model_file.name):
            config = None  # the config describes another model file in the same folder
    if config is not None and (folder / "labels.json").is_file():
        labels = json.loads((folder / "labels.json").read_text())
    return ModelFolder(
        model_file=str(model_file),
        text_prep=TextPrep.model_validate(config["text_prep"]) if config and "text_prep" in config else None,
        positive_label=labels.get("positive_label") if labels else None,
        scratch=scratch)


class FastTextScorer:
    """P(label | text) from a fastText model, with the preparation the model was trained with."""

    def __init__(self, location: str, label: str | None, prep: TextPrep | None, default_label: str | None = None):
        import fasttext

        folder = resolve_model(location)
        if folder.text_prep is not None and prep is not None and prep != folder.text_prep:
            raise ValueError(f"the model at {location} was trained with text_prep "
                             f"{folder.text_prep.model_dump()}; applying it with {prep.model_dump()} "
                             "would score text unlike what it learned from (leave text_prep out)")
        self.prep = folder.text_prep or prep or DEFAULT_PREP
        fasttext.FastText.eprint = lambda *_: None  # load_model's warning about .bin files
        try:
            self.model = fasttext.load_model(folder.model_file)
        finally:
            if folder.scratch:
                shutil.rmtree(folder.scratch, ignore_errors=True)
        labels = [name[len(LABEL_PREFIX):] if name.startswith(LABEL_PREFIX) else name for name in self.model.labels]
        wanted = label or folder.positive_label or default_label
        if wanted is None:
            raise ValueError(f"say which label to score: the model at {location} has labels {labels}")
        wanted = wanted[len(LABEL_PREFIX):] if wanted.startswith(LABEL_PREFIX) else wanted
        if wanted not in labels:
            raise ValueError(f"label {wanted!r} is not one of the model's labels {labels}")
        self.label = wanted
        self.model_label = self.model.labels[labels.index(wanted)]

    def score(self, texts: list[str | None]) -> np.ndarray:
        """The probability of ``self.label`` for every text, as float32."""
        out = np.zeros(len(texts), dtype=np.float32)
        if not texts:
            return out
        names, probs = self.model.predict(prepare_texts(texts, self.prep), k=-1)
        target = self.model_label
        for row, (row_names, row_probs) in enumerate(zip(names, probs)):
            for name, value in zip(row_names, row_probs):
                if name == target:
                    out[row] = value
                    break
        # fastText reports p + 1e-5 (it smooths before taking logs): keep scores inside [0, 1].
        return np.clip(out, 0.0, 1.0, out=out)


def _threshold(scores: pa.Array, failed: pa.Array, reason: str) -> tuple[pa.Array, pa.Array]:
    """keep mask and reason column from a boolean ``failed`` (null failed = kept)."""
    failed = pc.fill_null(failed, False)
    return pc.invert(failed), pc.if_else(failed, pa.scalar(reason), pa.scalar(None, pa.string()))


# --------------------------------------------------------------------------- quality_classifier


class QualityClassifierConfig(OpConfig):
    # Fields holding paths: the spec layer makes relative ones relative to the spec file.
    path_fields: ClassVar[tuple[str, ...]] = ("model",)

    model: str = Field(..., min_length=1, description="fastText model file, or the model/ folder of a "
                       "`kind: classifier` run")
    label: str | None = Field(None, description="label whose probability is the score; default: the "
                              "model's positive_label (labels.json)")
    min_score: float | None = Field(None, ge=0, le=1, description="drop documents scoring below this; "
                                    "null: annotate only")
    column_prefix: str = Field(QUALITY_PREFIX, min_length=1, description="score column is PREFIX.score")
    text_prep: TextPrep | None = Field(None, description="only for models trained elsewhere (no "
                                       "config.json beside them); default: the training defaults")


@register_op
class QualityClassifier(RowOp):
    """Score each document with a fastText classifier (P(label)); optionally keep score ≥ min_score."""

    name = "quality_classifier"
    memory = ("the fastText model once per worker (its file size); per document and block as `toxicity` (the same "
              "text preparation and predict; not measured apart)")
    Config = QualityClassifierConfig
    resources = Resources(loads_model=True, block_bytes=MODEL_BLOCK_BYTES)
    defaults_from = ("DCLM (Li et al. 2024): fastText bigram classifier, positives = curated reference "
                     "text, negatives = random web text; min_score off (DCLM keeps a top fraction, "
                     "a threshold you pick from the annotated scores)")

    def __init__(self, config: OpConfig, step_label: str | None = None):
        super().__init__(config, step_label)
        self.scorer: FastTextScorer | None = None

    @property
    def column(self) -> str:
        return f"{self.config.column_prefix}.score"  # type: ignore[attr-defined]

    def setup(self) -> None:
        cfg: QualityClassifierConfig = self.config  # type: ignore[assignment]
        self.scorer = FastTextScorer(cfg.model, cfg.label, cfg.text_prep)

    def teardown(self) -> None:
        self.scorer = None

    def process(self, batch: pa.Table) -> Decision:
        cfg: QualityClassifierConfig = self.config  # type: ignore[assignment]
        if self.scorer is None:
            self.setup()
        scores = pa.array(self.scorer.score(batch.column(TEXT).to_pylist()), pa.float32())  # type: ignore[union-attr]
        table = set_column(batch, self.column, scores)
        if cfg.min_score is None:
            return Decision(table)
        keep, reason = _threshold(scores, pc.less(scores, pa.scalar(cfg.min_score, pa.float64())), "low_quality")
        return Decision(table, keep=keep, reason=reason)


# ------------------------------------------------------------------------------------- wordlist

# Scripts written without spaces between words: every character is a token, so a listed word is
# found inside a longer run of text (Chinese, Japanese, Korean, Thai).
_NO_SPACE = "\u0e00-\u0e7f\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
# Other words: runs of word characters plus combining marks (which \w leaves out: Devanagari vowel
# signs, Arabic harakat, Latin combining accents).
_MARKS = "\u0300-\u036f\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed\u0900-\u0dff"
_WORD_TOKEN = re.compile(rf"[{_NO_SPACE}]|(?:(?![{_NO_SPACE}])[\w{_MARKS}])+")
# lid.176 codes (what `langid.lang` holds) that the LDNOOBW lists name differently.
_LANG_ALIASES = {"tl": "fil", "nb": "no", "nn": "no"}
# Regional lists merged into their language's list.
_MERGED = {"fr-CA-u-sd-caqc": "fr"}
_NOT_LISTS = {"LICENSE", "README.md", "USERS.md"}


def wordlist_tokens(text: str) -> list[str]:
    """NFKC, lower-case, then word tokens (one per character for scripts without spaces)."""
    return _WORD_TOKEN.findall(unicodedata.normalize("NFKC", text).lower())


class Wordlists:
    """The LDNOOBW lists, one per language, matched on word tokens.

    Text and list entries are tokenized alike (:func:`wordlist_tokens`): NFKC, lower-case,
    punctuation dropped, and each character of Chinese/Japanese/Korean/Thai a token of its own. An
    entry matches where its tokens appear in a row, so ``ass`` does not match ``class`` but ``2 girls
    1 cup`` matches ``2 girls, 1 cup``, and ``三级片`` matches inside a Chinese sentence.
    """

    def __init__(self, folder: str | os.PathLike = LDNOOBW):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"no wordlist folder {self.folder} (the LDNOOBW lists ship in "
                                    "data/toxicity/ldnoobw; give `wordlist_dir`)")
        # language → first token → (entry tokens, entry as listed) for entries starting with it
        self.index: dict[str, dict[str, list[tuple[tuple[str, ...], str]]]] = {}
        for path in sorted(self.folder.iterdir()):
            if not path.is_file() or path.name in _NOT_LISTS or path.name.startswith("."):
                continue
            lang = _MERGED.get(path.name, path.name)
            by_first = self.index.setdefault(lang, {})
            for line in path.read_text(encoding="utf-8").splitlines():
                tokens = tuple(wordlist_tokens(line))
                if tokens and all(tokens != known for known, _ in by_first.get(tokens[0], ())):
                    by_first.setdefault(tokens[0], []).append((tokens, line.strip()))

    @staticmethod
    def language_key(lang: str) -> str:
        lang = lang.strip()
        lang = lang[len(LABEL_PREFIX):] if lang.startswith(LABEL_PREFIX) else lang
        lang = lang.replace("_", "-").split("-")[0].lower()
        return _LANG_ALIASES.get(lang, lang)

    def has(self, lang: str) -> bool:
        return self.language_key(lang) in self.index

    def match(self, text: str | None, lang: str, stop_at_first: bool) -> tuple[int, int, str | None]:
        """(tokens covered by listed entries, tokens in all, the first entry found)."""
        by_first = self.index[self.language_key(lang)]
        tokens = wordlist_tokens(text or "")
        covered = np.zeros(len(tokens), dtype=bool)
        first = None
        for i, token in enumerate(tokens):
            for entry, listed in by_first.get(token, ()):
                if tuple(tokens[i:i + len(entry)]) == entry:
                    covered[i:i + len(entry)] = True
                    if first is None:
                        first = listed
                        if stop_at_first:
                            return int(covered.sum()), len(tokens), first
        return int(covered.sum()), len(tokens), first


# ------------------------------------------------------------------------------------- toxicity


class ToxicityConfig(OpConfig):
    path_fields: ClassVar[tuple[str, ...]] = ("model", "wordlist_dir")

    method: Literal["fasttext", "wordlist"] = Field("fasttext", description="fastText classifier, or "
                                                    "the LDNOOBW bad-words lists")
    model: str | None = Field(None, description="fasttext: model file or folder; default: the project's "
                              "model trained on the Davidson tweets (built on first use)")
    label: str | None = Field(None, description="fasttext: label whose probability is the score; "
                              "default: the model's positive_label, else 'toxic'")
    max_score: float = Field(0.5, ge=0, le=1, description="drop documents scoring above this")
    language: str = Field("en", min_length=1, description="wordlist: language of rows without a "
                          "`langid.lang` value")
    wordlist_score: Literal["any", "fraction"] = Field(
        "any", description="wordlist: `any` scores 1.0 when any listed word occurs (C4's rule), else 0; "
        "`fraction` scores the fraction of words that are listed words or phrases")
    wordlist_dir: str | None = Field(None, description="wordlist: folder of per-language lists; "
                                     "default: the shipped LDNOOBW lists")
    text_prep: TextPrep | None = Field(None, description="fasttext: only for models trained elsewhere")

    @model_validator(mode="after")
    def _fields_fit_method(self):
        # Compared with the defaults, not with what was set: the runner ships configs to workers as
        # full dumps, defaults included.
        only = {"fasttext": ("model", "label", "text_prep"),
                "wordlist": ("language", "wordlist_score", "wordlist_dir")}
        other = "wordlist" if self.method == "fasttext" else "fasttext"
        fields = type(self).model_fields
        stray = [f for f in only[other] if getattr(self, f) != fields[f].default]
        if stray:
            raise ValueError(f"{', '.join(stray)} only applies to method: {other} (method is {self.method})")
        return self


@register_op
class Toxicity(RowOp):
    """Score toxicity (fastText P(toxic), or the LDNOOBW word lists) into ``toxicity.score``; drop
    documents scoring above ``max_score`` with reason ``toxic``.

    The default model knows English only (tweets plus English prose): put it after a langid step
    that keeps English, or use ``method: wordlist`` for other languages.

    With ``method: wordlist`` the language of each row is its ``langid.lang`` value (from a langid
    step) or else ``language``. A row whose language has no list gets a null score and is kept.
    ``wordlist_score: any`` (default) is C4's rule: 1.0 when a listed word or phrase occurs, so with
    ``max_score`` 0.5 one listed word drops the document; ``fraction`` is covered words / words
    (with ``max_score`` around 0.01–0.05 it drops only documents dense in them). The reason detail
    names the first listed entry found, for auditing false positives.
    """

    name = "toxicity"
    memory = ("the fastText model once per worker (the default: ~8 MiB); per document ~17x its text (text "
              "preparation, tokens); per block ~3.5x")
    Config = ToxicityConfig
    resources = Resources(loads_model=True, block_bytes=MODEL_BLOCK_BYTES)
    defaults_from = ("fastText trained on Davidson et al. 2017 (hate + offensive → toxic), drop when "
                     "P(toxic) > 0.5; wordlist: C4's LDNOOBW rule (any listed word drops)")

    def __init__(self, config: OpConfig, step_label: str | None = None):
        super().__init__(config, step_label)
        self.scorer: FastTextScorer | None = None
        self.wordlists: Wordlists | None = None

    def setup(self) -> None:
        cfg: ToxicityConfig = self.config  # type: ignore[assignment]
        if cfg.method == "wordlist":
            self.wordlists = Wordlists(cfg.wordlist_dir or LDNOOBW)
            return
        model = cfg.model
        if model is None:
            from curation.classifiers.default_toxicity import ensure_default_toxicity_model

            model = str(ensure_default_toxicity_model())
        self.scorer = FastTextScorer(model, cfg.label, cfg.text_prep, default_label="toxic")

    def teardown(self) -> None:
        self.scorer = self.wordlists = None

    def process(self, batch: pa.Table) -> Decision:
        cfg: ToxicityConfig = self.config  # type: ignore[assignment]
        if self.scorer is None and self.wordlists is None:
            self.setup()
        texts = batch.column(TEXT).to_pylist()
        detail = None
        if self.scorer is not None:
            scores = pa.array(self.scorer.score(texts), pa.float32())
        else:
            scores, detail = self._wordlist_scores(batch, texts)
        table = set_column(batch, TOXICITY_SCORE, scores)
        keep, reason = _threshold(scores, pc.greater(scores, pa.scalar(cfg.max_score, pa.float64())), "toxic")
        if detail is not None:
            detail = pc.if_else(keep, pa.scalar(None, pa.string()), detail)
        return Decision(table, keep=keep, reason=reason, detail=detail)

    def _wordlist_scores(self, batch: pa.Table, texts: list[str | None]) -> tuple[pa.Array, pa.Array]:
        cfg: ToxicityConfig = self.config  # type: ignore[assignment]
        lists = self.wordlists
        assert lists is not None
        langs = (batch.column(LANG_COLUMN).to_pylist() if LANG_COLUMN in batch.column_names
                 else [None] * batch.num_rows)
        any_mode = cfg.wordlist_score == "any"
        scores: list[float | None] = []
        details: list[str | None] = []
        for text, lang in zip(texts, langs):
            lang = lang or cfg.language
            if not lists.has(lang):
                scores.append(None)
                details.append(None)
                continue
            covered, total, first = lists.match(text, lang, stop_at_first=any_mode)
            if any_mode:
                scores.append(1.0 if covered else 0.0)
            else:
                scores.append(covered / total if total else 0.0)
            details.append(f"wordlist {lists.language_key(lang)}: {first!r}" if first else None)
        return pa.array(scores, pa.float32()), pa.array(details, pa.string())
