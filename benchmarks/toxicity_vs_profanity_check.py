"""Toxicity: our default fastText model (the `toxicity` op) against alt-profanity-check, side by side.

Both score the same tweets: the held-out 10% of the shipped Davidson et al. data that our model
never trained on (the split ``train_classifier`` makes: seeded hash of the prepared text; labels
hate + offensive → toxic, neither → clean; the Moby-Dick lines our model also trains on are left
out). Reported for each: precision, recall and F1 of ``toxic`` at 0.5, ROC-AUC from the
probabilities, and predictions/s (texts through the op's ``process``, text preparation included,
against ``profanity_check.predict_prob``; model loading excluded; both one process). Also the share
of clean formal text (State of the Union sentences, Shakespeare speeches; in neither model's
training data) each flags at 0.5, and documents/s on 1,000-word documents, since the op's real
input is web text, not tweets.

Caveat, stated in the output: alt-profanity-check's model was trained on a dataset that *includes
the Davidson tweets* (its ``clean_data_en.csv`` combines them with the Jigsaw Wikipedia comments), so
its held-out figures here are measured on its own training data and are optimistic.

alt-profanity-check (scikit-learn) stays out of the project environment: it runs in a throwaway
venv through a subprocess.

    python3 -m venv /tmp/apc-venv && /tmp/apc-venv/bin/pip install alt-profanity-check
    python -m benchmarks.toxicity_vs_profanity_check [--apc-python /tmp/apc-venv/bin/python] [--repeat 20]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from benchmarks.common import DATA, machine
from curation.classifiers.apply import Toxicity, ToxicityConfig
from curation.classifiers.default_toxicity import DAVIDSON, default_toxicity_config, ensure_default_toxicity_model
from curation.classifiers.text_prep import prepare_text
from curation.classifiers.train import is_held_out, roc_auc

_APC_SCRIPT = """
import json, sys, time
t0 = time.perf_counter()
from profanity_check import predict_prob
load_s = time.perf_counter() - t0
texts = json.load(open(sys.argv[1], encoding="utf-8"))
repeat = int(sys.argv[3])
probs = predict_prob(texts)  # warm-up and the scores
t0 = time.perf_counter()
for _ in range(repeat):
    predict_prob(texts)
seconds = time.perf_counter() - t0
clean = predict_prob(json.load(open(sys.argv[2], encoding="utf-8")))
docs = json.load(open(sys.argv[4], encoding="utf-8"))
t0 = time.perf_counter()
predict_prob(docs)
docs_seconds = time.perf_counter() - t0
from importlib.metadata import version
print(json.dumps({"probs": [float(p) for p in probs], "clean_probs": [float(p) for p in clean],
                  "seconds": seconds, "load_s": load_s, "docs_seconds": docs_seconds,
                  "version": "alt-profanity-check " + version("alt-profanity-check")
                             + ", scikit-learn " + version("scikit-learn")}))
