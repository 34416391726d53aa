"""lm-eval adapter parity: local YAML tasks over local JSONL (no hub) run through
``lm_eval.simple_evaluate(model=GristmillLM(...))`` give the numbers our own runner gives."""

from __future__ import annotations

import json
import math

import pytest

lm_eval = pytest.importorskip("lm_eval")

from lm_eval.tasks import TaskManager  # noqa: E402

from eval.checkpoints import load_eval_model  # noqa: E402
from eval.config import BenchmarkTaskConfig  # noqa: E402
from eval.lm_eval_adapter import GristmillLM  # noqa: E402
from eval.perplexity import text_perplexity  # noqa: E402
from eval.runner import run_benchmark  # noqa: E402
from eval.tasks import load_task, task_definition  # noqa: E402
from eval_support import cached_checkpoint, shakespeare, single_thread  # noqa: E402

ITEMS = 16

ARC_YAML = """task: gm_arc_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {file}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{query}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: gold
metric_list:
  - metric: acc
  - metric: acc_norm
"""

LAMBADA_YAML = """task: gm_lambada_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {file}
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{' ' + continuation}}}}"
target_delimiter: ""
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""

TEXT_YAML = """task: gm_text_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {file}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: bits_per_byte
"""


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with single_thread():
        yield


def _subset(name: str, path, rows: int) -> str:
    with open(task_definition(name).path, encoding="utf-8") as src:
        lines = [next(src) for _ in range(rows)]
    path.write_text("".join(lines))
    return str(path)


def test_lm_eval_parity_with_our_runner(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    arc = _subset("arc_easy", tmp_path / "arc.jsonl", ITEMS)
    lambada = _subset("lambada_openai", tmp_path / "lambada.jsonl", ITEMS)
    texts = [shakespeare(6000)[i:i + 1500] for i in range(0, 6000, 1500)]
    text_file = tmp_path / "text.jsonl"
    text_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    (tasks_dir / "arc.yaml").write_text(ARC_YAML.format(file=arc))
    (tasks_dir / "lambada.yaml").write_text(LAMBADA_YAML.format(file=lambada))
    (tasks_dir / "text.yaml").write_text(TEXT_YAML.format(file=text_file))

    em = load_eval_model(cached_checkpoint("llama"))
    out = lm_eval.simple_evaluate(model=GristmillLM(em, batch_size=8), tasks=["gm_arc_local", "gm_lambada_local", "gm_text_local"],
                                  task_manager=TaskManager(include_path=str(tasks_dir), include_defaults=False),
                                  bootstrap_iters=0,
                                  log_samples=False)
    results = out["results"]

    ours_arc = run_benchmark(em, BenchmarkTaskConfig(name="arc_easy", file=arc), batch_size=8)
    assert ours_arc["items"] == ITEMS
    assert results["gm_arc_local"]["acc,none"] == pytest.approx(ours_arc["metrics"]["acc"], abs=1e-12)
    assert results["gm_arc_local"]["acc_norm,none"] == pytest.approx(ours_arc["metrics"]["acc_norm"], abs=1e-12)

    ours_lambada = run_benchmark(em, BenchmarkTaskConfig(name="lambada_openai", file=lambada), batch_size=8)
    assert results["gm_lambada_local"]["acc,none"] == pytest.approx(ours_lambada["metrics"]["acc"], abs=1e-12)
    assert results["gm_lambada_local"]["perplexity,none"] == pytest.approx(ours_lambada["metrics"]["perplexity"], rel=1e-6)

    ours_text = text_perplexity(em, texts, batch_size=8)
    assert ours_text["windows"] > len(texts)  # the documents are longer than the context: rolling windows
    assert results["gm_text_local"]["bits_per_byte,none"] == pytest.approx(ours_text["metrics"]["bits_per_byte"], rel=1e-6)
    # The numbers are not trivially equal because they are constant.
    assert 0 < ours_lambada["metrics"]["perplexity"] < math.inf


def test_generate_until_stops_and_caps_tokens():
    from lm_eval.api.instance import Instance

    em = load_eval_model(cached_checkpoint("llama"))
    lm = GristmillLM(em, max_gen_toks=12)
    requests = [Instance("generate_until", {}, ("First Citizen:\n", {"until": ["\n"], "max_gen_toks": 20}), 0),
                Instance("generate_until", {}, ("ROMEO:", {"until": []}), 1)]
    first, second = lm.generate_until(requests)
    assert "\n" not in first
    assert len(em.tokenizer.encode(second, add_special_tokens=False).ids) <= 12 + 1
    assert first == lm.generate_until(requests[:1])[0]  # greedy: reproducible


def test_registered_for_lm_eval_model_args():
    from lm_eval.api.registry import get_model

    lm = get_model("gristmill").create_from_arg_string(f"checkpoint={cached_checkpoint('llama')},batch_size=4")
    assert isinstance(lm, GristmillLM) and lm.batch_size == 4 and lm.em.step == 30
