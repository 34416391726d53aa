"""Running a ``kind: finetune`` spec: JSONL → rows (Ray Data) → Ray Train + Lightning → checkpoints.

Two stages in the manifest:

* ``01-prepare``: records rendered with the chat template and tokenized with assistant masks into
  ``shards/`` (:mod:`pipelines.finetune_prepare`), rejected records in ``rejected/prepare/``; skipped
  when its inputs (files, template, tokenizer, lengths) are unchanged.
* ``02-finetune``: the pretraining launcher (:func:`training.launcher.fit`) with the method's
  Lightning module (:func:`training.finetune.modules.build_module`): same scaling options, step
  checkpoints, resume (rerun the same command), ``metrics/train.csv`` and TensorBoard logs.

LoRA runs also write ``model/``: the last adapter merged into the base weights, an ordinary
checkpoint that ``gristmill generate`` and ``gristmill export`` read. SFT, DPO and distill step
checkpoints are ordinary checkpoints themselves.

Distillation (``method: distill``, :mod:`training.finetune.distill`) trains a student from ``from``
or a fresh ``student`` model on a frozen teacher's logits. On token shards (``data.shards``) there is
no prepare stage: the launcher reads those shards as pretraining does, attention blocked across
documents; on JSONL chat data the rows are prepared as for SFT (loss on the assistant's tokens).
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
from pipelines.pipeline_spec import not_run_yet
from pipelines.rundir import RunDir, now
from pipelines.runner import Reporter
from pipelines.specs import (DpoSettings, FinetuneSpec, LoadedSpec, LoraSettings, PretrainModelSettings, canonical_hash,
                             resolve_path)
from pipelines.yaml_source import SourceMap

PREPARE_ID = "01-prepare"
TRAIN_ID = "02-finetune"
MERGED_DIR = "model"
MODULE_FACTORY = "training.finetune.modules:build_module"
NOT_HASHED = ("name", "description", "ray", "log_every", "keep", "eval_every", "eval_batches", "checkpoint_every")

# Training FLOPs per row token relative to plain training (6N per token): LoRA skips the weight
# gradients (forward 2N + input gradients 2N ≈ 4N); reward and DPO rows hold a pair (two
# sequences); DPO adds the reference's two forwards (2 × 2N): (2·6N + 2·2N) / 6N.
# Distillation adds the teacher's forward (2 N_teacher per token) to the student's 6 N: computed
# from both configs in build_plan.
FLOPS_FACTOR = {"sft": 1.0, "lora": 4 / 6, "reward": 2.0, "dpo": 16 / 6, "distill": 1.0}


# --------------------------------------------------------------------------------------------------
# checking the spec


def resolve_base(location: str) -> str:
    """The checkpoint a fine-tuning run starts from: a checkpoint directory as given; a fine-tuning
    run directory's merged ``model/``; else a run directory's newest complete checkpoint. A
    ``transformers`` GPT-2 / Llama directory (``gristmill export --format hf``) is a checkpoint too."""
    import pyarrow.fs as pafs

    from training.hf_import import is_hf_export
    from training.remote import is_remote, resolve_remote
    from training.resume import latest_complete

    if is_remote(location):  # the workers copy it from the store on their own nodes (training.remote)
        return resolve_remote(location)
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


def fresh_student_config(settings: PretrainModelSettings, seq_len: int, vocab_size: int):
    """A ``student:`` block → ModelConfig: the preset with its overrides (as ``kind: pretrain``), the
    teacher's vocabulary, ``max_seq_len`` defaulting to the rows' length."""
    from training.model import ModelConfig

    fields = settings.overrides()
    fields.setdefault("max_seq_len", seq_len)
    fields["vocab_size"] = vocab_size
    return ModelConfig.preset(settings.preset, **fields) if settings.preset else ModelConfig(**fields)


def shards_tokenizer(shards: Any) -> str:
    from pipelines.pretrain_run import _tokenizer_location

    location = _tokenizer_location(shards)
    if location is None:
        raise FileNotFoundError(f"the shards at {shards.root} name no readable tokenizer file")
    return location


def distill_problems(spec: FinetuneSpec, teacher: str, base: str | None, shards: Any) -> list[tuple[tuple, str]]:
    """Why this teacher cannot teach this student on this data, as (field path, message) pairs:
    different vocabularies or tokenizers (logits are compared id by id), rows longer than a model's
    positions. ``shards`` is the opened data.shards (None for JSONL data)."""
    from training.checkpoint import find_tokenizer, read_model_config
    from training.finetune.distill_checks import tokenizer_mismatch, vocab_mismatch

    problems: list[tuple[tuple, str]] = []
    teacher_config, _ = read_model_config(teacher)
    teacher_tokenizer = find_tokenizer(teacher)
    seq_len = shards.seq_len if shards is not None else spec.max_seq_len
    if base is not None:
        student_config, _ = read_model_config(base)
        mismatch = tokenizer_mismatch(teacher_tokenizer, find_tokenizer(base))
        if mismatch:
            problems.append((("distill", "teacher"), mismatch))
    else:
        try:
            student_config = fresh_student_config(spec.student, seq_len, teacher_config.vocab_size)  # type: ignore[arg-type]
        except (ValueError, TypeError) as exc:
            return problems + [(("student",), str(exc))]
    mismatch = vocab_mismatch(teacher_config, student_config)
    if mismatch:
        problems.append((("distill", "teacher"), mismatch))
    if shards is not None:
        mismatch = tokenizer_mismatch(teacher_tokenizer, shards_tokenizer(shards), "the shards'")
        if mismatch:
            problems.append((("data", "shards"), mismatch))
    for who, config, field in (("teacher", teacher_config, ("distill", "teacher")),
                               ("student", student_config, ("from",) if base else ("student",))):
        if seq_len > config.max_seq_len:
            problems.append((field, f"rows of {seq_len} tokens exceed the {who}'s max_seq_len {config.max_seq_len}"))
    return problems


def _check_distill(spec: FinetuneSpec, source: SourceMap, issues: list[SpecIssue]) -> Any:
    """Teacher, student and shards that exist already must fit together; ones that do not exist
    yet (a pipeline trains them first) are a run error, not a spec error, as for ``from``. Returns
    the opened shards (or None)."""
    from training.shards import ShardError, ShardsMissing, open_shards

    assert spec.distill is not None
    shards = None
    if spec.data.shards is not None:
        try:
            shards = open_shards(spec.data.shards)
        except ShardsMissing:
            return None
        except (ShardError, OSError) as exc:
            issues.append(source.issue(("data", "shards"), str(exc)))
            return None
    if not os.path.exists(spec.distill.teacher) or (spec.from_ is not None and not os.path.exists(spec.from_)):
        return shards
    try:
        teacher = resolve_base(spec.distill.teacher)
    except (FileNotFoundError, ValueError) as exc:
        issues.append(source.issue(("distill", "teacher"), str(exc)))
        return shards
    try:
        base = resolve_base(spec.from_) if spec.from_ is not None else None
    except FileNotFoundError:
        return shards  # reported with the other `from` checks
    try:
        problems = distill_problems(spec, teacher, base, shards)
    except (FileNotFoundError, ValueError) as exc:
        problems = [(("distill", "teacher"), str(exc))]
    for field, message in problems:
        issues.append(source.issue(field, message))
    return shards


def check_finetune_spec(spec: FinetuneSpec, base_dir: str, source: SourceMap, issues: list[SpecIssue]) -> FinetuneSpec:
    """Resolve paths against the spec file and check what only the files can tell."""
    from curation.chat import choose_template, compile_template
    from pipelines.finetune_prepare import expand
    from pipelines.pretrain_run import batch_geometry
    from training.checkpoint import find_tokenizer, read_model_config

    data = spec.data.model_copy(update={
        "train": [resolve_path(p, base_dir) for p in spec.data.train],
        "val": [resolve_path(p, base_dir) for p in spec.data.val],
        "shards": resolve_path(spec.data.shards, base_dir) if spec.data.shards is not None else None})
    updates: dict[str, Any] = {"data": data}
    if spec.from_ is not None:
        updates["from_"] = resolve_path(spec.from_, base_dir)
    if spec.distill is not None:
        updates["distill"] = spec.distill.model_copy(update={"teacher": resolve_path(spec.distill.teacher, base_dir)})
    if spec.chat_template_file:
        updates["chat_template_file"] = resolve_path(spec.chat_template_file, base_dir)
    spec = spec.model_copy(update=updates)
    for field in ("train", "val"):
        for i, pattern in enumerate(getattr(data, field)):
            if not_run_yet(pattern):
                continue  # an earlier stage of the pipeline writes it; checked once that stage is done
            if not expand([pattern]) or not all(os.path.isfile(p) for p in expand([pattern])):
                issues.append(source.issue(("data", field, i), f"no such file: {pattern}"))
    shards = _check_distill(spec, source, issues) if spec.method == "distill" else None
    if data.shards is None or shards is not None:
        _, problem = batch_geometry(spec, shards.seq_len if shards is not None else spec.max_seq_len)
        if problem:
            issues.append(source.issue(("batch", "global_batch_tokens"), problem))
    if spec.from_ is None:
        return spec
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
    if spec.max_seq_len > config.max_seq_len and data.shards is None:
        issues.append(source.issue(("max_seq_len",), f"must be at most the model's max_seq_len {config.max_seq_len}, "
                                   f"got {spec.max_seq_len}"))
    if data.shards is not None:
        return spec  # no chat template to check
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

        from training.checkpoint import find_tokenizer

        spec: FinetuneSpec = self.spec.model  # type: ignore[assignment]
        base = _located(spec.from_, "from") if spec.from_ is not None else None
        teacher = _located(spec.distill.teacher, "distill.teacher") if spec.distill is not None else None
        tokenizer = str(find_tokenizer(base or teacher))  # a fresh student speaks its teacher's tokens
        shards = self._distill_shards(spec, base, teacher) if teacher is not None else None
        manifest = Manifest.load(self.run) or Manifest.new(self.spec.name, self.spec.kind)
        manifest.data.update(spec_hash=canonical_hash(self.spec.resolved()), status="running")
        self.run.makedirs("tokenizer")
        shutil.copyfile(tokenizer, self.run.path("tokenizer", "tokenizer.json"))
        if shards is not None:
            prepared = {"hash": canonical_hash({"shards": [f.path.rsplit("/", 1)[-1] for f in shards.train],
                                                "tokenizer": shards.manifest["tokenizer"].get("sha256")})}
            manifest.data["inputs"] = [{"index": i, "location": f.path, "rows": f.rows} for i, f in enumerate(shards.train)]
        else:
            prepared = self._prepare(spec, base, tokenizer, manifest)
        cluster_cpus = float(ray.cluster_resources().get("CPU", self.num_cpus)) if ray.is_initialized() else self.num_cpus
        return self._train(spec, base, prepared, manifest, cluster_cpus, teacher, shards)

    def _distill_shards(self, spec: FinetuneSpec, base: str | None, teacher: str) -> Any:
        """The opened ``data.shards`` (None for JSONL data), after the checks the spec check could
        not make because teacher, student or shards did not exist yet."""
        from training.shards import ShardError, open_shards

        shards = None
        if spec.data.shards is not None:
            try:
                shards = open_shards(spec.data.shards)
            except ShardError as exc:
                raise RunError(f"data.shards: {exc}") from None
        problems = distill_problems(spec, teacher, base, shards)
        if problems:
            raise RunError("; ".join(f"{'.'.join(field)}: {message}" for field, message in problems))
        return shards

    # ------------------------------------------------------------------ 01-prepare

    def _prepare(self, spec: FinetuneSpec, base: str, tokenizer: str, manifest: Manifest) -> dict[str, Any]:
        from curation.chat import choose_template
        from pipelines.finetune_prepare import expand, prepare

        template, template_source = choose_template(spec.chat_template, spec.chat_template_file, tokenizer)
        train_files, val_files = expand(spec.data.train), expand(spec.data.val)
        stage_hash = canonical_hash({
            "method": "preference" if spec.method in ("reward", "dpo") else "sft",  # distill rows are SFT rows
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

    def build_plan(self, spec: FinetuneSpec, base: str | None, shards: Any, cluster_cpus: float,
                   teacher: str | None = None, shards_location: str | None = None) -> tuple[Any, float]:
        from pipelines.finetune_prepare import extra_columns
        from pipelines.pretrain_run import batch_geometry, default_cpus_per_worker
        from training.checkpoint import read_model_config
        from training.launcher import TrainPlan

        seq_len = shards.seq_len
        teacher_config = read_model_config(teacher)[0] if teacher is not None else None
        if base is not None:
            config, _ = read_model_config(base)
        else:  # method distill with a fresh `student`
            config = fresh_student_config(spec.student, seq_len, teacher_config.vocab_size)  # type: ignore[arg-type, union-attr]
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
        flops_per_token = config.flops_per_token(seq_len) * FLOPS_FACTOR[spec.method]
        if spec.method == "distill" and spec.distill is not None and teacher_config is not None:
            task.update(teacher=teacher, temperature=spec.distill.temperature, alpha=spec.distill.alpha)
            flops_per_token += teacher_config.flops_per_token(seq_len) / 3  # a forward is 2N of the 6N
        optim = {**spec.optimizer.model_dump(), "lr": spec.learning_rate}
        plan = TrainPlan(
            model_config=config.to_dict(), optim=optim, schedule={**spec.schedule.model_dump(), "warmup_steps": warmup},
            max_steps=max_steps, micro_batch=spec.batch.micro_batch, accumulate=accumulate, num_workers=world,
            seq_len=seq_len, seed=spec.seed, block_documents=spec.method in ("sft", "lora", "distill"),
            precision=spec.precision, compile=spec.compile, eval_every=spec.eval_every, eval_batches=spec.eval_batches,
            checkpoint_every=spec.checkpoint_every, log_every=spec.log_every, strategy=spec.scaling.strategy,
            use_gpu=spec.scaling.use_gpu, torch_threads=max(1, int(cpus)),
            flops_per_token=flops_per_token,
            run_location=self.run.uri(), shards_location=shards_location or self.run.uri("shards"),
            tokenizer_location=self.run.path("tokenizer", "tokenizer.json"),
            module_factory=MODULE_FACTORY, task=task,
            extra_columns=() if shards_location else extra_columns(spec.method))  # token shards: no loss mask
        return plan, cpus

    def _train(self, spec: FinetuneSpec, base: str | None, prepared: dict[str, Any], manifest: Manifest,
               cluster_cpus: float, teacher: str | None = None, data_shards: Any = None) -> Manifest:
        import dataclasses

        from pipelines.pretrain_run import fit_or_fail
        from training import launcher
        from training.resume import latest_complete, prune
        from training.shards import open_shards

        shards = data_shards if data_shards is not None else open_shards(self.run.uri())
        plan, cpus = self.build_plan(spec, base, shards, cluster_cpus, teacher,
                                     spec.data.shards if data_shards is not None else None)
        resolved = self.spec.resolved()
        hashed = {k: v for k, v in resolved.items() if k not in NOT_HASHED}
        hashed["scaling"] = {k: v for k, v in hashed["scaling"].items() if k != "max_failures"}
        weights = {"base": _sha256(os.path.join(base, "model.safetensors")) if base else None}
        if teacher is not None:
            weights["teacher"] = _sha256(os.path.join(teacher, "model.safetensors"))
        stage_hash = canonical_hash({"spec": hashed, "data": prepared["hash"], **weights})
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
        if teacher is not None:
            from training.checkpoint import read_model_config

            record["teacher"] = teacher
            record["plan"].update(teacher_params=read_model_config(teacher)[0].num_params(),
                                  temperature=plan.task["temperature"], alpha=plan.task["alpha"])
        manifest.put_stage(record)
        manifest.save(self.run)
        start = base or f"a fresh {params:,}-parameter student"
        self.reporter.note(f"{spec.method}: {plan.max_steps} steps of {plan.global_rows} rows × {plan.seq_len} tokens "
                           f"from {start}" + (f", teacher {teacher}" if teacher else "") + f" on {plan.num_workers} worker(s)")
        started = time.time()
        result = fit_or_fail(self.run, manifest, record, "fine-tuning", plan, shards, cpus, spec.scaling.max_failures,
                             spec.keep)
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


def _located(location: str, field: str) -> str:
    try:
        return resolve_base(location)
    except FileNotFoundError as exc:
        raise RunError(f"{field}: {exc}; run the spec that trains it first") from None


def _sha256(path: str) -> str:
    import hashlib

    from training.remote import is_remote, localize

    if is_remote(path):  # a file of a checkpoint in a store: hash the node's copy (fetched once)
        folder, name = path.rsplit("/", 1)
        path = os.path.join(localize(folder), name)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]
