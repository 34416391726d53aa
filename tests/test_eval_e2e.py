"""``kind: eval`` end to end through the real ``gristmill`` command, and its spec errors."""

from __future__ import annotations

import json
import shutil

import pytest

from eval_support import cached_checkpoint, single_thread, write_shards
from pipelines.errors import SpecError
from pipelines.specs import load_spec

pytestmark = pytest.mark.e2e

HELLASWAG = [
    {"ctx": "A man is sitting on a roof. he", "activity_label": "Roof shingle removal",
     "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                 "is holding a rubik's cube.", "starts pulling up roofing on a roof."], "label": 3},
    {"ctx": "A woman kneels by a tub. She", "endings": ["washes the dog.", "flies away.", "eats the tub."], "label": "0"},
]


def _spec(tmp_path, checkpoints, extra_tasks: str = "", extra: str = "") -> str:
    (tmp_path / "hs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in HELLASWAG))
    (tmp_path / "prompts.txt").write_text("First Citizen:\nROMEO:\n\nTo be\n")
    (tmp_path / "doc.txt").write_text("Before we proceed any further, hear me speak. " * 20)
    spec = tmp_path / "eval.yaml"
    spec.write_text(f"""kind: eval
name: eval-e2e
checkpoints: {json.dumps([str(c) for c in checkpoints])}
tasks:
  - {{name: arc_easy, num_fewshot: 1, limit: 4}}
  - {{name: lambada_openai, limit: 4}}
  - {{name: roofs, file: hs.jsonl, format: hellaswag}}
  - perplexity: {{shards: run}}
  - perplexity: {{files: [doc.txt]}}
  - generate: {{prompts_file: prompts.txt, max_tokens: 8}}
{extra_tasks}batch_size: 8
cpus_per_checkpoint: 0.5
{extra}""")
    return str(spec)


def test_eval_spec_end_to_end(tmp_path, gristmill):
    with single_thread():
        llama, gpt2 = cached_checkpoint("llama"), cached_checkpoint("gpt2")
        from eval.checkpoints import load_eval_model

        write_shards(tmp_path / "run", load_eval_model(llama))
    run_dir = llama.parent.parent  # a run directory: its newest checkpoint is meant
    bare = tmp_path / "bare"  # weights without a tokenizer: loading fails inside its Ray task
    bare.mkdir()
    for name in ("model.safetensors", "model_config.json"):
        shutil.copy(llama / name, bare / name)
    spec = _spec(tmp_path, [run_dir, gpt2, bare])
    out = tmp_path / "out"
    # `gristmill validate` in-process (same Typer app; tests/test_e2e_curate.py runs the command itself)
    from typer.testing import CliRunner

    from pipelines.cli import app

    validated = CliRunner().invoke(app, ["validate", spec])
    assert validated.exit_code == 0, validated.output
    proc = gristmill("run", spec, "--out", str(out), check=False)
    # The failing checkpoint fails the run (exit 1, saying why) and leaves the others' results.
    assert proc.returncode == 1, proc.stderr
    assert "bare: FileNotFoundError: no tokenizer for checkpoint" in " ".join(proc.stderr.split())
    results = json.loads((out / "eval" / "results.json").read_text())
    assert results["format"] == "gristmill-eval/1" and len(results["checkpoints"]) == 2
    first, second = results["checkpoints"]
    assert first["path"] == str(llama) and first["step"] == 30 and first["label"].endswith("/step-000030")
    assert second["model"]["arch"] == "gpt2"
    for checkpoint in results["checkpoints"]:
        tasks = checkpoint["tasks"]
        assert list(tasks) == ["arc_easy", "lambada_openai", "roofs", "perplexity_shards", "perplexity_files", "generate"]
        assert tasks["arc_easy"]["items"] == 4 and tasks["arc_easy"]["num_fewshot"] == 1
        assert set(tasks["arc_easy"]["metrics"]) >= {"acc", "acc_norm", "acc_stderr"}
        assert tasks["roofs"]["items"] == 2 and tasks["roofs"]["requests"] == 7
        assert tasks["lambada_openai"]["items"] == 4 and tasks["lambada_openai"]["metrics"]["perplexity"] > 1
        assert tasks["perplexity_shards"]["rows"] == 10 and tasks["perplexity_shards"]["metrics"]["bits_per_byte"] > 0
        assert tasks["perplexity_files"]["documents"] == 1
        assert all(t["seconds"] >= 0 for t in tasks.values())
        samples = (out / tasks["generate"]["samples_file"]).read_text().splitlines()
        assert [json.loads(s)["prompt"] for s in samples] == ["First Citizen:", "ROMEO:", "To be"]
        assert all(0 < json.loads(s)["tokens"] <= 8 for s in samples)
    # The same numbers as our runner in this process.
    from eval.checkpoints import load_eval_model
    from eval.config import BenchmarkTaskConfig
    from eval.runner import run_benchmark

    with single_thread():
        direct = run_benchmark(load_eval_model(llama), BenchmarkTaskConfig(name="arc_easy", num_fewshot=1, limit=4), 8)
    assert direct["metrics"] == first["tasks"]["arc_easy"]["metrics"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "eval" and manifest["status"] == "failed"
    assert [s["status"] for s in manifest["stages"]] == ["done", "done", "failed"]
    # A rerun skips the two evaluated checkpoints, retries the failed one, rewrites the same results.
    shutil.copy(run_dir / "tokenizer" / "tokenizer.json", bare / "tokenizer.json")
    again = gristmill("run", spec, "--out", str(out))
    assert again.stderr.count("skipped, evaluated already") == 2
    rerun = json.loads((out / "eval" / "results.json").read_text())["checkpoints"]
    assert rerun[:2] == results["checkpoints"] and rerun[2]["label"] == "bare"
    assert rerun[2]["tasks"]["arc_easy"]["metrics"] == first["tasks"]["arc_easy"]["metrics"]  # same weights
    assert "eval-e2e" in again.stdout
    evaluation = json.loads((out / "report" / "stats.json").read_text())["sections"]["evaluation"]
    assert (out / "report" / "index.html").is_file() and len(evaluation["checkpoints"]) == 3
    assert len(evaluation["comparison"]) > 0 and evaluation["samples_shown"] == 9


def test_eval_spec_errors_name_file_line_and_field(tmp_path):
    llama = cached_checkpoint("llama")
    (tmp_path / "not-a-checkpoint").mkdir()
    spec = _spec(tmp_path, [llama, tmp_path / "not-a-checkpoint", tmp_path / "not-trained-yet"],
                 "  - {name: arc_easy, limit: 0}\n  - {name: nope}\n  - perplexity: {files: [a.txt], shards: run}\n"
                 "  - {generate: {prompts_file: absent.txt}}\n  - {num_fewshot: 3}\n",
                 extra="device: cuda\nquantize: int8\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    text = "\n".join(str(i) for i in info.value.issues)
    assert "eval.yaml:3:" in text and "checkpoints[1]" in text and "neither a model checkpoint" in text
    assert "tasks[6].limit" in text and "greater than or equal to 1" in text
    assert "tasks[7].name" in text and "unknown task 'nope'" in text
    assert "tasks[8].perplexity" in text and "exactly one of `shards` and `files`" in text
    assert "tasks[9].generate.prompts_file" in text and "not found" in text
    assert "tasks[10]" in text and "needs `name:`" in text
    assert "quantize: int8 dynamic quantisation runs on CPU" in text
    # Outputs of runs that have not happened yet validate (checkpoints[2], the shards of tasks[3]) ...
    assert "checkpoints[2]" not in text and "tasks[3]" not in text
    assert len(info.value.issues) == 7
    # ... and running without them says what is missing.
    from pipelines.eval_run import checkpoint_labels

    with pytest.raises(FileNotFoundError, match="not-trained-yet is neither a model checkpoint"):
        checkpoint_labels([str(tmp_path / "not-trained-yet")])

