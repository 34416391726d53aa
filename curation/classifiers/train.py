"""Training a fastText classifier from labelled files, with held-out metrics.

:func:`train_classifier` is what a ``kind: classifier`` spec runs. Its config takes the data in one
of two shapes:

* ``data:`` one labelled dataset or a list of them. Each takes its labels from ``label_field`` (with
  an optional ``label_map`` from raw values to label names; rows whose raw label the map leaves out
  are skipped and counted) or gives every text one ``label`` (say, extra clean text), or
* ``positives:`` + ``negatives:`` — two unlabelled datasets, labelled ``positive`` and ``negative``
  (the DCLM recipe: high-quality reference text against random web text).

Every text goes through :func:`~curation.classifiers.text_prep.prepare_text` (the same function the
ops use); empty results are skipped. The held-out split is a seeded hash of the *prepared* text, so
it is the same on every run and duplicate texts never straddle train and held-out. Training lines
are shuffled with the seed (fastText reads its file in order; sorted labels would wreck SGD).

Written to ``out_dir`` (a local path or a pyarrow filesystem URI): ``model.bin`` (or ``model.ftz``
when ``quantize``), ``labels.json``, ``config.json`` (this config, ``text_prep`` included: the ops
read it from there) and, last, ``metrics.json``: per-label precision/recall/F1/support, accuracy,
macro F1 and, for ``positive_label``, its precision/recall/F1 and ROC-AUC from predicted
probabilities. ``metrics.json`` existing means the folder is complete.

Determinism: with ``thread: 1`` (the default) the same config and data give the same model. fastText
trains in a child process (see ``_CHILD`` for the fastText bug that makes this necessary).

    python -m curation.classifiers.train CONFIG.yaml OUT_DIR
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from curation.classifiers.text_prep import TextPrep, prepare_text

LABEL_PREFIX = "__label__"
POSITIVE, NEGATIVE = "positive", "negative"
_LABEL_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


# ----------------------------------------------------------------------------------------- config


class TextSource(BaseModel):
    """A set of files holding one text per record (``text``: one per non-empty line)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["jsonl", "csv", "parquet", "text"]
    paths: list[str] = Field(..., min_length=1, description="files, folders or globs (local or URI); "
                             "relative paths are relative to the working directory")
    text_field: str = Field("text", min_length=1)
    max_examples: int | None = Field(None, ge=1, description="keep at most this many texts (a seeded, "
                                     "order-independent sample)")


class LabelledSource(TextSource):
    label_field: str = Field("label", min_length=1)
    label_map: dict[str, str] | None = Field(None, description="raw label value (as a string) → label "
                                             "name; raw values not listed are skipped")
    label: str | None = Field(None, description="one label for every text of this source "
                              "(label_field is then not read)")

    @field_validator("label_map")
    @classmethod
    def _labels_are_names(cls, value):
        for label in (value or {}).values():
            _check_label(label)
        return value

    @model_validator(mode="after")
    def _one_way_to_label(self):
        if self.label is not None:
            _check_label(self.label)
            if self.label_map is not None:
                raise ValueError("give `label` (one label for the whole source) or `label_map`, not both")
        elif self.format == "text":
            raise ValueError("a `text` source has no fields: give it a `label`")
        return self


def _check_label(label: str) -> str:
    if not label or not set(label) <= _LABEL_CHARS:
        raise ValueError(f"label names may use only letters, digits, '_', '-' and '.', got {label!r}")
    return label


