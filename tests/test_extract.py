"""The `extract` op: main text from real WARC pages, charsets, pass-through, and hostile input that
must never hang or take down the calling process (the extractor runs in a sandbox child)."""

from __future__ import annotations

import gc
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError
from warcio.archiveiterator import ArchiveIterator

from curation.extract import Extract, ExtractConfig
from curation.html_text import decode_body

REPO = Path(__file__).resolve().parent.parent
WARC = REPO / "data" / "warc"

WIPO = "https://creativecommons.org/2024/04/23/cc-at-wipo-slow-progress-on-copyright-exceptions-for-cultural-heritage-institutions/"
ESCOPETE = "https://an.wikipedia.org/wiki/Escopete"


@pytest.fixture(scope="module")
def warc_bodies() -> dict[str, tuple[bytes, str, str | None]]:
    """URL → (HTTP body, mime type, header charset) of the shipped WARC responses, read with warcio
    as the WARC reader will (decoded transfer and content encodings)."""
    out = {}
    for name in ("sample-0001.warc.gz", "whirlwind.warc.gz", "IAH-urls-wget.warc"):
        with open(WARC / name, "rb") as stream:
            for record in ArchiveIterator(stream):
                if record.rec_type != "response" or record.http_headers is None:
                    continue
                mime, _, params = (record.http_headers.get_header("Content-Type") or "").partition(";")
                charset = params.split("charset=", 1)[1].strip() if "charset=" in params else None
                out[record.rec_headers.get_header("WARC-Target-URI")] = (
                    record.content_stream().read(), mime.strip().lower(), charset)
    return out


def make_op(**config) -> Extract:
    op = Extract(ExtractConfig(**config))
    op.setup()
    return op


@pytest.fixture(scope="module")
def op():
    op = make_op()
    yield op
    op.close()


def batch(rows: list[tuple]) -> pa.Table:
    """rows of (body, content_type, header_charset) as the WARC reader emits them."""
    return pa.table({
        "doc_id": pa.array(range(len(rows)), pa.int64()),
        "content": pa.array([r[0] for r in rows], pa.binary()),
        "content_type": pa.array([r[1] for r in rows], pa.string()),
        "charset": pa.array([r[2] for r in rows], pa.string()),
        "url": pa.array([f"https://example.test/{i}" for i in range(len(rows))], pa.string()),
        "text": pa.nulls(len(rows), pa.string()),
    })


def run(op: Extract, rows: list[tuple]):
    table = batch(rows)
    decision = op.process(table)
    assert decision.table.num_rows == table.num_rows
    assert decision.table.column("doc_id").to_pylist() == list(range(len(rows)))
    return decision, decision.table.to_pylist()


def reasons(decision) -> list:
    return decision.reason.to_pylist() if decision.reason is not None else [None] * decision.table.num_rows


PROSE = [
    "The old mill stood by the river for three hundred years, grinding grain for the farms of the valley.",
    "Every autumn the farmers brought their harvest by cart, and the miller weighed each sack before milling it.",
    "When the railway arrived, the mill lost its trade to the great steam mills in the city and fell silent.",
    "Today a small museum keeps the millstones turning on summer weekends, and children bake bread from the flour.",
]


def page(paragraphs: list[str], head: str = "", lang: str = "en") -> str:
    body = "".join(f"<p>{p}</p>\n" for p in paragraphs)
    return (f'<!DOCTYPE html><html lang="{lang}"><head>{head}<title>The Mill</title></head><body>'
            f"<article><h1>The Mill</h1>\n{body}</article></body></html>")


def slow_page() -> bytes:
    """~4.5 MB of link-heavy blocks: seconds of trafilatura work, under the 5 MiB default cap."""
    block = b"<div class='c'><p>Paragraph number %d with some words in it, to make a long page.</p><a href='x'>link</a></div>"
    return b"<html><body>" + b"".join(block % i for i in range(40000)) + b"</body></html>"


# ------------------------------------------------------------------------------------- main text


