"""Every hostile target of tests/test_crawl.py, plus the ones it lacks, crawled together by one real
`gristmill run` (format: crawl → extract → normalize): every URL ends fetched or refused with its
reason in the crawl log, every archived page ends kept, rejected or quarantined, and the crawl ends
within its time limits however the servers behave."""

from __future__ import annotations

import gzip
import json
import threading
import time
from http.server import ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from tests.helpers import all_ids, manifest, rejected_tables
from tests.test_crawl import _Hostile

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]

BOMB = gzip.compress(b"\0" * (40 << 20))  # 40 MB of zeros in ~40 KB: a decompression bomb


class _MoreHostile(_Hostile):
    """test_crawl's hostile server plus: silence, a lying Content-Length, garbage instead of HTTP, a
    gzip bomb, a redirect without Location, redirects to file:// and to the cloud metadata name,
    and an endless link maze."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        path = self.path.partition("?")[0]
        if path == "/silent":  # accepts the connection, never answers
            self.hits.append(self.path)
            self.stop.wait(5)
        elif path == "/short-body":
            self.hits.append(self.path)
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5000\r\n\r\n<p>only this")
            self.wfile.flush()
            self.close_connection = True
        elif path == "/garbage":
            self.hits.append(self.path)
            self.wfile.write(b"\x00\x01this is not HTTP at all\r\n\r\n")
            self.close_connection = True
        elif path == "/gzip-bomb":
            self.hits.append(self.path)
            self._send(200, [("Content-Type", "text/html"), ("Content-Encoding", "gzip"),
                             ("Content-Length", str(len(BOMB)))], BOMB)
        elif path == "/no-location":
            self.hits.append(self.path)
            self._send(302, [("Content-Length", "0")])
        elif path == "/to-file":
            self.hits.append(self.path)
            self._send(302, [("Location", "file:///etc/passwd"), ("Content-Length", "0")])
        elif path == "/to-metadata-name":
            self.hits.append(self.path)
            self._send(302, [("Location", "http://metadata.google.internal/computeMetadata/v1/"),
                             ("Content-Length", "0")])
        elif path.startswith("/maze/"):
            self.hits.append(self.path)
            n = int(path.rsplit("/", 1)[1])
            body = (f"<html><body><p>{'maze room text ' * 30}</p><a href='/maze/{2 * n}'>l</a>"
                    f"<a href='/maze/{2 * n + 1}'>r</a></body></html>").encode()
            self._send(200, [("Content-Type", "text/html"), ("Content-Length", str(len(body)))], body)
        else:
            super().do_GET()


@pytest.fixture
def hostile_server():
    _MoreHostile.hits = []
    _MoreHostile.stop.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _MoreHostile)
    server.daemon_threads = True
    server.block_on_close = False
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    _MoreHostile.stop.set()
    server.shutdown()
    server.server_close()


OLD = ["ok", "drip", "drip-headers", "stall", "loop", "cycle-a", "big", "big-chunked", "image", "to-metadata",
       "to-loopback", "to-private-name"]
NEW = ["silent", "short-body", "garbage", "gzip-bomb", "no-location", "to-file", "to-metadata-name", "maze/1"]

SPEC = """\
kind: curate
name: hostile
input:
  - format: crawl
    seeds: {seeds}
    allow_networks: ["127.0.0.1/32"]   # the test server only: 127.0.0.2, 10/8, 169.254/16 stay refused
    same_host: true
    max_pages: 40
    max_depth: 6
    delay_s: 0
    per_host_concurrency: 8
    connect_timeout_s: 2.0
    read_timeout_s: 2.0                # margins a loaded 2-core box keeps: a drip never waits 2 s
    total_timeout_s: 3.0
    max_redirects: 3
    max_body_bytes: 65536
steps:
  - extract: {{timeout_s: 5}}
  - normalize: {{}}
"""


def test_all_hostile_targets_in_one_crawl(gristmill, hostile_server, tmp_path):
    seeds = [f"{hostile_server}/{p}" for p in OLD + NEW]
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(seeds=json.dumps(seeds)))
    run = tmp_path / "run"
    started = time.monotonic()
    gristmill("run", str(spec), "--out", str(run), timeout=300)
    elapsed = time.monotonic() - started

    log = {}
    for path in sorted((run / "inputs" / "00-crawl").glob("*.log.jsonl")):
        for line in path.read_text().splitlines():
            if line:
                entry = json.loads(line)
                log[entry["url"]] = entry  # the last outcome of each URL
    print(json.dumps(log, indent=1))  # shown when an assertion fails
    rel = {url.removeprefix(hostile_server): e for url, e in log.items()}

    # every URL the crawl met ended fetched, redirected (its target is logged in turn), or with a reason
    assert all(e["outcome"] in ("fetched", "redirect") or e.get("reason") for e in log.values())
    for seed in OLD + NEW:
        assert any(u == f"/{seed}" or u.startswith(f"/{seed.split('?')[0]}") for u in rel), f"/{seed} never logged"
    reasons = {u: e.get("reason") for u, e in rel.items()}
    assert reasons["/ok"] is None and rel["/ok"]["outcome"] == "fetched"
    assert reasons["/drip"] == "deadline_exceeded" and reasons["/silent"] in ("timeout", "deadline_exceeded")
    assert reasons["/garbage"] == "bad_response" and reasons["/short-body"] == "incomplete_body"
    assert reasons["/to-file"] == "bad_redirect" and reasons["/no-location"] == "http_302"
    assert reasons["/cycle-a"] == "redirect_loop" and reasons["/loop?n=4"] == "too_many_redirects"
    assert reasons["/big"] == "truncated"
    port = urlsplit(hostile_server).port
    assert log["http://169.254.169.254/latest/meta-data/"]["reason"] == "address_refused"
    assert log[f"http://127.0.0.2:{port}/ok"]["reason"] == "address_refused"
    # the metadata service's name: refused by address where it resolves, a DNS error where it does not
    assert [e["reason"] for u, e in log.items() if u.startswith("http://metadata.google.internal/")] in (
        ["address_refused"], ["dns_error"])
    for path in ("/garbage", "/no-location", "/to-file", "/short-body", "/gzip-bomb"):
        entry = rel.get(path)
        assert entry is not None and (entry["outcome"] == "fetched" or entry.get("reason")), (path, entry)
    # the maze is bounded by max_pages / max_depth, not by the server's patience
    maze = [u for u in rel if u.startswith("/maze/")]
    assert 1 < len(maze) <= 40 and max(rel[u]["depth"] for u in maze) <= 6

    # the pages that were archived are all accounted for in the curate run
    totals = manifest(run)["totals"]
    assert totals["balanced"] and totals["read"] == len(set(all_ids(run))) == len(all_ids(run)), totals
    quarantined = rejected_tables(run)["_ingest"].to_pylist()
    assert all(r["reason"] and r["reason_detail"] for r in quarantined)
    by_url = {r["url"].removeprefix(hostile_server): r["reason"] for r in quarantined}
    # the crawler archives the 40 KB of gzip as sent; the reader refuses to inflate it past max_body_bytes
    assert by_url["/gzip-bomb"] == "too_large" and by_url["/big"] == "truncated_record", by_url
    # bounded by the per-request deadlines (3 s) on 8 connections, plus Ray and the CLI
    assert elapsed < 240, f"the crawl took {elapsed:.0f}s"
