"""The report's training and evaluation sections, built from small run directories written here
(a DPO ``metrics/train.csv`` with a LoRA-style adapter checkpoint; an ``eval/results.json`` with two
checkpoints and generation samples). The real runs' reports are checked in the end-to-end tests
(``test_pretrain.py``, ``test_finetune.py``, ``test_eval_e2e.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import save_file

from pipelines.report import build_report

DPO_CSV = """step,tokens,loss,lr,grad_norm,tokens_per_s,mfu,val_loss,val_ppl,accuracy,margin,chosen_reward,rejected_reward,val_accuracy,val_margin,val_chosen_reward,val_rejected_reward
1,256,0.693,0.0001,1.5,1000,0.01,,,0.5,0.0,0.0,0.0,,,,
2,512,0.65,0.0002,1.25,1100,0.011,0.66,,0.625,0.1,0.05,-0.05,0.5,0.08,0.04,-0.04
3,768,0.6,0.00015,1.0,1200,0.012,,,0.75,0.2,0.1,-0.1,,,,
4,1024,0.55,0.0001,0.75,1300,0.013,0.58,,0.875,0.3,0.15,-0.15,0.75,0.25,0.12,-0.13
"""


def _run(root: Path, kind: str, spec: dict, stages: list[dict]) -> Path:
    root.mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps({"name": root.name, "kind": kind, "status": "done", "stages": stages}))
    (root / "spec.yaml").write_text(yaml.safe_dump({"kind": kind, "name": root.name, **spec}))
    return root


def test_training_section_of_a_dpo_lora_style_run(tmp_path):
    plan = {"method": "dpo", "max_steps": 4, "num_workers": 1, "seq_len": 64, "global_batch_rows": 4, "params": 10_000}
    run = _run(tmp_path / "dpo", "finetune", {"method": "dpo", "from": "base/ckpt"},
               [{"id": "02-train", "kind": "finetune", "status": "done", "plan": plan, "base": "base/ckpt", "seconds": 3.5}])
    (run / "metrics").mkdir()
    (run / "metrics" / "train.csv").write_text(DPO_CSV)
    for step, complete in ((2, False), (4, True)):
        ckpt = run / "checkpoints" / f"step-{step:06d}"
        ckpt.mkdir(parents=True)
        save_file({"a.lora_A": np.zeros((4, 16), np.float32), "a.lora_B": np.zeros((8, 4), np.float32)},
                  str(ckpt / "adapter.safetensors"))
        (ckpt / "model_config.json").write_text(json.dumps({"config": {"arch": "llama", "n_layer": 2, "d_model": 16}}))
        if complete:
            (ckpt / "trainer_state.json").write_text(json.dumps({"step": step, "weights_file": "adapter.safetensors"}))

    report = build_report(str(run))
    training = report.stats["sections"]["training"]
    assert training["rows"] == 4 and training["val_points"] == 2 and training["best_val_loss"] == pytest.approx(0.58)
    assert training["final"]["val_accuracy"] == 0.75 and training["final"]["mfu"] == pytest.approx(0.013)
    assert training["method_final"] == {"chosen_reward": 0.15, "rejected_reward": -0.15, "val_chosen_reward": 0.12,
                                        "val_rejected_reward": -0.13, "margin": 0.3, "val_margin": 0.25,
                                        "accuracy": 0.875, "val_accuracy": 0.75}
    summary = training["run"]
    assert summary["method"] == "dpo" and summary["params"] == 10_000 and summary["steps_done"] == 4
    assert summary["tokens_seen"] == 1024 and summary["model_config"]["arch"] == "llama"
    assert summary["lora_trainable_params"] == 4 * 16 + 8 * 4  # from the adapter's safetensors header
    assert [(c["name"], c["complete"]) for c in summary["checkpoints"]] == [("step-000002", False), ("step-000004", True)]
    html = Path(report.html_path).read_text()
    for title in ("DPO rewards", "DPO reward margin", "DPO preference accuracy", "Learning rate", "Gradient norm",
                  "Throughput", "Model FLOPs utilisation"):
        assert title in html
    assert "step-000002 (incomplete)" in html and report.stats["sections"]["summary"]["stages"][0]["rows_out"] is None
    assert list(report.stats["sections"]) == ["summary", "training"]  # no curation sections without their data
    on_disk = json.loads(Path(report.stats_path).read_text())["sections"]["training"]
    assert on_disk["run"]["lora_trainable_params"] == 96


def _task(kind: str, metrics: dict, **extra) -> dict:
    return {"kind": kind, "metrics": metrics, "seconds": 0.5, **extra}


def test_evaluation_section_compares_checkpoints_and_escapes_samples(tmp_path):
    run = _run(tmp_path / "ev", "eval", {"checkpoints": ["a", "b"]}, [])
    hostile = '<script>alert("x")</script> & more'
    (run / "eval" / "samples" / "step-000010").mkdir(parents=True)
    (run / "eval" / "samples" / "step-000010" / "generate.jsonl").write_text(
        "".join(json.dumps({"prompt": f"<b>p{i}", "completion": hostile, "tokens": 5}) + "\n" for i in range(5)))
    checkpoints = []
    for label, step, acc, ppl in (("step-000010", 10, 0.25, 40.0), ("step-000020", 20, 0.5, 30.0)):
        tasks = {"arc_easy": _task("multiple_choice", {"acc": acc, "acc_norm": acc + 0.25, "acc_stderr": 0.1}, items=4),
                 "perplexity_shards": _task("perplexity", {"perplexity": ppl, "bits_per_byte": ppl / 20}, rows=10)}
        if step == 10:
            tasks["generate"] = _task("generation", {"tokens_per_s": 12.5}, items=5,
                                      samples_file="eval/samples/step-000010/generate.jsonl")
        checkpoints.append({"label": label, "step": step, "path": f"/x/{label}", "model": {"arch": "gpt2", "params": 999},
                            "tasks": tasks, "seconds": 1.0})
    (run / "eval" / "results.json").write_text(json.dumps({"format": "gristmill-eval/1", "checkpoints": checkpoints}))

    report = build_report(str(run))
    ev = report.stats["sections"]["evaluation"]
    assert len(ev["results"]) == 5 and [c["step"] for c in ev["checkpoints"]] == [10, 20]
    arc = next(r for r in ev["results"] if r["checkpoint"] == "step-000020" and r["task"] == "arc_easy")
    assert arc["metrics"]["acc_norm"] == 0.75 and arc["items"] == 4 and arc["seconds"] == 0.5
    by = {(c["task"], c["metric"]): c for c in ev["comparison"]}
    assert by[("arc_easy", "acc")]["best"] == "step-000020" and by[("arc_easy", "acc")]["change"] == 0.25
    ppl = by[("perplexity_shards", "perplexity")]
    assert ppl["lower_is_better"] and ppl["best"] == "step-000020" and ppl["change"] == -10.0
    assert ("generate", "tokens_per_s") not in by  # one checkpoint only: nothing to compare
    assert ev["samples_shown"] == 3
    html = Path(report.html_path).read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more" in html
    assert "&lt;b&gt;p0" in html and "0.25 ± 0.1" in html and "Across checkpoints" in html
    assert "training" not in report.stats["sections"] and "funnel" not in report.stats["sections"]
