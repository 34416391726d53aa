"""int8 dynamic quantisation: smaller, same behaviour within a stated perplexity change."""

from __future__ import annotations

import pytest
import torch

from eval.checkpoints import load_eval_model
from eval.perplexity import text_perplexity
from eval.quantize import quantize_eval_model, serialized_size
from eval_support import SHAKESPEARE, cached_checkpoint, single_thread
from training.generate import SamplingParams, generate_tokens

# Stated bound: int8 weights (per-tensor scales) change a small model's perplexity by under 1%.
MAX_RELATIVE_PPL_CHANGE = 0.01


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def test_int8_model_is_smaller_and_keeps_its_perplexity():
    em = load_eval_model(cached_checkpoint("llama"))
    q = quantize_eval_model(em)
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    assert not any(type(m) is torch.nn.Linear for m in q.model.modules())
    assert sum(isinstance(m, DynamicInt8Linear) for m in q.model.modules()) == 2 * 5 + 1  # 2 blocks × (qkv, proj, gate, up, down) + the head
    assert all(type(m) is torch.nn.Linear for m in em.model.modules() if type(m).__name__ == "Linear")  # original untouched
    assert serialized_size(q.model) < 0.6 * serialized_size(em.model)
    held_out = SHAKESPEARE.read_text(encoding="utf-8")[-6000:]  # after the text the model was trained on
    fp32, int8 = text_perplexity(em, [held_out]), text_perplexity(q, [held_out])
    change = abs(int8["metrics"]["perplexity"] / fp32["metrics"]["perplexity"] - 1)
    assert 0 < change < MAX_RELATIVE_PPL_CHANGE
    prompt = [em.tokenizer.encode("ROMEO:", add_special_tokens=False).ids]
    rows = generate_tokens(q.model, prompt, SamplingParams(max_new_tokens=8, temperature=0))
    assert len(rows[0].tokens) == 8


def test_eval_run_task_with_int8(tmp_path):
    """The function each kind: eval Ray task runs, with quantize: int8 (no Ray needed to call it)."""
    from pipelines.eval_run import _evaluate_checkpoint

    checkpoint = cached_checkpoint("llama")
    text = tmp_path / "doc.txt"
    text.write_text(SHAKESPEARE.read_text(encoding="utf-8")[-3000:])
    tasks = [{"name": "arc_easy", "limit": 3}, {"perplexity": {"files": [str(text)]}}]
    fp32 = _evaluate_checkpoint(str(checkpoint), tasks, 8, "cpu")
    int8 = _evaluate_checkpoint(str(checkpoint), tasks, 8, "cpu", "int8")
    assert int8["model"]["quantize"] == "int8" and int8["model"]["weights_bytes"] < fp32["model"]["weights_bytes"]
    a, b = (r["tasks"]["perplexity_files"]["metrics"]["perplexity"] for r in (fp32, int8))
    assert abs(b / a - 1) < MAX_RELATIVE_PPL_CHANGE
    assert int8["tasks"]["arc_easy"]["items"] == 3
