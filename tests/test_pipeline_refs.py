"""Paths into earlier stages of a ``kind: pipeline`` spec (``${stages.X}/sub-path``), without Ray.

When the spec is validated the earlier stage has not run: a path into it is accepted by every kind's
own file checks as long as its sub-path is something that stage's kind writes; a typo in the sub-path,
an unknown stage and a later stage are positioned errors (file:line:col, field path). When the stage
that uses the path is about to run, every stage before it is done, and a path still missing is an
error naming the field, the stage and the path."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipelines.errors import RunError, SpecError
from pipelines.specs import load_spec

# A classifier stage whose model the eval stage's toxicity probe uses (what specs/demo.yaml does),
# plus a path into an earlier stage in every field whose file a kind checks when the spec is loaded.
PIPELINE = """kind: pipeline
name: refs
stages:
  tox:
    kind: classifier
    train:
      data:
        - {format: text, paths: ["texts/*.txt"], label: clean}
  corpus:
    kind: curate
    input:
      - {format: text, paths: ["texts/*.txt"]}
    steps:
      - toxicity: {model: "${stages.tox}/model", max_score: 0.5}
      - tokenize: {tokenizer: {train: {vocab_size: 300}}, seq_len: 16}
  words:
    kind: curate
    input:
      - {format: parquet, paths: ["${stages.corpus}/data/*.parquet"]}
    steps:
      - tokenize: {tokenizer: "${stages.corpus}/tokenizer/tokenizer.json", seq_len: 16}
  sft:
    kind: finetune
    method: sft
    from: checkpoints/base
    data: {train: ["${stages.corpus}/data/chat.jsonl"], val: ["${stages.corpus}/data/chat-val.jsonl"]}
    max_steps: 2
  eval:
    kind: eval
    checkpoints: ["checkpoints/base"]
    tasks:
      - toxicity_probe: {limit: 2, classifier: {model: "${stages.tox}/model"}}
      - toxicity_probe: {prompts_file: "${stages.corpus}/data/prompts.txt", label: probe_2}
      - perplexity: {files: ["${stages.corpus}/data/a.txt"]}
      - perplexity: {shards: "${stages.words}"}
      - generate: {prompts_file: "${stages.corpus}/data/prompts.txt"}
      - bias_probe: {groups_file: "${stages.corpus}/data/groups.yaml"}
      - {name: mine, file: "${stages.corpus}/data/task.jsonl", format: multiple_choice}