class ClassifierTrainConfig(BaseModel):
    """The ``train:`` section of a ``kind: classifier`` spec."""

    model_config = ConfigDict(extra="forbid")

    data: LabelledSource | list[LabelledSource] | None = Field(None, description="one labelled dataset "
                                                               "or a list of them")
    positives: TextSource | None = None
    negatives: TextSource | None = None
    held_out_fraction: float = Field(0.1, ge=0, le=0.5, description="share of texts held out for metrics")
    seed: int = Field(0, ge=0, description="seeds the split, the sampling, the shuffle and fastText")
    text_prep: TextPrep = Field(default_factory=TextPrep)
    positive_label: str | None = Field(None, description="label whose binary metrics and ROC-AUC are "
                                       "reported; default 'positive' when that label exists")
    # fastText hyperparameters (fastText's own names in brackets).
    epoch: int = Field(5, ge=1, le=1000)
    lr: float = Field(0.1, gt=0, le=10)
    word_ngrams: int = Field(2, ge=1, le=5, description="[wordNgrams]")
    dim: int = Field(64, ge=1, le=1024)
    min_count: int = Field(1, ge=1, description="[minCount]")
    bucket: int = Field(200_000, ge=0, description="hash buckets for word n-grams; the model holds "
                        "bucket × dim floats (fastText's 2,000,000 makes 800 MB models at dim 100)")
    loss: Literal["softmax", "ova", "hs"] = "softmax"
    thread: int = Field(1, ge=1, description="training threads; 1 is deterministic")
    quantize: bool = Field(False, description="write a quantized model.ftz (retrained on the training data)")
    quantize_cutoff: int = Field(100_000, ge=0, description="keep this many input rows when quantizing "
                                 "(0: all)")

    @model_validator(mode="after")
    def _one_data_shape(self):
        if isinstance(self.data, list) and not self.data:
            raise ValueError("`data` lists no datasets")
        pair = (self.positives is not None, self.negatives is not None)
        if self.data is not None and any(pair):
            raise ValueError("give either `data` or `positives` + `negatives`, not both")
        if self.data is None and not all(pair):
            raise ValueError("give `data` (one labelled dataset) or both `positives` and `negatives`")
        if self.positive_label is not None:
            _check_label(self.positive_label)
        return self

    def sources(self) -> list[tuple[str, TextSource]]:
        """``(fixed label or "", source)`` for every dataset; "" means labels come from the data."""
        if self.data is not None:
            data = self.data if isinstance(self.data, list) else [self.data]
            return [(source.label or "", source) for source in data]
        return [(POSITIVE, self.positives), (NEGATIVE, self.negatives)]  # type: ignore[list-item]

    def data_paths(self) -> list[str]:
        """Every path or glob the config reads (what a runner lists to fingerprint the inputs)."""
        return [p for _, source in self.sources() for p in source.paths]

    def with_base_dir(self, base_dir: str) -> "ClassifierTrainConfig":
        """A copy whose relative data paths are made relative to ``base_dir`` (the spec's folder)."""
        out = self.model_copy(deep=True)
        for _, source in out.sources():
            source.paths = [p if "://" in p or os.path.isabs(p) else os.path.normpath(os.path.join(base_dir, p))
                            for p in source.paths]
        return out


# ---------------------------------------------------------------------------------------- reading


