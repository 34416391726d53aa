"""The crawler: URL normalisation, address safety, robots.txt, and real crawls of local servers — the
demo site (robots, scope, limits, WARC output, resume) and a hostile server (drip, stalls, redirect
loops, oversized bodies, wrong types, redirects to private addresses), each ending with its reason."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pydantic import ValidationError

from curation.crawl.config import CrawlConfig
from curation.crawl.crawler import crawl_partition, crawl_totals, partition_of, split_budget
from curation.crawl.demo_site import build, serve
from curation.crawl.fetch import FetchError, Fetcher
from curation.crawl.robots import parse_robots
from curation.crawl.safety import AddressPolicy, AddressRefused, address_problem
from curation.crawl.urls import BadURL, normalize_url

pytestmark = pytest.mark.timeout(60)


def cfg(**kw) -> CrawlConfig:
    return CrawlConfig(format="crawl", **kw)


def log_entries(out: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(out.glob("*.log.jsonl")) for line in p.read_text().splitlines() if line]


def warc_responses(out: Path) -> dict[str, bytes]:
    from warcio.archiveiterator import ArchiveIterator

    pages = {}
    for path in sorted(out.glob("*.warc.gz")):
        with open(path, "rb") as f:
            for record in ArchiveIterator(f):
                if record.rec_type == "response":
                    pages[record.rec_headers.get_header("WARC-Target-URI")] = record.content_stream().read()
    return pages


# ------------------------------------------------------------------------------ URL normalisation


@pytest.mark.parametrize("raw, expected", [
    ("HTTP://Example.COM:80/a/./b/../c?x=1#frag", "http://example.com/a/c?x=1"),
    ("https://example.com:443", "https://example.com/"),
    ("https://example.com:8443/", "https://example.com:8443/"),
    ("http://user:pw@example.com/", "http://example.com/"),
    ("http://example.com/%7euser/%2fx%2F", "http://example.com/~user/%2Fx%2F"),
    ("http://example.com/a b/ü?q=a b", "http://example.com/a%20b/%C3%BC?q=a%20b"),
    ("http://example.com/?", "http://example.com/"),
    ("http://example.com/?b=2&a=1", "http://example.com/?b=2&a=1"),  # query order kept
    ("http://bücher.example./x", "http://xn--bcher-kva.example/x"),
    ("http://[::1]:8080/x", "http://[::1]:8080/x"),
    ("http://example.com/a/..", "http://example.com/"),
])
def test_normalize_url(raw, expected):
    assert normalize_url(raw) == expected
    assert normalize_url(expected) == expected  # idempotent


def test_normalize_relative_and_bad():
    assert normalize_url("../c.html#x", "http://h.example/a/b/index.html") == "http://h.example/a/c.html"
    assert normalize_url("//other.example/p", "https://h.example/") == "https://other.example/p"
    with pytest.raises(BadURL) as e:
        normalize_url("ftp://example.com/")
    assert e.value.reason == "unsupported_scheme"
    for bad in ("http://", "http://exa mple.com/", "http://example.com:99999/"):
        with pytest.raises(BadURL):
            normalize_url(bad)


# ---------------------------------------------------------------------------------------- safety


@pytest.mark.parametrize("address, kind", [
    ("127.0.0.1", "loopback"), ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"),
    ("169.254.1.1", "link-local"), ("224.0.0.1", "multicast"), ("0.0.0.0", "unspecified"),
    ("240.0.0.1", "reserved"), ("100.64.0.1", "shared"), ("::1", "loopback"), ("::", "unspecified"),
    ("fe80::1", "link-local"), ("fc00::1", "private"), ("ff02::1", "multicast"),
    ("169.254.169.254", "metadata"), ("fd00:ec2::254", "metadata"), ("100.100.100.200", "metadata"),
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.0.0.1", "private"), ("::ffff:169.254.169.254", "metadata"),
    ("2002:7f00:1::", "loopback"), ("64:ff9b::a00:1", "private"),
])
def test_refused_addresses(address, kind):
    problem = address_problem(address)
    assert problem is not None and kind in problem


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses(address):
    assert address_problem(address) is None


def test_policy_checks_resolved_addresses():
    answers = {"meta.test": ["169.254.169.254"], "mixed.test": ["10.0.0.1", "8.8.8.8"],
               "intranet.test": ["10.1.2.3"], "boom.test": OSError("no such host")}

    def resolver(host, port):
        answer = answers[host]
        if isinstance(answer, Exception):
            raise answer
        return answer

    policy = AddressPolicy(resolver=resolver)
    with pytest.raises(AddressRefused) as e:
        policy.resolve("meta.test", 80, 1.0)
    assert e.value.reason == "address_refused" and "metadata" in e.value.detail
    assert policy.resolve("mixed.test", 80, 1.0) == ["8.8.8.8"]  # the refused address is dropped
    with pytest.raises(AddressRefused) as e:
        policy.resolve("[::ffff:7f00:1]", 80, 1.0)  # literal, no DNS
    assert "loopback" in e.value.detail
    with pytest.raises(AddressRefused) as e:
        policy.resolve("boom.test", 80, 1.0)
    assert e.value.reason == "dns_error"
    # an allow-list exempts chosen networks, never the metadata endpoints; allow_private allows all
    intranet = AddressPolicy(allow_networks=["10.0.0.0/8"], resolver=resolver)
    assert intranet.resolve("intranet.test", 80, 1.0) == ["10.1.2.3"]
    with pytest.raises(AddressRefused):
        AddressPolicy(allow_networks=["169.254.0.0/16"], resolver=resolver).resolve("meta.test", 80, 1.0)
    assert AddressPolicy(allow_private=True, resolver=resolver).resolve("meta.test", 80, 1.0) == ["169.254.169.254"]


def test_slow_dns_is_bounded():
    policy = AddressPolicy(resolver=lambda host, port: time.sleep(2) or ["8.8.8.8"])
    start = time.monotonic()
    with pytest.raises(AddressRefused) as e:
        policy.resolve("slow.test", 80, 0.2)
    assert e.value.reason == "timeout" and time.monotonic() - start < 1.0


# ---------------------------------------------------------------------------------------- robots


def test_robots_longest_match_and_groups():
    rules = parse_robots("User-agent: *\nDisallow: /private/\nAllow: /private/open\nDisallow: /*.pdf$\n"
                         "Crawl-delay: 2\n\nUser-agent: OtherBot\nDisallow: /\n", "GristmillBot/0.1 (+x)")
    assert rules.allowed("/") and rules.allowed("/a.pdfx") and rules.allowed("/private/open/a")
    assert not rules.allowed("/private/x") and not rules.allowed("/a.pdf")
    assert rules.crawl_delay == 2.0 and rules.allowed("/robots.txt")
    own = parse_robots("User-agent: gristmillbot\nDisallow: /\n\nUser-agent: *\nDisallow:\n", "GristmillBot/0.1")
    assert not own.allowed("/anything")


# ---------------------------------------------------------------------------------------- config


def test_config_validation():
    with pytest.raises(ValidationError, match="needs `seeds`"):
        cfg()
    with pytest.raises(ValidationError, match=r"exclude\[1\].*not a valid regular expression"):
        cfg(seeds=["http://a.example/"], exclude=["ok", "("])
    with pytest.raises(ValidationError, match="unsupported_scheme|not crawled"):
        cfg(seeds=["ftp://a.example/"])
    with pytest.raises(ValidationError, match="extra"):
        cfg(seeds=["http://a.example/"], max_pagez=3)


def test_site_key_keeps_a_site_in_one_partition():
    from curation.crawl.crawler import site_key

    assert site_key("www.example.com") == site_key("example.com") == "example.com"
    assert site_key("a.b.example.co.uk") == "example.co.uk"
    assert site_key("10.1.2.3") == "10.1.2.3" and site_key("localhost") == "localhost"
    assert all(partition_of(h, 7) == partition_of("example.com", 7) for h in ("www.example.com", "x.y.example.com"))


def test_seeds_file_and_budget_split(tmp_path):
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("# start here\nhttp://A.example/\n\nhttp://a.example:80/\nhttps://b.example/x\n")
    c = cfg(seeds_file=str(seeds), seeds=["http://c.example/"])
    assert c.seed_urls() == ["http://c.example/", "http://a.example/", "https://b.example/x"]
    assert CrawlConfig.path_fields == ("paths", "seeds_file")
    assert split_budget(10, {0: 1, 1: 1, 2: 1}) in ({0: 4, 1: 3, 2: 3}, {0: 3, 1: 4, 2: 3}, {0: 3, 1: 3, 2: 4})
    assert sum(split_budget(1000, {0: 7, 3: 2, 5: 1}).values()) == 1000


# ----------------------------------------------------------------------------- the demo website


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo-site")
    manifest = build(folder, seed=0)
    server, base = serve(folder)
    yield base, manifest
    server.shutdown()
    server.server_close()


def test_demo_site_is_deterministic_and_complete(tmp_path, demo):
    _, manifest = demo
    again = build(tmp_path / "again", seed=0)
    assert again == manifest
    kinds = manifest["kinds"]
    assert 60 <= len(manifest["pages"]) <= 150
    assert {"article", "near_duplicate", "language", "spam", "toxic", "private"} <= set(kinds)
    assert all(p["depth"] is not None for p in manifest["pages"])  # everything is reachable from /
    assert len({p["lang"] for p in manifest["pages"] if p["kind"] == "language"}) == 12


@pytest.fixture
def crawl_reader():
    """The `crawl` reader, registered for this test only: other tests see the registry as the
    built-in loader leaves it."""
    from curation.ingest import base

    base.registered_readers()  # load the built-in readers first, so they are part of what is restored
    saved = dict(base._READERS)
    from curation.crawl.reader import CrawlInput

    base._READERS["crawl"] = CrawlInput
    yield CrawlInput
    base._READERS.clear()
    base._READERS.update(saved)


def test_crawl_demo_site_with_ray(ray_session, crawl_reader, demo, tmp_path):
    """The reader's prepare() crawls with Ray tasks: robots and scope respected, every public page
    archived once as a request + response pair readable by warcio and fastwarc."""
    from curation.ingest.base import get_reader

    CrawlInput = crawl_reader
    assert get_reader("crawl") is CrawlInput
    base, manifest = demo
    out = tmp_path / "crawl"
    config = cfg(seeds=[base + "/"], allow_private=True, delay_s=0, per_host_concurrency=4)
    warcs = CrawlInput(config).prepare(str(out))
    assert warcs and all(Path(w).exists() for w in warcs)

    pages = warc_responses(out)
    fetched_paths = {urlsplit(u).path for u in pages}
    public = {p["path"] for p in manifest["pages"] if p["kind"] != "private"}
    assert fetched_paths == public
    assert all(urlsplit(u).netloc == urlsplit(base).netloc for u in pages)  # scope: the seed host only
    entries = {e["url"]: e for e in log_entries(out)}
    assert entries[base + "/private/"]["reason"] == "robots_disallowed"
    assert entries[base + "/old/archive.html"]["reason"] == "http_404"
    assert not any("/private/draft" in u for u in entries)
    report = json.loads((out / "crawl-summary.json").read_text())
    assert report["totals"]["pages"] == len(public)
    assert report["partitions"][0]["skipped"]["out_of_scope"] > 0

    # warcio: warcinfo first, then request/response pairs linked by WARC-Concurrent-To
    from warcio.archiveiterator import ArchiveIterator

    records = []
    for path in warcs:
        with open(path, "rb") as f:
            records += [(r.rec_type, r.rec_headers.get_header("WARC-Record-ID"),
                         r.rec_headers.get_header("WARC-Concurrent-To")) for r in ArchiveIterator(f)]
    assert records[0][0] == "warcinfo"
    responses = {rid for kind, rid, _ in records if kind == "response"}
    requests = [to for kind, _, to in records if kind == "request"]
    assert len(responses) == len(public) and sorted(requests) == sorted(responses)

    # fastwarc reads the same files, with valid digests
    from fastwarc.warc import ArchiveIterator as FastIterator, WarcRecordType

    fast = {}
    for path in warcs:
        with open(path, "rb") as f:
            for record in FastIterator(f, record_types=WarcRecordType.response, parse_http=False):
                assert record.verify_block_digest()
                fast[record.headers["WARC-Target-URI"]] = record.reader.read()
    assert set(fast) == set(pages)
    article = next(p["path"] for p in manifest["pages"] if p["kind"] == "article")
    assert b"<article>" in pages[base + article]

    # read back through the reader (the `warc` reader underneath): one row per archived page
    pytest.importorskip("curation.ingest.warc")
    import pyarrow as pa
    import pyarrow.fs as pafs

    reader = CrawlInput(config)
    table = pa.concat_tables([t for i, w in enumerate(warcs) for t in reader.read_file(w, i, pafs.LocalFileSystem())])
    assert sorted(table.column("url").to_pylist()) == sorted(pages)
    assert table.column("reason").null_count == table.num_rows and set(table.column("http_status").to_pylist()) == {200}

    # rerun into the same folder: nothing is fetched again
    again = CrawlInput(config).prepare(str(out))
    assert again == warcs
    summary = json.loads((out / "crawl-summary.json").read_text())["partitions"][0]
    assert summary["requests"] == 0  # /private/ is checked against robots.txt again, without a request
    assert summary["resumed_urls"] == sum(1 for e in entries.values() if e["status"] is not None)


def test_depth_pages_and_include_exclude(demo, tmp_path):
    base, manifest = demo
    depth = {p["path"]: p["depth"] for p in manifest["pages"]}
    shallow = cfg(seeds=[base + "/"], allow_private=True, delay_s=0, max_depth=1)
    crawl_partition(shallow, str(tmp_path / "d1"), 0, 1, shallow.seed_urls(), shallow.max_pages)
    got = {urlsplit(u).path for u in warc_responses(tmp_path / "d1")}
    assert got == {p for p, d in depth.items() if d <= 1 and not p.startswith("/private/")}

    few = cfg(seeds=[base + "/"], allow_private=True, delay_s=0, max_pages=10, per_host_concurrency=4)
    summary = crawl_partition(few, str(tmp_path / "p10"), 0, 1, few.seed_urls(), few.max_pages)
    assert summary["requests"] <= 10 and len(warc_responses(tmp_path / "p10")) <= 10
    assert summary["skipped"]["max_pages"] > 0
    # resume keeps the global budget: a rerun has none left
    assert crawl_partition(few, str(tmp_path / "p10"), 0, 1, few.seed_urls(), few.max_pages)["requests"] == 0

    scoped = cfg(seeds=[base + "/"], allow_private=True, delay_s=0, exclude=["/intl/"],
                 include=[r"://[^/]+/(books/|intl/|$)"])
    crawl_partition(scoped, str(tmp_path / "scoped"), 0, 1, scoped.seed_urls(), scoped.max_pages)
    got = {urlsplit(u).path for u in warc_responses(tmp_path / "scoped")}
    assert got == {"/", "/books/"} | {p for p in depth if p.startswith("/books/moby-dick/")}


def test_politeness_delay(demo, tmp_path):
    base, _ = demo
    polite = cfg(seeds=[base + "/"], allow_private=True, delay_s=0.2, max_pages=6, per_host_concurrency=4)
    start = time.monotonic()
    crawl_partition(polite, str(tmp_path), 0, 1, polite.seed_urls(), polite.max_pages)
    # robots.txt + 6 pages, request starts at least 0.2 s apart on the one host
    assert time.monotonic() - start >= 6 * 0.2
    assert sum(1 for e in log_entries(tmp_path) if e["status"] is not None) == 6


def test_two_hosts_two_partitions(demo, tmp_path):
    base, _ = demo
    port = urlsplit(base).port
    other = f"http://localhost:{port}/"
    assert partition_of("127.0.0.1", 2) != partition_of("localhost", 2)
    config = cfg(seeds=[base + "/", other], allow_private=True, delay_s=0, max_pages=20, partitions=2)
    from curation.crawl.crawler import plan_partitions

    partitions, by_partition, budgets = plan_partitions(config)
    assert partitions == 2 and budgets == {0: 10, 1: 10}
    for p, seeds in by_partition.items():
        summary = crawl_partition(config, str(tmp_path), p, partitions, seeds, budgets[p])
        assert summary["requests"] <= 10 and summary["seed_hosts"] == [urlsplit(seeds[0]).hostname]
    assert {urlsplit(u).hostname for u in warc_responses(tmp_path)} == {"127.0.0.1", "localhost"}
    assert crawl_totals(str(tmp_path))["requests"] <= 20


# ------------------------------------------------------------------------------- hostile server


class _Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits: list[str] = []
    stop = threading.Event()

    def log_message(self, *args):
        pass

    def _send(self, status, headers, body=b""):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _drip(self, data: bytes) -> None:
        try:
            while not self.stop.is_set():
                self.wfile.write(data)
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.hits.append(self.path)
        path, _, query = self.path.partition("?")
        port = self.server.server_address[1]
        if path == "/robots.txt":
            self._send(404, [("Content-Length", "0")])
        elif path == "/ok":
            body = b"<html><body><p>fine</p></body></html>"
            self._send(200, [("Content-Type", "text/html"), ("Content-Length", str(len(body)))], body)
        elif path == "/drip":
            self._send(200, [("Content-Type", "text/html")])
            self._drip(b"x")
        elif path == "/drip-headers":
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            self._drip(b"X")
        elif path == "/stall":
            self._send(200, [("Content-Type", "text/html"), ("Content-Length", "100")])
            self.stop.wait(5)
        elif path == "/loop":
            n = int(query.split("=")[1]) if query else 0
            self._send(302, [("Location", f"/loop?n={n + 1}"), ("Content-Length", "0")])
        elif path in ("/cycle-a", "/cycle-b"):
            self._send(301, [("Location", "/cycle-b" if path == "/cycle-a" else "/cycle-a"), ("Content-Length", "0")])
        elif path == "/big":
            body = b"<html><body>" + b"<p>big page</p>" * 20000 + b"</body></html>"
            self._send(200, [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))], body)
        elif path == "/big-chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"<p>chunk</p>" * 1000
            try:
                for _ in range(100):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass
        elif path == "/image":
            self._send(200, [("Content-Type", "image/png"), ("Content-Length", "8")], b"\x89PNG\r\n\x1a\n")
        elif path == "/to-metadata":
            self._send(302, [("Location", "http://169.254.169.254/latest/meta-data/"), ("Content-Length", "0")])
        elif path == "/to-loopback":
            self._send(302, [("Location", f"http://127.0.0.2:{port}/ok"), ("Content-Length", "0")])
        elif path == "/to-localhost":
            self._send(302, [("Location", f"http://localhost:{port}/ok"), ("Content-Length", "0")])
        elif path == "/links":
            body = f'<a href="/to-localhost">r</a> <a href="http://localhost:{port}/elsewhere">x</a>'.encode()
            self._send(200, [("Content-Type", "text/html"), ("Content-Length", str(len(body)))], body)
        elif path == "/to-private-name":
            self._send(302, [("Location", f"http://intranet.test:{port}/ok"), ("Content-Length", "0")])
        else:
            self._send(404, [("Content-Length", "0")])


@pytest.fixture
def hostile():
    _Hostile.hits = []
    _Hostile.stop.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    server.daemon_threads = True
    server.block_on_close = False
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    _Hostile.stop.set()
    server.shutdown()
    server.server_close()


def test_hostile_server_cases_end_with_reasons(hostile, tmp_path):
    port = urlsplit(hostile).port
    answers = {"intranet.test": ["10.0.0.5"], "mixed.test": ["10.0.0.7", "127.0.0.1"]}
    resolver = lambda host, port: answers[host]  # noqa: E731
    # The slow servers get tight timeouts of their own, with margins a loaded 2-core CI box keeps
    # (a 1 s read timeout once fired on the chunked page there): a drip never waits 2 s for a byte,
    # a stall always does.
    slow = cfg(seeds=[f"{hostile}/{p}" for p in ("drip", "drip-headers", "stall")], allow_networks=["127.0.0.1/32"],
               delay_s=0, per_host_concurrency=8, connect_timeout_s=2.0, read_timeout_s=2.0, total_timeout_s=3.0,
               partitions=1)
    start = time.monotonic()
    crawl_partition(slow, str(tmp_path / "slow"), 0, 1, slow.seed_urls(), slow.max_pages, resolver=resolver)
    assert time.monotonic() - start < 10
    seeds = [f"{hostile}/{p}" for p in ("ok", "loop", "cycle-a", "big", "big-chunked", "image", "to-metadata",
                                        "to-loopback", "to-private-name")]
    seeds.append(f"http://mixed.test:{port}/ok")
    # Loopback is refused unless allowed: allow exactly the test server's address, nothing else.
    config = cfg(seeds=seeds, allow_networks=["127.0.0.1/32"], same_host=False, delay_s=0, per_host_concurrency=8,
                 max_redirects=3, max_body_bytes=64 << 10, partitions=1)
    summary = crawl_partition(config, str(tmp_path), 0, 1, config.seed_urls(), config.max_pages, resolver=resolver)
    last = {e["url"].removeprefix(hostile): e for e in log_entries(tmp_path) + log_entries(tmp_path / "slow")}
    print(json.dumps(last, indent=1))  # shown when an assertion fails
    assert last["/ok"]["outcome"] == "fetched" and last["/ok"]["reason"] is None
    assert last["/drip"]["reason"] == "deadline_exceeded"
    assert last["/drip-headers"]["reason"] == "deadline_exceeded"
    assert last["/stall"]["reason"] == "timeout"
    assert last["/loop?n=4"]["reason"] == "too_many_redirects"
    assert "/loop?n=5" not in last
    assert last["/cycle-a"]["reason"] == "redirect_loop"
    assert last["/big"]["reason"] == "truncated" and last["/big"]["bytes"] == 64 << 10
    assert last["/big-chunked"]["reason"] == "truncated" and last["/big-chunked"]["bytes"] == 64 << 10
    assert last["/image"]["reason"] == "content_type"
    assert last["http://169.254.169.254/latest/meta-data/"]["reason"] == "address_refused"
    assert "metadata" in last["http://169.254.169.254/latest/meta-data/"]["detail"]
    assert last[f"http://127.0.0.2:{port}/ok"]["reason"] == "address_refused"
    assert last[f"http://intranet.test:{port}/ok"]["reason"] == "address_refused"
    assert last[f"http://mixed.test:{port}/ok"]["outcome"] == "fetched"  # via its allowed address
    assert last[f"http://mixed.test:{port}/ok"]["ip"] == "127.0.0.1"
    assert summary["failures"]["address_refused"] == 3

    from warcio.archiveiterator import ArchiveIterator

    truncated = {}
    for path in tmp_path.glob("*.warc.gz"):
        with open(path, "rb") as f:
            for r in ArchiveIterator(f):
                if r.rec_type == "response":
                    truncated[urlsplit(r.rec_headers.get_header("WARC-Target-URI")).path] = (
                        r.rec_headers.get_header("WARC-Truncated"), len(r.content_stream().read()),
                        r.http_headers.get_header("X-Crawler-Transfer-Encoding"))
    assert truncated["/big"][:2] == ("length", 64 << 10)
    assert truncated["/big-chunked"] == ("length", 64 << 10, "chunked")
    assert truncated["/ok"][0] is None
    assert set(truncated) == {"/ok", "/big", "/big-chunked"}


def test_seed_redirect_extends_same_host_scope(hostile, tmp_path):
    """A seed redirecting to another host (http → https://www. in real life) brings that host into
    scope; the same redirect met deeper in the crawl, or a plain link to another host, does not."""
    port = urlsplit(hostile).port
    config = cfg(seeds=[hostile + "/to-localhost"], allow_private=True, delay_s=0)
    crawl_partition(config, str(tmp_path / "a"), 0, 1, config.seed_urls(), 10)
    entries = {e["url"]: e for e in log_entries(tmp_path / "a")}
    assert entries[f"http://localhost:{port}/ok"]["outcome"] == "fetched"
    linked = cfg(seeds=[hostile + "/links"], allow_private=True, delay_s=0)
    summary = crawl_partition(linked, str(tmp_path / "b"), 0, 1, linked.seed_urls(), 10)
    entries = {e["url"]: e for e in log_entries(tmp_path / "b")}
    assert entries[f"http://localhost:{port}/ok"]["reason"] == "out_of_scope"  # redirect at depth 1
    assert summary["skipped"]["out_of_scope"] == 1  # the link to localhost/elsewhere


def test_private_seed_refused_without_a_request(hostile, tmp_path):
    config = cfg(seeds=[hostile + "/ok"], delay_s=0)
    summary = crawl_partition(config, str(tmp_path), 0, 1, config.seed_urls(), 10)
    (entry,) = log_entries(tmp_path)
    assert entry["reason"] == "address_refused" and "loopback" in entry["detail"]
    assert summary["requests"] == 0 and _Hostile.hits == []
    assert not list(tmp_path.glob("*.warc.gz"))


def test_fetch_connects_to_the_checked_address(hostile):
    """DNS rebinding: one resolution per request, and the connection goes to the address checked."""
    port = urlsplit(hostile).port
    calls = []

    def flip(host, port_):
        calls.append(host)
        return ["127.0.0.1"] if len(calls) == 1 else ["10.0.0.9"]

    fetcher = Fetcher(AddressPolicy(allow_networks=["127.0.0.1/32"], resolver=flip), "GristmillBot/0.1",
                      1.0, 1.0, 2.0)
    response = fetcher.get(f"http://rebind.test:{port}/ok", 1 << 20, {"text/html"})
    assert response.status == 200 and response.ip == "127.0.0.1" and calls == ["rebind.test"]
    assert ("Host", f"rebind.test:{port}") in response.request_headers
    with pytest.raises(FetchError) as e:  # the next request resolves again and is refused
        fetcher.get(f"http://rebind.test:{port}/ok", 1 << 20, {"text/html"})
    assert e.value.reason == "address_refused"
    assert _Hostile.hits == ["/ok"]


def test_connection_refused():
    fetcher = Fetcher(AddressPolicy(allow_private=True), "GristmillBot/0.1", 0.3, 0.3, 1.0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(FetchError) as e:  # nothing listens: refused at once
            fetcher.get(f"http://127.0.0.1:{port}/", 1024)
    assert e.value.reason == "connection_error" and time.monotonic() - start < 1.0
