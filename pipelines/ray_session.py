"""Connecting to Ray: an embedded local instance by default, or an existing cluster.

Address precedence: ``--address`` on the command line, then ``ray.address`` in the spec, then the
``RAY_ADDRESS`` environment variable. With none of them, a local Ray is started for the run and shut
down after it. On a cluster, the four gristmill packages travel to the workers in the job's
``runtime_env`` (``py_modules``), so the cluster needs only the third-party dependencies installed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import ray

from curation import faults


@dataclass
class RaySession:
    address: str | None
    started_here: bool
    num_cpus: float

    def close(self) -> None:
        if self.started_here and ray.is_initialized():
            ray.shutdown()


class _DropNoise(logging.Filter):
    """Ray logs two start-up warnings that say nothing actionable to a gristmill user."""

    NOISE = ("Progress bars disabled", "Token authentication is enabled", "Generated new authentication token")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(n in message for n in self.NOISE)


def _install_noise_filter() -> None:
    for name in ("ray", "ray.data"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
        for handler in logger.handlers:
            if not any(isinstance(f, _DropNoise) for f in handler.filters):
                handler.addFilter(_DropNoise())


def _quiet_ray_data() -> None:
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # the CLI draws its own progress from the write summaries
    ctx.print_on_execution_start = False
    # Ray Data warns once per process that its bars are off; we turned them off on purpose.
    from ray.util.debug import log_once

    log_once("ray_data_progress_manager_disabled")
    for name in ("ray.data", "ray.data._internal.execution.streaming_executor"):
        logging.getLogger(name).setLevel(logging.WARNING)


def connect(cli_address: str | None = None, spec_address: str | None = None, num_cpus: int | None = None,
            object_store_mb: int | None = None, ship_code: bool = True) -> RaySession:
    address = cli_address or spec_address or os.environ.get("RAY_ADDRESS") or None
    _install_noise_filter()
    if ray.is_initialized():  # an embedding program (or a test session) already connected
        _quiet_ray_data()
        return RaySession(address, False, ray.cluster_resources().get("CPU", 1.0))
    if address:
        runtime_env = {}
        if ship_code:
            import curation
            import eval as eval_pkg
            import pipelines
            import training

            runtime_env["py_modules"] = [pipelines, curation, training, eval_pkg]
        if faults.runtime_env_vars():  # the reliability suite's kill points (empty in normal runs)
            runtime_env["env_vars"] = faults.runtime_env_vars()
        ray.init(address=address, runtime_env=runtime_env or None, logging_level=logging.WARNING,
                 log_to_driver=True)
        started = False
    else:
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
        # address="local": always a fresh embedded Ray. Without it ray.init() attaches to any
        # cluster already running on this machine (`ray start`, another user's job).
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING,
                 runtime_env={"env_vars": faults.runtime_env_vars()} if faults.runtime_env_vars() else None,
                 object_store_memory=object_store_mb * (1 << 20) if object_store_mb else None,
                 log_to_driver=True, configure_logging=True)
        started = True
    _install_noise_filter()
    _quiet_ray_data()
    return RaySession(address, started, ray.cluster_resources().get("CPU", 1.0))


def cluster_size(local: bool) -> dict:
    """The Ray cluster a run used, for the manifest and the report: alive nodes and their CPUs, GPUs
    and memory (``ray.nodes()``), and whether it was an embedded local Ray."""
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        resources = ray.cluster_resources()
    except Exception:  # noqa: BLE001 - a report detail must never fail a run (e.g. a limited client)
        return {"local": local, "ray_version": ray.__version__}
    return {"nodes": len(nodes), "cpus": resources.get("CPU", 0.0), "gpus": resources.get("GPU", 0.0),
            "memory_gb": round(resources.get("memory", 0.0) / (1 << 30), 1), "local": local,
            "ray_version": ray.__version__}
