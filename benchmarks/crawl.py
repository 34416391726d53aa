"""Crawler throughput: pages/s crawling the demo site (`curation.crawl.demo_site`, ~90 public pages)
served on 127.0.0.1 by the standard library's threaded HTTP server, at two politeness settings:

- ``fast``: ``delay_s: 0``, ``per_host_concurrency: 4`` — the crawler's own cost (one partition, in
  process; best of ``--repeat`` runs), plus the same crawl through `crawl()` with a Ray task;
- ``polite``: the defaults (``delay_s: 0.5``, ``per_host_concurrency: 2``) on ``--polite-pages`` pages
  — bounded by the delay, as it should be (one request per 0.5 s per host).

When GNU wget is installed, the same site is also crawled by ``wget --recursive --warc-file``
(robots on, no wait) as a reference. Every run writes WARC; output is JSON.

    python -m benchmarks.crawl [--repeat 3] [--polite-pages 20] [--no-ray]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine
from curation.crawl.config import CrawlConfig
from curation.crawl.crawler import crawl_partition
from curation.crawl.demo_site import build, serve


def _in_process(config: CrawlConfig, work: Path) -> dict:
    out = Path(tempfile.mkdtemp(dir=work))
    start = time.perf_counter()
    summary = crawl_partition(config, str(out), 0, 1, config.seed_urls(), config.max_pages)
    elapsed = time.perf_counter() - start
    warc_bytes = sum(p.stat().st_size for p in out.glob("*.warc.gz"))
    return {"pages": summary["pages"], "requests": summary["requests"], "seconds": round(elapsed, 3),
            "pages_per_s": round(summary["pages"] / elapsed, 1), "warc_bytes": warc_bytes}


def _with_ray(config: CrawlConfig, work: Path) -> dict:
    import ray

    from curation.crawl.crawler import crawl

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    init_s = time.perf_counter() - start
    try:
        out = Path(tempfile.mkdtemp(dir=work))
        start = time.perf_counter()
        crawl(config, str(out))
        elapsed = time.perf_counter() - start
        pages = json.loads((out / "crawl-summary.json").read_text())["totals"]["pages"]
    finally:
        ray.shutdown()
    return {"pages": pages, "seconds": round(elapsed, 3), "pages_per_s": round(pages / elapsed, 1),
            "ray_init_s": round(init_s, 3), "note": "includes starting one Ray worker for the task"}


def _wget(base: str, work: Path) -> dict | None:
    wget = shutil.which("wget")
    if not wget:
        return None
    out = Path(tempfile.mkdtemp(dir=work))
    start = time.perf_counter()
    subprocess.run([wget, "--recursive", "--level=3", "--no-verbose", "--wait=0", "-e", "robots=on",
                    "--warc-file", str(out / "wget"),
                    "--directory-prefix", str(out / "files"), "--user-agent", "GristmillBench/0.1",
                    base + "/"], check=False, capture_output=True, timeout=300)
    elapsed = time.perf_counter() - start
    pages = sum(1 for p in (out / "files").rglob("*") if p.is_file() and p.name != "robots.txt")
    return {"pages": pages, "seconds": round(elapsed, 3), "pages_per_s": round(pages / elapsed, 1),
            "command": "wget --recursive --level=3 --wait=0 -e robots=on --warc-file (one connection)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--polite-pages", type=int, default=20)
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gristmill-bench-crawl-"))
    try:
        site = work / "site"
        manifest = build(site)
        server, base = serve(site)
        try:
            seed = [base + "/"]
            fast = CrawlConfig(format="crawl", seeds=seed, allow_private=True, delay_s=0, per_host_concurrency=4)
            runs = [_in_process(fast, work) for _ in range(args.repeat)]
            polite = CrawlConfig(format="crawl", seeds=seed, allow_private=True, max_pages=args.polite_pages)
            results = {
                "site": {"pages": len(manifest["pages"]), "public_pages": sum(p["kind"] != "private" for p in manifest["pages"])},
                "fast": {"settings": {"delay_s": 0, "per_host_concurrency": 4}, "runs": runs,
                         "best_pages_per_s": max(r["pages_per_s"] for r in runs)},
                "polite": {"settings": {"delay_s": polite.delay_s, "per_host_concurrency": polite.per_host_concurrency,
                                        "max_pages": args.polite_pages}, **_in_process(polite, work)},
            }
            if not args.no_ray:
                results["fast_ray"] = _with_ray(fast, work)
            peer = _wget(base, work)
            if peer:
                results["wget"] = peer
        finally:
            server.shutdown()
            server.server_close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"benchmark": "crawl", "machine": machine(), **results}, indent=1))


if __name__ == "__main__":
    main()
