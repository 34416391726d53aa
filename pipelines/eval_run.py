"""Running a ``kind: eval`` spec: every checkpoint scored on every task, results in
``<run>/eval/results.json`` and generation samples in ``<run>/eval/samples/<checkpoint>/<task>.jsonl``.

Each checkpoint is evaluated in one Ray task (``cpus_per_checkpoint`` CPUs, one GPU with
``device: cuda``), all checkpoints at once as far as the cluster has room: on a cluster the work
lands on workers, and the task's CPU count is also its torch thread count (Ray sets
``OMP_NUM_THREADS``). The driver only receives each checkpoint's result dict and samples.

One manifest stage per checkpoint, ``NN-eval-<label>``, hashed over the tasks, the batch size and the
checkpoint's weights file (size and modification time): a rerun evaluates only the checkpoints whose
stage is missing, failed or changed, and rewrites ``results.json`` from every stage's record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from curation.faults import fault_point
from pipelines.errors import RunError, SpecIssue
from pipelines.manifest import Manifest
from pipelines.pipeline_spec import not_run_yet
from pipelines.rundir import RunDir, now
from pipelines.runner import Reporter
from pipelines.specs import EvalSpec, LoadedSpec, _validate_model, canonical_hash, resolve_path
from pipelines.yaml_source import SourceMap

SAMPLES_DIR = "eval/samples"


# --------------------------------------------------------------------------------------------------
# validation (called from pipelines.specs.validate_spec)


def _resolve_settings(settings: Any, base_dir: str) -> Any:
    updates = {}
    for name in getattr(type(settings), "path_fields", ()):
        value = getattr(settings, name)
        if isinstance(value, str):
            updates[name] = resolve_path(value, base_dir)
        elif isinstance(value, list):
            updates[name] = [resolve_path(v, base_dir) for v in value]
    return settings.model_copy(update=updates) if updates else settings


def _check_task(config: Any, path: tuple, source: SourceMap) -> list[SpecIssue]:
    """What only the files can tell: the task exists, its files are there. A file an earlier stage of a
    pipeline will write is checked when that stage is done (pipelines/pipeline_spec.py, not_run_yet)."""
    from eval.config import (BenchmarkTaskConfig, BiasProbeTaskConfig, GenerateTaskConfig, PerplexityTaskConfig,
                             ToxicityProbeTaskConfig)
    from eval.tasks import task_definition

    if isinstance(config, BenchmarkTaskConfig):
        try:
            definition = task_definition(config.name, config.file, config.format, config.prompt, config.target_delimiter)
        except ValueError as exc:
            return [source.issue(path + ("name",), str(exc))]
        if not _exists_or_pending(definition.path, Path.is_file):
            return [source.issue(path + ("file" if config.file else "name",), f"task file {definition.path} not found")]
    elif isinstance(config, PerplexityTaskConfig):
        p = config.perplexity
        if p.shards is not None:
            from training.shards import ShardError, ShardsMissing, open_shards

            try:
                if not open_shards(p.shards).val:
                    return [source.issue(path + ("perplexity", "shards"), f"the shards in {p.shards} have no val split")]
            except ShardsMissing:
                pass  # not written yet (a curate run may come first); running without them is a run error
            except (ShardError, OSError) as exc:
                return [source.issue(path + ("perplexity", "shards"), str(exc))]
        for i, file in enumerate(p.files or []):
            if not _exists_or_pending(file, Path.is_file):
                return [source.issue(path + ("perplexity", "files", i), f"text file {file} not found")]
    elif isinstance(config, GenerateTaskConfig) and not _exists_or_pending(config.generate.prompts_file, Path.is_file):
        return [source.issue(path + ("generate", "prompts_file"), f"prompts file {config.generate.prompts_file} not found")]
    elif isinstance(config, (ToxicityProbeTaskConfig, BiasProbeTaskConfig)):
        return _check_probe(config, path, source)
    return []


def _check_probe(config: Any, path: tuple, source: SourceMap) -> list[SpecIssue]:
    """The probe's files exist and parse (a bad template line is named now, not after model loading)."""
    from eval.config import ToxicityProbeTaskConfig
    from eval.safety import DEFAULT_GROUPS, DEFAULT_TEMPLATES, read_groups, read_prompts, read_templates

    if isinstance(config, ToxicityProbeTaskConfig):
        t = config.toxicity_probe
        if t.prompts_file is not None and not not_run_yet(t.prompts_file):
            try:
                read_prompts(t.prompts_file)
            except (ValueError, FileNotFoundError) as exc:
                return [source.issue(path + ("toxicity_probe", "prompts_file"), str(exc))]
        for name in ("model", "wordlist_dir"):
            value = getattr(t.classifier, name)
            if value is not None and "://" not in value and not _exists_or_pending(value, Path.exists):
                return [source.issue(path + ("toxicity_probe", "classifier", name), f"{value} not found")]
        return []
    b = config.bias_probe
    if any(f is not None and not_run_yet(f) for f in (b.groups_file, b.templates_file)):
        return []  # read together (templates name the groups): checked when the earlier stage is done
    try:
        groups = read_groups(b.groups_file or DEFAULT_GROUPS)
    except (ValueError, FileNotFoundError) as exc:
        return [source.issue(path + ("bias_probe", "groups_file"), str(exc))]
    try:
        read_templates(b.templates_file or DEFAULT_TEMPLATES, groups)
    except (ValueError, FileNotFoundError) as exc:
        return [source.issue(path + ("bias_probe", "templates_file"), str(exc))]
    return []


