"""The `crawl` input format: crawl first (``prepare``), then read the WARC files like `warc` does.

Rows are the `warc` reader's: one per archived page (``url``, ``http_status``, ``content_type``,
``content`` …). A page the crawler cut at ``max_body_bytes`` carries ``WARC-Truncated`` and becomes a
``truncated_record`` quarantine row there. URLs that were never archived (redirects, HTTP errors,
refusals, time-outs) are in the crawl folder's ``*.log.jsonl`` with their reason, not rows.
"""

from __future__ import annotations

from typing import Any, Iterator

import pyarrow as pa

from curation.crawl.config import CrawlConfig
from curation.ingest.base import InputReader, get_reader, register_reader


@register_reader
class CrawlInput(InputReader):
    format = "crawl"
    Config = CrawlConfig

    def __init__(self, config: CrawlConfig):
        super().__init__(config)
        self._warc = None

    def prepare(self, work_dir: str) -> list[str]:
        """Run (or resume) the crawl into ``work_dir`` with Ray tasks; returns the WARC files.
        Called by the runner on the driver, with Ray up, before inputs are listed."""
        from curation.crawl.crawler import crawl

        return crawl(self.config, work_dir)

    def read_file(self, path: str, file_index: int, filesystem: Any) -> Iterator[pa.Table]:
        if self._warc is None:
            warc = get_reader("warc")  # looked up lazily: the `warc` reader lives in curation.ingest.warc
            self._warc = warc(warc.Config(format="warc", paths=[path], record_types=["response"],
                                          content_types=self.config.content_types))
        yield from self._warc.read_file(path, file_index, filesystem)
