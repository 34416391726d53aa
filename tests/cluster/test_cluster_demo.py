"""TWO-NODE RAY CLUSTER (slow: each run is a few Ray Data executions per global op, minutes on a
busy 2-core box): the curate stage of the demo (normalize, langid, Gopher quality and repetition,
FineWeb quality, PII, exact + MinHash dedup) run with `gristmill run
--address HOST:PORT` on a two-node Ray cluster started on this machine keeps exactly the same
documents, with the same text, as on the test session's single node, and rejects the same
documents at the same steps.

The cluster run goes the way a user's does (docs/cluster.md): the real CLI, an explicit address,
the gristmill packages shipped to the workers in the job's runtime_env (``ray.ship_code``, on by
default), a run directory every node can see. Input: a reduced slice of the demo's bundled data —
one Common Crawl JSONL file (mixed languages and quality), the Moby-Dick mirror (exact, re-spaced
and edited copies) and the 20 chapters it copies, so both dedup steps and the filters remove
something and the comparison means something.
"""

from __future__ import annotations

import json
import os
import subprocess

import pyarrow as pa
import pytest

from tests.conftest import DATA, GRISTMILL, REPO
from tests.helpers import manifest, read_dir, rejected_tables
from tests.ray_cluster import local_cluster

pytestmark = pytest.mark.slow

# the steps of the demo's curation (specs/demo.yaml before it became a pipeline), tokenize left out:
# the kept set is what the two runs must agree on
DEMO_STEPS = [
    {"normalize": {}},
    {"langid": {"keep": ["en"], "min_score": 0.65}},
    {"gopher_quality": {}},
    {"gopher_repetition": {}},
    {"fineweb_quality": {}},
    {"pii": {}},
    {"exact_dedup": {}},
    {"minhash_dedup": {"ngram": 5, "bands": 14, "rows": 8}},
]


def reduced_demo_spec(folder) -> str:
    mirror = DATA / "dedup" / "moby-dick-mirror.jsonl"
    chapters = sorted({json.loads(line)["of"] for line in mirror.read_text().splitlines()})
    spec = {
        "kind": "curate", "name": "demo-curate",
        "input": [
            {"format": "jsonl", "paths": [str(DATA / "warc" / "cc_en_head-0091.jsonl")], "url_field": "id"},
            {"format": "text", "paths": [str(DATA / "text" / "moby-dick" / c) for c in chapters]},
            {"format": "jsonl", "paths": [str(mirror)]},
        ],
        "steps": DEMO_STEPS,
    }
    path = folder / "demo-curate.yaml"
    path.write_text(json.dumps(spec, indent=1))  # JSON is YAML
    return str(path)


def kept(run) -> dict[int, str]:
    table = read_dir(run / "data")
    assert table is not None, f"{run} kept nothing"
    return dict(zip(table.column("doc_id").to_pylist(), table.column("text").to_pylist()))


def rejected(run) -> dict[str, list[int]]:
    return {step: sorted(t.column("doc_id").to_pylist()) for step, t in rejected_tables(run).items()}


def start_gristmill(*args: str, address: str, ship_code: bool) -> subprocess.Popen:
    """`gristmill run … --address ADDRESS` in the background (the tests' run_gristmill waits)."""
    cmd = [GRISTMILL, *args, "--address", address] + ([] if ship_code else ["--set", "ray.ship_code=false"])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)


def finish(proc: subprocess.Popen, what: str, timeout: float = 1200) -> None:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == 0, f"{what} exited {proc.returncode}\n--- stdout\n{out[-3000:]}\n--- stderr\n{err[-5000:]}"


@pytest.fixture(scope="module")
def two_runs(ray_address, tmp_path_factory):
    """Both runs at once: the one-node run on the session's Ray overlaps the cluster's start-up and
    its run (most of either is Ray scheduling latency, not CPU), which halves the test's wall time."""
    folder = tmp_path_factory.mktemp("cluster-demo")
    spec = reduced_demo_spec(folder)
    one, two = folder / "one-node", folder / "two-nodes"
    one_node = start_gristmill("run", spec, "--out", str(one), address=ray_address, ship_code=False)
    try:
        with local_cluster(nodes=2, cpus_per_node=2) as address:
            two_nodes = start_gristmill("run", spec, "--out", str(two), address=address, ship_code=True)
            finish(two_nodes, "the two-node run")
    finally:
        finish(one_node, "the one-node run")
    return one, two


def test_two_node_cluster_keeps_the_same_documents_as_one_node(two_runs):
    one, two = two_runs
    assert manifest(two)["ray"]["nodes"] == 2 and not manifest(two)["ray"]["local"]
    assert kept(two) == kept(one)  # doc ids and text
    assert rejected(two) == rejected(one)  # the same documents, rejected at the same steps


def test_the_comparison_is_not_vacuous(two_runs):
    one, _ = two_runs
    m = manifest(one)
    assert m["totals"]["balanced"]
    removed = rejected(one)
    # both dedup steps and at least the language and quality filters removed documents
    for step in ("langid", "exact_dedup", "minhash_dedup"):
        assert removed.get(step), f"{step} removed nothing: {sorted(removed)}"
    assert any(removed.get(s) for s in ("gopher_quality", "gopher_repetition", "fineweb_quality"))
    reasons = pa.concat_tables([rejected_tables(one)[s].select(["reason"]) for s in ("exact_dedup", "minhash_dedup")])
    assert set(reasons.column("reason").to_pylist()) == {"exact_duplicate", "near_duplicate"}