def _exists_or_pending(location: str, test) -> bool:
    return not_run_yet(location) or test(Path(location))


def check_eval_spec(spec: EvalSpec, base_dir: str, source: SourceMap, issues: list[SpecIssue]) -> EvalSpec:
    """Validate each task entry against its config model, resolve paths against the spec file, check
    the checkpoints and files exist. Returns the spec with paths made absolute."""
    from eval.checkpoints import resolve_checkpoint
    from eval.config import task_config_class

    checkpoints = []
    for i, location in enumerate(spec.checkpoints):
        absolute = resolve_path(location, base_dir)
        # A run directory that does not exist yet is no spec error (the pretrain run that writes it
        # may come first, as with the shipped specs); running without it is a run error. A folder
        # that exists but holds no checkpoint is a mistake now.
        if Path(absolute).exists():
            try:
                resolve_checkpoint(absolute)
            except FileNotFoundError as exc:
                issues.append(source.issue(("checkpoints", i), str(exc)))
        checkpoints.append(absolute)
    tasks = []
    for i, entry in enumerate(spec.tasks):
        path = ("tasks", i)
        cls = task_config_class(entry)
        if isinstance(cls, str):
            issues.append(source.issue(path, cls))
            continue
        config = _validate_model(cls, entry, path, source, issues)
        if config is None:
            continue
        if hasattr(config, "perplexity"):
            config = config.model_copy(update={"perplexity": _resolve_settings(config.perplexity, base_dir)})
        elif hasattr(config, "generate"):
            config = config.model_copy(update={"generate": _resolve_settings(config.generate, base_dir)})
        elif hasattr(config, "toxicity_probe"):
            probe = _resolve_settings(config.toxicity_probe, base_dir)
            probe = probe.model_copy(update={"classifier": _resolve_settings(probe.classifier, base_dir)})
            config = config.model_copy(update={"toxicity_probe": probe})
        elif hasattr(config, "bias_probe"):
            config = config.model_copy(update={"bias_probe": _resolve_settings(config.bias_probe, base_dir)})
        else:
            config = _resolve_settings(config, base_dir)
        issues.extend(_check_task(config, path, source))
        tasks.append(config.model_dump(mode="json", exclude_none=True))
    if spec.quantize == "int8" and spec.device == "cuda":
        issues.append(source.issue(("quantize",), "int8 dynamic quantisation runs on CPU; use device: cpu"))
    return spec.model_copy(update={"checkpoints": checkpoints, "tasks": tasks})


