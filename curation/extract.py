"""`extract`: HTTP bodies (HTML or plain text) → main text, in a sandboxed child process.

Input columns (from the WARC reader): ``content`` (binary HTTP body), ``content_type`` (MIME type),
``charset`` (from the HTTP header, may be null), and ``text`` (null). Per row:

* ``content`` is null → nothing to extract: rows that already have ``text`` (WET, JSONL, Parquet
  input) pass through untouched, with null ``extract.*`` columns; rows with neither are
  ``extract_empty``. A batch without a ``content`` column passes through as a whole.
* ``text/plain`` → the decoded body is the text. HTML types (any MIME type containing ``html``, or no
  type at all) → the main text, extracted by ``engine``. Other types → ``extract_error``.

The body is decoded by the charset chain of :mod:`curation.html_text` (BOM → HTTP header → ``<meta>``
→ detection → UTF-8), then checked for binary content, then extracted — all in a child process
(:class:`curation.sandbox.ProcessSandbox`) with a per-document wall-clock timeout and an
address-space cap, so a pathological page costs at most ``timeout_s`` and never the Ray worker.

Columns: ``text``, ``title`` (the page's ``<title>``), ``extract.lang_hint`` (``<html lang>`` or the
``Content-Language`` meta), ``extract.charset`` (Python codec name) and ``extract.charset_source``
(``bom`` | ``header`` | ``meta`` | ``utf8_valid`` | ``detected`` | ``fallback``),
``extract.engine`` (the extractor whose text was kept: ``resiliparse`` | ``trafilatura``),
``extract.html_bytes`` (int64), ``extract.seconds`` (the document's wall time in the child, pipe
included: pages go to the child in batches of a few MB and it answers each as it finishes it).
Passed-through rows have null ``extract.*`` columns. ``content`` is dropped afterwards unless
``keep_html`` (kept and rejected data then carry no raw HTML).

Reasons: ``extract_too_large`` (body over ``max_bytes``, checked before any work),
``extract_timeout``, ``extract_error`` (binary content, unsupported type, the extractor raised,
crashed or hit the memory cap; ``reason_detail`` says which), ``extract_empty`` (fewer than
``min_text_chars`` characters extracted).

Engines. ``trafilatura`` in precision mode without comments is what FineWeb ran (datatrove's
``Trafilatura(favour_precision=True)``, ``include_comments=False``): set it to reproduce FineWeb.
``resiliparse`` is DCLM's ``extract_plain_text(main_content=True)``, ~8× faster, with more recall and
less precision (it keeps navigation and teasers on boilerplate-heavy pages). The default, ``auto``,
runs resiliparse on every page and asks trafilatura too where resiliparse's main text is under
``route_below`` (0.5) of the page's visible text, keeping trafilatura's answer unless it is much
shorter (:data:`curation.html_text.TRAFILATURA_MIN_SHARE`). On 130 hand-checked pages it scores
above both engines alone at several times trafilatura's speed (BENCHMARKS.md, "Main-text quality").
Departures from trafilatura's own defaults:

* ``deduplicate=False``: trafilatura's deduplication is an LRU cache of text segments shared by
  every document a process has seen, so a document's text would depend on which worker read what
  before it (not reproducible across runs, resumes or cluster sizes). Dedup has its own steps.
* ``include_tables=True`` (trafilatura's default, as FineWeb ran it): tables hold real content
  (data, specifications, infoboxes); layout junk in tables is what the quality filters are for.
* ``fallback=False`` (trafilatura ``fast=True``): the readability/jusText fallback cost +56% time on
  the shipped WARC pages and changed 1 page in 40 (a 412-character home-page blurb); it is a recall
  device, at odds with precision mode. ``fallback: true`` turns it back on.
* ``timeout_s=2``: the shipped pages take 7 ms each (median; 99th percentile 31 ms, slowest 84 ms);
  datatrove's extractor default is 0.1 s of CPU-bound work in a forked process, on a machine without
  our neighbours. 2 s of wall time leaves room for a busy machine while capping a pathological page
  at ~100× a typical one.
* ``max_bytes=5 MiB``: above the HTML of nearly every real page (Common Crawl truncates payloads at
  1 MiB; trafilatura itself refuses 20 MB); ``max_memory_mb=1024``: the child needs ~50 MB at rest.
"""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from curation.operator import TEXT, Decision, OpConfig, Resources, RowOp, register_op, set_column
from curation import sandbox
from curation.sandbox import Outcome, ProcessSandbox

