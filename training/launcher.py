"""Ray Train + Lightning: one ``TorchTrainer`` whose workers each run a Lightning ``Trainer`` with
Ray's strategy (``RayDDPStrategy`` / ``RayFSDPStrategy``), ``RayLightningEnvironment`` and
``prepare_trainer``, fed from Ray Data datasets through ``get_dataset_shard(...).iter_torch_batches``.

Resume: checkpoints are reported through ``ray.train.report`` into
``RunConfig(storage_path=<run>, name="checkpoints")``, so Ray Train's own restore (rerunning with
the same RunConfig; Train V2 has no ``Trainer.restore``) and ``FailureConfig`` retries hand the
newest checkpoint to ``ray.train.get_checkpoint()``. The driver opens the row stream where the newest
complete checkpoint on disk left off; a worker that gets a newer checkpoint from Ray (a retry inside
the same ``fit``) skips the extra rows itself.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
from dataclasses import dataclass
from typing import Any

from training.shards import ShardSet, StreamSlice, read_rows, stream_from

CHECKPOINTS_DIR = "checkpoints"
METRICS_CSV = "metrics/train.csv"
TENSORBOARD_DIR = "metrics/tb"


@dataclass
class TrainPlan:
    """Everything a worker needs, as plain data (it travels in ``train_loop_config``)."""

    model_config: dict[str, Any]
    optim: dict[str, Any]
    schedule: dict[str, Any]
    max_steps: int
    micro_batch: int
    accumulate: int
    num_workers: int
    seq_len: int
    seed: int
    block_documents: bool
    precision: str
    compile: bool
    eval_every: int
    eval_batches: int
    checkpoint_every: int
    log_every: int
    strategy: str
    use_gpu: bool
    torch_threads: int
    flops_per_token: float
    run_location: str  # local path or URI of the run directory
    shards_location: str
    # where the driver opened the row stream
    data_start_step: int = 0
    data_skip_rows: int = 0
    resume_path: str | None = None
    tokenizer_location: str | None = None  # copied into every checkpoint (generate / export need it)
    # Fine-tuning (training/finetune): "module:function(plan, model_config)" building the
    # LightningModule instead of PretrainModule, its settings, and the row columns it needs beyond
    # input_ids / segment_ids (loss masks, rejected sequences).
    module_factory: str | None = None
    task: dict[str, Any] | None = None
    extra_columns: tuple[str, ...] = ()

    @property
    def global_rows(self) -> int:
        return self.micro_batch * self.accumulate * self.num_workers

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainPlan":
        return cls(**data)


def train_worker(config: dict[str, Any]) -> None:
    """The per-worker training function (runs inside a Ray Train worker)."""
    import lightning.pytorch as pl
    import pyarrow.fs as pafs
    import ray.train
    import torch
    from lightning.pytorch.loggers import TensorBoardLogger
    from ray.train.lightning import RayDDPStrategy, RayFSDPStrategy, RayLightningEnvironment, prepare_trainer

    from training.checkpoint import load_model
    from training.lightning_module import OptimConfig, PretrainModule, ScheduleConfig
    from training.metrics import MetricsCsv, peak_flops
    from training.model import ModelConfig
    from training.progress import PretrainProgress
    from training.resume import read_state
    from training.shards import RankBatches

    plan = TrainPlan.from_dict(config)
    _quiet_lightning()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(plan.torch_threads)
    local_fs = pafs.LocalFileSystem()

    resume_step, resume_dir, resume_state, held = _resume_point(plan, ray.train.get_checkpoint(), local_fs)
    try:
        if resume_state is not None and int(resume_state["world_size"]) != world:
            raise RuntimeError(f"the checkpoint at step {resume_step} was written by {resume_state['world_size']} "
                               f"workers, this run has {world}; exact resume needs the same number")
        model_config = ModelConfig.from_dict(plan.model_config)
        torch.manual_seed(plan.seed)  # the same initial weights on every rank
        if plan.module_factory:
            module = _import(plan.module_factory)(plan, model_config)
        else:
            module = PretrainModule(model_config, OptimConfig(**plan.optim), ScheduleConfig(**plan.schedule),
                                    plan.max_steps, plan.block_documents, plan.compile)
        if resume_dir is not None and hasattr(module, "restore_weights"):
            module.restore_weights(resume_dir)
        elif resume_dir is not None:
            restored, _ = load_model(resume_dir)
            module.model.load_state_dict(restored.state_dict())
        else:
            torch.manual_seed(plan.seed + 1_000_003 * (rank + 1))  # per-rank dropout streams

        skip = plan.data_skip_rows + (resume_step - plan.data_start_step) * plan.global_rows
        train_batches = RankBatches(ray.train.get_dataset_shard("train"), world, rank, plan.micro_batch, skip)
        val_shard = ray.train.get_dataset_shard("val") if plan.eval_every else None
        val_batches = (RankBatches(val_shard, world, rank, plan.micro_batch, limit_rounds=plan.eval_batches)
                       if val_shard is not None else None)

        run_fs, run_root = _open(plan.run_location)
        csv = MetricsCsv(run_fs, posixpath.join(run_root, METRICS_CSV), resume_step) if rank == 0 else None
        device_name = torch.cuda.get_device_name() if plan.use_gpu and torch.cuda.is_available() else None
        progress = PretrainProgress(plan, rank, world, resume_step, resume_dir, resume_state, val_batches, csv,
                                    peak_flops(device_name, plan.precision))
        strategy = RayFSDPStrategy() if plan.strategy == "fsdp" else RayDDPStrategy(find_unused_parameters=False)
        logger = _tensorboard_logger(TensorBoardLogger, plan.run_location)
        trainer = pl.Trainer(
            max_steps=plan.max_steps - resume_step, max_epochs=-1, accumulate_grad_batches=plan.accumulate,
            precision=plan.precision, accelerator="gpu" if plan.use_gpu else "cpu", devices="auto",
            strategy=strategy, plugins=[RayLightningEnvironment()], callbacks=[progress], logger=logger,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            num_sanity_val_steps=0, limit_val_batches=0, use_distributed_sampler=False,
            log_every_n_steps=plan.log_every, default_root_dir=tempfile_root())
        trainer = prepare_trainer(trainer)
        if plan.max_steps > resume_step:
            trainer.fit(module, train_dataloaders=train_batches)
    finally:
        if held is not None:
            held.__exit__(None, None, None)


def _import(target: str) -> Any:
    """``package.module:attribute``; only ``training.`` modules (a plan is data, not code to load)."""
    import importlib

    module_name, _, attribute = target.partition(":")
    if not module_name.startswith("training."):
        raise ValueError(f"module_factory must live in the training package, got {target!r}")
    return getattr(importlib.import_module(module_name), attribute)


def _quiet_lightning() -> None:
    """Lightning's start-up banners (devices, tips) repeat on every worker; keep warnings only."""
    import logging
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")