# --------------------------------------------------------------------------------------------------
# the Ray task


def _evaluate_checkpoint(location: str, tasks: list[dict[str, Any]], batch_size: int, device: str,
                         quantize: str = "none") -> dict[str, Any]:
    import torch

    from eval.checkpoints import load_eval_model
    from eval.config import parse_task
    from eval.quantize import quantize_eval_model, serialized_size
    from eval.runner import run_task, unique_labels

    started = time.perf_counter()
    em = load_eval_model(location, device)
    if quantize == "int8":
        em = quantize_eval_model(em)
    configs = [parse_task(t) for t in tasks]
    results, samples = {}, {}
    for label, config in zip(unique_labels(configs), configs):
        result, task_samples = run_task(em, config, batch_size)
        results[label] = result
        if task_samples:
            samples[label] = task_samples
    return {"path": em.path, "step": em.step,
            "model": {"arch": em.config.arch, "params": em.model.num_params(), "max_seq_len": em.config.max_seq_len,
                      "vocab_size": em.config.vocab_size, "device": device, "torch_threads": torch.get_num_threads(),
                      "quantize": quantize, "weights_bytes": serialized_size(em.model)},
            "tasks": results, "samples": samples, "seconds": round(time.perf_counter() - started, 3)}


def checkpoint_labels(paths: list[str]) -> list[str]:
    """``<run name>/step-NNNNNN`` for a run's checkpoint, the folder name otherwise; made unique."""
    from eval.checkpoints import resolve_checkpoint

    from training.remote import is_remote, resolve_remote

    labels, seen = [], {}
    for location in paths:
        # a checkpoint in an object store is named by its path there, not by its local copy's
        checkpoint = (PurePosixPath(resolve_remote(location).split("://", 1)[1]) if is_remote(location)
                      else resolve_checkpoint(location))
        label = (f"{checkpoint.parent.parent.name}/{checkpoint.name}" if checkpoint.parent.name == "checkpoints"
                 else checkpoint.name)
        seen[label] = seen.get(label, 0) + 1
        labels.append(label if seen[label] == 1 else f"{label}_{seen[label]}")
    return labels