CONTENT, CONTENT_TYPE, HEADER_CHARSET, TITLE = "content", "content_type", "charset", "title"
LANG_HINT = "extract.lang_hint"
CHARSET = "extract.charset"
CHARSET_SOURCE = "extract.charset_source"
HTML_BYTES = "extract.html_bytes"
SECONDS = "extract.seconds"
ENGINE = "extract.engine"
STRING_COLUMNS = (TITLE, LANG_HINT, CHARSET, CHARSET_SOURCE, ENGINE)

TOO_LARGE, TIMEOUT, ERROR, EMPTY = "extract_too_large", "extract_timeout", "extract_error", "extract_empty"


class ExtractConfig(OpConfig):
    engine: Literal["auto", "trafilatura", "resiliparse"] = Field(
        "auto", description="main-text extractor: auto (resiliparse, with trafilatura on boilerplate-heavy "
                            "pages), trafilatura (FineWeb) or resiliparse (DCLM)")
    route_below: float = Field(0.5, ge=0, le=1, description="engine auto: a page whose resiliparse main text is "
                                                            "under this share of its visible text also goes to "
                                                            "trafilatura")
    include_tables: bool = Field(True, description="keep the text of <table> elements")
    fallback: bool = Field(False, description="trafilatura (also auto's trafilatura pages): try "
                                              "readability/jusText when the main extractor finds little "
                                              "(≈1.5× slower)")
    timeout_s: float = Field(2.0, gt=0, le=600, description="wall-clock limit per document")
    max_bytes: int = Field(5 * 2**20, ge=1, description="bodies larger than this are rejected unread")
    max_memory_mb: int | None = Field(1024, ge=64, description="address-space cap of the extractor "
                                                               "process (null: none)")
    keep_html: bool = Field(False, description="keep the raw `content` column after extraction")
    min_text_chars: int = Field(1, ge=0, description="fewer extracted characters → extract_empty")

    @model_validator(mode="after")
    def _fallback_needs_trafilatura(self):
        if self.fallback and self.engine == "resiliparse":
            raise ValueError("fallback applies to trafilatura (engine 'trafilatura' or 'auto') only")
        return self


