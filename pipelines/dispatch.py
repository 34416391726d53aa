"""One validated spec → the runner of its kind. Used by ``gristmill run`` and by each stage of a
``kind: pipeline`` run, so a stage runs exactly as the same spec run on its own would."""

from __future__ import annotations

from typing import Any

from pipelines.manifest import Manifest
from pipelines.rundir import RunDir
from pipelines.runner import Reporter
from pipelines.specs import LoadedSpec


def execute_spec(loaded: LoadedSpec, run_dir: RunDir, reporter: Reporter, session: Any) -> Manifest:
    """Run ``loaded`` into ``run_dir`` on the connected Ray ``session`` (pipelines.ray_session.RaySession)."""
    if loaded.kind == "pipeline":
        from pipelines.pipeline_run import PipelineRun

        return PipelineRun(loaded, run_dir, reporter, session).execute()
    if loaded.kind == "classifier":
        from pipelines.classifier_run import ClassifierRun

        return ClassifierRun(loaded, run_dir, reporter).execute()
    if loaded.kind == "eval":
        from pipelines.eval_run import EvalRun

        return EvalRun(loaded, run_dir, reporter).execute()
    if loaded.kind == "finetune":
        from pipelines.finetune_run import FinetuneRun

        return FinetuneRun(loaded, run_dir, reporter, num_cpus=session.num_cpus).execute()
    if loaded.kind == "pretrain":
        from pipelines.pretrain_run import PretrainRun

        return PretrainRun(loaded, run_dir, reporter, num_cpus=session.num_cpus).execute()
    from pipelines.runner import CurateRun

    return CurateRun(loaded, run_dir, reporter, num_cpus=session.num_cpus, local=session.started_here).execute()
