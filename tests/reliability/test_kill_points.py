"""SIGKILL the driver at named points across the chain, rerun, and compare with an uninterrupted run.

See KILL_CHAINS below for the points and how one run directory is killed at each in turn.

Each case arms ``GRISTMILL_KILL_AT`` (:mod:`curation.faults`) for one `gristmill run`, checks the
process died by SIGKILL (so the point was reached, in the driver), reruns the same command unarmed and
requires the same outcome as the reference chain: kept ids, rejected ids with reasons, tokenizer,
shard rows and manifest for curate; the loss curve (metrics/train.csv) for pretrain and SFT; the
results for eval. Nothing lost, nothing duplicated: every input document is kept, rejected or
quarantined exactly once.
"""

from __future__ import annotations

import signal
import pytest

from tests.helpers import all_ids, manifest
from tests.reliability.chain import cli, curate_outcome, eval_outcome, loss_curve, must, write_specs

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]


@pytest.fixture(scope="module")
def chain(tmp_path_factory, ray_address):
    """The uninterrupted reference: curate → pretrain → finetune → eval, run once for the module."""
    folder = tmp_path_factory.mktemp("kill-chain")
    specs = write_specs(folder)
    ref = folder / "ref"
    for kind in ("curate", "pretrain", "finetune", "eval"):
        must(cli(specs[kind], ref / kind, ray_address))
    outcome = {"curate": curate_outcome(ref / "curate"), "pretrain": loss_curve(ref / "pretrain"),
               "finetune": loss_curve(ref / "finetune"), "eval": eval_outcome(ref / "eval")}
    return {"specs": specs, "ref": ref, "outcome": outcome}


def test_reference_chain_is_sound(chain):
    ref, outcome = chain["ref"], chain["outcome"]
    totals = outcome["curate"]["totals"]
    assert totals["balanced"] and totals["read"] == len(all_ids(ref / "curate")) == len(set(all_ids(ref / "curate")))
    assert totals["rejected"]["exact_dedup"] > 0 and totals["rejected"]["minhash_dedup"] > 0, totals
    assert len(outcome["curate"]["shards"]) >= 4, "several shards, so shard writing can be cut"
    assert [int(r["step"]) for r in outcome["pretrain"]] == list(range(1, 13))
    assert [int(r["step"]) for r in outcome["finetune"]] == list(range(1, 9))
    assert len(outcome["eval"]) == 2


# Kill points per spec, in the order the run reaches them. One run directory per spec is killed at
# the first point, rerun armed with the next (it resumes, then dies there), and so on; the last rerun
# is unarmed and must finish with the reference outcome. Every rerun therefore resumes from a state a
# SIGKILL left, and the chain costs one full run plus a restart per point instead of a full run per
# point. Stages of the curate run: 01-stream (normalize, length_filter), 02-exact_dedup,
# 03-minhash_dedup, 04-tokenize. ``point:N`` is the N-th time the point is reached in that process.
KILL_CHAINS = {
    "curate": [
        "curate.stream_batch:2",                       # streaming pass: rows written, units not committed
        "curate.unit_committed:3",                     # streaming pass (resumed): right after a commit
        "curate.stage_done:1",                         # between the stream stage and exact dedup
        "dedup.02-exact_dedup.removals.written",       # inside the exact round: files, no marker
        "dedup.signatures.batch:1",                    # inside the MinHash signature round
        "dedup.03-minhash_dedup.signatures.done",      # between MinHash rounds
        "dedup.03-minhash_dedup.lsh-000.written",      # inside the LSH round
        "dedup.03-minhash_dedup.removals.done",        # after the last MinHash round
        "tokenize.tokenizer_trained",                  # tokenizer trained, not saved
        "tokenize.shard_committed:2",                  # shard writing: two shards renamed, no manifest
    ],
    "pretrain": [
        "train.step:6",                                # mid-pretraining (checkpoint at 4): resume from 4
        "train.checkpoint:1",                          # resumed at 4: killed right after the step-8 checkpoint
        "pretrain.fit_returned",                       # resumed at 8: trained to 12, stage not recorded
    ],
    "finetune": ["train.step:5"],                      # mid-SFT (checkpoint at 4)
    "eval": ["eval.checkpoint_done:1"],                # one of two checkpoints evaluated and recorded
}


@pytest.mark.parametrize("kind", list(KILL_CHAINS))
def test_sigkill_chain_then_rerun_equals_uninterrupted(chain, ray_address, tmp_path, kind):
    run = tmp_path / kind
    spec = chain["specs"][kind]
    for point in KILL_CHAINS[kind]:
        killed = cli(spec, run, ray_address, kill_at=point)
        assert killed.returncode == -signal.SIGKILL, (
            f"{point} was not reached (exit {killed.returncode})\n{killed.stderr[-4000:]}")
        assert manifest(run)["status"] != "done", f"killed at {point}, yet the run says done"

    resumed = must(cli(spec, run, ray_address))
    assert manifest(run)["status"] == "done", resumed.stderr[-2000:]
    expected = chain["outcome"][kind]
    if kind == "curate":
        got = curate_outcome(run)
        for key in ("kept", "rejected", "totals", "tokenizer", "shard_manifest", "shards"):
            assert got[key] == expected[key], f"{key} differs from the uninterrupted run"
        ids = all_ids(run)
        assert len(ids) == len(set(ids)) == got["totals"]["read"], "every input document exactly once"
        assert not [p for p in run.rglob("*") if ".tmp-" in p.name], "no half-written file left"
    elif kind == "eval":
        assert eval_outcome(run) == expected
    else:
        assert loss_curve(run) == expected, "the loss curve differs from the uninterrupted run"