"""


def _write(folder: Path, text: str = PIPELINE) -> Path:
    (folder / "texts").mkdir(parents=True, exist_ok=True)
    (folder / "texts" / "a.txt").write_text("a clean line of text\n")
    spec = folder / "refs.yaml"
    spec.write_text(text)
    return spec


def _issues(spec: Path) -> list[str]:
    with pytest.raises(SpecError) as exc:
        load_spec(str(spec))
    return [str(i) for i in exc.value.issues]


def _position(text: str, needle: str) -> str:
    """``line:col`` (1-based) of the first ``needle`` in ``text``: where an issue about it points."""
    before = text[:text.index(needle)]
    return f"{before.count(chr(10)) + 1}:{len(before) - before.rfind(chr(10))}"


def test_paths_into_earlier_stages_are_accepted_before_they_run(tmp_path):
    loaded = load_spec(str(_write(tmp_path)))
    plan = loaded.pipeline
    assert [s.name for s in plan.stages] == ["tox", "corpus", "words", "sft", "eval"]
    assert plan.stage("eval").refs == ["tox", "corpus", "words"]
    assert plan.stage("words").refs == ["corpus"] and plan.stage("corpus").refs == ["tox"]
    # spec.yaml keeps the references as written
    tasks = loaded.resolved()["stages"]["eval"]["tasks"]
    assert tasks[0]["toxicity_probe"]["classifier"]["model"] == "${stages.tox}/model"


@pytest.mark.parametrize("text, field, needle, why", [
    (PIPELINE.replace('{model: "${stages.tox}/model"}}', '{model: "${stages.toxx}/model"}}'),
     "stages.eval.tasks[0].toxicity_probe.classifier.model", "${stages.toxx}",
     "'toxx' is not a stage of this pipeline (did you mean 'tox'?)"),
    (PIPELINE.replace('{model: "${stages.tox}/model", max_score', '{model: "${stages.eval}/eval", max_score'),
     "stages.corpus.steps[0].toxicity.model", "${stages.eval}",
     "'eval' comes after stage 'corpus'; stages run in the order written"),
    (PIPELINE.replace('{model: "${stages.tox}/model"}}', '{model: "${stages.tox}/modle"}}'),
     "stages.eval.tasks[0].toxicity_probe.classifier.model", "${stages.tox}/modle",
     "stage 'tox' is a classifier stage, which writes no 'modle' (did you mean 'model'?); it writes model, "
     "manifest.json, spec.yaml"),
    (PIPELINE.replace('"${stages.corpus}/data/chat.jsonl"', '"${stages.corpus}/chat.jsonl"'),
     "stages.sft.data.train[0]", "${stages.corpus}/chat.jsonl",
     "stage 'corpus' is a curate stage, which writes no 'chat.jsonl'"),
], ids=["unknown-stage", "later-stage", "sub-path-typo", "sub-path-not-an-output"])
def test_bad_references_are_positioned_errors(tmp_path, text, field, needle, why):
    spec = _write(tmp_path, text)
    issues = _issues(spec)
    assert len(issues) == 1, issues
    (issue,) = issues
    # file:line:col of the string holding the reference, then the field path, then why
    line = _position(text, needle).split(":")[0]
    assert re.match(rf"{re.escape(str(spec))}:{line}:\d+ {re.escape(field)}: ", issue), issue
    assert why in issue, issue


def _done_upstream(loaded, root: Path, *names: str) -> None:
    """Record ``names`` as finished stages of the pipeline in ``root`` (each with its own manifest), as
    a run that got past them leaves it: the runner skips them and goes on to the next stage."""
    from pipelines.pipeline_run import stage_hash

    records, hashes = [], {}
    for stage in loaded.pipeline.stages:
        if stage.name not in names:
            break
        resolved = loaded.pipeline.load_stage(stage.name, str(root)).resolved()
        hashes[stage.name] = stage_hash(stage.kind, resolved, str(root), {n: hashes[n] for n in stage.refs})
        folder = root / "stages" / stage.name
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text(json.dumps({"name": stage.name, "kind": stage.kind, "status": "done",
                                                          "stages": []}))
        records.append({"id": stage.name, "kind": stage.kind, "hash": hashes[stage.name], "status": "done",
                        "run_dir": f"stages/{stage.name}", "upstream": {n: hashes[n] for n in stage.refs},
                        "seconds": 1.0, "headline": {}})
    (root / "manifest.json").write_text(json.dumps({"name": loaded.name, "kind": "pipeline", "status": "failed",
                                                    "stages": records}))


PROBE_ONLY = """kind: pipeline
name: probe
stages:
  tox:
    kind: classifier
    train:
      data:
        - {format: text, paths: ["texts/*.txt"], label: clean}
  eval:
    kind: eval
    checkpoints: ["checkpoints/base"]
    tasks:
      - toxicity_probe: {limit: 2, classifier: {model: "${stages.tox}/model"}}
