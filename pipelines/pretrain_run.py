"""Running a ``kind: pretrain`` spec: shards → Ray Train + Lightning → checkpoints and metrics.

The run directory gets ``checkpoints/step-NNNNNN/`` (written by Ray Train from each worker's
report), ``metrics/train.csv`` and ``metrics/tb/`` (rank 0), and one manifest stage, ``01-pretrain``.
Rerunning the same spec into the same directory resumes from the newest complete checkpoint; a
changed spec is refused there (its checkpoints belong to another run), unless ``--fresh``.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from typing import Any

from curation.faults import fault_point
from pipelines.errors import RunError, SpecIssue, storage_problem
from pipelines.manifest import Manifest
from pipelines.rundir import RunDir, now
from pipelines.runner import Reporter
from pipelines.specs import LoadedSpec, PretrainSpec, canonical_hash
from pipelines.yaml_source import SourceMap

STAGE_ID = "01-pretrain"
# Fields that do not change what is trained: they may differ between a run and its resume.
NOT_HASHED = ("name", "description", "ray", "log_every", "keep", "eval_every", "eval_batches", "checkpoint_every")


# --------------------------------------------------------------------------------------------------
# spec + shards → plan


def model_config_for(spec: PretrainSpec, seq_len: int, vocab_size: int):
    from training.model import ModelConfig

    fields = spec.model.overrides()
    fields.setdefault("max_seq_len", seq_len)
    fields["vocab_size"] = vocab_size
    if spec.model.preset:
        return ModelConfig.preset(spec.model.preset, **fields)
    return ModelConfig(**fields)


def batch_geometry(spec: PretrainSpec, seq_len: int) -> tuple[int, str | None]:
    """(gradient accumulation steps, error message or None)."""
    per_pass = spec.batch.micro_batch * seq_len * spec.scaling.num_workers
    wanted = spec.batch.global_batch_tokens or per_pass
    if wanted % per_pass:
        lower = max(per_pass, wanted // per_pass * per_pass)
        return 0, (f"must be a multiple of micro_batch × seq_len × num_workers = {spec.batch.micro_batch} × "
                   f"{seq_len} × {spec.scaling.num_workers} = {per_pass:,} tokens, got {wanted:,} "
                   f"(nearest: {lower:,} or {lower + per_pass:,})")
    return wanted // per_pass, None


def check_against_shards(spec: PretrainSpec, source: SourceMap) -> list[SpecIssue]:
    """What only the shards can tell: the batch divides, the model fits the rows, the manifest is
    sound. Shards that do not exist yet are no spec error (the curate run that writes them may come
    first, as with the shipped specs); running without them is a run error."""
    from training.shards import ShardError, ShardsMissing, open_shards

    try:
        shards = open_shards(spec.data)
    except ShardsMissing:
        return []
    except (ShardError, OSError) as exc:
        return [source.issue(("data",), str(exc))]
    issues = []
    _, problem = batch_geometry(spec, shards.seq_len)
    if problem:
        issues.append(source.issue(("batch", "global_batch_tokens"), problem))
    if spec.model.max_seq_len is not None and spec.model.max_seq_len < shards.seq_len:
        issues.append(source.issue(("model", "max_seq_len"), f"must be at least the shards' seq_len "
                                   f"{shards.seq_len}, got {spec.model.max_seq_len}"))
    else:
        try:
            model_config_for(spec, shards.seq_len, shards.vocab_size)
        except (ValueError, TypeError) as exc:
            issues.append(source.issue(("model",), str(exc)))
    return issues


def default_cpus_per_worker(num_workers: int, cluster_cpus: float) -> float:
    """One CPU per worker, unless that leaves no CPU for the Ray Data read: then share the node
    (two 1-CPU workers on a 2-CPU node starve the read and the first step never comes)."""
    if cluster_cpus >= num_workers + 1:
        return 1.0
    return max(0.25, round((cluster_cpus - 1) / num_workers, 2)) if cluster_cpus > 1 else 0.25


def build_plan(spec: PretrainSpec, shards: Any, run_location: str, cluster_cpus: float) -> tuple[Any, float]:
    from training.launcher import TrainPlan

    model_config = model_config_for(spec, shards.seq_len, shards.vocab_size)
    accumulate, problem = batch_geometry(spec, shards.seq_len)
    if problem:
        raise RunError(f"batch.global_batch_tokens {problem}")
    world = spec.scaling.num_workers
    global_rows = spec.batch.micro_batch * accumulate * world
    max_steps = spec.max_steps or max(1, spec.max_tokens // (global_rows * shards.seq_len))
    warmup = spec.schedule.warmup_steps
    if warmup is None:
        warmup = max(1, round(0.02 * max_steps))
    cpus = spec.scaling.cpus_per_worker or default_cpus_per_worker(world, cluster_cpus)
    plan = TrainPlan(
        model_config=model_config.to_dict(),
        optim=spec.optimizer.model_dump(),
        schedule={**spec.schedule.model_dump(), "warmup_steps": warmup},
        max_steps=max_steps, micro_batch=spec.batch.micro_batch, accumulate=accumulate, num_workers=world,
        seq_len=shards.seq_len, seed=spec.seed, block_documents=spec.block_cross_document_attention,
        precision=spec.precision, compile=spec.compile, eval_every=spec.eval_every,
        eval_batches=spec.eval_batches, checkpoint_every=spec.checkpoint_every, log_every=spec.log_every,
        strategy=spec.scaling.strategy, use_gpu=spec.scaling.use_gpu, torch_threads=max(1, int(cpus)),
        flops_per_token=model_config.flops_per_token(shards.seq_len), run_location=run_location,
        shards_location=spec.data, tokenizer_location=_tokenizer_location(shards))
    return plan, cpus


# --------------------------------------------------------------------------------------------------
# the run


@dataclass
class PretrainRun:
    spec: LoadedSpec
    run: RunDir
    reporter: Reporter
    num_cpus: float = 2.0

    def execute(self) -> Manifest:
        import dataclasses

        import ray

        from training import launcher
        from training.resume import latest_complete, prune
        from training.shards import ShardError, open_shards

        spec: PretrainSpec = self.spec.model  # type: ignore[assignment]
        try:
            shards = open_shards(spec.data)
        except ShardError as exc:
            raise RunError(str(exc)) from None
        cluster_cpus = float(ray.cluster_resources().get("CPU", self.num_cpus)) if ray.is_initialized() else self.num_cpus
        plan, cpus = build_plan(spec, shards, self.run.uri(), cluster_cpus)

        resolved = self.spec.resolved()
        hashed = {k: v for k, v in resolved.items() if k not in NOT_HASHED}
        hashed["scaling"] = {k: v for k, v in hashed["scaling"].items() if k != "max_failures"}
        stage_hash = canonical_hash({"spec": hashed, "tokenizer": shards.manifest["tokenizer"].get("sha256"),
                                     "files": [f.path.rsplit("/", 1)[-1] for f in shards.train]})
        manifest = Manifest.load(self.run) or Manifest.new(self.spec.name, self.spec.kind)
        manifest.data.update(spec_hash=canonical_hash(resolved), status="running",
                             inputs=[{"index": i, "location": f.path, "rows": f.rows} for i, f in enumerate(shards.train)])
        record = manifest.stage(STAGE_ID)
        latest = latest_complete(self.run.fs, self.run.path(launcher.CHECKPOINTS_DIR))
        if record and record["hash"] != stage_hash and latest:
            raise RunError(f"{self.run.location} holds checkpoints of a different pretraining spec (model, data, "
                           "batch, schedule or seed changed); rerun with --fresh or another --out")
        if latest and latest[0] >= plan.max_steps and record:
            self.reporter.note(f"stage {STAGE_ID}: skipped, trained to step {latest[0]} already")
            record["status"] = "done"
            return self._finish(manifest, record)
        if latest:
            self.reporter.note(f"resuming from {latest[1]} (step {latest[0]} of {plan.max_steps})")
            plan = dataclasses.replace(plan, data_start_step=latest[0], resume_path=self.run.uri(
                launcher.CHECKPOINTS_DIR, latest[1].rsplit("/", 1)[-1]))
        record = {"id": STAGE_ID, "kind": "pretrain", "steps": ["pretrain"], "hash": stage_hash,
                  "status": "running", "output_dir": launcher.CHECKPOINTS_DIR, "rejected": [], "started": now(),
                  "plan": {"max_steps": plan.max_steps, "micro_batch": plan.micro_batch,
                           "accumulate": plan.accumulate, "num_workers": plan.num_workers,
                           "global_batch_tokens": plan.global_rows * plan.seq_len, "seq_len": plan.seq_len,
                           "cpus_per_worker": cpus, "params": _num_params(plan.model_config),
                           "flops_per_token": plan.flops_per_token, "resumed_from_step": plan.data_start_step}}
        manifest.data["stages"] = [record]
        manifest.save(self.run)
        started = time.time()
        self.reporter.note(f"training {record['plan']['params']:,} parameters for {plan.max_steps} steps of "
                           f"{record['plan']['global_batch_tokens']:,} tokens on {plan.num_workers} worker(s)")
        result = fit_or_fail(self.run, manifest, record, "training", plan, shards, cpus, spec.scaling.max_failures,
                             spec.keep)
        fault_point("pretrain.fit_returned")  # trained to the end, stage not yet recorded done
        prune(self.run.fs, self.run.path(launcher.CHECKPOINTS_DIR), spec.keep)
        metrics = dict(getattr(result, "metrics", None) or {})
        record.update(status="done", finished=now(), seconds=round(time.time() - started, 3),
                      metrics={k: metrics[k] for k in ("step", "tokens", "loss", "val_loss", "val_ppl") if k in metrics})
        first = first_step_wall_time(self.run, plan.data_start_step)
        if first is not None:  # Ray Train's start-up as the user waits for it: fit() to the first step
            record["first_step_s"] = round(first - started, 3)
        return self._finish(manifest, record)

    def _finish(self, manifest: Manifest, record: dict[str, Any]) -> Manifest:
        manifest.put_stage(record)
        manifest.data["totals"] = {}
        manifest.data["status"] = "done"
        manifest.save(self.run)
        return manifest


def _tokenizer_location(shards: Any) -> str | None:
    import posixpath

    import pyarrow.fs as pafs

    rel = shards.manifest["tokenizer"].get("path")
    if not rel:
        return None
    path = posixpath.join(shards.root, rel)
    if shards.fs.get_file_info(path).type != pafs.FileType.File:
        return None
    # shards on s3:// etc.: a URI, or the workers would look for "bucket/…" on their local disk
    return path if isinstance(shards.fs, pafs.LocalFileSystem) else f"{shards.fs.type_name}://{path}"


def _num_params(config: dict[str, Any]) -> int:
    from training.model import ModelConfig

    return ModelConfig.from_dict(config).num_params()


def fit_or_fail(run: RunDir, manifest: Manifest, record: dict[str, Any], what: str, *fit_args: Any) -> Any:
    """``training.launcher.fit(*fit_args)``; a failure is recorded in the manifest and raised as one
    RunError line ("<what> failed: …"): Ray Train wraps worker errors, and a full disk is said as such."""
    from pipelines import interrupt
    from training import launcher

    try:
        return launcher.fit(*fit_args, keep_sigint_handler=not interrupt.active())
    except Exception as exc:  # noqa: BLE001 - the message is what the user needs
        problem = storage_problem(exc, run.root)  # a checkpoint on a full disk, say
        record.update(status="failed", finished=now(), error=str(exc)[-2000:])
        try:
            manifest.save(run)
        except OSError:  # the disk that failed training may not take the record either
            if problem is None:
                raise
        reason = problem.message(run.location) if problem else f"{_last_line(exc)}; rerun the same command to resume"
        raise RunError(f"{what} failed: {reason}") from None


def first_step_wall_time(run: RunDir, after_step: int) -> float | None:
    """``wall_time`` of the first step this invocation trained (the CSV row after ``after_step``)."""
    if not run.exists("metrics/train.csv"):
        return None
    with run.fs.open_input_stream(run.path("metrics/train.csv")) as f:
        for row in csv.DictReader(io.StringIO(f.read().decode())):
            if int(row["step"]) > after_step and row.get("wall_time"):
                return float(row["wall_time"])
    return None


def _last_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
