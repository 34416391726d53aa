"""The data stage of `kind: finetune` on Ray Data: every record kept or rejected with a reason, rows
that follow the shard contract plus masks, a stable hash split, and preference pairs."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from curation.chat import DEFAULT_CHAT_TEMPLATE
from pipelines.finetune_prepare import prepare
from pipelines.rundir import RunDir
from tests.finetune_support import PREF_TRAIN, SFT_TRAIN
from tests.tiny_lm import train_tokenizer
from training.shards import open_shards, to_model_inputs

pytestmark = pytest.mark.slow  # Ray Data passes: ~15 s each on an idle 2-core machine, minutes under load


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_tokenizer().save(str(path))
    return str(path)


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_sft_records_become_packed_rows_and_rejects_keep_their_reason(ray_session, tmp_path, tokenizer_path):
    lines = SFT_TRAIN.read_text(encoding="utf-8").splitlines()[:120]
    bad = ["{oops", json.dumps([1, 2]), json.dumps({"prompt": "q"}), "",
           json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a " * 200}]})]
    data = _write(tmp_path / "sft.jsonl", lines + bad)
    run = RunDir.open(str(tmp_path / "run"))
    run.makedirs("tokenizer")
    counts = prepare(run, "sft", [data], [], 0.1, DEFAULT_CHAT_TEMPLATE, tokenizer_path, 64, True, 0)
    assert counts["in"] == 124 and counts["kept"] == 121 and counts["balanced"]  # the blank line is no record
    assert counts["rejected"] == {"invalid_json": 2, "bad_chat": 1}
    assert counts["truncated"] >= 1  # the 200-word answer
    rejected = pq.read_table(run.path("rejected/prepare")).to_pylist()
    assert sorted(r["reason"] for r in rejected) == ["bad_chat", "invalid_json", "invalid_json"]
    assert any(r["line"] == "{oops" for r in rejected)

    shards = open_shards(run.path())
    assert shards.seq_len == 64 and shards.val and shards.manifest["finetune"]["columns"] == ["loss_mask"]
    table = pq.read_table(shards.train[0].path)
    arrays = to_model_inputs(table, True, ("loss_mask",))
    assert arrays["input_ids"].shape[1] == 65 and arrays["loss_mask"].shape == arrays["input_ids"].shape
    assert arrays["loss_mask"].sum() > 0 and arrays["segment_ids"].max() >= 1
    # every kept conversation is in exactly one row (EOS closes each; a truncated one may lose it)
    eos = shards.manifest["tokenizer"]["eos_id"]
    total_eos = sum(int((to_model_inputs(pq.read_table(f.path), True)["input_ids"] == eos).sum())
                    for f in shards.train + shards.val)
    assert 121 - counts["truncated"] <= total_eos <= 121


def test_preference_pairs_become_one_row_each(ray_session, tmp_path, tokenizer_path):
    lines = PREF_TRAIN.read_text(encoding="utf-8").splitlines()[:60]
    long_prompt = json.dumps({"prompt": "word " * 200, "chosen": "a", "rejected": "b"})
    train = _write(tmp_path / "pref.jsonl", lines + [long_prompt, json.dumps({"prompt": "p", "chosen": "x"})])
    val = _write(tmp_path / "val.jsonl", lines[:10])
    run = RunDir.open(str(tmp_path / "run"))
    counts = prepare(run, "dpo", [train], [val], 0.0, DEFAULT_CHAT_TEMPLATE, tokenizer_path, 128, True, 0)
    assert counts["rejected"]["bad_chat"] == 1 and counts["rejected"]["too_long"] >= 1 and counts["balanced"]
    assert counts["in"] == 72 and counts["rows"]["train"] + counts["rows"]["val"] == counts["kept"]
    rejected = pq.read_table(run.path("rejected/prepare")).to_pylist()
    assert any(r["line"] == long_prompt and r["reason"] == "too_long" for r in rejected)
    shards = open_shards(run.path())
    columns = ("loss_mask", "rejected_ids", "rejected_loss_mask")
    arrays = to_model_inputs(pq.read_table(shards.train[0].path), False, columns)
    n = sum(f.rows for f in shards.train)
    assert n == counts["rows"]["train"]
    assert (arrays["loss_mask"].any(1) & arrays["rejected_loss_mask"].any(1)).all()
    assert not np.array_equal(arrays["input_ids"], arrays["rejected_ids"])
