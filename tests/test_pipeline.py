"""``kind: pipeline``: spec errors inside stages with file:line and field path, ``${stages.X}``
references, stage hashes that carry upstream changes downstream, and one tiny real chain through the
`gristmill` command (curate + tokenize → pretrain 3 steps → eval perplexity, and a curate → curate
branch): rerun skips every stage; a changed eval stage re-runs only eval while a changed curate stage
re-runs itself (only its changed steps) and the stage downstream of it; status shows the stage
table; one report holds every stage. A changed curate stage upstream of pretraining is checked by the
stage hashes (a second training run would double the test's time)."""

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
  words:
    kind: curate
    input:
      - format: text
        paths: ["texts/*.txt"]
    steps:
      - normalize: {}
      - train_tokenizer: {vocab_size: 300, sample_docs: 6}
  long:
    kind: curate
    input:
      - format: parquet
        paths: ["${stages.words}/data/*.parquet"]
    steps:
      - length_filter: {min_words: 2000}
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
    assert loaded.kind == "pipeline"
    assert [s.name for s in loaded.pipeline.stages] == ["corpus", "words", "long", "pretrain", "eval"]
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
    assert [n for n in base if hashes("stages.words.steps[1].train_tokenizer.vocab_size=290")[n] != base[n]] == ["words", "long"]


def test_what_a_changed_stage_does():
    from pipelines.pipeline_run import decide

    done = {"kind": "curate", "hash": "a", "status": "done", "upstream": {"x": "1"}}
    assert decide("curate", None, "a", {}) == "fresh"
    assert decide("curate", {**done, "status": "running"}, "a", {"x": "1"}) == "resume"
    assert decide("curate", done, "b", {"x": "1"}) == "refine"  # its own steps changed: curate's finer hashes
    assert decide("curate", done, "b", {"x": "2"}) == "fresh"  # upstream changed: may enter through an op's path
    assert decide("pretrain", {**done, "kind": "pretrain"}, "b", {"x": "1"}) == "fresh"
    assert decide("eval", done, "b", {"x": "1"}) == "fresh"  # another kind was there


# --------------------------------------------------------------------------------------------------
# one tiny real chain through the `gristmill` command, run once and rerun three ways


def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def _stage(run: Path, name: str) -> dict:
    return next(r for r in _manifest(run)["stages"] if r["id"] == name)


def _said(proc, stage: str, what: str) -> bool:
    return re.search(rf"stage \d/\d {stage} \(\w+\): {what}", " ".join(proc.stderr.split())) is not None


@pytest.fixture(scope="module")
def chain(tmp_path_factory, ray_address):
    """First run; unchanged (all skipped); eval and the `words` curate stage changed."""
    from tests.conftest import run_gristmill

    def gristmill(*args: str):
        return run_gristmill(*args, address=ray_address, env={"OMP_NUM_THREADS": "1"}, timeout=900)

    folder = tmp_path_factory.mktemp("pipeline")
    spec, run = str(_write(folder)), folder / "run"
    out: dict = {"spec": spec, "run": run}
    out["first"] = gristmill("run", spec, "--out", str(run))
    out["first_manifest"] = _manifest(run)
    out["unchanged"] = gristmill("run", spec, "--out", str(run))
    out["unchanged_manifest"] = _manifest(run)
    out["changed"] = gristmill("run", spec, "--out", str(run), "--set", "stages.eval.batch_size=4",
                               "--set", "stages.words.steps[1].train_tokenizer.vocab_size=290")
    out["changed_manifest"] = _manifest(run)
    return out


STAGES = {"corpus": "curate", "words": "curate", "long": "curate", "pretrain": "pretrain", "eval": "eval"}


def test_chain_runs_every_stage_in_its_own_directory(chain):
    run, first, m = chain["run"], chain["first_manifest"], chain["changed_manifest"]
    assert m["kind"] == "pipeline" and m["status"] == "done"
    assert [r["id"] for r in m["stages"]] == list(STAGES)
    assert all(r["status"] == "done" and r["seconds"] > 0 and r["started"] <= r["finished"] for r in first["stages"])
    for name, kind in STAGES.items():
        stage_manifest = json.loads((run / "stages" / name / "manifest.json").read_text())
        assert stage_manifest["kind"] == kind and stage_manifest["status"] == "done"
        assert stage_manifest["name"] == f"chain.{name}"
    # the stages used each other's outputs: shards → checkpoint → perplexity on the val shards
    shards = json.loads((run / "stages" / "corpus" / "shards" / "manifest.json").read_text())
    assert shards["seq_len"] == 16 and shards["tokenizer"]["vocab_size"] == 300
    assert (run / "stages" / "pretrain" / "checkpoints" / "step-000003" / "model.safetensors").is_file()
    results = json.loads((run / "stages" / "eval" / "eval" / "results.json").read_text())
    (checkpoint,) = results["checkpoints"]
    assert checkpoint["path"] == str(run / "stages" / "pretrain" / "checkpoints" / "step-000003")
    assert checkpoint["tasks"]["perplexity_shards"]["rows"] == shards["splits"]["val"]["rows"]
    # headline numbers, from each stage's own manifest
    heads = {r["id"]: r["headline"] for r in m["stages"]}
    assert heads["corpus"]["read"] == heads["corpus"]["kept"] == len(CHAPTERS)
    assert heads["corpus"]["train_tokens"] == shards["splits"]["train"]["tokens"]
    assert heads["words"]["read"] == len(CHAPTERS) and heads["long"]["read"] == heads["words"]["kept"]
    assert heads["long"]["kept"] + heads["long"]["rejected"] == heads["long"]["read"]
    assert heads["pretrain"]["step"] == 3 and heads["pretrain"]["loss"] > 0
    ppl = checkpoint["tasks"]["perplexity_shards"]["metrics"]["perplexity"]
    assert heads["eval"] == {"pretrain/step-000003: perplexity_shards.perplexity": ppl}
    # the pipeline's spec.yaml keeps the references
    assert "data: ${stages.corpus}" in (run / "spec.yaml").read_text()