def _read_records(source: TextSource, fields: list[str]) -> Iterator[tuple[Any, ...]]:
    """``(value of each field)`` per record, over every file of ``source`` in listing order."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from curation.ingest.listing import expand, filesystem_for
    from curation.ingest.streams import iter_lines

    for pattern in source.paths:
        matches = expand(pattern)
        if not matches:
            raise FileNotFoundError(f"no files match {pattern}")
        for location, _ in matches:
            fs, path = filesystem_for(location)
            if source.format == "text":
                for _, line in iter_lines(fs, path):
                    text = line.decode("utf-8", errors="replace").strip()
                    if text:
                        yield (text,)
                continue
            if source.format == "jsonl":
                for number, line in iter_lines(fs, path):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except ValueError as exc:
                        raise ValueError(f"{location}:{number + 1}: not JSON ({exc})") from None
                    if isinstance(record, dict):
                        yield tuple(record.get(f) for f in fields)
                continue
            if source.format == "csv":
                with fs.open_input_stream(path) as stream:
                    table = pacsv.read_csv(stream, parse_options=pacsv.ParseOptions(newlines_in_values=True))
            else:
                table = pq.read_table(path, filesystem=fs, columns=fields)
            missing = [f for f in fields if f not in table.column_names]
            if missing:
                raise KeyError(f"{location}: no column {missing[0]!r} (columns: {', '.join(table.column_names)})")
            yield from zip(*(table.column(f).to_pylist() for f in fields))


def _hash_unit(seed: int, purpose: str, text: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, purpose, text)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=f"{seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest, "little") / 2.0**64


def _raw_label(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def load_examples(config: ClassifierTrainConfig) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """Every usable ``(label, prepared text)`` pair, and counts of what was skipped."""
    examples: list[tuple[str, str]] = []
    skipped: dict[str, Any] = {"empty_text": 0, "missing_label": 0, "unmapped_label": Counter()}
    for fixed, source in config.sources():
        fields = [source.text_field] + ([] if fixed else [source.label_field])  # type: ignore[attr-defined]
        label_map = None if fixed else source.label_map  # type: ignore[attr-defined]
        part: list[tuple[str, str]] = []
        for values in _read_records(source, fields):
            raw_text = values[0] if values[0] is None or isinstance(values[0], str) else str(values[0])
            text = prepare_text(raw_text, config.text_prep)
            if not text:
                skipped["empty_text"] += 1
                continue
            if fixed:
                label = fixed
            else:
                if values[1] is None:
                    skipped["missing_label"] += 1
                    continue
                raw = _raw_label(values[1])
                if label_map is None:
                    label = _check_label(raw)
                elif raw in label_map:
                    label = label_map[raw]
                else:
                    skipped["unmapped_label"][raw] += 1
                    continue
            part.append((label, text))
        if source.max_examples is not None and len(part) > source.max_examples:
            part.sort(key=lambda ex: _hash_unit(config.seed, "sample", ex[1]))
            part = part[: source.max_examples]
        examples += part
    skipped["unmapped_label"] = dict(sorted(skipped["unmapped_label"].items()))
    return examples, skipped


def is_held_out(prepared_text: str, fraction: float, seed: int) -> bool:
    """Whether a (prepared) text belongs to the held-out split: its seeded hash falls below ``fraction``."""
    return _hash_unit(seed, "split", prepared_text) < fraction


def split_examples(examples: list[tuple[str, str]], fraction: float, seed: int):
    """(train, held_out) by :func:`is_held_out`, order kept."""
    train, held_out = [], []
    for ex in examples:
        (held_out if is_held_out(ex[1], fraction, seed) else train).append(ex)
    return train, held_out


# ---------------------------------------------------------------------------------------- metrics


def roc_auc(scores: np.ndarray, is_positive: np.ndarray) -> float | None:
    """Area under the ROC curve by the Mann-Whitney rank statistic: the probability that a random
    positive outscores a random negative, ties counting one half (average ranks). None when one
    class is absent."""
    scores = np.asarray(scores, dtype=np.float64)
    is_positive = np.asarray(is_positive, dtype=bool)
    n_pos = int(is_positive.sum())
    n_neg = len(scores) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    # Average 1-based rank for each run of equal scores.
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(ordered)]
    avg = (starts + ends + 1) / 2.0
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[is_positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def classification_metrics(true: list[str], probs: np.ndarray, labels: list[str],
                           positive_label: str | None) -> dict[str, Any]:
    """Held-out metrics from the ``(n, len(labels))`` probability matrix; prediction = argmax."""
    n = len(true)
    out: dict[str, Any] = {"held_out_examples": n}
    if n == 0:
        return out
    index = {label: i for i, label in enumerate(labels)}
    y = np.array([index.get(t, -1) for t in true])
    pred = probs.argmax(axis=1)
    per_label, f1s = {}, []
    for label, i in index.items():
        tp = int(((pred == i) & (y == i)).sum())
        fp = int(((pred == i) & (y != i)).sum())
        fn = int(((pred != i) & (y == i)).sum())
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        f1s.append(f1)
        per_label[label] = {"precision": round(precision, 4), "recall": round(recall, 4),
                            "f1": round(f1, 4), "support": tp + fn}
    out["accuracy"] = round(float((pred == y).mean()), 4)
    out["macro_f1"] = round(float(np.mean(f1s)), 4)
    if positive_label is not None and positive_label in index:
        m = per_label[positive_label]
        auc = roc_auc(probs[:, index[positive_label]], y == index[positive_label])
        out.update(positive_label=positive_label, positive_precision=m["precision"],
                   positive_recall=m["recall"], positive_f1=m["f1"],
                   roc_auc=None if auc is None else round(auc, 4))
    out["per_label"] = per_label
    return out


def probability_matrix(model: Any, texts: list[str], labels: list[str]) -> np.ndarray:
    """P(label | text) for every text and label, from one batched ``predict(k=-1)``."""
    probs = np.zeros((len(texts), len(labels)), dtype=np.float64)
    if not texts:
        return probs
    index = {LABEL_PREFIX + label: i for i, label in enumerate(labels)}
    predicted_labels, predicted_probs = model.predict(texts, k=-1)
    for row, (names, values) in enumerate(zip(predicted_labels, predicted_probs)):
        for name, value in zip(names, values):
            probs[row, index[name]] = value
    return probs


# --------------------------------------------------------------------------------------- training


# fastText (0.9.2, and the numpy2 wheel built from it) initialises only part of its input matrix when
# thread < 10 and leaves the rest as malloc returned it. Fresh pages are zero; memory a previous
# training freed is not, so the second or third model trained in one process differs from the first
# and can hit "Encountered NaN". Training therefore runs in a child process that also pins glibc's
# mmap threshold, so every large allocation is a fresh zeroed mapping.
_CHILD = """
import ctypes, json, sys
try:
    ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
except (OSError, AttributeError):
    pass
import fasttext
train_file, out, params, quantize = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
model = fasttext.train_supervised(input=train_file, **params)
if quantize:
    model.quantize(input=train_file, **quantize)
