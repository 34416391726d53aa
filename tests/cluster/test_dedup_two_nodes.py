"""TWO-NODE RAY CLUSTER (slow, ~1 min): minhash_dedup on a two-node Ray cluster started on this
machine (``ray.cluster_utils.Cluster``, in a subprocess: the test session already holds a Ray) keeps
exactly the same documents as on the session's single node. The cluster run uses the distributed
(large-star / small-star) components and LSH by hash shuffles, the single node the union-find task
and LSH in one task per band group (``lsh: auto`` on a small set), so the backends are compared too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO
from tests.test_dedup_ops import near_duplicate_corpus, run_op

pytestmark = pytest.mark.slow

CLUSTER_SCRIPT = textwrap.dedent("""
    import json, sys
    import pyarrow.fs as pafs, pyarrow.parquet as pq, ray
    from ray.cluster_utils import Cluster
    from curation.operator import GlobalContext, get_op

    corpus, root = sys.argv[1], sys.argv[2]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    op_cls = get_op("minhash_dedup")
    op = op_cls(op_cls.Config(components="distributed", lsh="shuffle", partitions=2))
    ds = ray.data.read_parquet(corpus).repartition(4)
    out = op.apply(ds, GlobalContext(root + "/work", pafs.LocalFileSystem(), 2, run_root=root))
    kept = sorted(r["doc_id"] for b in out.iter_batches(batch_format="pyarrow", batch_size=None)
                  for r in b.select(["doc_id", "reason"]).to_pylist() if r["reason"] is None)
    print("KEPT " + json.dumps(kept))
    ray.shutdown()
    cluster.shutdown()
""")


def test_two_node_cluster_keeps_the_same_documents(ray_session, tmp_path):
    table, _ = near_duplicate_corpus(16)
    pq.write_table(table, tmp_path / "corpus.parquet")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    proc = subprocess.run([sys.executable, "-c", CLUSTER_SCRIPT, str(tmp_path / "corpus.parquet"), str(tmp_path / "two")],
                          capture_output=True, text=True, timeout=600, cwd=REPO, env={**env, "PYTHONPATH": str(REPO)})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("KEPT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    two_nodes = json.loads(lines[0][5:])

    one_node = run_op(ray_session, "minhash_dedup", {"components": "local"}, table, tmp_path / "one")
    kept = sorted(r["doc_id"] for r in one_node.select(["doc_id", "reason"]).to_pylist() if r["reason"] is None)
    assert two_nodes == kept
    assert len(kept) < table.num_rows  # something was removed, so the comparison means something
    assert any((tmp_path / "two" / "work").glob("cc-*-small/_round.json"))  # the distributed backend ran
    assert json.loads((tmp_path / "one" / "work" / "02-dedup" / "lsh-000" / "_round.json").read_text())["backend"] == "local"
    assert json.loads((tmp_path / "two" / "work" / "lsh-000" / "_round.json").read_text())["backend"] == "shuffle"
