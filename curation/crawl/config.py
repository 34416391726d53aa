"""The `crawl` input's configuration: seeds, scope, politeness, limits and safety."""

from __future__ import annotations

import ipaddress
import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from curation.crawl.urls import BadURL, Scope, host_of, normalize_host, normalize_url
from curation.ingest.base import InputConfig

DEFAULT_USER_AGENT = "GristmillBot/0.1 (+https://github.com/gristmill)"
DEFAULT_CONTENT_TYPES = ["text/html", "application/xhtml+xml", "text/plain"]
MAX_DEFAULT_PARTITIONS = 8


class CrawlConfig(InputConfig):
    """Crawl from seed URLs into WARC files, then read those as the `warc` format does."""

    path_fields: ClassVar[tuple[str, ...]] = ("paths", "seeds_file")

    format: Literal["crawl"]
    paths: list[str] = Field(default_factory=list, description="unused: a crawl's input is its seeds")
    seeds: list[str] = Field(default_factory=list, description="start URLs (http or https)")
    seeds_file: str | None = Field(None, description="file with one start URL per line (blank lines and "
                                   "`#` comments ignored); relative to the spec file")
    # scope
    same_host: bool = Field(True, description="follow links only to the seeds' hosts (plus allowed_domains)")
    allowed_domains: list[str] = Field(default_factory=list, description="domains (and their subdomains) "
                                       "links may lead to")
    include: list[str] = Field(default_factory=list, description="URL regexes: when given, a URL must match one")
    exclude: list[str] = Field(default_factory=list, description="URL regexes: a URL matching one is not followed")
    max_pages: int = Field(1000, ge=1, description="most requests answered by a server (all partitions "
                           "together, robots.txt not counted)")
    max_depth: int = Field(3, ge=0, description="link hops from a seed (redirects do not count)")
    # politeness
    per_host_concurrency: int = Field(2, ge=1, le=16, description="requests in flight per host")
    delay_s: float = Field(0.5, ge=0, description="seconds between the starts of two requests to one host")
    user_agent: str = Field(DEFAULT_USER_AGENT, min_length=1)
    respect_robots: bool = True
    max_crawl_delay_s: float = Field(30.0, ge=0, description="robots.txt Crawl-delay is honoured up to this")
    # limits
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(10.0, gt=0, description="longest wait for the next bytes")
    total_timeout_s: float = Field(30.0, gt=0, description="deadline for a whole request, however the "
                                   "server drips its bytes")
    max_body_bytes: int = Field(5 << 20, ge=1024, description="bodies are cut here; the WARC record is "
                                "then marked `WARC-Truncated: length`")
    max_redirects: int = Field(5, ge=0)
    content_types: list[str] = Field(default_factory=lambda: list(DEFAULT_CONTENT_TYPES),
                                     min_length=1, description="media types archived; others are logged "
                                     "with reason `content_type`")
    # safety
    allow_private: bool = Field(False, description="allow loopback, private, link-local and metadata "
                                "addresses (a crawl of your own test server)")
    allow_networks: list[str] = Field(default_factory=list, description="CIDR networks exempt from the "
                                      "private-address refusal (an intranet); metadata addresses never are")
    # scale-out and output
    partitions: int | None = Field(None, ge=1, le=1024, description="Ray tasks; default: one per seed "
                                   f"host, at most {MAX_DEFAULT_PARTITIONS}")
    warc_max_mb: int = Field(100, ge=1, description="start a new WARC file past this size")

    @field_validator("allowed_domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        out = []
        for domain in value:
            d = domain.strip().lower()
            d = d[2:] if d.startswith("*.") else d.lstrip(".")
            try:
                out.append(normalize_host(d))
            except BadURL as e:
                raise ValueError(f"allowed_domains: {e}") from None
        return out

    @field_validator("include", "exclude")
    @classmethod
    def _regexes(cls, value: list[str], info) -> list[str]:
        for i, pattern in enumerate(value):
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"{info.field_name}[{i}] {pattern!r} is not a valid regular expression: {e}") from None
        return value

    @field_validator("content_types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        out = [t.split(";", 1)[0].strip().lower() for t in value]
        bad = [t for t in out if "/" not in t]
        if bad:
            raise ValueError(f"content_types must be media types such as text/html, got {bad}")
        return out

    @field_validator("allow_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for net in value:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as e:
                raise ValueError(f"allow_networks: {e}") from None
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[str]) -> list[str]:
        for i, seed in enumerate(value):
            try:
                normalize_url(seed)
            except BadURL as e:
                raise ValueError(f"seeds[{i}]: {e}") from None
        return value

    @model_validator(mode="after")
    def _need_seeds(self):
        if not self.seeds and not self.seeds_file:
            raise ValueError("a crawl needs `seeds` (a list of URLs) or `seeds_file` (one URL per line)")
        if self.total_timeout_s < self.connect_timeout_s:
            raise ValueError(f"total_timeout_s ({self.total_timeout_s}) must be at least connect_timeout_s "
                             f"({self.connect_timeout_s})")
        return self

    # ------------------------------------------------------------------------------------- helpers

    def seed_urls(self) -> list[str]:
        """Normalised, de-duplicated seeds (list, then file). A bad line in the file is an error."""
        raw = list(self.seeds)
        if self.seeds_file:
            with open(self.seeds_file, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    line = line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line.strip()
                    if not line:
                        continue
                    try:
                        normalize_url(line)
                    except BadURL as e:
                        raise ValueError(f"{self.seeds_file}:{n}: {e}") from None
                    raw.append(line)
        out: list[str] = []
        for seed in raw:
            url = normalize_url(seed)
            if url not in out:
                out.append(url)
        if not out:
            raise ValueError(f"no seed URLs (seeds is empty and {self.seeds_file} has none)")
        return out

    def scope(self, seeds: list[str]) -> Scope:
        return Scope(seed_hosts={host_of(s) for s in seeds}, same_host=self.same_host,
                     allowed_domains=list(self.allowed_domains),
                     include=[re.compile(p) for p in self.include], exclude=[re.compile(p) for p in self.exclude])
