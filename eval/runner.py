"""Our own task runner: one loaded model, a list of task configs → a result per task.

The same functions back ``kind: eval`` (pipelines/eval_run.py), the lm-eval parity test and the
throughput benchmark, so what the spec reports is what the tests check.
"""

from __future__ import annotations

from typing import Any

from eval.checkpoints import EvalModel
from eval.cloze import evaluate_cloze
from eval.config import BenchmarkTaskConfig, GenerateTaskConfig, PerplexityTaskConfig, TaskConfig
from eval.generation import generate_samples, read_prompts
from eval.multiple_choice import evaluate_multiple_choice
from eval.perplexity import file_perplexity, shard_perplexity
from eval.tasks import load_task, task_definition
from training.generate import SamplingParams


def run_benchmark(em: EvalModel, config: BenchmarkTaskConfig, batch_size: int) -> dict[str, Any]:
    definition = task_definition(config.name, config.file, config.format, config.prompt, config.target_delimiter)
    task = load_task(definition, config.limit)
    evaluate = evaluate_cloze if task.format == "cloze" else evaluate_multiple_choice
    result = evaluate(em, task, config.num_fewshot, batch_size, config.fewshot_seed)
    result["task"] = config.name
    result["file"] = definition.path
    return result


def run_task(em: EvalModel, config: TaskConfig, batch_size: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(result, generation samples: empty except for a generate task)."""
    if isinstance(config, BenchmarkTaskConfig):
        return run_benchmark(em, config, batch_size), []
    if isinstance(config, PerplexityTaskConfig):
        p = config.perplexity
        if p.shards is not None:
            return shard_perplexity(em, p.shards, batch_size, p.max_rows, p.block_cross_document_attention), []
        return file_perplexity(em, p.files or [], batch_size, p.stride), []
    if isinstance(config, GenerateTaskConfig):
        g = config.generate
        prompts = read_prompts(g.prompts_file)[:g.limit]
        params = SamplingParams(max_new_tokens=g.max_tokens, temperature=g.temperature, top_k=g.top_k,
                                top_p=g.top_p, seed=g.seed)
        return generate_samples(em, prompts, params, batch_size, g.stop)
    raise TypeError(f"not a task config: {config!r}")


def unique_labels(tasks: list[TaskConfig]) -> list[str]:
    """Result keys: each task's label, ``_2``, ``_3`` … when one repeats (as repeated curate steps)."""
    seen: dict[str, int] = {}
    out = []
    for task in tasks:
        seen[task.label] = seen.get(task.label, 0) + 1
        out.append(task.label if seen[task.label] == 1 else f"{task.label}_{seen[task.label]}")
    return out