"""


def held_out_tweets() -> tuple[list[str], np.ndarray]:
    """Raw held-out tweets and whether each is toxic, exactly as training splits them."""
    config = default_toxicity_config()
    table = pacsv.read_csv(DAVIDSON, parse_options=pacsv.ParseOptions(newlines_in_values=True))
    texts, labels = [], []
    for tweet, cls in zip(table.column("tweet").to_pylist(), table.column("class").to_pylist()):
        prepared = prepare_text(tweet, config.text_prep)
        if prepared and is_held_out(prepared, config.held_out_fraction, config.seed):
            texts.append(tweet)
            labels.append(cls in (0, 1))  # hate speech, offensive language → toxic
    return texts, np.array(labels)


def clean_formal_text(n: int = 1000) -> list[str]:
    sentences = []
    for path in sorted((DATA / "text" / "sotu").glob("*.txt"))[::8]:
        sentences += [s for s in re.split(r"(?<=[.!?])\s+", path.read_text(encoding="utf-8")) if len(s.split()) >= 5]
    blocks = (DATA / "text" / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8").split("\n\n")
    speeches = [" ".join(b.splitlines()[1:]) for b in blocks if len(b.splitlines()) > 1]
    return sentences[:: max(1, len(sentences) // n)][:n] + speeches[:: max(1, len(speeches) // n)][:n]


def long_documents(n: int = 300, words: int = 1000) -> list[str]:
    """Web-page-sized documents: consecutive 1,000-word runs of State of the Union text."""
    text = " ".join(p.read_text(encoding="utf-8") for p in sorted((DATA / "text" / "sotu").glob("*.txt"))[-60:]).split()
    return [" ".join(text[i * words:(i + 1) * words]) for i in range(min(n, len(text) // words))]


def binary_metrics(probs: np.ndarray, truth: np.ndarray) -> dict:
    pred = probs > 0.5
    tp, fp, fn = int((pred & truth).sum()), int((pred & ~truth).sum()), int((~pred & truth).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "accuracy": round(float((pred == truth).mean()), 4), "roc_auc": round(roc_auc(probs, truth), 4)}


def ours(texts: list[str], clean: list[str], docs: list[str], repeat: int) -> dict:
    model_dir = ensure_default_toxicity_model()
    started = time.perf_counter()
    op = Toxicity(ToxicityConfig(model=str(model_dir), max_score=1.0))
    op.setup()
    load_s = time.perf_counter() - started
    batch = pa.table({"text": pa.array(texts, pa.string())})
    probs = op.process(batch).table.column("toxicity.score").to_numpy().astype(np.float64)
    started = time.perf_counter()
    for _ in range(repeat):
        op.process(batch)
    seconds = time.perf_counter() - started
    clean_probs = op.process(pa.table({"text": clean})).table.column("toxicity.score").to_numpy()
    started = time.perf_counter()
    op.process(pa.table({"text": docs}))
    docs_seconds = time.perf_counter() - started
    return {"probs": probs, "clean_probs": clean_probs, "seconds": seconds, "load_s": load_s,
            "docs_seconds": docs_seconds,
            "model": str(model_dir)}


def profanity_check(apc_python: str, texts: list[str], clean: list[str], docs: list[str], repeat: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        files = {name: Path(tmp) / f"{name}.json" for name in ("texts", "clean", "docs")}
        for name, values in (("texts", texts), ("clean", clean), ("docs", docs)):
            files[name].write_text(json.dumps(values), encoding="utf-8")
        proc = subprocess.run([apc_python, "-c", _APC_SCRIPT, str(files["texts"]), str(files["clean"]), str(repeat),
                               str(files["docs"])],
                              capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip()[-2000:])
    out = json.loads(proc.stdout)
    return {**out, "probs": np.array(out["probs"]), "clean_probs": np.array(out["clean_probs"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--apc-python", default="/tmp/apc-venv/bin/python")
    parser.add_argument("--repeat", type=int, default=20, help="timed passes over the held-out tweets")
    args = parser.parse_args()

    texts, truth = held_out_tweets()
    clean = clean_formal_text()
    docs = long_documents()
    results: dict = {"held_out_tweets": len(texts), "toxic_share": round(float(truth.mean()), 4),
                     "clean_formal_texts": len(clean), "long_documents": f"{len(docs)} x 1,000 words",
                     "repeat": args.repeat, "machine": machine()}
    peers = {"gristmill fastText (toxicity op)": lambda: ours(texts, clean, docs, args.repeat)}
    if Path(args.apc_python).exists():
        peers["alt-profanity-check"] = lambda: profanity_check(args.apc_python, texts, clean, docs, args.repeat)
    else:
        results["alt-profanity-check"] = (f"not run: {args.apc_python} missing (python3 -m venv /tmp/apc-venv "
                                          "&& /tmp/apc-venv/bin/pip install alt-profanity-check)")
    for name, run in peers.items():
        r = run()
        results[name] = {
            **binary_metrics(r["probs"], truth),
            "predictions_per_s": round(len(texts) * args.repeat / r["seconds"]),
            "long_documents_per_s": round(len(docs) / r["docs_seconds"]),
            "model_load_s": round(r["load_s"], 3),
            "clean_formal_flagged": round(float((r["clean_probs"] > 0.5).mean()), 4),
            **{k: r[k] for k in ("model", "version") if k in r},
        }
    if "alt-profanity-check" in peers:
        a, b = results["gristmill fastText (toxicity op)"], results["alt-profanity-check"]
        results["speed_ratio_ours_over_apc"] = {
            "tweets": round(a["predictions_per_s"] / b["predictions_per_s"], 2),
            "long_documents": round(a["long_documents_per_s"] / b["long_documents_per_s"], 2)}
        results["caveat"] = ("alt-profanity-check was trained on data that includes the Davidson tweets "
                             "(profanity-check's clean_data_en.csv), so its held-out figures are optimistic")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