model.save_model(out)
"""


def _train_in_child(train_file: str, out: str, params: dict[str, Any], quantize: dict[str, Any] | None) -> None:
    import subprocess

    proc = subprocess.run([sys.executable, "-c", _CHILD, train_file, out, json.dumps(params), json.dumps(quantize)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"fastText training failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")


def _write_json(folder: Path, name: str, value: Any) -> None:
    tmp = folder / f".tmp-{name}"
    tmp.write_text(json.dumps(value, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, folder / name)


def _train_into(config: ClassifierTrainConfig, folder: Path) -> dict[str, Any]:
    import fasttext

    started = time.time()
    examples, skipped = load_examples(config)
    train, held_out = split_examples(examples, config.held_out_fraction, config.seed)
    if not train:
        raise ValueError("no training examples left (every text was empty, unlabelled or held out)")
    train_counts = Counter(label for label, _ in train)
    if len(train_counts) < 2:
        raise ValueError(f"a classifier needs at least two labels in the training data, got {sorted(train_counts)}")
    positive = config.positive_label
    if positive is None and POSITIVE in train_counts:
        positive = POSITIVE
    if positive is not None and positive not in train_counts:
        raise ValueError(f"positive_label {positive!r} is not among the training labels {sorted(train_counts)}")

    random.Random(config.seed).shuffle(train)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False) as f:
        train_file = f.name
        for label, text in train:
            f.write(f"{LABEL_PREFIX}{label} {text}\n")
    model_name = "model.ftz" if config.quantize else "model.bin"
    params = dict(epoch=config.epoch, lr=config.lr, wordNgrams=config.word_ngrams, dim=config.dim,
                  minCount=config.min_count, bucket=config.bucket, loss=config.loss, thread=config.thread,
                  seed=config.seed, verbose=0)
    quantize = (dict(retrain=True, qnorm=True, cutoff=config.quantize_cutoff, thread=config.thread, verbose=0)
                if config.quantize else None)
    try:
        _train_in_child(train_file, str(folder / f".tmp-{model_name}"), params, quantize)
    finally:
        os.unlink(train_file)
    os.replace(folder / f".tmp-{model_name}", folder / model_name)
    fasttext.FastText.eprint = lambda *_: None  # load_model's notice about model classes
    model = fasttext.load_model(str(folder / model_name))

    labels = [name[len(LABEL_PREFIX):] for name in model.labels]
    predict_started = time.time()
    probs = probability_matrix(model, [text for _, text in held_out], labels)
    predict_seconds = time.time() - predict_started
    metrics = classification_metrics([label for label, _ in held_out], probs, labels, positive)
    metrics = {
        **{k: v for k, v in metrics.items() if k != "per_label"},
        "train_examples": len(train),
        "skipped": skipped,
        "model_file": model_name,
        "model_bytes": (folder / model_name).stat().st_size,
        "train_seconds": round(predict_started - started, 3),
        "held_out_predictions_per_s": round(len(held_out) / predict_seconds) if held_out and predict_seconds else None,
        "per_label": metrics.get("per_label", {}),
    }
    _write_json(folder, "labels.json", {
        "labels": labels, "positive_label": positive,
        "train_counts": dict(sorted(train_counts.items())),
        "held_out_counts": dict(sorted(Counter(label for label, _ in held_out).items()))})
    _write_json(folder, "config.json", {**config.model_dump(mode="json"), "model_file": model_name,
                                        "fasttext": _fasttext_version()})
    _write_json(folder, "metrics.json", metrics)  # last: its presence marks a complete folder
    return metrics


def _fasttext_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("fasttext-numpy2-wheel", "fasttext", "fasttext-wheel"):
        try:
            return f"{dist} {version(dist)}"
        except PackageNotFoundError:
            continue
    return "unknown"


def train_classifier(config: ClassifierTrainConfig, out_dir: str) -> dict[str, Any]:
    """Train, evaluate on the held-out split and write the model folder; returns the metrics."""
    if "://" not in out_dir:
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        return _train_into(config, folder)
    # fastText writes local files only: train into a scratch folder, then upload (metrics.json last).
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(out_dir)
    scratch = Path(tempfile.mkdtemp(prefix="gristmill-classifier-"))
    try:
        metrics = _train_into(config, scratch)
        fs.create_dir(root, recursive=True)
        for name in (metrics["model_file"], "labels.json", "config.json", "metrics.json"):
            pafs.copy_files(str(scratch / name), f"{root.rstrip('/')}/{name}",
                            source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
        return metrics
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    import yaml

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m curation.classifiers.train CONFIG.yaml OUT_DIR", file=sys.stderr)
        return 2
    config_path = Path(args[0])
    raw = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    if isinstance(raw, dict) and "train" in raw and "epoch" not in raw:
        raw = raw["train"]  # a whole `kind: classifier` spec is accepted too
    config = ClassifierTrainConfig.model_validate(raw).with_base_dir(str(config_path.resolve().parent))
    print(json.dumps(train_classifier(config, args[1]), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
