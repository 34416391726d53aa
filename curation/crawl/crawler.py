"""The crawl: seeds partitioned by host over Ray tasks, each task a polite breadth-first crawler.

Partitioning. A host belongs to partition ``crc32(site_key(host)) % partitions`` (its site: last
two labels) — seed hosts and hosts found later alike — so a host is never split and its politeness
(``per_host_concurrency``, ``delay_s``, robots.txt ``Crawl-delay``) is enforced by the one task that
owns it. A link to a host of another
partition is not followed: it is counted as skipped with reason ``other_partition`` (with the default
``same_host: true`` this never happens — every seed host is crawled by its own partition). Following
such links would take a second round seeded from the logs; not done yet.

Budget. ``max_pages`` bounds requests answered by a server (2xx, redirects, HTTP errors; robots.txt
not counted) over the whole crawl folder, reruns included. It is split across partitions in
proportion to their seed URLs (largest remainder); a partition never borrows another's unused share.

Inside a partition. One scheduler thread owns the frontier (a FIFO queue per host, so the crawl is
breadth-first per host), robots.txt rules (per origin, fetched before the origin's first page) and
the output; a thread pool performs the requests. A host gets a new request when it has fewer than
``per_host_concurrency`` in flight and ``delay`` seconds have passed since its last request started.
Redirects are queued (front of the target host's queue, same depth) rather than followed inline, so
every hop goes through scope, robots, budget and the address policy like any request.

Resume. Rerunning into the same folder rebuilds the state from the committed logs: URLs the server
already answered (fetched, redirect, HTTP 4xx, wrong content type) are not requested again; the
rest is tried again — transient failures (time-outs, connection errors, HTTP 5xx / 429) and
decisions taken without a request (refused address, robots.txt, scope), which a changed config may
decide differently. The frontier is
the seeds plus the links (and redirect targets) of the pages already fetched that are not yet done.
"""

from __future__ import annotations

import json
import time
import zlib
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from curation.crawl.config import MAX_DEFAULT_PARTITIONS, CrawlConfig
from curation.crawl.fetch import FetchError, Fetcher, Response
from curation.crawl.links import decode_page, extract_links
from curation.crawl.robots import MAX_ROBOTS_BYTES, RobotsRules, product_token, rules_for_status
from curation.crawl.safety import AddressPolicy, Resolver
from curation.crawl.urls import BadURL, host_of, normalize_url, origin_of
from curation.crawl.warc_out import ChunkWriter, Store, iter_log, sweep, warc_files

HTML_TYPES = {"text/html", "application/xhtml+xml"}
TRANSIENT = {"timeout", "deadline_exceeded", "connection_error", "dns_error", "tls_error", "incomplete_body",
             "robots_unreachable", "http_429"}
CHUNK_MAX_SECONDS = 300.0  # commit at least this often, so an interrupted crawl loses little
_PENDING = object()


def site_key(host: str) -> str:
    """What partitions are keyed on: the host's last two labels (three under a short second-level
    label such as ``co.uk``), so ``example.com`` and ``www.example.com`` share a partition and a seed
    redirecting to its ``www.`` twin stays crawlable. IP addresses are their own key. A heuristic
    (no public-suffix list): a wrong guess only groups more hosts into one partition."""
    labels = host.split(".")
    if host.startswith("[") or labels[-1].isdigit() or len(labels) <= 2:
        return host
    keep = 3 if len(labels[-2]) <= 3 and len(labels[-1]) == 2 else 2
    return ".".join(labels[-keep:])


def partition_of(host: str, partitions: int) -> int:
    return zlib.crc32(site_key(host).encode("utf-8")) % partitions


def is_final(entry: dict[str, Any]) -> bool:
    """Whether a logged outcome stands on a rerun: the server answered, and not with a transient
    error (5xx, 429). Everything else — time-outs, refusals, robots or scope decisions, which may
    differ under a changed config — is tried again (refusals cost no request)."""
    reason = entry.get("reason") or ""
    return entry.get("status") is not None and not (reason in TRANSIENT or reason.startswith("http_5"))