def _weights_identity(location: str) -> dict[str, Any]:
    from eval.checkpoints import resolve_checkpoint
    from training.checkpoint import WEIGHTS_FILE
    from training.remote import is_remote, remote_file_identity

    if is_remote(location):
        return remote_file_identity(location, (WEIGHTS_FILE, "model.safetensors.index.json"))
    checkpoint = resolve_checkpoint(location)
    weights = checkpoint / WEIGHTS_FILE
    if not weights.is_file():  # a sharded transformers export: its index changes with the weights
        weights = checkpoint / "model.safetensors.index.json"
    stat = weights.stat()
    return {"checkpoint": str(checkpoint), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


@dataclass
class EvalRun:
    spec: LoadedSpec
    run: RunDir
    reporter: Reporter

    def execute(self) -> Manifest:
        import ray

        from eval.results import RESULTS_PATH, dumps, results_document

        spec: EvalSpec = self.spec.model  # type: ignore[assignment]
        resolved = self.spec.resolved()
        manifest = Manifest.load(self.run) or Manifest.new(self.spec.name, self.spec.kind)
        manifest.data.update(spec_hash=canonical_hash(resolved), status="running",
                             inputs=[{"index": i, "location": c} for i, c in enumerate(spec.checkpoints)])
        labels = checkpoint_labels(spec.checkpoints)
        stage_ids = [f"{i + 1:02d}-eval-{label.replace('/', '-')}" for i, label in enumerate(labels)]
        manifest.data["stages"] = [r for r in manifest.data["stages"] if r["id"] in stage_ids]
        remote = ray.remote(_evaluate_checkpoint).options(
            num_cpus=spec.cpus_per_checkpoint, num_gpus=1 if spec.device == "cuda" else 0, max_retries=0)
        pending = {}
        records = {}
        for stage_id, label, location in zip(stage_ids, labels, spec.checkpoints):
            stage_hash = canonical_hash({"weights": _weights_identity(location), "tasks": spec.tasks,
                                         "batch_size": spec.batch_size, "device": spec.device,
                                         **({"quantize": spec.quantize} if spec.quantize != "none" else {})})
            record = manifest.stage(stage_id)
            if record and record["hash"] == stage_hash and record["status"] == "done" and "result" in record:
                self.reporter.note(f"stage {stage_id}: skipped, evaluated already with the same tasks and weights")
                records[stage_id] = record
                continue
            record = {"id": stage_id, "kind": "eval", "steps": [t.get("name") or next(iter(t)) for t in spec.tasks],
                      "hash": stage_hash, "status": "running", "output_dir": "eval", "rejected": [], "started": now(),
                      "label": label}
            manifest.put_stage(record)
            records[stage_id] = record
            self.reporter.note(f"evaluating {label} on {len(spec.tasks)} task(s)")
            pending[remote.remote(location, spec.tasks, spec.batch_size, spec.device, spec.quantize)] = stage_id
        manifest.save(self.run)

        failures = []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            stage_id = pending.pop(done[0])
            record = records[stage_id]
            try:
                result = ray.get(done[0])
            except ray.exceptions.RayError as exc:  # the task raised, or its worker died (memory, node lost)
                cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                record.update(status="failed", finished=now(), error=f"{type(cause).__name__}: {cause}")
                failures.append(f"{record['label']}: {type(cause).__name__}: {cause}")
                manifest.put_stage(record)
                manifest.save(self.run)
                continue
            for task_label, samples in result.pop("samples").items():
                rel = f"{SAMPLES_DIR}/{record['label'].replace('/', '-')}/{task_label}.jsonl"
                self.run.write_bytes(rel, "".join(_json_line(s) for s in samples).encode())
                result["tasks"][task_label]["samples_file"] = rel
            record.update(status="done", finished=now(), seconds=result["seconds"], result=result,
                          metrics=_headline(result["tasks"]))
            manifest.put_stage(record)
            manifest.save(self.run)
            fault_point("eval.checkpoint_done")  # one checkpoint recorded, results.json not yet written
            self.reporter.note(f"{record['label']}: " + ", ".join(f"{k} {v:.4g}" for k, v in record["metrics"].items()))

        checkpoints = [{"label": records[s]["label"], **records[s]["result"]} for s in stage_ids
                       if records[s].get("status") == "done"]
        self.run.write_bytes(RESULTS_PATH, dumps(results_document(self.spec.name, now(), checkpoints)))
        manifest.data["totals"] = {}
        manifest.data["status"] = "failed" if failures else "done"
        manifest.save(self.run)
        if failures:
            raise RunError("evaluation failed for " + "; ".join(failures) + " (the other checkpoints' results are in "
                           f"{RESULTS_PATH}; rerun to retry)")
        return manifest


def _json_line(record: dict[str, Any]) -> str:
    import json

    return json.dumps(record, ensure_ascii=False) + "\n"


def _headline(tasks: dict[str, Any]) -> dict[str, float]:
    """One number per task for the terminal: acc (benchmarks), perplexity, tokens/s (generation)."""
    out = {}
    for label, result in tasks.items():
        metrics = result.get("metrics", {})
        for key in ("acc", "perplexity", "toxicity_rate", "mean_gap", "tokens_per_s"):
            if isinstance(metrics.get(key), (int, float)):
                out[f"{label}.{key}"] = metrics[key]
                break
    return out
