"""SIGKILL one `kind: pipeline` run at points spread across its chain, rerun, and compare with an
uninterrupted run of the same spec.

test_kill_points.py kills the standalone specs of each kind; here the driver dies inside one
pipeline run, so every rerun also goes through the pipeline's own resume (stage hashes, a stage
recorded running or done, upstream paths resolved into the same run directory). The spec is
specs/pipeline-tiny.yaml made smaller, with an exact dedup step (a global stage with rounds) and an
eval of two checkpoints (so one can be recorded before the kill and the other not):
curate (normalize, length filter, exact dedup, tokenize) → pretrain (8 steps) → eval (perplexity).

One run directory is killed at the first point, rerun armed with the next (it resumes, then dies
there), and so on; the last rerun is unarmed and must finish with the reference's kept and rejected
ids (with reasons), tokenizer, shard manifest and shard rows, loss curve and eval results; every input
document exactly once, no temporary file left, and `gristmill status` shows every stage done.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest

from tests.conftest import DATA
from tests.helpers import all_ids, manifest
from tests.reliability.chain import cli, curate_outcome, eval_outcome, loss_curve, must

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]

# Moby-Dick chapters 20..34 and the dedup mirror, which holds exact copies of chapter 25 among others.
CHAPTERS = range(20, 35)
STAGES = {"corpus": "curate", "pretrain": "pretrain", "eval": "eval"}

SPEC = """\
kind: pipeline
name: rel-pipeline
description: pipeline-tiny, smaller, with exact dedup and two evaluated checkpoints
stages:
  corpus:
    kind: curate
    input:
      - {{format: text, paths: [{chapters}]}}
      - {{format: jsonl, paths: ["{mirror}"]}}
    steps:
      - normalize: {{}}
      - length_filter: {{min_words: 50}}
      - exact_dedup: {{}}
      - tokenize:
          tokenizer: {{train: {{vocab_size: 384, sample_docs: 40}}}}
          seq_len: 64
          val_fraction: 0.1
          seed: 0
          shard_target_mb: 0.02
  pretrain:
    kind: pretrain
    data: ${{stages.corpus}}
    model: {{preset: tiny, n_layer: 1, d_model: 32, n_head: 2}}
    optimizer: {{lr: 3.0e-3}}
    batch: {{micro_batch: 4}}
    max_steps: 8
    eval_every: 4
    eval_batches: 2
    checkpoint_every: 4
    keep: 5
    log_every: 4
    scaling: {{num_workers: 1}}
  eval:
    kind: eval
    checkpoints: ["${{stages.pretrain}}/checkpoints/step-000004", "${{stages.pretrain}}"]
    tasks:
      - perplexity: {{shards: "${{stages.corpus}}"}}
    batch_size: 8
    cpus_per_checkpoint: 0.5