def split_budget(total: int, weights: dict[int, int]) -> dict[int, int]:
    """``total`` split in proportion to ``weights``, by largest remainder (sums to ``total``)."""
    weight_sum = sum(weights.values())
    exact = {k: total * w / weight_sum for k, w in weights.items()}
    out = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (out[k] - exact[k], k))[: total - sum(out.values())]:
        out[k] += 1
    return out


@dataclass
class _Item:
    url: str
    depth: int
    hops: int = 0
    chain: tuple[str, ...] = ()


@dataclass
class _Host:
    delay: float
    queue: deque = field(default_factory=deque)
    inflight: int = 0
    next_start: float = 0.0
    robots: dict[str, Any] = field(default_factory=dict)  # origin -> RobotsRules | _PENDING


@dataclass
class _RobotsResult:
    rules: RobotsRules
    block: tuple[str, str] | None = None  # every URL of the origin fails with this (reason, detail)


class PartitionCrawl:
    def __init__(self, config: CrawlConfig, out_dir: str, partition: int, partitions: int,
                 seeds: list[str], budget: int, resolver: Resolver | None = None,
                 seed_hosts: list[str] | None = None):
        self.cfg = config
        self.partition = partition
        self.partitions = partitions
        self.seeds = [normalize_url(s) for s in seeds]
        self.budget = budget
        # Scope uses the hosts of *all* seeds, so a link to another partition's seed host is counted
        # as `other_partition`, not `out_of_scope`.
        self.scope = config.scope(self.seeds)
        self.scope.seed_hosts |= set(seed_hosts or ())
        self.store = Store(out_dir)
        policy = AddressPolicy(config.allow_private, config.allow_networks, resolver)
        self.fetcher = Fetcher(policy, config.user_agent, config.connect_timeout_s, config.read_timeout_s,
                               config.total_timeout_s)
        self.content_types = set(config.content_types)
        self.token = product_token(config.user_agent)
        self.hosts: dict[str, _Host] = {}
        self.seen: set[str] = set()
        self.requests = 0
        self.pages = 0
        self.bytes = 0
        self.reasons: Counter = Counter()
        self.skipped: Counter = Counter()
        self.robots_notes: dict[str, str] = {}

    # ------------------------------------------------------------------------------------ frontier

    def _host(self, host: str) -> _Host:
        if host not in self.hosts:
            self.hosts[host] = _Host(delay=self.cfg.delay_s)
        return self.hosts[host]

    def _offer(self, item: _Item, explicit: bool = False, front: bool = False, via: str | None = None) -> None:
        """Queue a URL if it is new, in scope, ours and shallow enough. ``explicit`` URLs (seeds,
        redirect targets) that are refused get a log line; links found in pages are only counted."""
        if item.url in self.seen:
            self.skipped["duplicate"] += 1
            return
        host = host_of(item.url)
        reason = self.scope.reason(item.url)
        if reason is None and partition_of(host, self.partitions) != self.partition:
            reason = "other_partition"
        if reason is None and item.depth > self.cfg.max_depth:
            reason = "max_depth"
        if reason is not None:
            if explicit:
                self.seen.add(item.url)
                self._fail(item, reason, f"redirected from {via}" if via else "seed outside the crawl's scope")
            else:
                self.skipped[reason] += 1
            return
        self.seen.add(item.url)
        queue = self._host(host).queue
        queue.appendleft(item) if front else queue.append(item)

    def _resume(self) -> int:
        """Rebuild the state from committed logs; returns the requests already spent."""
        last: dict[str, dict[str, Any]] = {}
        for entry in iter_log(self.store):
            if partition_of(host_of(entry["url"]), self.partitions) == self.partition:
                last[entry["url"]] = entry
        done = {url for url, e in last.items() if is_final(e)}
        self.seen |= done
        self.resumed = len(done)
        found: list[tuple[int, _Item]] = []
        for url, e in last.items():
            if url not in done:
                continue
            for link in e.get("links") or ():
                found.append((e["depth"] + 1, _Item(link, e["depth"] + 1)))
            if e.get("location"):
                self._seed_redirect(_Item(url, e["depth"]), e["location"])
                found.append((e["depth"], _Item(e["location"], e["depth"], e.get("hops", 0) + 1)))
        for seed in self.seeds:
            if seed not in self.seen:
                self._offer(_Item(seed, 0), explicit=True)
        for _, item in sorted(found, key=lambda pair: pair[0]):
            if item.url not in self.seen:
                self._offer(item)
        self.skipped.clear()  # counts of this run only; resumed duplicates are not news
        return sum(1 for e in last.values() if e.get("status") is not None)

    # ------------------------------------------------------------------------------------- logging

    def _log(self, item: _Item, outcome: str, reason: str | None = None, detail: str | None = None,
             response: Response | None = None, **extra: Any) -> None:
        entry = {"url": item.url, "depth": item.depth, "hops": item.hops, "outcome": outcome, "reason": reason,
                 "detail": detail, "status": response.status if response else extra.pop("status", None),
                 "ip": response.ip if response else extra.pop("ip", None), **extra}
        if reason:
            self.reasons[reason] += 1
        self.writer.log(entry)

    def _fail(self, item: _Item, reason: str, detail: str | None = None, **extra: Any) -> None:
        self._log(item, "failed", reason, detail, **extra)

    # ------------------------------------------------------------------------------------ requests

    def _fetch_robots(self, origin: str) -> _RobotsResult:
        url = origin + "/robots.txt"
        for _ in range(6):
            try:
                response = self.fetcher.get(url, MAX_ROBOTS_BYTES, None, accept="text/plain,*/*;q=0.1")
            except FetchError as e:
                if e.reason in ("address_refused", "dns_error"):
                    return _RobotsResult(RobotsRules(disallow_all=True, note=e.detail), (e.reason, e.detail))
                detail = f"robots.txt unreachable ({e.reason}: {e.detail}): complete disallow"
                return _RobotsResult(RobotsRules(disallow_all=True, note=detail), ("robots_unreachable", detail))
            location = response.header("location")
            if 300 <= response.status < 400 and location:
                try:
                    url = normalize_url(location, url)
                except BadURL:
                    break
                continue
            rules = rules_for_status(response.status, response.body, self.cfg.user_agent)
            if rules.disallow_all:
                return _RobotsResult(rules, ("robots_unreachable", rules.note))
            return _RobotsResult(rules)
        return _RobotsResult(RobotsRules(note="robots.txt redirects too often: no restrictions"))

    def _dispatch(self, pool: ThreadPoolExecutor, futures: dict[Future, tuple], now: float) -> None:
        for name, host in self.hosts.items():
            while host.queue and host.inflight < self.cfg.per_host_concurrency and now >= host.next_start:
                item: _Item = host.queue[0]
                origin = origin_of(item.url)
                rules = host.robots.get(origin)
                if rules is None:
                    if not self.cfg.respect_robots:
                        host.robots[origin] = _RobotsResult(RobotsRules(note="robots.txt ignored (respect_robots: false)"))
                        continue
                    host.robots[origin] = _PENDING
                    host.inflight += 1
                    host.next_start = now + host.delay
                    futures[pool.submit(self._fetch_robots, origin)] = ("robots", name, origin)
                    break
                if rules is _PENDING:
                    break
                host.queue.popleft()
                if rules.block is not None:
                    self._fail(item, *rules.block)
                    continue
                parts = urlsplit(item.url)
                if not rules.rules.allowed(parts.path + ("?" + parts.query if parts.query else "")):
                    self._fail(item, "robots_disallowed", f"disallowed by {origin}/robots.txt")
                    continue
                if self.requests >= self.budget:
                    self.skipped["max_pages"] += 1
                    continue
                self.requests += 1
                host.inflight += 1
                host.next_start = now + host.delay
                futures[pool.submit(self.fetcher.get, item.url, self.cfg.max_body_bytes, self.content_types)] = (
                    "page", name, item)

    def _robots_done(self, host: _Host, origin: str, future: Future) -> None:
        try:
            result = future.result()
        except Exception as e:  # a bug, not the network: do not crawl what we could not check
            result = _RobotsResult(RobotsRules(disallow_all=True), ("robots_unreachable", f"robots check failed: {e!r}"))
        host.robots[origin] = result
        self.robots_notes[origin] = result.rules.note
        if result.rules.crawl_delay:
            host.delay = max(host.delay, min(result.rules.crawl_delay, self.cfg.max_crawl_delay_s))

    def _page_done(self, item: _Item, future: Future) -> None:
        try:
            response: Response = future.result()
        except FetchError as e:
            self._fail(item, e.reason, e.detail, status=e.status, ip=e.ip)
            return
        status = response.status
        location = response.header("location")
        if 300 <= status < 400 and location:
            try:
                target = normalize_url(location, item.url)
            except BadURL as e:
                self._log(item, "redirect", "bad_redirect", str(e), response)
                return
            self._log(item, "redirect", None, None, response, location=target)
            self._redirect(item, target)
        elif 200 <= status < 300:
            if response.body is None:
                if status in (204, 205):
                    self._fail(item, "empty_body", f"HTTP {status}", status=status, ip=response.ip)
                else:
                    self._fail(item, "content_type", f"{response.content_type or '(none)'} is not in content_types",
                               status=status, ip=response.ip)
                return
            warc = self.writer.archive(response)
            self.pages += 1
            self.bytes += len(response.body)
            links: list[str] = []
            if response.content_type in HTML_TYPES:
                links = extract_links(decode_page(response.body, response.charset), item.url, self.token)
            reason = "truncated" if response.truncated else None
            detail = f"body cut at max_body_bytes={self.cfg.max_body_bytes}" if reason else None
            self._log(item, "fetched", reason, detail, response, bytes=len(response.body), warc=warc, links=links)
            for link in links:
                self._offer(_Item(link, item.depth + 1))
        else:
            self._log(item, "http_error", f"http_{status}", response.reason or None, response)

    def _seed_redirect(self, item: _Item, target: str) -> None:
        """A seed that redirects (``http://example.com/`` → ``https://www.example.com/``) makes the
        target's host a seed host too, as Heritrix does: otherwise `same_host` would end the crawl."""
        host = host_of(target)
        if item.depth == 0 and partition_of(host, self.partitions) == self.partition:
            self.scope.seed_hosts.add(host)

    def _redirect(self, item: _Item, target: str) -> None:
        self._seed_redirect(item, target)
        nxt = _Item(target, item.depth, item.hops + 1, item.chain + (item.url,))
        if target in nxt.chain:
            self._fail(nxt, "redirect_loop", " -> ".join(nxt.chain + (target,)))
        elif nxt.hops > self.cfg.max_redirects:
            self._fail(nxt, "too_many_redirects", f"more than max_redirects={self.cfg.max_redirects} "
                       f"redirects from {nxt.chain[0]}")
        else:
            self._offer(nxt, explicit=True, front=True, via=item.url)

    # ------------------------------------------------------------------------------------- the loop

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self.writer = ChunkWriter(self.store, self.partition, {
            "robots": "obey" if self.cfg.respect_robots else "ignore",
            "http-header-user-agent": self.cfg.user_agent,
            "description": f"gristmill crawl, partition {self.partition} of {self.partitions}"},
            self.cfg.warc_max_mb << 20)
        used_before = self._resume()
        self.budget = max(0, self.budget - used_before)
        workers = min(16, self.cfg.per_host_concurrency * max(1, len(self.hosts)))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"crawl-p{self.partition}")
        futures: dict[Future, tuple] = {}
        chunk_opened = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                self._dispatch(pool, futures, now)
                waiting = [h.next_start for h in self.hosts.values()
                           if h.queue and h.inflight < self.cfg.per_host_concurrency
                           and h.robots.get(origin_of(h.queue[0].url)) is not _PENDING]
                if not futures and not waiting:
                    break
                timeout = max(0.0, min(waiting) - time.monotonic()) if waiting else None
                done, _ = wait(list(futures), timeout=timeout, return_when=FIRST_COMPLETED)
                for future in done:
                    kind, name, what = futures.pop(future)
                    host = self.hosts[name]
                    host.inflight -= 1
                    if kind == "robots":
                        self._robots_done(host, what, future)
                    else:
                        self._page_done(what, future)
                if self.writer.full() or time.monotonic() - chunk_opened > CHUNK_MAX_SECONDS:
                    self.writer.commit()
                    chunk_opened = time.monotonic()
            self.writer.commit()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            self.writer.abort()
            raise
        pool.shutdown(wait=True)
        elapsed = time.monotonic() - started
        summary = {
            "partition": self.partition, "partitions": self.partitions,
            "seed_hosts": sorted({host_of(s) for s in self.seeds}), "budget": self.budget + used_before,
            "requests_before": used_before, "resumed_urls": self.resumed,
            "requests": self.requests, "pages": self.pages, "bytes": self.bytes,
            "failures": dict(sorted(self.reasons.items())), "skipped": dict(sorted(self.skipped.items())),
            "robots": self.robots_notes, "warc_files": self.writer.committed,
            "elapsed_s": round(elapsed, 3), "pages_per_s": round(self.pages / elapsed, 2) if elapsed > 0 else None,
        }
        self.store.write_atomic(f"summary-p{self.partition:03d}.json", json.dumps(summary, indent=1).encode())
        return summary