"""


def test_a_path_still_missing_once_its_stage_is_done_names_field_stage_and_path(tmp_path):
    """The real runner, up to the eval stage: tox is done (skipped) but wrote no model/ folder."""
    from pipelines.pipeline_run import PipelineRun
    from pipelines.rundir import RunDir
    from pipelines.runner import Reporter

    spec = _write(tmp_path, PROBE_ONLY)
    loaded = load_spec(str(spec))
    root = tmp_path / "run"
    _done_upstream(loaded, root, "tox")
    with pytest.raises(RunError) as exc:
        PipelineRun(loaded, RunDir.open(str(root)), Reporter(), session=None).execute()
    message = str(exc.value)
    model = root / "stages" / "tox" / "model"
    assert message.startswith("stage 2/2 eval (eval): spec error(s):"), message
    where = _position(PROBE_ONLY, '"${stages.tox}/model"')  # the string's opening quote
    assert (f"{spec}:{where} "
            "stages.eval.tasks[0].toxicity_probe.classifier.model: ${stages.tox}/model: stage 'tox' (classifier) "
            f"has run but did not write model ({model} does not exist)") in message, message
    recorded = json.loads((root / "manifest.json").read_text())
    eval_record = next(r for r in recorded["stages"] if r["id"] == "eval")
    assert recorded["status"] == "failed" and eval_record["status"] == "failed"
    assert "did not write model" in eval_record["error"]
    # once the folder is there, the stage loads against it: the probe scores with tox's model
    model.mkdir()
    assert loaded.pipeline.missing_upstream_outputs("eval", str(root)) == []
    stage = loaded.pipeline.load_stage("eval", str(root))
    assert stage.model.tasks[0]["toxicity_probe"]["classifier"]["model"] == str(model)


def test_run_time_check_covers_every_stage_and_names_a_glob_by_its_folder(tmp_path):
    loaded = load_spec(str(_write(tmp_path)))
    plan, root = loaded.pipeline, tmp_path / "run"
    for name in ("tox", "corpus", "words"):
        (root / "stages" / name).mkdir(parents=True)

    def missing(stage: str) -> list[str]:
        return [re.search(r" (stages\.\S+): (\S+):", str(i)).group(1, 2)
                for i in plan.missing_upstream_outputs(stage, str(root))]

    assert missing("tox") == []
    assert missing("corpus") == [("stages.corpus.steps[0].toxicity.model", "${stages.tox}/model")]
    # `${stages.corpus}/data/*.parquet`: the folder is checked, what the glob matches is the reader's business
    assert missing("words") == [("stages.words.input[0].paths[0]", "${stages.corpus}/data/*.parquet"),
                                ("stages.words.steps[0].tokenize.tokenizer", "${stages.corpus}/tokenizer/tokenizer.json")]
    (root / "stages" / "corpus" / "data").mkdir()
    (root / "stages" / "corpus" / "tokenizer").mkdir()
    (root / "stages" / "corpus" / "tokenizer" / "tokenizer.json").write_text("{}")
    assert missing("words") == []
    # a bare `${stages.words}` (a run directory) is the stage's folder: there once the stage is done
    assert ("stages.eval.tasks[3].perplexity.shards", "${stages.words}") not in missing("eval")


def test_stage_outputs_table_matches_the_runners():
    """STAGE_OUTPUTS is written out (importing the runners would pull in Ray); it must name their folders."""
    from curation.tokenize.op import SHARDS_DIR, TOKENIZER_DIR
    from pipelines.classifier_run import MODEL_DIR
    from pipelines.eval_run import SAMPLES_DIR
    from pipelines.finetune_prepare import REJECTED, SHARDS
    from pipelines.finetune_run import MERGED_DIR
    from pipelines.pipeline_spec import STAGE_OUTPUTS
    from pipelines.planner import DATA_DIR
    from training.launcher import CHECKPOINTS_DIR, TENSORBOARD_DIR

    top = lambda rel: rel.split("/")[0]  # noqa: E731
    assert {DATA_DIR, TOKENIZER_DIR, SHARDS_DIR, "rejected", "dedup"} <= set(STAGE_OUTPUTS["curate"])
    assert STAGE_OUTPUTS["classifier"] == (MODEL_DIR,)
    assert {CHECKPOINTS_DIR, top(TENSORBOARD_DIR)} == set(STAGE_OUTPUTS["pretrain"])
    assert {CHECKPOINTS_DIR, top(TENSORBOARD_DIR), SHARDS, top(REJECTED), MERGED_DIR} <= set(STAGE_OUTPUTS["finetune"])
    assert STAGE_OUTPUTS["eval"] == (top(SAMPLES_DIR),)
