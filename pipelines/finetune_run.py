"""Running a ``kind: finetune`` spec: JSONL → rows (Ray Data) → Ray Train + Lightning → checkpoints.

Two stages in the manifest:

* ``01-prepare``: records rendered with the chat template and tokenized with assistant masks into
  ``shards/`` (:mod:`pipelines.finetune_prepare`), rejected records in ``rejected/prepare/``; skipped
  when its inputs (files, template, tokenizer, lengths) are unchanged.
* ``02-finetune``: the pretraining launcher (:func:`training.launcher.fit`) with the method's
  Lightning module (:func:`training.finetune.modules.build_module`): same scaling options, step
  checkpoints, resume (rerun the same command), ``metrics/train.csv`` and TensorBoard logs.

LoRA runs also write ``model/``: the last adapter merged into the base weights, an ordinary
checkpoint that ``gristmill generate`` and ``gristmill export`` read. SFT and DPO step checkpoints
are ordinary checkpoints themselves.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.errors import RunError, SpecIssue
from pipelines.manifest import Manifest
from pipelines.rundir import RunDir, now
from pipelines.runner import Reporter
from pipelines.specs import DpoSettings, FinetuneSpec, LoadedSpec, LoraSettings, canonical_hash, resolve_path
from pipelines.yaml_source import SourceMap

PREPARE_ID = "01-prepare"
TRAIN_ID = "02-finetune"
MERGED_DIR = "model"
MODULE_FACTORY = "training.finetune.modules:build_module"
NOT_HASHED = ("name", "description", "ray", "log_every", "keep", "eval_every", "eval_batches", "checkpoint_every")

# Training FLOPs per row token relative to plain training (6N per token): LoRA skips the weight
# gradients (forward 2N + input gradients 2N ≈ 4N); reward and DPO rows hold a pair (two
# sequences); DPO adds the reference's two forwards (2 × 2N): (2·6N + 2·2N) / 6N.
FLOPS_FACTOR = {"sft": 1.0, "lora": 4 / 6, "reward": 2.0, "dpo": 16 / 6}


# --------------------------------------------------------------------------------------------------
# checking the spec


def resolve_base(location: str) -> str:
    """The checkpoint a fine-tuning run starts from: a checkpoint directory as given; a fine-tuning
    run directory's merged ``model/``; else a run directory's newest complete checkpoint. A
    ``transformers`` GPT-2 / Llama directory (``gristmill export --format hf``) is a checkpoint too."""
    import pyarrow.fs as pafs

    from training.hf_import import is_hf_export
    from training.resume import latest_complete

    path = Path(location)
    if (path / "model_config.json").is_file() and (path / "model.safetensors").is_file():
        return str(path)
    if is_hf_export(path):
        return str(path)
    if (path / MERGED_DIR / "model.safetensors").is_file():
        return str(path / MERGED_DIR)
    latest = latest_complete(pafs.LocalFileSystem(), str(path / "checkpoints"))
    if latest and (Path(latest[1]) / "model.safetensors").is_file():
        return latest[1]
    raise FileNotFoundError(f"{location} holds no model checkpoint (model.safetensors + model_config.json), "
                            "no transformers export (config.json + model.safetensors), "
                            "no model/ and no complete checkpoints/step-* with model weights")


def check_finetune_spec(spec: FinetuneSpec, base_dir: str, source: SourceMap, issues: list[SpecIssue]) -> FinetuneSpec:
    """Resolve paths against the spec file and check what only the files can tell."""
    from curation.chat import choose_template, compile_template
    from pipelines.finetune_prepare import expand
    from pipelines.pretrain_run import batch_geometry
    from training.checkpoint import find_tokenizer, read_model_config

    data = spec.data.model_copy(update={
        "train": [resolve_path(p, base_dir) for p in spec.data.train],
        "val": [resolve_path(p, base_dir) for p in spec.data.val]})
    updates: dict[str, Any] = {"data": data, "from_": resolve_path(spec.from_, base_dir)}
    if spec.chat_template_file:
        updates["chat_template_file"] = resolve_path(spec.chat_template_file, base_dir)
    spec = spec.model_copy(update=updates)
    for field in ("train", "val"):
        for i, pattern in enumerate(getattr(data, field)):
            if not expand([pattern]) or not all(os.path.isfile(p) for p in expand([pattern])):
                issues.append(source.issue(("data", field, i), f"no such file: {pattern}"))
    _, problem = batch_geometry(spec, spec.max_seq_len)
    if problem:
        issues.append(source.issue(("batch", "global_batch_tokens"), problem))
    if not os.path.exists(spec.from_):
        # A run that does not exist yet is no spec error (the shipped specs chain pretrain → sft →
        # dpo); running without it is a run error. One that exists but holds no model is a mistake now.
        return spec
    try:
        base = resolve_base(spec.from_)
        config, _ = read_model_config(base)
    except (FileNotFoundError, ValueError) as exc:
        issues.append(source.issue(("from",), str(exc)))
        return spec
    tokenizer = None
    try:
        tokenizer = str(find_tokenizer(base))
    except FileNotFoundError as exc:
        issues.append(source.issue(("from",), str(exc)))
    if spec.max_seq_len > config.max_seq_len:
        issues.append(source.issue(("max_seq_len",), f"must be at most the model's max_seq_len {config.max_seq_len}, "
                                   f"got {spec.max_seq_len}"))
    try:
        template, _ = choose_template(spec.chat_template, spec.chat_template_file, tokenizer)
        compile_template(template)
    except Exception as exc:  # noqa: BLE001 - OSError, ChatError, jinja2.TemplateSyntaxError
        field = "chat_template_file" if spec.chat_template_file else "chat_template"
        issues.append(source.issue((field,), f"unusable chat template: {exc}"))
    return spec


# --------------------------------------------------------------------------------------------------
# the run


@dataclass
class FinetuneRun:
    spec: LoadedSpec
    run: RunDir
    reporter: Reporter
    num_cpus: float = 2.0

    def execute(self) -> Manifest:
        import ray

        spec: FinetuneSpec = self.spec.model  # type: ignore[assignment]
        try:
            base = resolve_base(spec.from_)
        except FileNotFoundError as exc:
            raise RunError(f"from: {exc}; run the spec that trains it first") from None
        from training.checkpoint import find_tokenizer

        tokenizer = str(find_tokenizer(base))
        manifest = Manifest.load(self.run) or Manifest.new(self.spec.name, self.spec.kind)
        manifest.data.update(spec_hash=canonical_hash(self.spec.resolved()), status="running")
        self.run.makedirs("tokenizer")
        shutil.copyfile(tokenizer, self.run.path("tokenizer", "tokenizer.json"))
        prepared = self._prepare(spec, base, tokenizer, manifest)
        cluster_cpus = float(ray.cluster_resources().get("CPU", self.num_cpus)) if ray.is_initialized() else self.num_cpus
        return self._train(spec, base, prepared, manifest, cluster_cpus)

    # ------------------------------------------------------------------ 01-prepare

    def _prepare(self, spec: FinetuneSpec, base: str, tokenizer: str, manifest: Manifest) -> dict[str, Any]:
        from curation.chat import choose_template
        from pipelines.finetune_prepare import expand, prepare

        template, template_source = choose_template(spec.chat_template, spec.chat_template_file, tokenizer)
        train_files, val_files = expand(spec.data.train), expand(spec.data.val)
        stage_hash = canonical_hash({
            "method": "preference" if spec.method in ("reward", "dpo") else "sft",
            "files": [(f, os.path.getsize(f), int(os.path.getmtime(f))) for f in train_files + val_files],
            "val_files": val_files, "val_fraction": spec.data.val_fraction, "template": template,
            "tokenizer": _sha256(tokenizer), "max_seq_len": spec.max_seq_len, "packing": spec.packing})
        record = manifest.stage(PREPARE_ID)
        if record and record["hash"] == stage_hash and record["status"] == "done" and self.run.exists("shards", "manifest.json"):
            self.reporter.note(f"stage {PREPARE_ID}: skipped, rows of these records exist")
            return record
        started = time.time()
        self.reporter.note(f"preparing {len(train_files) + len(val_files)} file(s) with the {template_source} chat template")
        counts = prepare(self.run, spec.method, train_files, val_files, spec.data.val_fraction, template, tokenizer,
                         spec.max_seq_len, spec.packing, spec.seed)
        if counts["rows"]["train"] == 0:
            raise RunError(f"no usable training records (rejected: {counts['rejected']}); see {self.run.location}/"
                           "rejected/prepare/")
        record = {"id": PREPARE_ID, "kind": "finetune_prepare", "steps": ["format_chat", "tokenize"], "hash": stage_hash,
                  "status": "done", "output_dir": "shards", "rejected": ["rejected/prepare"], "started": now(),
                  "finished": now(), "seconds": round(time.time() - started, 3), "template": template_source,
                  "counts": {"in": counts["in"], "kept": counts["kept"], "steps": []},
                  "prepare": counts}
        manifest.data["stages"] = [record]  # a new data stage invalidates the training stage
        manifest.save(self.run)
        rejected = sum(counts["rejected"].values())
        self.reporter.note(f"{counts['in']:,} records → {counts['kept']:,} kept, {rejected:,} rejected"
                           + (f" {counts['rejected']}" if rejected else "") + f"; rows train {counts['rows']['train']:,}, val {counts['rows']['val']:,}"
                           + (f"; {counts['truncated']:,} conversations truncated" if counts["truncated"] else ""))
        return record

    # ------------------------------------------------------------------ 02-finetune

    def build_plan(self, spec: FinetuneSpec, base: str, shards: Any, cluster_cpus: float) -> tuple[Any, float]:
        from pipelines.finetune_prepare import extra_columns
        from pipelines.pretrain_run import batch_geometry, default_cpus_per_worker
        from training.checkpoint import read_model_config
        from training.launcher import TrainPlan

        config, _ = read_model_config(base)
        seq_len = shards.seq_len
        accumulate, problem = batch_geometry(spec, seq_len)
        if problem:
            raise RunError(f"batch.global_batch_tokens {problem}")
        world = spec.scaling.num_workers
        global_rows = spec.batch.micro_batch * accumulate * world
        max_steps = spec.max_steps or max(1, math.ceil(spec.epochs * shards.train_rows / global_rows))
        warmup = spec.schedule.warmup_steps
        if warmup is None:
            warmup = max(1, round(0.02 * max_steps))
        cpus = spec.scaling.cpus_per_worker or default_cpus_per_worker(world, cluster_cpus)
        task: dict[str, Any] = {"method": spec.method, "base": base}
        if spec.method == "lora":
            task["lora"] = (spec.lora or LoraSettings()).model_dump()
        if spec.method == "dpo":
            task.update((spec.dpo or DpoSettings()).model_dump())
        optim = {**spec.optimizer.model_dump(), "lr": spec.learning_rate}
        plan = TrainPlan(
            model_config=config.to_dict(), optim=optim, schedule={**spec.schedule.model_dump(), "warmup_steps": warmup},
            max_steps=max_steps, micro_batch=spec.batch.micro_batch, accumulate=accumulate, num_workers=world,
            seq_len=seq_len, seed=spec.seed, block_documents=spec.method in ("sft", "lora"),
            precision=spec.precision, compile=spec.compile, eval_every=spec.eval_every, eval_batches=spec.eval_batches,
            checkpoint_every=spec.checkpoint_every, log_every=spec.log_every, strategy=spec.scaling.strategy,
            use_gpu=spec.scaling.use_gpu, torch_threads=max(1, int(cpus)),
            flops_per_token=config.flops_per_token(seq_len) * FLOPS_FACTOR[spec.method],
            run_location=self.run.uri(), shards_location=self.run.uri("shards"),
            tokenizer_location=self.run.path("tokenizer", "tokenizer.json"),
            module_factory=MODULE_FACTORY, task=task, extra_columns=extra_columns(spec.method))
        return plan, cpus

    def _train(self, spec: FinetuneSpec, base: str, prepared: dict[str, Any], manifest: Manifest,
               cluster_cpus: float) -> Manifest:
        import dataclasses

        from pipelines.pretrain_run import _last_line
        from training import launcher
        from training.resume import latest_complete, prune
        from training.shards import open_shards

        shards = open_shards(self.run.uri())
        plan, cpus = self.build_plan(spec, base, shards, cluster_cpus)
        resolved = self.spec.resolved()
        hashed = {k: v for k, v in resolved.items() if k not in NOT_HASHED}
        hashed["scaling"] = {k: v for k, v in hashed["scaling"].items() if k != "max_failures"}
        stage_hash = canonical_hash({"spec": hashed, "data": prepared["hash"], "base": _sha256(os.path.join(base, "model.safetensors"))})
        record = manifest.stage(TRAIN_ID)
        checkpoints = self.run.path(launcher.CHECKPOINTS_DIR)
        latest = latest_complete(self.run.fs, checkpoints)
        if latest and (record is None or record["hash"] != stage_hash):
            raise RunError(f"{self.run.location} holds checkpoints of a different fine-tuning spec or data; rerun "
                           "with --fresh or another --out")
        if latest and latest[0] >= plan.max_steps and record:
            self.reporter.note(f"stage {TRAIN_ID}: skipped, trained to step {latest[0]} already")
            record["status"] = "done"
            return self._finish(manifest, record)
        if latest:
            self.reporter.note(f"resuming from {latest[1]} (step {latest[0]} of {plan.max_steps})")
            plan = dataclasses.replace(plan, data_start_step=latest[0], resume_path=self.run.uri(
                launcher.CHECKPOINTS_DIR, latest[1].rsplit("/", 1)[-1]))
        from training.model import ModelConfig

        params = ModelConfig.from_dict(plan.model_config).num_params()
        record = {"id": TRAIN_ID, "kind": "finetune", "steps": [spec.method], "hash": stage_hash, "status": "running",
                  "output_dir": launcher.CHECKPOINTS_DIR, "rejected": [], "started": now(), "base": base,
                  "plan": {"method": spec.method, "max_steps": plan.max_steps, "micro_batch": plan.micro_batch,
                           "accumulate": plan.accumulate, "num_workers": plan.num_workers,
                           "global_batch_rows": plan.global_rows, "seq_len": plan.seq_len, "lr": plan.optim["lr"],
                           "cpus_per_worker": cpus, "params": params, "resumed_from_step": plan.data_start_step,
                           "train_rows": shards.train_rows}}
        manifest.put_stage(record)
        manifest.save(self.run)
        self.reporter.note(f"{spec.method}: {plan.max_steps} steps of {plan.global_rows} rows × {plan.seq_len} tokens "
                           f"from {base} on {plan.num_workers} worker(s)")
        started = time.time()
        try:
            result = launcher.fit(plan, shards, cpus, spec.scaling.max_failures, spec.keep)
        except Exception as exc:  # Ray Train wraps worker errors; the message is what the user needs
            record.update(status="failed", finished=now(), error=str(exc)[-2000:])
            manifest.save(self.run)
            raise RunError(f"fine-tuning failed: {_last_line(exc)}; rerun the same command to resume") from None
        prune(self.run.fs, checkpoints, spec.keep)
        metrics = dict(getattr(result, "metrics", None) or {})
        final = latest_complete(self.run.fs, checkpoints)
        record.update(status="done", finished=now(), seconds=round(time.time() - started, 3),
                      final_checkpoint=final[1] if final else None,
                      metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k != "mfu"})
        if spec.method == "lora" and final:
            record["merged_model"] = self._merge(final[1], base)
        return self._finish(manifest, record)

    def _merge(self, adapter_dir: str, base: str) -> str:
        """``model/``: the adapter folded into the base weights, with the tokenizer (generate/export)."""
        from training.checkpoint import TOKENIZER_FILE
        from training.finetune.lora import write_merged

        target = self.run.path(MERGED_DIR)
        write_merged(adapter_dir, target)
        shutil.copyfile(self.run.path("tokenizer", "tokenizer.json"), os.path.join(target, TOKENIZER_FILE))
        self.reporter.note(f"merged LoRA adapter → {target} (gristmill generate / export read it)")
        return target

    def _finish(self, manifest: Manifest, record: dict[str, Any]) -> Manifest:
        manifest.put_stage(record)
        manifest.data["totals"] = {}
        manifest.data["status"] = "done"
        manifest.save(self.run)
        return manifest


def _sha256(path: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]
