"""``kind: pipeline``: spec errors inside stages with file:line and field path, ``${stages.X}``
references, stage hashes that carry upstream changes downstream, and one tiny real chain through the
`gristmill` command (curate + tokenize → pretrain 3 steps → eval perplexity): rerun skips every stage,
a changed eval stage re-runs only eval, status shows the stage table, one report holds every stage."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from pipelines.errors import SpecError
from pipelines.specs import load_spec
from tests.conftest import DATA

CHAPTERS = sorted((DATA / "text" / "moby-dick").glob("chapter_*.txt"), key=lambda p: int(p.stem.split("_")[1]))[:6]

PIPELINE = """kind: pipeline
name: chain
stages:
  corpus:
    kind: curate
    input:
      - format: text
        paths: ["texts/*.txt"]
    steps:
      - normalize: {}
      - tokenize:
          tokenizer: {train: {vocab_size: 300, sample_docs: 6}}
          seq_len: 16
          val_fraction: 0.2
          seed: 0
  pretrain:
    kind: pretrain
    data: ${stages.corpus}
    model: {preset: tiny, n_layer: 1, d_model: 32, n_head: 2}
    batch: {micro_batch: 2}
    max_steps: 3
    eval_every: 0
    checkpoint_every: 3
    keep: 1
    log_every: 1
    scaling: {cpus_per_worker: 0.5}
  eval:
    kind: eval
    checkpoints: ["${stages.pretrain}"]
    tasks:
      - perplexity: {shards: "${stages.corpus}"}
    batch_size: 8
    cpus_per_checkpoint: 0.5
