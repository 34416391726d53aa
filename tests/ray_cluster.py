"""A throwaway multi-node Ray cluster on this machine, for tests that must not share the session Ray.

``ray.cluster_utils.Cluster`` starts a head node and extra worker nodes as separate raylets (each
with its own CPUs and object store), which is what a real cluster looks like to a driver: tasks and
blocks land on different nodes. It runs in a child process (``python -m tests.ray_cluster``) because
the test process already holds the session's Ray and one process cannot start a second one. The
child prints ``ADDRESS host:port`` once every node is up and tears the cluster down when its stdin
closes, so a test that dies still leaves nothing running. Writing ``kill-worker`` to its stdin kills
the newest worker node at once (no graceful drain, as when a machine dies); it answers ``KILLED``.

``cpus_per_node`` is what each raylet declares, not cores it owns: Ray only counts. Declaring a
few more than the machine has (2 nodes × 2 on a 2-core box) costs nothing on runs of small data,
whose time is Ray's scheduling latency; declaring 1 per node leaves an actor-pool step and its
readers one CPU to share (see docs/troubleshooting.md, CPU starvation).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a driver that must reach only the given cluster: no inherited RAY_ADDRESS
    (a user's shell or the CI may set one), the repo importable, one BLAS/OpenMP thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    return {**env, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


class LocalCluster(str):
    """The cluster's GCS address (a str, so it goes wherever an address does), able to kill a node."""

    proc: subprocess.Popen

    def kill_worker_node(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("kill-worker\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line.startswith("KILLED"):
            raise RuntimeError(f"the cluster could not kill a worker node: {line!r}")


@contextlib.contextmanager
def local_cluster(nodes: int = 2, cpus_per_node: int = 1, timeout: float = 300) -> Iterator[LocalCluster]:
    """Start a ``nodes``-node Ray cluster in a child process; yield its GCS address (``host:port``,
    what ``ray.init(address=…)`` and ``gristmill run --address`` take)."""
    env = clean_env()
    proc = subprocess.Popen([sys.executable, "-m", "tests.ray_cluster", str(nodes), str(cpus_per_node)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env=env)
    try:
        address = LocalCluster(_read_address(proc, timeout))
        address.proc = proc
        yield address
    finally:
        if proc.stdin:
            proc.stdin.close()  # the child shuts the cluster down and exits
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _read_address(proc: subprocess.Popen, timeout: float) -> str:
    import selectors
    import time

    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    assert proc.stdout is not None
    sel.register(proc.stdout, selectors.EVENT_READ)
    while time.monotonic() < deadline:
        if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        line = proc.stdout.readline()
        if line.startswith("ADDRESS "):
            return line.split(None, 1)[1].strip()
        if not line and proc.poll() is not None:
            break
    proc.kill()
    _, err = proc.communicate()
    raise RuntimeError(f"the local Ray cluster did not come up (exit {proc.returncode}):\n{(err or '')[-3000:]}")


def _start(nodes: int, cpus_per_node: int):
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus_per_node, "include_dashboard": False})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=cpus_per_node)
        cluster.wait_for_nodes()
        # wait_for_nodes counts registered raylets; check they are alive from a driver's view too
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        alive = len([n for n in ray.nodes() if n["Alive"]])
        ray.shutdown()
        if alive != nodes:
            raise RuntimeError(f"{alive} of {nodes} nodes alive")
    except BaseException:
        cluster.shutdown()
        raise
    return cluster


def _serve(nodes: int, cpus_per_node: int, attempts: int = 2) -> None:
    # Ray gives a raylet a fixed 30 s to register with the GCS (ray/_private/node.py); on a CI box
    # busy with other jobs that can run out, so a failed start is retried once from scratch.
    for attempt in range(attempts):
        try:
            cluster = _start(nodes, cpus_per_node)
            break
        except Exception:
            if attempt == attempts - 1:
                raise
    try:
        print(f"ADDRESS {cluster.address}", flush=True)
        for line in sys.stdin:  # until the parent closes our stdin (or dies)
            if line.strip() == "kill-worker":
                workers = [n for n in cluster.list_all_nodes() if n is not cluster.head_node]
                if workers:
                    cluster.remove_node(workers[-1], allow_graceful=False)
                print("KILLED" if workers else "NO-WORKER", flush=True)
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]))
