"""A polite web crawler that writes WARC files: the `crawl` input format.

Modules: :mod:`~curation.crawl.config` (the spec section), :mod:`~curation.crawl.urls`
(normalisation, scope), :mod:`~curation.crawl.safety` (which addresses may be contacted),
:mod:`~curation.crawl.robots`, :mod:`~curation.crawl.fetch` (one bounded HTTP request),
:mod:`~curation.crawl.links`, :mod:`~curation.crawl.warc_out` (chunks and commit logs),
:mod:`~curation.crawl.crawler` (partitions, scheduling, resume), :mod:`~curation.crawl.reader` (the
`crawl` reader; importing it registers the format) and :mod:`~curation.crawl.demo_site` (a local
site to crawl).
"""

from curation.crawl.config import CrawlConfig

__all__ = ["CrawlConfig", "crawl"]


def crawl(config: CrawlConfig, out_dir: str) -> list[str]:
    """Crawl into ``out_dir`` with one Ray task per partition; see :func:`curation.crawl.crawler.crawl`."""
    from curation.crawl.crawler import crawl as _crawl

    return _crawl(config, out_dir)