"""

# In the order one run reaches them, with the stage statuses the pipeline's manifest shows after the
# kill (a stage not listed has no record yet). Curate stages: 01-stream (normalize, length_filter),
# 02-exact_dedup, 03-tokenize. ``point:N`` is the N-th time the point is reached in that process.
KILLS = [
    ("curate.stream_batch:2", {"corpus": "running"}),                     # curate's streaming pass
    ("dedup.02-exact_dedup.removals.written", {"corpus": "running"}),     # inside the exact dedup round
    ("pipeline.stage_done:1", {"corpus": "done"}),                        # between stages: corpus recorded
    ("train.step:6", {"corpus": "done", "pretrain": "running"}),          # mid-pretraining, checkpoint at 4
    ("eval.checkpoint_done:1", {"corpus": "done", "pretrain": "done", "eval": "running"}),  # one of two evaluated
]


def _outcome(run: Path) -> dict:
    stages = run / "stages"
    return {"corpus": curate_outcome(stages / "corpus"), "pretrain": loss_curve(stages / "pretrain"),
            "eval": eval_outcome(stages / "eval")}


@pytest.fixture(scope="module")
def killed(tmp_path_factory, ray_address):
    """The uninterrupted reference, then one run directory killed at every point and rerun to the end."""
    folder = tmp_path_factory.mktemp("pipeline-kill")
    chapters = ", ".join(f'"{DATA}/text/moby-dick/chapter_{i}.txt"' for i in CHAPTERS)
    spec = folder / "pipeline.yaml"
    spec.write_text(SPEC.format(chapters=chapters, mirror=DATA / "dedup" / "moby-dick-mirror.jsonl"))

    ref = folder / "ref"
    must(cli(spec, ref, ray_address))
    run = folder / "killed"
    kills = []
    for point, _ in KILLS:
        proc = cli(spec, run, ray_address, kill_at=point)
        statuses = {r["id"]: r["status"] for r in manifest(run)["stages"]} if (run / "manifest.json").exists() else {}
        kills.append({"point": point, "returncode": proc.returncode, "stderr": proc.stderr[-4000:],
                      "pipeline_status": manifest(run)["status"] if (run / "manifest.json").exists() else None,
                      "stages": statuses})
    final = must(cli(spec, run, ray_address))
    return {"ref": ref, "run": run, "kills": kills, "final": final,
            "expected": _outcome(ref), "got": _outcome(run)}


def test_reference_run_is_sound(killed):
    ref, expected = killed["ref"], killed["expected"]
    assert manifest(ref)["status"] == "done"
    corpus = ref / "stages" / "corpus"
    totals = expected["corpus"]["totals"]
    assert totals["balanced"] and totals["read"] == len(set(all_ids(corpus))) == len(all_ids(corpus))
    assert totals["rejected"]["exact_dedup"] > 0, "the mirror's exact copies are removed"
    assert len(expected["corpus"]["shards"]) >= 4, "several shards, so shard order and content are compared"
    assert [int(r["step"]) for r in expected["pretrain"]] == list(range(1, 9))
    assert [c["label"].rsplit("/", 1)[1] for c in expected["eval"]] == ["step-000004", "step-000008"]


@pytest.mark.parametrize("index", range(len(KILLS)), ids=[p for p, _ in KILLS])
def test_each_point_killed_the_driver_where_expected(killed, index):
    kill, (point, stages) = killed["kills"][index], KILLS[index]
    assert kill["returncode"] == -signal.SIGKILL, f"{point} was not reached (exit {kill['returncode']})\n{kill['stderr']}"
    assert kill["pipeline_status"] == "running", f"killed at {point}, yet the pipeline says {kill['pipeline_status']}"
    assert kill["stages"] == stages, f"stage records after the kill at {point}"


def test_final_rerun_finishes_every_stage(killed):
    run = killed["run"]
    m = manifest(run)
    assert m["status"] == "done" and [(r["id"], r["status"]) for r in m["stages"]] == [(s, "done") for s in STAGES]
    for name, kind in STAGES.items():
        stage = manifest(run / "stages" / name)
        assert (stage["kind"], stage["status"]) == (kind, "done")


def test_status_table_shows_every_stage_done(killed):
    """`gristmill status` in this process (a second interpreter start-up would only add time)."""
    from typer.testing import CliRunner

    from pipelines import cli as gristmill_cli

    result = CliRunner().invoke(gristmill_cli.app, ["status", str(killed["run"])])
    assert result.exit_code == 0, result.output
    assert "rel-pipeline (pipeline) — done" in " ".join(result.output.split())
    for name, kind in STAGES.items():
        assert re.search(rf"│ {name} +│ {kind} +│ done +│ +[\d.]+s │", result.output), result.output


def test_kept_and_rejected_ids_and_reasons_equal_the_reference(killed):
    got, expected = killed["got"]["corpus"], killed["expected"]["corpus"]
    assert got["kept"] == expected["kept"]
    assert got["rejected"] == expected["rejected"]
    assert got["totals"] == expected["totals"]


def test_every_input_document_exactly_once(killed):
    corpus = killed["run"] / "stages" / "corpus"
    ids = all_ids(corpus)
    assert len(ids) == len(set(ids)) == killed["got"]["corpus"]["totals"]["read"]


def test_tokenizer_and_shard_manifest_equal_the_reference(killed):
    got, expected = killed["got"]["corpus"], killed["expected"]["corpus"]
    assert got["tokenizer"] == expected["tokenizer"]
    assert got["shard_manifest"] == expected["shard_manifest"]


def test_shards_equal_the_reference_row_for_row(killed):
    got, expected = killed["got"]["corpus"]["shards"], killed["expected"]["corpus"]["shards"]
    assert list(got) == list(expected), "the same shard files"
    for name in expected:
        assert got[name] == expected[name], f"{name}: rows differ from the uninterrupted run"


def test_loss_curve_equals_the_reference(killed):
    assert killed["got"]["pretrain"] == killed["expected"]["pretrain"]


def test_eval_results_equal_the_reference(killed):
    assert killed["got"]["eval"] == killed["expected"]["eval"]


def test_no_temporary_file_left(killed):
    assert not [str(p) for p in killed["run"].rglob("*") if ".tmp-" in p.name]


def test_the_eval_stage_read_the_checkpoints_of_this_run(killed):
    run = killed["run"]
    results = json.loads((run / "stages" / "eval" / "eval" / "results.json").read_text())
    checkpoints = run / "stages" / "pretrain" / "checkpoints"
    assert [c["path"] for c in results["checkpoints"]] == [str(checkpoints / "step-000004"),
                                                           str(checkpoints / "step-000008")]
