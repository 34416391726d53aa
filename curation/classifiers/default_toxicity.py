"""The project's default toxicity model: fastText trained on the shipped Davidson et al. tweets.

``data/toxicity/davidson-labeled_data.csv`` (24,783 tweets, MIT; see ``data/SOURCES.md``) labels each
tweet by its ``class``: 0 hate speech, 1 offensive language, 2 neither. Hate and offensive both map to
``toxic``, neither to ``clean``; 10% (by text hash, seed 0) are held out and the F1 of ``toxic`` on
them is in ``metrics.json``.

Plus 4,000 lines of *Moby-Dick* (``data/text/moby-dick/data.txt``, public domain) as ``clean``. The
tweets are 83% toxic and all Twitter slang, so a model of them alone scores text in other registers
near its toxic prior: it flagged 30% of Shakespeare speeches and 9% of State of the Union sentences
at 0.5. With the book lines: 2.5% and 1.0%, while F1(toxic) on the held-out tweets stays 0.967
(0.969 without) and their ROC-AUC 0.974 (0.975). ``benchmarks/toxicity_vs_profanity_check`` measures
both on text that is in neither training set.

The model is not committed: it is built on first use (about a second of training on one core) into
a cache folder named by the hash of its config, so a change here builds a new one. Building is
idempotent (a folder with its model and ``metrics.json`` is reused) and safe when several workers
ask at once (a file lock, then an atomic rename).

    python -m curation.classifiers.default_toxicity OUT_DIR

Hyperparameters were picked on the held-out split (dim 16 scores as well as 32 or 64 and makes an
8 MB model; word bigrams add 0.08 ROC-AUC over unigrams; epoch 10 > 5 slightly).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from curation.classifiers.train import ClassifierTrainConfig, train_classifier

DATA = Path(__file__).resolve().parent.parent.parent / "data"
DAVIDSON = DATA / "toxicity" / "davidson-labeled_data.csv"
MOBY_DICK = DATA / "text" / "moby-dick" / "data.txt"
TOXIC, CLEAN = "toxic", "clean"


def default_toxicity_config() -> ClassifierTrainConfig:
    return ClassifierTrainConfig(
        data=[{"format": "csv", "paths": [str(DAVIDSON)], "text_field": "tweet", "label_field": "class",
               "label_map": {"0": TOXIC, "1": TOXIC, "2": CLEAN}},
              {"format": "text", "paths": [str(MOBY_DICK)], "label": CLEAN, "max_examples": 4000}],
        positive_label=TOXIC, held_out_fraction=0.1, seed=0,
        epoch=10, lr=0.1, word_ngrams=2, dim=16, bucket=100_000, loss="softmax", thread=1)


def _is_complete(folder: Path) -> bool:
    return (folder / "metrics.json").is_file() and any((folder / m).is_file() for m in ("model.bin", "model.ftz"))


def train_default_toxicity(out_dir: str | os.PathLike) -> Path:
    """Train the default model into ``out_dir`` unless a complete model is already there."""
    folder = Path(out_dir)
    if _is_complete(folder):
        return folder
    missing = [str(p) for p in (DAVIDSON, MOBY_DICK) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"the default toxicity model is trained from {', '.join(missing)}, not on this machine; "
            "train it where the repository is (python -m curation.classifiers.default_toxicity DIR) "
            "and give the toxicity op `model: DIR`")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be building it right now
        if _is_complete(folder):
            return folder
        scratch = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=folder.parent))
        try:
            train_classifier(default_toxicity_config(), str(scratch))
            if folder.exists():  # an incomplete leftover
                shutil.rmtree(folder)
            os.replace(scratch, folder)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return folder


def default_model_dir() -> Path:
    """Where the op keeps the default model: ``$GRISTMILL_MODEL_CACHE`` or ``~/.cache/gristmill/models``,
    in a folder named by the config's hash."""
    import hashlib

    root = Path(os.environ.get("GRISTMILL_MODEL_CACHE") or Path.home() / ".cache" / "gristmill" / "models")
    config = default_toxicity_config().model_dump(mode="json")
    for source in config["data"]:  # the checkout's location must not change the name
        source["paths"] = [Path(p).name for p in source["paths"]]
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    return root / f"toxicity-davidson-{digest}"


def ensure_default_toxicity_model() -> Path:
    return train_default_toxicity(default_model_dir())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m curation.classifiers.default_toxicity OUT_DIR", file=sys.stderr)
        return 2
    folder = train_default_toxicity(args[0])
    print(json.dumps({"model_dir": str(folder.resolve()),
                      **json.loads((folder / "metrics.json").read_text())}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
