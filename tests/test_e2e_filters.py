"""End-to-end filtering: train the toxicity classifier with its shipped spec, then use the model in
a curate spec next to langid, PII and decontamination — through the `gristmill` command."""

from __future__ import annotations

import csv
import json

import pytest

from tests.conftest import DATA
from tests.helpers import manifest, read_dir, rejected_tables
from tests.test_e2e_curate import assert_balanced

pytestmark = pytest.mark.e2e


def test_classifier_spec_then_toxicity_filter(gristmill, tmp_path):
    model_run = tmp_path / "tox"
    gristmill("run", "specs/toxicity-classifier.yaml", "--out", str(model_run))
    metrics = json.loads((model_run / "model" / "metrics.json").read_text())
    assert metrics["positive_f1"] >= 0.95 and metrics["roc_auc"] >= 0.96
    assert manifest(model_run)["stages"][0]["metrics"]["positive_f1"] == metrics["positive_f1"]
    again = gristmill("run", "specs/toxicity-classifier.yaml", "--out", str(model_run))
    assert "skipped" in again.stderr

    # a corpus: offensive tweets, State of the Union paragraphs, an e-mail, an ARC question
    with open(DATA / "toxicity" / "davidson-labeled_data.csv", newline="") as f:
        offensive = [r["tweet"] for r in csv.DictReader(f) if r["class"] == "1"][:40]
    words = (DATA / "text" / "sotu" / "1861_abraham_lincoln_r.txt").read_text().split()
    speeches = [" ".join(words[i:i + 80]) for i in range(0, 80 * 40, 80)]
    arc = json.loads((DATA / "eval" / "arc_easy.jsonl").read_text().splitlines()[0])
    docs = offensive + speeches + [
        "Write to the clerk at records.office@example.org or call +1 415 555 0132 for a copy of the address.",
        "Quiz night recap. " + arc["query"].replace("Question:", "").replace("Answer:", "") + " "
        + arc["choices"][arc["gold"]] + " was the answer everyone got right.",
    ]
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": t}) for t in docs) + "\n")
    spec = tmp_path / "filter.yaml"
    spec.write_text(f"""kind: curate
name: filters
input:
  - {{format: jsonl, paths: [docs.jsonl]}}
steps:
  - normalize: {{}}
  - langid: {{keep: [en], min_score: 0.3}}
  - toxicity: {{model: {model_run / 'model'}, max_score: 0.5}}
  - pii: {{}}
  - decontaminate: {{}}
""")
    run = tmp_path / "run"
    gristmill("run", str(spec), "--out", str(run))
    m = assert_balanced(run)
    rejected = rejected_tables(run)
    toxic = rejected["toxicity"]
    assert toxic.num_rows >= 30 and set(toxic.column("reason").to_pylist()) == {"toxic"}
    assert min(toxic.column("toxicity.score").to_pylist()) > 0.5
    kept = read_dir(run / "data")
    texts = kept.column("text").to_pylist()
    assert sum(1 for t in texts if any(s[:60] in t for s in speeches)) >= 35, "speeches are kept"
    redacted = [t for t in texts if "<EMAIL>" in t]
    assert redacted and "<PHONE>" in redacted[0] and "records.office" not in redacted[0]
    contaminated = rejected["decontaminate"].to_pylist()
    assert [r["decontaminate.task"] for r in contaminated] == ["arc_easy"]
    assert m["totals"]["rejected"]["toxicity"] == toxic.num_rows
