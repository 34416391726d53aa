"""The data stage of `kind: finetune` on Ray Data for preference pairs: every record kept or rejected
with a reason, one row per pair with both sides' masks, given validation files. The SFT path (packed
rows, truncation, the blank line that is no record, EOS per conversation) is checked on the prepare
stage of the end-to-end run in tests/test_finetune.py, which has to run it anyway."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from curation.chat import DEFAULT_CHAT_TEMPLATE
from pipelines.finetune_prepare import prepare
from pipelines.rundir import RunDir
from tests.finetune_support import PREF_TRAIN
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


def test_sft_rows_are_the_same_on_every_run(ray_session, tmp_path, tokenizer_path):
    # The packing groups are fixed ranges of the records' hash: a sort with sampled boundaries cut
    # them differently on each run, and the rows (and the loss curve) changed with them.
    from tests.finetune_support import SFT_TRAIN

    lines = SFT_TRAIN.read_text(encoding="utf-8").splitlines()[:3000]
    train = _write(tmp_path / "sft.jsonl", lines)
    tables = []
    for attempt in ("a", "b"):
        run = RunDir.open(str(tmp_path / attempt))
        counts = prepare(run, "sft", [train], [], 0.05, DEFAULT_CHAT_TEMPLATE, tokenizer_path, 64, True, 0,
                         rows_per_file=200)
        assert counts["balanced"] and counts["rows"]["val"] > 0
        shards = open_shards(run.path())
        assert len(shards.train) > 1
        tables.append([pq.read_table(f.path).to_pylist() for f in shards.train + shards.val])
    assert tables[0] == tables[1]