def body_kind(content_type: str | None) -> str | None:
    """``html`` | ``plain`` | None (not something we extract text from)."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if not mime or "html" in mime:
        return "html"
    if mime == "text/plain":
        return "plain"
    return None


# One message to the extraction child carries at most this much HTML (or this many pages): the child
# holds the whole message while it works through it, and a timeout or crash resends the rest.
REQUEST_BYTES = 4 * 2**20
REQUEST_PAGES = 256


def _request_batches(work: list[tuple[int, tuple]]) -> list[list[tuple[int, tuple]]]:
    batches: list[list[tuple[int, tuple]]] = []
    size = 0
    for item in work:
        body_bytes = len(item[1][1])
        if not batches or len(batches[-1]) >= REQUEST_PAGES or (size + body_bytes > REQUEST_BYTES and batches[-1]):
            batches.append([])
            size = 0
        batches[-1].append(item)
        size += body_bytes
    return batches


def _column(batch: pa.Table, name: str, n: int) -> list:
    return batch.column(name).to_pylist() if name in batch.column_names else [None] * n


@register_op
class Extract(RowOp):
    """HTML → main text (auto: resiliparse, with trafilatura on boilerplate-heavy pages; trafilatura;
    resiliparse) in a sandboxed child process; text/plain decoded."""

    name = "extract"
    memory = ("per document: the HTML body, at most max_bytes, parsed in a child process whose address space is "
              "capped at max_memory_mb; in the worker ~1.2x the body; per block ~0.3x")
    Config = ExtractConfig
    # ~2 MiB of HTML is 20-40 pages, 0.2-0.5 s of extraction: enough blocks to keep every core busy
    # on one file, few enough that per-block costs (a task, a Parquet part) stay small.
    resources = Resources(block_bytes=2 * 2**20)
    defaults_from = ("auto: resiliparse main_content as DCLM, trafilatura precision mode without comments "
                     "(as FineWeb ran it) on pages where resiliparse keeps under half the visible text; "
                     "no dedup or fallback inside the extractor")

    def __init__(self, config: OpConfig, step_label: str | None = None):
        super().__init__(config, step_label)
        self._sandbox: ProcessSandbox | None = None

    def setup(self) -> None:
        self.sandbox.start()

    @property
    def sandbox(self) -> ProcessSandbox:
        if self._sandbox is None:
            cfg: ExtractConfig = self.config  # type: ignore[assignment]
            self._sandbox = ProcessSandbox(
                "curation.html_text:make_worker",
                {"engine": cfg.engine, "include_tables": cfg.include_tables, "fallback": cfg.fallback,
                 "route_below": cfg.route_below},
                memory_mb=cfg.max_memory_mb)
        return self._sandbox

    def teardown(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()

    close = teardown

    def process(self, batch: pa.Table) -> Decision:
        cfg: ExtractConfig = self.config  # type: ignore[assignment]
        n = batch.num_rows
        bodies = _column(batch, CONTENT, n)
        types, header_charsets = _column(batch, CONTENT_TYPE, n), _column(batch, HEADER_CHARSET, n)
        texts = _column(batch, TEXT, n)
        out: dict[str, list] = {name: [None] * n for name in (*STRING_COLUMNS, HTML_BYTES, SECONDS)}
        reasons: list[str | None] = [None] * n
        details: list[str | None] = [None] * n
        extracted = [False] * n  # rows whose `text` and `title` this op wrote
        work: list[tuple[int, tuple]] = []  # (row, request) for the sandbox
        for i, body in enumerate(bodies):
            if body is None:
                if texts[i] is None:
                    reasons[i], details[i] = EMPTY, "no content and no text"
                continue
            if isinstance(body, str):  # a string `content` column (e.g. HTML kept in Parquet): already decoded
                body, header_charsets[i] = body.encode("utf-8", "replace"), "utf-8"
            extracted[i], texts[i] = True, None
            out[HTML_BYTES][i] = len(body)
            kind = body_kind(types[i])
            if kind is None:
                reasons[i], details[i] = ERROR, f"unsupported content type {types[i]!r}"
            elif len(body) > cfg.max_bytes:
                reasons[i], details[i] = TOO_LARGE, f"{len(body)} bytes > max_bytes {cfg.max_bytes}"
            else:
                work.append((i, (kind, body, header_charsets[i])))
        for chunk in _request_batches(work):
            outcomes = self.sandbox.call_many([request for _, request in chunk], cfg.timeout_s)
            for (i, _), outcome in zip(chunk, outcomes):
                out[SECONDS][i] = outcome.seconds
                reasons[i], details[i] = self._take(i, outcome, texts, out)
        table = self._assemble(batch, texts, out, extracted)
        if all(reason is None for reason in reasons):
            return Decision(table)
        reason = pa.array(reasons, pa.string())
        return Decision(table, keep=pc.is_null(reason), reason=reason, detail=pa.array(details, pa.string()))

    def _take(self, i: int, outcome: Outcome, texts: list, out: dict[str, list]) -> tuple[str | None, str | None]:
        """Fill row ``i`` of ``texts`` and ``out`` from the sandbox's answer; return ``(reason, detail)``."""
        cfg: ExtractConfig = self.config  # type: ignore[assignment]
        if outcome.status == sandbox.TIMEOUT:
            return TIMEOUT, outcome.value
        if outcome.status != sandbox.OK:
            return ERROR, outcome.value
        text, title, lang, charset, source, problem, engine = outcome.value
        texts[i] = text
        for name, value in ((TITLE, title), (LANG_HINT, lang), (CHARSET, charset), (CHARSET_SOURCE, source),
                            (ENGINE, engine)):
            out[name][i] = value
        if problem is not None:
            return ERROR, problem
        chars = len(text.strip()) if text else 0
        if chars < cfg.min_text_chars:
            return EMPTY, f"{chars} characters extracted (min_text_chars={cfg.min_text_chars})"
        return None, None

    def _assemble(self, batch: pa.Table, texts: list, out: dict[str, list], extracted: list) -> pa.Table:
        """Add the op's columns (typed, also for zero rows). `text` and `title` are rewritten only
        where this op extracted, so passed-through rows keep theirs (and their Arrow type)."""
        cfg: ExtractConfig = self.config  # type: ignore[assignment]
        n = batch.num_rows
        mask = pa.array(extracted, pa.bool_())
        table = batch
        for name, values in ((TEXT, texts), (TITLE, out[TITLE])):
            old = batch.column(name).combine_chunks() if name in batch.column_names else None
            kind = old.type if old is not None and old.type == pa.large_string() else pa.string()
            old = old.cast(kind) if old is not None else pa.nulls(n, kind)
            table = set_column(table, name, pc.if_else(mask, pa.array(values, kind), old))
        for name in (LANG_HINT, CHARSET, CHARSET_SOURCE, ENGINE):
            table = set_column(table, name, pa.array(out[name], pa.string()))
        table = set_column(table, HTML_BYTES, pa.array(out[HTML_BYTES], pa.int64()))
        table = set_column(table, SECONDS, pa.array(out[SECONDS], pa.float64()))
        if not cfg.keep_html and CONTENT in table.column_names:
            table = table.drop_columns([CONTENT])
        return table
