"""Shared fixtures. One local Ray per test session (ray.init costs 5–7 s here); end-to-end tests run
the real `gristmill` command in a subprocess that connects to that same Ray as a cluster client."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"
GRISTMILL = str(Path(sys.executable).with_name("gristmill"))


@pytest.fixture(scope="session")
def ray_session():
    import ray

    from pipelines.ray_session import connect

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    connect()  # quiet Ray Data the way the CLI does
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_address(ray_session) -> str:
    return ray_session.get_runtime_context().gcs_address


def run_gristmill(*args: str, address: str | None = None, timeout: float = 300, check: bool = True,
                  cwd: Path | None = None, ship_code: bool = False,
                  env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the installed `gristmill` command as a user would; connect to the test session's Ray.
    The packages are installed in this environment, so shipping them with each job (what a user on
    a cluster gets by default) is only exercised where a test asks for it."""
    cmd = [GRISTMILL, *args]
    if address and args and args[0] == "run":
        cmd += ["--address", address]
        if not ship_code:
            cmd += ["--set", "ray.ship_code=false"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd or REPO, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"gristmill {' '.join(args)} exited {proc.returncode}\n"
                             f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc


@pytest.fixture
def gristmill(ray_address):
    def _run(*args: str, **kwargs):
        return run_gristmill(*args, address=ray_address, **kwargs)

    return _run


@pytest.fixture(scope="session")
def demo_site(tmp_path_factory):
    """The bundled demo website, built once and served on 127.0.0.1 for the session."""
    from curation.crawl.demo_site import build, serve

    folder = tmp_path_factory.mktemp("demo-site")
    manifest = build(folder)
    server, base_url = serve(folder)
    yield base_url, manifest
    server.shutdown()


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: two on a shared 2-core box spin against each other (100x slower matmuls)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shakespeare_bpe():
    """The small byte-level BPE of tests/tiny_lm.py, trained once per session (it is deterministic)."""
    from tests.tiny_lm import train_tokenizer

    return train_tokenizer()