def test_main_text_of_real_pages(op, warc_bodies):
    decision, rows = run(op, [warc_bodies[WIPO], warc_bodies[ESCOPETE]])
    assert reasons(decision) == [None, None]
    wipo, escopete = rows
    assert "Last week, Creative Commons (CC) participated in the 45th session of the World Intellectual " \
           "Property Organization (WIPO)" in wipo["text"]
    assert wipo["title"].startswith("CC at WIPO: Slow progress on copyright exceptions")
    assert wipo["extract.lang_hint"] == "en-US"
    assert (wipo["extract.charset"], wipo["extract.charset_source"]) == ("utf-8", "header")
    assert wipo["extract.html_bytes"] == len(warc_bodies[WIPO][0])
    assert 0 < wipo["extract.seconds"] < 5
    assert "Escopete ye un municipio d'a provincia de Guadalachara" in escopete["text"]
    assert escopete["extract.lang_hint"] == "an"
    # Raw HTML does not travel on by default; the reader's other columns do.
    assert "content" not in decision.table.column_names
    assert {"url", "content_type", "charset"} <= set(decision.table.column_names)


def test_boilerplate_is_dropped(op):
    html = ('<html><head><title>The Mill</title></head><body>'
            '<header><nav><ul><li><a href="/">Home</a></li><li><a href="/shop">Shop our flour</a></li>'
            '<li><a href="/about">About us</a></li></ul></nav></header>'
            '<aside class="sidebar"><h3>Popular posts</h3><ul><li><a href="/a">Ten bread recipes</a></li>'
            '<li><a href="/b">Our new oven</a></li></ul></aside>'
            '<main><article><h1>The Mill</h1>' + "".join(f"<p>{p}</p>" for p in PROSE) + '</article></main>'
            '<footer><p>© 2024 Mill Museum Trust. All rights reserved.</p><a href="/privacy">Privacy policy</a>'
            '</footer></body></html>')
    decision, rows = run(op, [(html.encode(), "text/html", "utf-8")])
    text = rows[0]["text"]
    assert all(p in text for p in PROSE)
    for junk in ("Shop our flour", "About us", "Popular posts", "Ten bread recipes", "All rights reserved",
                 "Privacy policy"):
        assert junk not in text
    assert rows[0]["title"] == "The Mill"


def _dev_page(name: str) -> tuple[bytes, str]:
    """(source body, expected main text) of a hand-checked page in data/extraction-dev."""
    from benchmarks.extract_quality import pages

    return next((body, expected) for page_name, body, expected in pages() if page_name == name)


@pytest.mark.parametrize("name, engine", [
    ("heise", "trafilatura"),  # resiliparse keeps the teasers around the article (F1 0.28 alone)
    ("pixnet", "trafilatura"),  # a blog post in a sea of link lists (F1 0.37 alone)
    ("webmd-1", "resiliparse"),  # boilerplate-heavy, but trafilatura finds nothing: resiliparse's answer stays
    ("wikipedia", "resiliparse"),  # an article that is most of its page: trafilatura is not asked
])
def test_auto_sends_boilerplate_heavy_pages_to_trafilatura(op, name, engine):
    from benchmarks.extract_quality import f1

    body, expected = _dev_page(name)
    decision, rows = run(op, [(body, "text/html", None)])
    assert reasons(decision) == [None]
    assert rows[0]["extract.engine"] == engine
    assert f1(rows[0]["text"], expected) > 0.8


def test_route_below_zero_is_resiliparse_alone():
    op = make_op(route_below=0.0)
    try:
        body, _ = _dev_page("heise")
        decision, rows = run(op, [(body, "text/html", None), (page(PROSE).encode(), "text/plain", None)])
        assert [r["extract.engine"] for r in rows] == ["resiliparse", None]  # text/plain: no extractor ran
    finally:
        op.close()


# -------------------------------------------------------------------------------------- charsets

GERMAN = ["Die Straße führt über die Brücke zum Schloss, wo früher die Müller ihr Getreide verkauften.",
          "Grüße aus Köln: Im Frühling öffnet das Mühlenmuseum wieder seine Türen für alle Besucher."]
RUSSIAN = ["Москва является столицей России и крупнейшим по численности населения городом страны.",
           "Город расположен на реке Москве в центре Восточно-Европейской равнины, между Окой и Волгой."]