def test_rerun_skips_every_finished_stage(chain):
    proc, before, after = chain["unchanged"], chain["first_manifest"], chain["unchanged_manifest"]
    for name in STAGES:
        assert _said(proc, name, "skipped, finished with the same spec and upstream stages"), proc.stderr
    assert after["stages"] == before["stages"]


def test_changed_stages_rerun_with_what_is_downstream_of_them(chain):
    proc, before, after = chain["changed"], chain["unchanged_manifest"], chain["changed_manifest"]
    assert _said(proc, "corpus", "skipped") and _said(proc, "pretrain", "skipped"), proc.stderr
    assert _said(proc, "eval", "changed") and _said(proc, "long", "changed"), proc.stderr
    # a curate stage keeps its own finer invalidation: its stream stage (normalize) is not redone
    assert _said(proc, "words", "changed; its runner re-runs the steps that changed"), proc.stderr
    assert "skip 01-stream" in proc.stderr and "done 02-train_tokenizer" in " ".join(proc.stderr.split())
    old, new = ({r["id"]: r for r in m["stages"]} for m in (before, after))
    assert new["corpus"] == old["corpus"] and new["pretrain"] == old["pretrain"]
    for name in ("words", "long", "eval"):
        assert new[name]["hash"] != old[name]["hash"] and new[name]["started"] >= old[name]["finished"]
    assert "batch_size: 4" in (chain["run"] / "stages" / "eval" / "spec.yaml").read_text()
    assert new["long"]["headline"] == old["long"]["headline"]  # same documents, recomputed


def test_status_lists_the_stages(chain):
    """`gristmill status` in this process (a second interpreter start-up would only add time)."""
    from typer.testing import CliRunner

    from pipelines import cli

    result = CliRunner().invoke(cli.app, ["status", str(chain["run"])])
    assert result.exit_code == 0, result.output
    out = result.output
    text = " ".join(out.split())
    assert "chain (pipeline) — done" in text
    for name, kind in STAGES.items():
        assert re.search(rf"│ {name} +│ {kind} +│ done +│ +[\d.]+s │", out), out
    assert "read 6, kept 6" in text and "5 stage(s)" in text


def test_one_report_for_the_chain(chain):
    from pipelines.report.chain import build_chain_report

    run = chain["run"]
    html = (run / "report" / "index.html").read_text()
    stats = json.loads((run / "report" / "stats.json").read_text())
    assert "report:" in chain["changed"].stdout  # written after the run
    assert stats["kind"] == "pipeline" and list(stats["stages"]) == list(STAGES)
    assert {"funnel", "shards"} <= set(stats["stages"]["corpus"]["sections"])
    assert "funnel" in stats["stages"]["long"]["sections"]
    assert "training" in stats["stages"]["pretrain"]["sections"]
    assert "evaluation" in stats["stages"]["eval"]["sections"]
    chain_stats = stats["sections"]["chain"]
    assert chain_stats["documents"][0] == {"stage": "corpus", "read": 6, "kept": 6, "quarantined": 0}
    assert [d["stage"] for d in chain_stats["documents"]] == ["corpus", "words", "long"]
    assert chain_stats["tokens"][0]["train_tokens"] > 0 and chain_stats["training"][0]["step"] == 3
    assert {e["metric"] for e in chain_stats["evaluation"]} >= {"perplexity"}
    for title in ("Chain", "Stage 1: corpus (curate)", "Stage 4: pretrain (pretrain)", "Stage 5: eval (eval)",
                  "corpus · Funnel", "corpus · Tokens and shards", "pretrain · Training", "eval · Evaluation"):
        assert f"<h2>{title}</h2>" in html, title
    assert 'id="corpus-funnel"' in html and "wall time per stage" in html
    # `gristmill report` builds the same page again from the run directory alone
    rebuilt = build_chain_report(str(run))
    assert rebuilt.stats["stages"].keys() == stats["stages"].keys()
    assert rebuilt.stats["sections"]["chain"] == chain_stats