"""


def _write(folder: Path, text: str = PIPELINE) -> Path:
    texts = folder / "texts"
    texts.mkdir(parents=True, exist_ok=True)
    for chapter in CHAPTERS:
        shutil.copy(chapter, texts / chapter.name)
    spec = folder / "chain.yaml"
    spec.write_text(text)
    return spec


def _line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def _issues(spec: Path, *sets: str) -> list[str]:
    with pytest.raises(SpecError) as exc:
        load_spec(str(spec), list(sets))
    return [str(i) for i in exc.value.issues]


# --------------------------------------------------------------------------------------------------
# the spec, without Ray


def test_valid_pipeline_resolves_paths_and_keeps_references(tmp_path):
    spec = _write(tmp_path)
    loaded = load_spec(str(spec))
    assert loaded.kind == "pipeline" and [s.name for s in loaded.pipeline.stages] == ["corpus", "pretrain", "eval"]
    assert loaded.pipeline.stage("eval").refs == ["pretrain", "corpus"]
    resolved = loaded.resolved()["stages"]
    # relative paths are relative to the pipeline file; references stay as written
    assert resolved["corpus"]["input"][0]["paths"] == [str(tmp_path / "texts" / "*.txt")]
    assert resolved["pretrain"]["data"] == "${stages.corpus}"
    assert resolved["eval"]["checkpoints"] == ["${stages.pretrain}"]
    assert resolved["eval"]["tasks"][0]["perplexity"]["shards"] == "${stages.corpus}"
    # each stage is a spec of its kind whose references point into the run directory
    stage = loaded.pipeline.load_stage("pretrain", "/runs/x")
    assert stage.kind == "pretrain" and stage.model.data == "/runs/x/stages/corpus"


def test_sub_paths_after_a_reference(tmp_path):
    text = PIPELINE.replace('checkpoints: ["${stages.pretrain}"]', 'checkpoints: ["${stages.pretrain}/checkpoints/step-000003"]')
    loaded = load_spec(str(_write(tmp_path, text)))
    assert loaded.pipeline.load_stage("eval", "/r").model.checkpoints == ["/r/stages/pretrain/checkpoints/step-000003"]
    assert loaded.resolved()["stages"]["eval"]["checkpoints"] == ["${stages.pretrain}/checkpoints/step-000003"]


def test_unknown_and_forward_references_are_positioned_errors(tmp_path):
    text = PIPELINE.replace("data: ${stages.corpus}", "data: ${stages.corpsu}").replace(
        'shards: "${stages.corpus}"', 'shards: "${stages.corpus}"}\n      - perplexity: {files: ["${stages.eval}/x.txt"]')
    text = text.replace("kind: curate\n", "kind: curate\n    description: built from ${stages.pretrain}\n", 1)
    spec = _write(tmp_path, text)
    issues = _issues(spec)
    assert len(issues) == 3, issues
    by_field = {re.search(r" (stages\.\S+): ", i).group(1): i for i in issues}
    unknown = by_field["stages.pretrain.data"]
    assert unknown.startswith(f"{spec}:{_line(text, '${stages.corpsu}')}:")
    assert "'corpsu' is not a stage of this pipeline (did you mean 'corpus'?)" in unknown
    forward = by_field["stages.corpus.description"]
    assert f":{_line(text, 'built from')}:" in forward and "comes after stage 'corpus'" in forward
    itself = by_field["stages.eval.tasks[1].perplexity.files[0]"]
    assert "is this stage itself" in itself


def test_bad_fields_inside_a_stage_have_file_line_and_path(tmp_path):
    text = PIPELINE.replace("max_steps: 3", "max_steps: -1").replace("keep: 1", "kepe: 1").replace(
        "vocab_size: 300", "vocab_size: 3")
    spec = _write(tmp_path, text)
    issues = _issues(spec)
    assert any(i.startswith(f"{spec}:{_line(text, 'max_steps: -1')}:") and "stages.pretrain.max_steps:" in i
               and "greater than or equal to 1" in i for i in issues), issues
    assert any(f":{_line(text, 'kepe: 1')}:" in i and "stages.pretrain.kepe: unknown key 'kepe' (did you mean 'keep'?)" in i
               for i in issues), issues
    assert any(f":{_line(text, 'vocab_size: 3')}:" in i and "stages.corpus.steps[1].tokenize.tokenizer" in i
               for i in issues), issues


def test_stage_shape_errors(tmp_path):
    text = PIPELINE.replace("  eval:\n    kind: eval\n", "  Eval:\n    kind: evaluate\n    name: x\n    ray: {num_cpus: 1}\n")
    issues = _issues(_write(tmp_path, text))
    joined = "\n".join(issues)
    assert "stages.Eval: stage name 'Eval' must match [a-z0-9_-]+" in joined
    assert "stages.Eval.kind: unknown kind 'evaluate' (did you mean 'eval'?)" in joined
    assert "stages.Eval.name: a stage is named by its key" in joined
    assert "stages.Eval.ray: one Ray session runs every stage" in joined


def test_set_reaches_inside_a_stage(tmp_path):
    spec = _write(tmp_path)
    loaded = load_spec(str(spec), ["stages.pretrain.max_steps=5"])
    assert loaded.pipeline.load_stage("pretrain", "/r").model.max_steps == 5
    issues = _issues(spec, "stages.pretrain.max_steps=0")
    assert issues == ["--set stages.pretrain.max_steps: Input should be greater than or equal to 1, got 0"], issues


def test_stage_hash_carries_upstream_changes_downstream(tmp_path):
    from pipelines.pipeline_run import stage_hash

    def hashes(*sets: str) -> dict[str, str]:
        loaded = load_spec(str(spec), list(sets))
        out: dict[str, str] = {}
        for stage in loaded.pipeline.stages:
            resolved = loaded.pipeline.load_stage(stage.name, "/somewhere").resolved()
            out[stage.name] = stage_hash(stage.kind, resolved, "/somewhere", {n: out[n] for n in stage.refs})
        return out

    spec = _write(tmp_path)
    base = hashes()
    assert hashes() == base
    # the run directory does not enter the hash
    loaded = load_spec(str(spec))
    moved = loaded.pipeline.load_stage("pretrain", "/elsewhere").resolved()
    assert stage_hash("pretrain", moved, "/elsewhere", {"corpus": base["corpus"]}) == base["pretrain"]
    # fields the kind ignores on resume do not invalidate it
    assert hashes("stages.pretrain.log_every=2", "stages.pretrain.description=x") == base
    eval_changed = hashes("stages.eval.batch_size=4")
    assert [n for n in base if eval_changed[n] != base[n]] == ["eval"]
    pretrain_changed = hashes("stages.pretrain.max_steps=4")
    assert [n for n in base if pretrain_changed[n] != base[n]] == ["pretrain", "eval"]
    curate_changed = hashes("stages.corpus.steps[1].tokenize.seq_len=12")
    assert [n for n in base if curate_changed[n] != base[n]] == ["corpus", "pretrain", "eval"]
