"""Connecting to Ray: an embedded local instance by default, or an existing cluster.

Address precedence: ``--address`` on the command line, then ``ray.address`` in the spec, then the
``RAY_ADDRESS`` environment variable. With none of them, a local Ray is started for the run and shut
down after it. On a cluster, the four gristmill packages travel to the workers in the job's
``runtime_env`` (``py_modules``), so the cluster needs only the third-party dependencies installed.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from typing import Any

import ray

from curation import faults
from pipelines import interrupt


@dataclass
class RaySession:
    address: str | None
    started_here: bool
    num_cpus: float

    def close(self) -> None:
        if self.started_here and ray.is_initialized():
            with interrupt.shielded():  # a second Ctrl-C / SIGTERM must not cut the shutdown short
                session_dir = _session_dir()
                ray.shutdown()
                interrupt.reinstall()  # had Ray's native handler been installed, its removal reset SIGTERM
                _reap(session_dir)


def _session_dir() -> str | None:
    node = getattr(ray._private.worker, "_global_node", None)
    try:
        return node.get_session_dir_path() if node is not None else None
    except Exception:  # noqa: BLE001 - only used to find stragglers
        return None


_RAY_PROGRAMS = (b"/ray/_private/", b"/ray/core/src/ray/", b"/ray/dashboard/", b"/ray/autoscaler/")


def _reap(session_dir: str | None) -> int:
    """SIGKILL what is left of the embedded Ray after ``ray.shutdown`` (Linux): Ray programs whose command
    line names its session folder. ``ray.shutdown`` ends the GCS, the raylet and through it the workers
    (and the kernel ends the first two if the driver dies: Ray asks it to). But a SIGTERM sent to the
    whole process group (``kill -TERM -PGID``, some schedulers) reaches the raylet too, and a worker it
    was forking at that moment missed the signal, never connected, and lingered for up to a minute."""
    if not session_dir or not os.path.isdir("/proc"):
        return 0
    needle = session_dir.encode()
    killed = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            # Ray's own programs only: a `tail -f` of the session's logs names the folder too
            if needle not in cmdline or not any(m in cmdline for m in _RAY_PROGRAMS):
                continue
            os.kill(int(entry), signal.SIGKILL)
            killed += 1
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return killed


class _DropNoise(logging.Filter):
    """Lines Ray logs that say nothing actionable to a gristmill user."""

    NOISE = ("Progress bars disabled", "Token authentication is enabled", "Generated new authentication token",
             # Ray Data's note that a task failed, advising DataContext.max_errored_blocks (no spec field):
             # the error itself reaches the CLI, which reports it (a full disk in one line)
             "An exception was raised from a task of operator",
             # Ray Data's preface to a user-code error (where its stack frames went): the CLI says
             # what failed itself, and an unexpected error keeps its traceback
             "Exception occurred in user code, with the abbreviated stack trace")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(n in message for n in self.NOISE)


def quiet_worker_logs() -> None:
    """Run in every Ray worker process as it starts (``worker_process_setup_hook``), so what workers
    log reaches the console as quietly as the driver's own lines. Ray Train V2's placement-group
    cleaner asks the state API whether the controller lives, once a second; without ``ray[default]``
    (no dashboard, no state API) each failed ask logs a warning, ~90 lines in a ``make demo``, none of
    them actionable: only its errors show. Ray Data's per-dataset INFO lines in a training worker
    ("execution finished", which dataset may log) and the driver's usual noise are dropped too."""
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)
    _configure_ray_data()  # imports ray.data (which sets up its loggers), then quiets them as in the driver
    _install_noise_filter()


def _runtime_env() -> dict[str, Any]:
    env: dict[str, Any] = {"worker_process_setup_hook": "pipelines.ray_session.quiet_worker_logs"}
    if faults.runtime_env_vars():  # the reliability suite's kill points (empty in normal runs)
        env["env_vars"] = faults.runtime_env_vars()
    return env


def _install_noise_filter() -> None:
    for name in ("ray", "ray.data"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
        for handler in logger.handlers:
            if not any(isinstance(f, _DropNoise) for f in handler.filters):
                handler.addFilter(_DropNoise())


def _configure_ray_data() -> None:
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # the CLI draws its own progress from the write summaries
    ctx.print_on_execution_start = False
    # Ray 2.60's new Parquet path (DataSourceV2) is off, for two reasons. It reads a path given twice
    # only once: a training stream repeats its files over epochs, and 3 epochs of 3 files read 1
    # (tests/test_training_reads.py). And it starts 32 footer-reading actors for every read_parquet
    # call (RAY_DATA_PARQUET_FOOTER_NUM_ACTORS), each a fresh worker process: reading the demo's
    # stream output (343 small files) took ~20 s on 2 cores, the V1 path 1.8-3.6 s. Every
    # read_parquet runs on the driver, so the driver's context decides.
    ctx.use_datasource_v2 = False
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
        _configure_ray_data()
        _install_noise_filter()
        return RaySession(address, False, ray.cluster_resources().get("CPU", 1.0))
    if address:
        runtime_env = _runtime_env()
        if ship_code:
            import curation
            import eval as eval_pkg
            import pipelines
            import training

            runtime_env["py_modules"] = [pipelines, curation, training, eval_pkg]
        _init(address=address, runtime_env=runtime_env, logging_level=logging.WARNING, log_to_driver=True)
        started = False
    else:
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
        # address="local": always a fresh embedded Ray. Without it ray.init() attaches to any
        # cluster already running on this machine (`ray start`, another user's job).
        _init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING,
              runtime_env=_runtime_env(),
              object_store_memory=object_store_mb * (1 << 20) if object_store_mb else None,
              log_to_driver=True, configure_logging=True)
        started = True
    _configure_ray_data()  # imports ray.data, which sets up its own log handlers: filter them too
    _install_noise_filter()
    return RaySession(address, started, ray.cluster_resources().get("CPU", 1.0))


def _init(**kwargs: Any) -> None:
    """``ray.init``, leaving signal handling to :mod:`pipelines.interrupt` afterwards.

    Under ``gristmill run`` the driver's core worker is created without Ray's C++ failure-signal handler
    (``RAY_DISABLE_FAILURE_SIGNAL_HANDLER``, read when the core worker starts; Ray's own processes and
    workers keep theirs): for SIGTERM it printed ``*** SIGTERM received`` with an unsymbolized native
    stack, and ``ray.shutdown`` uninstalls it by setting SIGTERM back to SIG_DFL behind Python's back,
    so a second SIGTERM during the shutdown killed the driver outright. Driver crashes are reported by
    :mod:`faulthandler` instead (the CLI enables it).

    ``ray.init`` also sets a SIGTERM handler that calls ``sys.exit(15)``; it is replaced as soon as
    ``ray.init`` returns. A SIGTERM that lands while it starts the embedded Ray surfaces as that
    ``SystemExit(15)``, a Ctrl-C as ``KeyboardInterrupt``: either way what was started is shut down
    and the interrupt goes on as ``KeyboardInterrupt``."""
    if interrupt.active():
        from ray._private import ray_constants

        ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True
    try:
        ray.init(**kwargs)
    except (KeyboardInterrupt, SystemExit) as exc:
        interrupt.reinstall()
        if isinstance(exc, SystemExit):
            if exc.code != signal.SIGTERM or not interrupt.active():
                raise
            interrupt.record(signal.SIGTERM)
        with interrupt.shielded():
            try:
                ray.shutdown()
            except Exception:  # noqa: BLE001 - a half-started Ray; its processes die with this one anyway
                pass
        raise KeyboardInterrupt from None
    interrupt.reinstall()


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