def _resume_point(plan: TrainPlan, ray_checkpoint: Any, local_fs: Any) -> tuple[int, str | None, dict | None, Any]:
    """The newest of Ray's checkpoint (restored run or retry) and the one the driver found on disk."""
    from training.resume import read_state

    candidates = []
    held = None
    if ray_checkpoint is not None:
        held = ray_checkpoint.as_directory()
        path = held.__enter__()
        try:
            state = read_state(local_fs, path)
            candidates.append((int(state["step"]), path, state))
        except (FileNotFoundError, OSError, KeyError, ValueError):
            pass
    if plan.resume_path:
        fs, path = _open(plan.resume_path)
        if isinstance(fs, type(local_fs)):
            state = read_state(fs, path)
            candidates.append((int(state["step"]), path, state))
    if not candidates:
        return 0, None, None, held
    step, path, state = max(candidates, key=lambda c: c[0])
    return step, path, state, held


def _open(location: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    if "://" in location:
        fs, path = pafs.FileSystem.from_uri(location)
        return fs, path.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(location)


def _tensorboard_dir(run_location: str) -> str:
    return run_location.rstrip("/") + "/" + TENSORBOARD_DIR


def _tensorboard_logger(logger_cls: Any, run_location: str) -> Any:
    """TensorBoard event files in ``<run>/metrics/tb``. Lightning writes them through fsspec, which
    needs the store's own fsspec package (s3fs, gcsfs) for a URI run directory; without it, training
    goes on with ``metrics/train.csv`` alone (written through pyarrow; what the report reads) rather
    than failing at start-up."""
    location = _tensorboard_dir(run_location)
    if "://" in location:
        import warnings

        import fsspec

        try:
            fsspec.get_filesystem_class(location.split("://", 1)[0])
        except (ImportError, ValueError) as exc:
            warnings.warn(f"no TensorBoard logs in {location}: {exc}; metrics/train.csv is still written")
            return False
    return logger_cls(save_dir=location, name="", version="")


def tempfile_root() -> str:
    import tempfile

    return tempfile.gettempdir()


# --------------------------------------------------------------------------------------------------
# driver side


def open_stream(plan: TrainPlan, shards: ShardSet) -> StreamSlice:
    """Rows still to train on, from the newest complete checkpoint on disk (or the start)."""
    return stream_from(shards, plan.seed, plan.data_start_step * plan.global_rows,
                       (plan.max_steps - plan.data_start_step) * plan.global_rows)


def _val_rows(plan: TrainPlan, shards: ShardSet) -> Any:
    """The first rows of the val split that the evaluations use, materialized once in the object
    store (not on the driver): every evaluation of every worker then reads them without starting a
    read of its own. Read in order, so the same rows are used by a run and by its resume."""
    from ray.data import DataContext

    rows = plan.eval_batches * plan.num_workers * plan.micro_batch
    ctx = DataContext.get_current()
    previous = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True
    try:
        return read_rows(shards.fs, [f.path for f in shards.val], plan.block_documents,
                         tuple(plan.extra_columns)).limit(rows).materialize()
    finally:
        ctx.execution_options.preserve_order = previous


def _trainer_class(torch_trainer: type, keep_sigint_handler: bool) -> type:
    """``TorchTrainer``, or one without Ray Train's SIGINT handler for a caller that handles the signals.

    During ``fit`` Ray Train V2 replaces the SIGINT handler with one that asks its controller to abort
    and then lets the driver exit 1 with no message (and stays installed after ``fit``). ``gristmill
    run`` (``pipelines.interrupt``) turns Ctrl-C and SIGTERM into ``KeyboardInterrupt`` in the driver's
    ``ray.get`` instead, and the controller and its workers stop with the job: the embedded Ray is
    shut down, and on a cluster a job's (non-detached) actors end with its driver."""
    if keep_sigint_handler:
        return torch_trainer

    class Trainer(torch_trainer):  # type: ignore[misc, valid-type]
        def _register_sigint_handler(self, controller: Any) -> None:
            pass  # the caller turns SIGINT (and SIGTERM) into KeyboardInterrupt

    return Trainer


def fit(plan: TrainPlan, shards: ShardSet, cpus_per_worker: float, max_failures: int, keep: int | None,
        keep_sigint_handler: bool = True) -> Any:
    """Run the ``TorchTrainer`` to ``plan.max_steps``; returns Ray Train's ``Result``. A caller that
    handles Ctrl-C itself passes ``keep_sigint_handler=False`` (see :func:`_trainer_class`)."""
    import ray.train
    from ray.data import ExecutionOptions
    from ray.train.torch import TorchTrainer

    stream = open_stream(plan, shards)
    plan = dataclasses.replace(plan, data_skip_rows=stream.skip_rows)
    datasets = {"train": read_rows(shards.fs, stream.files, plan.block_documents, tuple(plan.extra_columns))}
    if plan.eval_every and shards.val:
        datasets["val"] = _val_rows(plan, shards)
    else:
        plan = dataclasses.replace(plan, eval_every=0)
    resources = {"CPU": cpus_per_worker}
    if plan.use_gpu:
        resources["GPU"] = 1
    run_fs, run_root = _open(plan.run_location)
    trainer = _trainer_class(TorchTrainer, keep_sigint_handler)(
        train_worker,
        train_loop_config=dataclasses.asdict(plan),
        scaling_config=ray.train.ScalingConfig(num_workers=plan.num_workers, use_gpu=plan.use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=CHECKPOINTS_DIR, storage_path=plan.run_location if "://" in plan.run_location else run_root,
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=keep)),
        datasets=datasets,
        # Unsplit and in order: each worker cuts its own rows from the one ordered stream (RankBatches).
        dataset_config=ray.train.DataConfig(datasets_to_split=[],
                                            execution_options=ExecutionOptions(preserve_order=True)),
    )
    return trainer.fit()
