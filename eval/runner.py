"""Our own task runner: one loaded model, a list of task configs → a result per task.

The same functions back ``kind: eval`` (pipelines/eval_run.py), the lm-eval parity test and the
throughput benchmark, so what the spec reports is what the tests check.
"""

from __future__ import annotations

from typing import Any

from eval.checkpoints import EvalModel
from eval.cloze import evaluate_cloze
from eval.config import (BenchmarkTaskConfig, BiasProbeTaskConfig, GenerateTaskConfig, PerplexityTaskConfig,
                         TaskConfig, ToxicityProbeTaskConfig)
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


def run_toxicity_probe(em: EvalModel, config: ToxicityProbeTaskConfig,
                       batch_size: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from eval.safety import DEFAULT_PROMPTS, ToxicityScorer, load_prompts, toxicity_probe

    t = config.toxicity_probe
    c = t.classifier
    scorer = ToxicityScorer(c.method, c.model, c.label, c.wordlist_dir, c.language)
    params = SamplingParams(max_new_tokens=t.max_tokens, temperature=t.temperature, top_k=t.top_k,
                            top_p=t.top_p, seed=t.seed)
    result, samples = toxicity_probe(em, load_prompts(t.prompts_file, t.limit), scorer, params, t.threshold,
                                     t.samples, batch_size)
    result["prompts_file"] = str(t.prompts_file or DEFAULT_PROMPTS)
    return result, samples


def run_bias_probe(em: EvalModel, config: BiasProbeTaskConfig, batch_size: int) -> dict[str, Any]:
    from eval.safety import DEFAULT_GROUPS, DEFAULT_TEMPLATES, bias_probe, read_groups, read_templates

    b = config.bias_probe
    groups_file, templates_file = b.groups_file or DEFAULT_GROUPS, b.templates_file or DEFAULT_TEMPLATES
    groups = read_groups(groups_file)
    result = bias_probe(em, read_templates(templates_file, groups), groups, batch_size)
    result.update(templates_file=str(templates_file), groups_file=str(groups_file))
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
    if isinstance(config, ToxicityProbeTaskConfig):
        return run_toxicity_probe(em, config, batch_size)
    if isinstance(config, BiasProbeTaskConfig):
        return run_bias_probe(em, config, batch_size), []
    raise TypeError(f"not a task config: {config!r}")


def unique_labels(tasks: list[TaskConfig]) -> list[str]:
    """Result keys: each task's label, ``_2``, ``_3`` … when one repeats (as repeated curate steps)."""
    seen: dict[str, int] = {}
    out = []
    for task in tasks:
        seen[task.label] = seen.get(task.label, 0) + 1
        out.append(task.label if seen[task.label] == 1 else f"{task.label}_{seen[task.label]}")
    return out