def test_charset_chain():
    de = page(GERMAN, lang="de")
    ru_meta = page(RUSSIAN, head='<meta charset="windows-1251">', lang="ru")
    ru_bare = page(RUSSIAN, lang="ru")
    cases = [
        ((de.encode("latin-1"), "ISO-8859-1"), "cp1252", "header"),  # WHATWG: latin-1 means windows-1252
        ((ru_meta.encode("cp1251"), None), "cp1251", "meta"),
        ((ru_meta.encode("cp1251"), "utf-8"), "cp1251", "meta"),  # wrong header, caught by decoding errors
        ((ru_meta.encode("utf-8"), "windows-1251"), "utf-8", "utf8_valid"),  # mislabelled UTF-8
        ((b"\xff\xfe" + de.encode("utf-16-le"), "iso-8859-1"), "utf-16-le", "bom"),  # BOM beats the header
        ((ru_bare.encode("cp1251"), None), "cp1251", "detected"),
        ((page(["ascii only"]).encode(), None), "utf-8", "utf8_valid"),
    ]
    for (body, header), charset, source in cases:
        text, got_charset, got_source = decode_body(body, header)
        assert (got_charset, got_source) == (charset, source), (header, body[:40])
        assert "\ufffd" not in text
    meta_http_equiv = b'<meta http-equiv="Content-Type" content="text/html; charset=Shift_JIS">' + "日本語".encode("cp932")
    assert decode_body(meta_http_equiv)[1:] == ("cp932", "meta")
    assert decode_body("<meta charset=utf-16>é".encode())[1:] == ("utf-8", "meta")  # readable label → not UTF-16


def test_charsets_through_the_op(op):
    de, ru = page(GERMAN, lang="de"), page(RUSSIAN, head='<meta charset="windows-1251">', lang="ru")
    decision, rows = run(op, [(de.encode("latin-1"), "text/html", "ISO-8859-1"),
                              (ru.encode("cp1251"), "text/html", "utf-8"),
                              ("\ufeff".encode("utf-16-le") + de.encode("utf-16-le"), "text/html", None)])
    assert reasons(decision) == [None, None, None]
    assert [r["extract.charset"] for r in rows] == ["cp1252", "cp1251", "utf-16-le"]
    assert GERMAN[0] in rows[0]["text"] and GERMAN[0] in rows[2]["text"]
    assert RUSSIAN[1] in rows[1]["text"]
    assert [r["extract.lang_hint"] for r in rows] == ["de", "ru", "de"]


# -------------------------------------------------------------------- plain text and pass-through


def test_text_plain_is_decoded_not_extracted(op, warc_bodies):
    robots = warc_bodies["http://archive.org/robots.txt"]
    german = "\n".join(GERMAN).encode("cp1252")
    decision, rows = run(op, [robots, (german, "text/plain", "windows-1252")])
    assert reasons(decision) == [None, None]
    assert rows[0]["text"] == robots[0].decode("utf-8")
    assert rows[1]["text"] == "\n".join(GERMAN)
    assert rows[1]["title"] is None


def test_rows_with_text_pass_through_untouched(op):
    # A WET / JSONL batch: no `content` column at all, and a `title` of its own.
    wet = pa.table({"doc_id": pa.array([0, 1], pa.int64()), "text": ["already extracted", "more text"],
                    "title": ["kept title", None]})
    decision = op.process(wet)
    assert decision.keep is None
    assert decision.table.column("text").to_pylist() == ["already extracted", "more text"]
    assert decision.table.column("title").to_pylist() == ["kept title", None]
    for name in ("extract.charset", "extract.html_bytes", "extract.seconds", "extract.lang_hint"):
        assert decision.table.column(name).null_count == 2
    # Mixed: extracted, passed through, and a row with nothing at all.
    mixed = batch([(page(PROSE).encode(), "text/html", None), (None, None, None), (None, None, None)])
    mixed = mixed.set_column(mixed.schema.get_field_index("text"), "text",
                             pa.array([None, "from the WET record", None], pa.string()))
    decision = op.process(mixed)
    texts = decision.table.column("text").to_pylist()
    assert PROSE[0] in texts[0] and texts[1] == "from the WET record"
    assert reasons(decision) == [None, None, "extract_empty"]
    assert decision.table.column("extract.seconds").to_pylist()[1] is None


def test_string_content_column_is_accepted(op):
    html = page(RUSSIAN, head='<meta charset="windows-1251">', lang="ru")  # the meta no longer applies
    decision = op.process(pa.table({"content": [html], "content_type": ["text/html"]}))
    row = decision.table.to_pylist()[0]
    assert decision.keep is None and RUSSIAN[0] in row["text"] and row["extract.charset"] == "utf-8"