def crawl_partition(config: CrawlConfig, out_dir: str, partition: int, partitions: int, seeds: list[str],
                    budget: int, resolver: Resolver | None = None,
                    seed_hosts: list[str] | None = None) -> dict[str, Any]:
    """Crawl the hosts of one partition into ``out_dir`` (in this process); returns its summary.
    ``resolver`` replaces DNS (tests)."""
    return PartitionCrawl(config, out_dir, partition, partitions, seeds, budget, resolver, seed_hosts).run()


def plan_partitions(config: CrawlConfig) -> tuple[int, dict[int, list[str]], dict[int, int]]:
    """(partitions, seeds per non-empty partition, page budget per partition)."""
    seeds = config.seed_urls()
    hosts = {host_of(s) for s in seeds}
    partitions = config.partitions or min(len(hosts), MAX_DEFAULT_PARTITIONS)
    by_partition: dict[int, list[str]] = {}
    for seed in seeds:
        by_partition.setdefault(partition_of(host_of(seed), partitions), []).append(seed)
    budgets = split_budget(config.max_pages, {p: len(s) for p, s in by_partition.items()})
    return partitions, dict(sorted(by_partition.items())), budgets


def crawl(config: CrawlConfig, out_dir: str, num_cpus_per_task: float = 0.25) -> list[str]:
    """Crawl with one Ray task per partition (Ray must be initialised); returns the locations of
    every committed WARC file in ``out_dir``, this run's and earlier runs'. Writes
    ``crawl-summary.json`` (per-partition summaries of this run, totals over all runs)."""
    import ray

    if not ray.is_initialized():
        raise RuntimeError("crawl() runs one Ray task per partition: call ray.init() (or run it through "
                           "`gristmill run`) first")
    partitions, by_partition, budgets = plan_partitions(config)
    store = Store(out_dir)
    sweep(store)
    task = ray.remote(num_cpus=num_cpus_per_task)(crawl_partition)  # I/O bound: a fraction of a CPU
    seed_hosts = sorted({host_of(s) for seeds in by_partition.values() for s in seeds})
    refs = [task.remote(config, out_dir, p, partitions, seeds, budgets[p], None, seed_hosts)
            for p, seeds in by_partition.items()]
    summaries = ray.get(refs)
    report = {"partitions": summaries, "totals": crawl_totals(out_dir)}
    store.write_atomic("crawl-summary.json", json.dumps(report, indent=1).encode())
    return warc_files(store)


def crawl_totals(out_dir: str) -> dict[str, Any]:
    """Counts over every committed log of a crawl folder (the last outcome of each URL)."""
    last: dict[str, dict[str, Any]] = {}
    for entry in iter_log(Store(out_dir)):
        last[entry["url"]] = entry
    outcomes = Counter(e["outcome"] for e in last.values())
    reasons = Counter(e["reason"] for e in last.values() if e.get("reason"))
    return {"urls": len(last), "pages": outcomes.get("fetched", 0), "outcomes": dict(sorted(outcomes.items())),
            "reasons": dict(sorted(reasons.items())),
            "bytes": sum(e.get("bytes") or 0 for e in last.values()),
            "requests": sum(1 for e in last.values() if e.get("status") is not None)}
