"""RUN DIRECTORY ON S3 (slow, ~40 s): `gristmill run SPEC --out s3://bucket/runs/x` against a local S3
server (moto's, a real HTTP S3 API), then `gristmill status` and `gristmill report` on the URI, and
a rerun that resumes from what is in the bucket. The endpoint and credentials reach pyarrow through
the standard AWS environment variables, the way docs/cluster.md tells users to set them.

The run uses an embedded Ray started by the command (not the test session's Ray): its workers must
inherit the AWS variables, which the session's workers, started before this test, do not have.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from tests.conftest import DATA, run_gristmill

pytestmark = pytest.mark.slow

BUCKET = "gristmill-test"
RUN = f"s3://{BUCKET}/runs/x"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    server = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if server is None:
        pytest.skip("moto[server] is not installed (pip install -e '.[dev]')")
    port = _free_port()
    proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"moto_server did not start on port {port}") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def aws_env(s3_endpoint) -> dict[str, str]:
    # moto accepts any key; AWS_EC2_METADATA_DISABLED stops the SDK probing for an instance role
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": s3_endpoint, "AWS_EC2_METADATA_DISABLED": "true", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def bucket(s3_endpoint, aws_env) -> pafs.S3FileSystem:
    fs = pafs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1",
                           endpoint_override=s3_endpoint, allow_bucket_creation=True)
    fs.create_dir(BUCKET)
    return fs


@pytest.fixture(scope="module")
def s3_run(bucket, aws_env, tmp_path_factory):
    """One run into the bucket; cwd is an empty folder, so anything written locally by mistake shows."""
    folder = tmp_path_factory.mktemp("s3-run")
    corpus = folder / "input"
    corpus.mkdir()
    # a real web sample plus an exact copy of one of its documents (for exact_dedup to find)
    lines = (DATA / "warc" / "cc_en_head-0091.jsonl").read_text().splitlines()
    (corpus / "web.jsonl").write_text("\n".join(lines) + "\n")
    (corpus / "copy.jsonl").write_text(lines[0] + "\n")
    spec = {"kind": "curate", "name": "s3-run",
            "input": [{"format": "jsonl", "paths": [str(corpus / "*.jsonl")], "url_field": "id"}],
            # one global op (exact_dedup: a hash shuffle and a removal round in work/) and the tokenize
            # sink; minhash_dedup writes its rounds through the same WorkDir code, at twice the cost
            "steps": [{"normalize": {}}, {"gopher_quality": {}}, {"exact_dedup": {}},
                      {"tokenize": {"tokenizer": {"train": {"vocab_size": 300}}, "seq_len": 64, "val_fraction": 0.1}}]}
    spec_path = folder / "s3.yaml"
    spec_path.write_text(json.dumps(spec))
    workdir = folder / "cwd"
    workdir.mkdir()
    run = run_gristmill("run", str(spec_path), "--out", RUN, cwd=workdir, env=aws_env, timeout=900)
    return {"spec": spec_path, "cwd": workdir, "run": run, "rows": len(lines) + 1}


def _key(*parts: str) -> str:
    return "/".join((BUCKET, "runs", "x") + parts)


def _files(bucket, *parts: str) -> list[str]:
    infos = bucket.get_file_info(pafs.FileSelector(_key(*parts), recursive=True, allow_not_found=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File)


def _rows(bucket, *parts: str) -> int:
    return sum(pq.ParquetFile(f, filesystem=bucket).metadata.num_rows for f in _files(bucket, *parts)
               if f.endswith(".parquet"))


def _read_json(bucket, *parts: str):
    with bucket.open_input_stream(_key(*parts)) as f:
        return json.loads(f.read())


def test_the_run_lands_in_the_bucket_and_balances(s3_run, bucket):
    assert "run directory: " + RUN in s3_run["run"].stdout
    assert f"report: {RUN}/report/index.html" in s3_run["run"].stdout
    assert list(s3_run["cwd"].iterdir()) == []  # nothing went to a local folder named after the bucket
    manifest = _read_json(bucket, "manifest.json")
    assert manifest["status"] == "done" and manifest["totals"]["balanced"]
    kept, rejected = _rows(bucket, "data"), _rows(bucket, "rejected")
    assert kept == manifest["totals"]["kept"] and kept + rejected == s3_run["rows"] == manifest["totals"]["read"]
    exact = pq.read_table(_files(bucket, "rejected", "exact_dedup")[0], filesystem=bucket)
    assert exact.column("reason").to_pylist() == ["exact_duplicate"]  # the copy, found through S3 work files
    assert _files(bucket, "work", "02-exact_dedup", "removals")  # the dedup round's verified work files
    shards = _read_json(bucket, "shards", "manifest.json")
    assert shards["splits"]["train"]["documents"] + shards["splits"]["val"]["documents"] == kept
    assert bucket.get_file_info(_key("tokenizer", "tokenizer.json")).type == pafs.FileType.File
    assert not [f for f in _files(bucket) if ".tmp-" in f]  # every temporary was renamed or swept


def test_status_and_report_read_the_uri(s3_run, bucket, aws_env):
    status = run_gristmill("status", RUN, env=aws_env)
    assert "read 11 = kept" in status.stdout and "✓" in status.stdout and RUN in status.stdout
    report = run_gristmill("report", RUN, env=aws_env)
    assert f"report: {RUN}/report/index.html" in report.stdout
    stats = _read_json(bucket, "report", "stats.json")
    assert stats["run"] == "s3-run" and {"summary", "dedup"} <= set(stats["sections"])
    with bucket.open_input_stream(_key("report", "index.html")) as f:
        assert b"s3-run" in f.read()


def test_a_rerun_resumes_from_the_bucket(s3_run, bucket, aws_env):
    data_before = _files(bucket, "data")
    rerun = run_gristmill("run", str(s3_run["spec"]), "--out", RUN, cwd=s3_run["cwd"], env=aws_env, timeout=600)
    assert rerun.stderr.count("finished earlier with") == 3, rerun.stderr  # all three stages skipped
    assert _files(bucket, "data") == data_before


def test_a_missing_bucket_is_a_clear_error(s3_run, aws_env):
    proc = run_gristmill("run", str(s3_run["spec"]), "--out", "s3://no-such-bucket/runs/x", cwd=s3_run["cwd"],
                         env=aws_env, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "cannot write the run directory s3://no-such-bucket/runs/x" in proc.stderr
    assert "Bucket 'no-such-bucket' not found" in " ".join(proc.stderr.split())


def test_eval_and_generate_load_a_checkpoint_from_the_bucket(bucket, aws_env, tmp_path):
    """A pretraining run directory in the bucket: `kind: eval` names it by URI, each eval task copies
    the newest complete checkpoint to its node's cache (training/remote.py), and scores it exactly
    as the local copy scores."""
    from tests.test_remote_checkpoint import write_tiny_run

    local_run = write_tiny_run(tmp_path / "tiny")
    pafs.copy_files(str(local_run), f"{BUCKET}/runs/ckpt", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=bucket)
    text = tmp_path / "held_out.txt"
    text.write_text((DATA / "text" / "moby-dick" / "chapter_9.txt").read_text(encoding="utf-8")[:4000])
    env = {**aws_env, "GRISTMILL_CACHE": str(tmp_path / "cache")}
    scores = {}
    for label, checkpoint in (("bucket", f"{RUN[:-2]}/ckpt"), ("local", str(local_run))):
        spec = tmp_path / f"eval-{label}.yaml"
        spec.write_text(json.dumps({"kind": "eval", "name": f"eval-{label}", "checkpoints": [checkpoint],
                                    "tasks": [{"perplexity": {"files": [str(text)]}}], "batch_size": 4}))
        run_gristmill("run", str(spec), "--out", str(tmp_path / f"out-{label}"), env=env, timeout=600)
        results = json.loads((tmp_path / f"out-{label}" / "eval" / "results.json").read_text())
        scores[label] = results
    bucket_labels = json.dumps(scores["bucket"])
    assert "ckpt/step-000002" in bucket_labels, "named by its path in the store, not by its local copy"
    assert _metrics(scores["bucket"]) == _metrics(scores["local"]) and _metrics(scores["local"])
    done = run_gristmill("generate", f"{RUN[:-2]}/ckpt", "--prompt", "Call me", "--max-tokens", "4",
                         "--temperature", "0", "--json", env=env)
    assert len(json.loads(done.stdout.strip().splitlines()[-1])["tokens"]) == 4


def _metrics(results) -> list[float]:
    """Every number in the results, in order, less timings and paths (which differ by design)."""
    out = []

    def walk(value, key=""):
        if isinstance(value, dict):
            for k in sorted(value):
                walk(value[k], k)
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, float) and "second" not in key and "per_s" not in key:
            out.append(round(value, 6))

    walk(results)
    return out
