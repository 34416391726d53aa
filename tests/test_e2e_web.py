"""End-to-end web ingestion: WARC folders and a live crawl of the demo website, through the
`gristmill` command on the session's Ray."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.test_e2e_curate import assert_balanced
from tests.helpers import read_dir, rejected_tables

pytestmark = pytest.mark.e2e


def test_warc_folder_spec(gristmill, tmp_path):
    run = tmp_path / "run"
    gristmill("run", "specs/warc-folder.yaml", "--out", str(run))
    m = assert_balanced(run)
    kept = read_dir(run / "data")
    assert kept.num_rows > 10
    assert "content" not in kept.column_names, "raw HTML is dropped once extracted"
    assert {"url", "warc_record_id", "title", "extract.charset", "length.words"} <= set(kept.column_names)
    # response records are web pages; wget also archives its own log as a text/plain `resource` record
    assert all(u.startswith(("http", "metadata://gnu.org/software/wget/")) for u in kept.column("url").to_pylist())
    quarantined = rejected_tables(run).get("_ingest")
    # the Internet Archive crawl holds images and other non-HTML responses: counted by content type
    details = Counter(r["reason_detail"] for r in quarantined.to_pylist() if r["reason"] == "unsupported_content_type")
    assert any(d.startswith("image/") for d in details), details
    assert m["totals"]["read"] == m["totals"]["kept"] + sum(m["totals"]["rejected"].values()) + m["totals"]["quarantined"]


def test_crawl_demo_site_spec(gristmill, demo_site, tmp_path):
    base_url, site = demo_site
    run = tmp_path / "run"
    proc = gristmill("run", "specs/crawl-site.yaml", "--out", str(run), env={"GRISTMILL_SEEDS": base_url})
    assert "file(s) ready" in proc.stderr
    m = assert_balanced(run)
    warcs = list((run / "inputs" / "00-crawl").glob("*.warc.gz"))
    assert warcs, "the crawl writes WARC files into the run directory"
    kept = read_dir(run / "data")
    urls = set(kept.column("url").to_pylist())
    assert not [u for u in urls if "/private/" in u], "robots.txt disallows /private/"
    articles = {base_url.rstrip("/") + p for p in site["kinds"]["article"]}
    assert len(articles & urls) >= 0.9 * len(articles), "the article pages are crawled and extracted"
    everything_read = m["totals"]["read"]
    assert everything_read >= len(site["pages"]) - len(site["kinds"].get("private", []))
    # a rerun crawls nothing new and skips every stage
    again = gristmill("run", "specs/crawl-site.yaml", "--out", str(run), env={"GRISTMILL_SEEDS": base_url})
    assert "skip 01-stream" in again.stderr