def test_zero_rows_keep_typed_columns(op):
    decision = op.process(batch([]))
    schema = decision.table.schema
    assert decision.table.num_rows == 0
    assert schema.field("text").type == pa.string() and schema.field("title").type == pa.string()
    assert schema.field("extract.html_bytes").type == pa.int64()
    assert schema.field("extract.seconds").type == pa.float64()
    assert schema.field("extract.charset").type == pa.string()
    assert "content" not in schema.names


def test_keep_html_and_config_validation():
    op = Extract(ExtractConfig(keep_html=True))
    try:
        decision = op.process(batch([(page(PROSE).encode(), "text/html", None)]))
        assert decision.table.column("content").to_pylist() == [page(PROSE).encode()]
    finally:
        op.close()
    with pytest.raises(ValidationError, match="fallback"):
        ExtractConfig(engine="resiliparse", fallback=True)
    with pytest.raises(ValidationError):
        ExtractConfig(timeout=3)  # unknown keys are errors
    with pytest.raises(ValidationError):
        ExtractConfig(timeout_s=0)


# ---------------------------------------------------------------------------------- hostile input


def test_too_large_is_rejected_before_any_work():
    op = Extract(ExtractConfig())  # not set up: a too-large body must not even start the sandbox
    huge = b"<html><body>" + b"<p>spam</p>" * (50 * 2**20 // 11) + b"</body></html>"
    start = time.perf_counter()
    decision, rows = run(op, [(huge, "text/html", "utf-8")])
    assert time.perf_counter() - start < 2
    assert reasons(decision) == ["extract_too_large"]
    assert decision.detail.to_pylist()[0].startswith(f"{len(huge)} bytes > max_bytes")
    assert rows[0]["extract.html_bytes"] == len(huge) and rows[0]["text"] is None
    assert op.sandbox.pid is None


def test_binary_and_degenerate_bodies(op, warc_bodies):
    jpeg = warc_bodies["http://archive.org/images/logoc.jpg"][0]
    png = warc_bodies["http://archive.org/images/star.png"][0]
    noise = random.Random(0).randbytes(200_000)
    nested = b"<html><body>" + b"<div>" * 100_000 + b"deep text " * 50 + b"</div>" * 100_000 + b"</body></html>"
    rows = [(jpeg, "text/html", "utf-8"), (png, "text/html", None), (noise, "text/html", None),
            (b"\x00" * 100_000, "text/html", None), (b"", "text/html", None), (nested, "text/html", None),
            (png, "image/png", None), (page(PROSE).encode(), "text/html", None)]
    start = time.perf_counter()
    decision, out = run(op, rows)
    assert time.perf_counter() - start < 5
    # 100,000 nested <div>: resiliparse's main-content pass is quadratic in depth (the default engine
    # starts with it), so the page costs timeout_s, not the worker; lxml would have capped the depth.
    assert reasons(decision) == ["extract_error"] * 4 + ["extract_empty", "extract_timeout", "extract_error", None]
    details = decision.detail.to_pylist()
    assert all(d.startswith("binary content:") for d in details[:4])
    assert details[6] == "unsupported content type 'image/png'"
    assert PROSE[0] in out[7]["text"]  # the worker is fine after all of that


def test_timeout_kills_the_child_and_the_next_document_is_fine():
    op = make_op(timeout_s=0.5)
    try:
        first = op.sandbox.pid
        start = time.perf_counter()
        decision, rows = run(op, [(slow_page(), "text/html", None), (page(PROSE).encode(), "text/html", None)])
        assert time.perf_counter() - start < 5
        assert reasons(decision) == ["extract_timeout", None]
        assert "no result within 0.5 s" in decision.detail.to_pylist()[0]
        assert PROSE[-1] in rows[1]["text"]
        assert op.sandbox.pid != first and op.sandbox.restarts == 1
    finally:
        op.close()


def test_a_timeout_inside_a_batch_costs_only_that_page():
    # Pages go to the child in one message; the child answers each as it finishes it. A page that
    # times out in the middle is reported alone and the pages after it go to a fresh child.
    op = make_op(timeout_s=0.5)
    try:
        good = (page(PROSE).encode(), "text/html", None)
        rows = [good, good, (slow_page(), "text/html", None), good, good]
        decision, out = run(op, rows)
        assert reasons(decision) == [None, None, "extract_timeout", None, None]
        assert all(PROSE[0] in out[i]["text"] for i in (0, 1, 3, 4))
        assert op.sandbox.restarts == 1
        seconds = [row["extract.seconds"] for row in out]
        assert 0.5 <= seconds[2] < 3 and all(0 < seconds[i] < 0.5 for i in (0, 1, 3, 4))
    finally:
        op.close()


def test_pages_go_to_the_child_in_bounded_messages(op, monkeypatch):
    import curation.extract as extract

    sizes: list[tuple[int, int]] = []
    call_many = type(op.sandbox).call_many

    def spy(sandbox, requests, timeout_s):
        sizes.append((len(requests), sum(len(r[1]) for r in requests)))
        return call_many(sandbox, requests, timeout_s)

    monkeypatch.setattr(type(op.sandbox), "call_many", spy)
    monkeypatch.setattr(extract, "REQUEST_PAGES", 3)
    monkeypatch.setattr(extract, "REQUEST_BYTES", 3000)
    small, big = page(PROSE).encode(), page(PROSE * 10).encode()
    assert len(small) < 1000 and 3000 < len(big)
    decision, out = run(op, [(small, "text/html", None)] * 4 + [(big, "text/html", None), (small, "text/html", None)])
    assert reasons(decision) == [None] * 6
    # At most 3 pages and ~3,000 bytes each; a page over the byte budget travels alone.
    assert [n for n, _ in sizes] == [3, 1, 1, 1]
    assert sizes[2][1] == len(big)


def test_pathological_nesting_in_resiliparse_times_out_not_hangs():
    # lexbor walks 100k nested elements for seconds; lxml (trafilatura) caps the depth at 256.
    op = make_op(engine="resiliparse", timeout_s=0.5)
    try:
        nested = b"<html><body>" + b"<div>" * 100_000 + b"deep" + b"</div>" * 100_000 + b"</body></html>"
        decision, rows = run(op, [(nested, "text/html", None), (page(PROSE).encode(), "text/html", None)])
        assert reasons(decision) == ["extract_timeout", None]
        assert PROSE[0] in rows[1]["text"] and rows[1]["title"] == "The Mill"
    finally:
        op.close()


def test_a_crashed_child_is_replaced():
    op = make_op(timeout_s=30)
    try:
        victim = op.sandbox.pid
        threading.Timer(0.3, os.kill, (victim, signal.SIGKILL)).start()  # as the OOM killer would
        decision, rows = run(op, [(slow_page(), "text/html", None), (page(PROSE).encode(), "text/html", None)])
        assert reasons(decision) == ["extract_error", None]
        assert decision.detail.to_pylist()[0] == "child process died (signal SIGKILL)"
        assert PROSE[0] in rows[1]["text"]
        assert op.sandbox.pid != victim
    finally:
        op.close()


@pytest.mark.parametrize("engine, detail, restarts", [
    ("trafilatura", "MemoryError: memory limit reached", 1),  # a MemoryError replaces the child
    ("auto", "ValueError: Failed to parse HTML document", 0),  # lexbor refused memory and said only this
])
def test_memory_guard_fails_inside_the_child(engine, detail, restarts):
    op = make_op(engine=engine, timeout_s=30, max_memory_mb=200)
    try:
        # The page needs ~400 MB of address space: over the cap it fails inside the child.
        decision, rows = run(op, [(slow_page(), "text/html", None), (page(PROSE).encode(), "text/html", None)])
        assert reasons(decision) == ["extract_error", None]
        assert decision.detail.to_pylist()[0] == detail
        assert PROSE[0] in rows[1]["text"]
        assert op.sandbox.restarts == restarts
    finally:
        op.close()


# -------------------------------------------------------------------------------------- no orphans


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def test_child_is_killed_when_the_op_is_garbage_collected():
    op = make_op()
    pid = op.sandbox.pid
    assert _alive(pid)
    del op
    gc.collect()
    assert _gone_within(pid, 5)


OWNER = """
import sys, time
from curation.extract import Extract, ExtractConfig
op = Extract(ExtractConfig())
op.setup()
print(op.sandbox.pid, flush=True)
if sys.argv[1] == "linger":
    time.sleep(60)
"""


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_child_does_not_outlive_its_process(how):
    owner = subprocess.Popen([sys.executable, "-c", OWNER, "exit" if how == "exit" else "linger"],
                             stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        pid = int(owner.stdout.readline())
        if how == "sigkill":  # no atexit, no finalizers: the child must notice on its own
            assert _alive(pid)
            owner.kill()
        owner.wait(timeout=30)
        assert _gone_within(pid, 5)
    finally:
        owner.kill()
        owner.wait()
