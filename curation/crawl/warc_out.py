"""Crawl output: WARC chunks and their commit logs, written atomically.

Layout of a crawl folder (local path or a pyarrow filesystem URI)::

    crawl-p003-00000.warc.gz     warcinfo, then a request + response record pair per archived page
    crawl-p003-00000.log.jsonl   one line per URL attempted while the chunk was open (see below)
    summary-p003.json            this partition's counts from its latest run
    crawl-summary.json           totals over every committed log (written by `crawl()`)

A chunk is written under a ``.tmp-`` name, then renamed: first the WARC, then its log. **The log is the
commit marker**: a WARC without its log is an orphan of an interrupted run and is deleted on the next
start; a log always names a WARC that exists. Only 2xx answers of an allowed content type are
archived (as Common Crawl's main WARCs); everything else — redirects, HTTP errors, refusals,
time-outs — is a log line with a ``reason``, so a report can count every URL the crawl touched.

Log line fields: ``url``, ``depth``, ``hops`` (redirects followed to reach it), ``outcome``
(``fetched`` | ``redirect`` | ``http_error`` | ``failed``), ``reason`` (null for a clean fetch;
``truncated`` for a capped body; otherwise the failure code), ``detail``, ``status`` (HTTP status or
null), ``ip``, ``bytes`` (payload bytes archived), ``warc`` (file name, for fetched pages),
``location`` (normalised redirect target), ``links`` (every link of the page, normalised), ``time``.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import re
import uuid
from datetime import datetime, timezone
from typing import Any, Iterator

import pyarrow.fs as pafs
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from curation.crawl.fetch import Response

TMP_MARK = ".tmp-"
_CHUNK = re.compile(r"^crawl-p(\d+)-(\d+)\.(warc\.gz|log\.jsonl)$")


class Store:
    """The crawl folder on any pyarrow filesystem."""

    def __init__(self, location: str):
        if "://" in location and not location.startswith("file://"):
            self.fs, self.root = pafs.FileSystem.from_uri(location)
            self.scheme = location.split("://", 1)[0]
        else:
            self.fs = pafs.LocalFileSystem()
            self.root = os.path.abspath(location[len("file://"):] if location.startswith("file://") else location)
            self.scheme = ""
        self.fs.create_dir(self.root, recursive=True)

    def path(self, name: str) -> str:
        return posixpath.join(self.root, name)

    def uri(self, name: str) -> str:
        path = self.path(name)
        return f"{self.scheme}://{path}" if self.scheme else path

    def names(self) -> list[str]:
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=False, allow_not_found=True))
        return sorted(posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.File)

    def read_text(self, name: str) -> str:
        with self.fs.open_input_stream(self.path(name), compression=None) as f:
            return f.read().decode("utf-8")

    def write_atomic(self, name: str, data: bytes) -> None:
        tmp = self.path(f"{TMP_MARK}{uuid.uuid4().hex[:8]}-{name}")
        with self.fs.open_output_stream(tmp, compression=None) as out:
            out.write(data)
        self.fs.move(tmp, self.path(name))

    def delete(self, name: str) -> None:
        self.fs.delete_file(self.path(name))

    def move(self, src_name: str, dst_name: str) -> None:
        self.fs.move(self.path(src_name), self.path(dst_name))


def chunk_name(partition: int, index: int, kind: str) -> str:
    return f"crawl-p{partition:03d}-{index:05d}.{kind}"


def committed_chunks(store: Store) -> list[tuple[int, int]]:
    """(partition, index) of every committed chunk, in name order."""
    out = []
    for name in store.names():
        m = _CHUNK.match(name)
        if m and m.group(3) == "log.jsonl":
            out.append((int(m.group(1)), int(m.group(2))))
    return out


def sweep(store: Store) -> int:
    """Delete temporaries and orphan WARCs (no commit log) of an interrupted run. Driver only,
    before any partition starts."""
    names = store.names()
    logs = set(names)
    removed = 0
    for name in names:
        m = _CHUNK.match(name)
        orphan = m and m.group(3) == "warc.gz" and name.replace(".warc.gz", ".log.jsonl") not in logs
        if name.startswith(TMP_MARK) or orphan:
            store.delete(name)
            removed += 1
    return removed


def iter_log(store: Store) -> Iterator[dict[str, Any]]:
    """Every committed log line, oldest chunk first within a partition."""
    for partition, index in committed_chunks(store):
        for line in store.read_text(chunk_name(partition, index, "log.jsonl")).splitlines():
            if line.strip():
                yield json.loads(line)


def warc_files(store: Store) -> list[str]:
    """Locations of every committed WARC file, sorted."""
    names = set(store.names())
    out = []
    for partition, index in committed_chunks(store):
        name = chunk_name(partition, index, "warc.gz")
        if name in names:
            out.append(store.uri(name))
    return out


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Counting(io.RawIOBase):
    def __init__(self, out):
        self.out = out
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.out.write(data)
        self.count += len(data)
        return len(data)


class ChunkWriter:
    """Writes one partition's chunks: WARC records as pages arrive, the log at commit."""

    def __init__(self, store: Store, partition: int, info: dict[str, str], max_bytes: int):
        self.store = store
        self.partition = partition
        self.info = info
        self.max_bytes = max_bytes
        done = [i for p, i in committed_chunks(store) if p == partition]
        taken = [int(m.group(2)) for m in map(_CHUNK.match, store.names()) if m and int(m.group(1)) == partition]
        self.next_index = max(done + taken, default=-1) + 1
        self.committed: list[str] = []
        self._open_chunk()

    def _open_chunk(self) -> None:
        self.index = self.next_index
        self.next_index += 1
        self.warc_name = chunk_name(self.partition, self.index, "warc.gz")
        self.entries: list[dict[str, Any]] = []
        self.records = 0
        self._stream = None
        self._out: _Counting | None = None
        self._writer: WARCWriter | None = None

    def _ensure_warc(self) -> WARCWriter:
        if self._writer is None:
            self._tmp = f"{TMP_MARK}{uuid.uuid4().hex[:8]}-{self.warc_name}"
            self._stream = self.store.fs.open_output_stream(self.store.path(self._tmp), compression=None)
            self._out = _Counting(self._stream)
            self._writer = WARCWriter(self._out, gzip=True)
            fields = {"software": "gristmill crawler 0.1 (warcio)", "format": "WARC File Format 1.0",
                      "conformsTo": "https://iipc.github.io/warc-specifications/specifications/warc-format/warc-1.0/",
                      **self.info}
            self._writer.write_record(self._writer.create_warcinfo_record(self.warc_name, fields))
        return self._writer

    def archive(self, response: Response) -> str:
        """Write the request and response records of a 2xx answer; returns the WARC file name."""
        writer = self._ensure_warc()
        date = datetime.fromtimestamp(response.started, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = response.body or b""
        warc_headers = {"WARC-IP-Address": response.ip, "WARC-Date": date}
        if response.truncated:
            warc_headers["WARC-Truncated"] = "length"
        http = StatusAndHeaders(f"{response.status} {response.reason}".strip(), response.headers,
                                protocol=response.protocol)
        resp = writer.create_warc_record(response.url, "response", payload=io.BytesIO(body), length=len(body),
                                         http_headers=http, warc_headers_dict=warc_headers)
        req_http = StatusAndHeaders(response.request_line, response.request_headers, is_http_request=True)
        req = writer.create_warc_record(response.url, "request", http_headers=req_http, warc_headers_dict={
            "WARC-IP-Address": response.ip, "WARC-Date": date,
            "WARC-Concurrent-To": resp.rec_headers.get_header("WARC-Record-ID")})
        writer.write_record(req)
        writer.write_record(resp)
        self.records += 1
        return self.warc_name

    def log(self, entry: dict[str, Any]) -> None:
        entry.setdefault("time", now_iso())
        self.entries.append(entry)

    def full(self) -> bool:
        return self._out is not None and self._out.count >= self.max_bytes

    def commit(self) -> None:
        """Close the chunk (WARC renamed first, then its log: the commit) and open the next."""
        if self._writer is not None:
            self._stream.close()
            self.store.move(self._tmp, self.warc_name)
            self.committed.append(self.store.uri(self.warc_name))
        if self.entries:
            data = "".join(json.dumps(e, ensure_ascii=False, separators=(",", ":")) + "\n" for e in self.entries)
            self.store.write_atomic(chunk_name(self.partition, self.index, "log.jsonl"), data.encode("utf-8"))
        elif self._writer is not None:  # records but no entries cannot happen; keep the WARC valid anyway
            self.store.write_atomic(chunk_name(self.partition, self.index, "log.jsonl"), b"")
        self._open_chunk()

    def abort(self) -> None:
        if self._stream is not None:
            try:
                self._stream.close()
                self.store.delete(self._tmp)
            except OSError:
                pass
