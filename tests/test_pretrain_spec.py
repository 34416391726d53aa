"""kind: pretrain without Ray: spec validation, batch geometry, schedules, the seeded row stream,
segment ids and MFU arithmetic."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipelines.errors import SpecError
from pipelines.specs import load_spec
from tests.conftest import REPO
from tests.pretrain_shards import write_shards
from training.metrics import mfu, peak_flops
from training.schedule import lr_multiplier
from training.shards import ShardError, epoch_file_order, open_shards, stream_from, to_model_inputs

SPEC = REPO / "specs" / "pretrain-tiny.yaml"


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("spec-shards")
    write_shards(folder)
    return folder


def _issues(*sets: str, spec: Path = SPEC) -> list[str]:
    with pytest.raises(SpecError) as exc:
        load_spec(str(spec), list(sets))
    return [str(i) for i in exc.value.issues]


def test_shipped_spec_validates_against_shards(shards):
    loaded = load_spec(str(SPEC), [f"data={shards}"])
    assert loaded.kind == "pretrain"
    assert loaded.model.model.preset == "tiny" and loaded.model.scaling.num_workers == 2
    assert loaded.resolved()["data"] == str(shards)


def test_relative_data_is_resolved_against_the_spec(shards, tmp_path):
    spec = tmp_path / "p.yaml"
    spec.write_text(SPEC.read_text().replace("data: ../runs/tokenize", f"data: {shards.name}"))
    (tmp_path / shards.name).symlink_to(shards)
    assert load_spec(str(spec)).model.data == str(tmp_path / shards.name)


def test_errors_name_file_line_and_field(shards):
    issues = _issues(f"data={shards}", "batch.global_batch_tokens=1000")
    assert len(issues) == 1
    assert "batch.global_batch_tokens: must be a multiple of micro_batch × seq_len × num_workers = 4 × 32 × 2" in issues[0]
    assert "nearest: 768 or 1,024" in issues[0]

    spec = Path(str(SPEC))
    text = spec.read_text()
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith("optimizer:"))
    bad = spec.parent / ".tmp-test-pretrain-bad.yaml"
    try:
        bad.write_text(text.replace("grad_clip: 1.0}", "grad_clip: 1.0, momentum: 0.9}"))
        issues = _issues(f"data={shards}", spec=bad)
        assert any(f"{bad}:{line}" in i and "optimizer.momentum: unknown key 'momentum'" in i for i in issues), issues
    finally:
        bad.unlink()


def test_spec_errors(shards):
    (shards.parent / "broken").mkdir(exist_ok=True)
    (shards.parent / "broken" / "manifest.json").write_text("{not json")
    assert any("data: " in i and "is not JSON" in i for i in _issues(f"data={shards.parent / 'broken'}"))
    assert any("give exactly one of max_steps and max_tokens" in i for i in _issues(f"data={shards}", "max_tokens=5000"))
    assert any("model.max_seq_len: must be at least the shards' seq_len 32" in i
               for i in _issues(f"data={shards}", "model.max_seq_len=16"))
    assert any("model.preset" in i for i in _issues(f"data={shards}", "model.preset=gpt5"))
    assert any("scaling.strategy" in i for i in _issues(f"data={shards}", "scaling.strategy=zero3"))
    assert any("scaling: strategy fsdp shards the model across GPUs" in i
               for i in _issues(f"data={shards}", "scaling.strategy=fsdp"))
    assert any("precision" in i for i in _issues(f"data={shards}", "precision=fp8"))
    assert any("model: model.d_model (66) must be divisible by model.n_head (4)" in i
               for i in _issues(f"data={shards}", "model.d_model=66"))
    assert any("model.vocab_size" in i and "unknown key" in i for i in _issues(f"data={shards}", "model.vocab_size=100"))


def test_missing_shards_validate_but_do_not_run(tmp_path):
    """A spec may name the shards of a curate run that has not run yet; running it says what to do."""
    from pipelines.errors import RunError
    from pipelines.pretrain_run import PretrainRun
    from pipelines.rundir import RunDir
    from pipelines.runner import Reporter

    loaded = load_spec(str(SPEC), [f"data={tmp_path / 'not-yet'}"])
    with pytest.raises(RunError, match="no shard manifest in .*not-yet.*tokenize"):
        PretrainRun(loaded, RunDir.open(str(tmp_path / "run")), Reporter()).execute()


def test_model_shorthand_and_max_tokens(shards):
    from pipelines.pretrain_run import build_plan

    loaded = load_spec(str(SPEC), [f"data={shards}", "model=gpt2-124m", "max_steps=null", "max_tokens=2600",
                                   "batch.global_batch_tokens=512", "scaling.num_workers=1"])
    plan, cpus = build_plan(loaded.model, open_shards(str(shards)), "/tmp/x", cluster_cpus=2)
    assert plan.model_config["arch"] == "gpt2" and plan.model_config["vocab_size"] == 320
    assert plan.model_config["max_seq_len"] == 32  # from the shards, not the preset's 1024
    assert plan.accumulate == 4 and plan.global_rows == 16  # 512 tokens / (4 rows × 32)
    assert plan.max_steps == 5  # 2600 tokens // 512
    assert cpus == 1.0 and plan.torch_threads == 1
    two, cpus2 = build_plan(load_spec(str(SPEC), [f"data={shards}"]).model, open_shards(str(shards)), "/tmp/x", 2)
    assert cpus2 == 0.5  # two workers on two CPUs leave a core for the read


def test_schedules():
    cos = [lr_multiplier(s, 100, "cosine", 10, 0.1) for s in range(100)]
    assert cos[0] == pytest.approx(0.1) and cos[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(cos[9:], cos[10:]))
    assert cos[-1] == pytest.approx(0.1, abs=1e-3)
    wsd = [lr_multiplier(s, 100, "wsd", 10, 0.0, decay_fraction=0.2) for s in range(100)]
    assert wsd[10:80] == [1.0] * 70 and wsd[-1] == pytest.approx(0.0) and wsd[85] < wsd[80]


def test_stream_is_seeded_and_resumes_at_a_row(shards):
    s = open_shards(str(shards))
    rows = [f.rows for f in s.train]
    assert epoch_file_order(3, 7, 0) == epoch_file_order(3, 7, 0)
    assert sorted(epoch_file_order(3, 7, 1)) == [0, 1, 2]
    full = stream_from(s, 7, 0, 3 * sum(rows))
    # resuming at any row gives the rest of the same stream
    start = rows[epoch_file_order(3, 7, 0)[0]] + 5
    part = stream_from(s, 7, start, 100)
    assert part.files[0] == full.files[1] and part.skip_rows == 5
    # past an epoch the order changes with the epoch number
    assert stream_from(s, 7, sum(rows), 1).files[0] == s.train[epoch_file_order(3, 7, 1)[0]].path


def test_segment_ids_from_doc_starts():
    table = pa.table({"input_ids": pa.array([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]], pa.list_(pa.int32())),
                      "doc_starts": pa.array([[0, 3], []], pa.list_(pa.int32()))})
    out = to_model_inputs(table, True)
    assert out["input_ids"].dtype == np.int64 and out["input_ids"].shape == (2, 5)
    assert out["segment_ids"].tolist() == [[1, 1, 1, 2, 2], [0, 0, 0, 0, 0]]
    bad = pa.table({"input_ids": pa.array([[1, 2, 3], [4, 5]], pa.list_(pa.int32())),
                    "doc_starts": pa.array([[], []], pa.list_(pa.int32()))})
    with pytest.raises(ShardError, match="unequal length"):
        to_model_inputs(bad, True)


def test_mfu_table():
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16-mixed") == 989e12
    assert peak_flops("NVIDIA H100 PCIe", "bf16-mixed") == 756e12
    assert peak_flops(None, "32") is None
    assert mfu(6 * 124e6, 500_000, 989e12, 1) == pytest.approx(6 * 124e6 * 5e5 / 989e12)
    assert mfu(1.0, 100.0, None, 1) is None
    assert math.isclose(mfu(2.0, 10.0, 10.0, 2), 1.0)
