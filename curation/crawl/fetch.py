"""One HTTP GET, with hard limits: a small HTTP/1.1 client on a plain socket.

Why not ``http.client`` or ``requests``: a crawler needs (1) to connect to the exact address the
safety policy approved while sending the URL's own ``Host`` header (no second DNS lookup a rebinding
server could answer differently), (2) a **total** deadline per request that also holds against a
server dripping one byte a second (socket timeouts alone restart on every byte), (3) a byte cap it
can stop at, and (4) the status line and headers as received, for the WARC record. Every wait below
is bounded by ``min(read_timeout, time left before the deadline)``.

Requests ask for ``Accept-Encoding: identity`` (no gzip): the WARC payload is then the document
itself, a capped body is a readable prefix, and no decompression bomb reaches the crawler. A server
that compresses anyway is archived as it answered. ``Connection: close``: one request per connection.
Chunked bodies are de-chunked; the WARC then carries ``X-Crawler-Transfer-Encoding: chunked`` and the
real ``Content-Length`` instead (as Common Crawl does), so readers never de-chunk twice.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from curation.crawl.safety import AddressPolicy, AddressRefused
from curation.crawl.urls import DEFAULT_PORTS

MAX_HEADER_BYTES = 64 << 10
_RECV = 64 << 10


class FetchError(Exception):
    """A request that produced no usable response; ``reason`` is the crawl log's code:
    ``address_refused``, ``dns_error``, ``timeout`` (connect or read), ``deadline_exceeded`` (the
    total per-request deadline), ``connection_error``, ``tls_error``, ``bad_response``,
    ``incomplete_body``."""

    def __init__(self, reason: str, detail: str, ip: str | None = None, status: int | None = None):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.ip = ip
        self.status = status


@dataclass
class Response:
    url: str
    ip: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes | None  # None: not read (non-2xx status, or a content type outside the allow-list)
    request_line: str
    request_headers: list[tuple[str, str]]
    truncated: bool = False  # body stopped at the byte cap (WARC-Truncated: length)
    protocol: str = "HTTP/1.1"
    started: float = field(default_factory=time.time)

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    @property
    def content_type(self) -> str:
        return (self.header("content-type") or "").split(";", 1)[0].strip().lower()

    @property
    def charset(self) -> str | None:
        for param in (self.header("content-type") or "").split(";")[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "charset" and value.strip():
                return value.strip().strip("\"'")
        return None


class _Conn:
    """A socket read through one buffer, every wait bounded by the request's deadline."""

    def __init__(self, sock: socket.socket, deadline: float, read_timeout: float, ip: str):
        self.sock = sock
        self.deadline = deadline
        self.read_timeout = read_timeout
        self.ip = ip
        self.buf = bytearray()
        self.eof = False

    def _fill(self) -> bool:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise FetchError("deadline_exceeded", "the total request deadline passed", self.ip)
        self.sock.settimeout(min(self.read_timeout, left))
        try:
            data = self.sock.recv(_RECV)
        except (socket.timeout, TimeoutError):
            if time.monotonic() >= self.deadline:
                raise FetchError("deadline_exceeded", "the total request deadline passed", self.ip) from None
            raise FetchError("timeout", f"no data for {self.read_timeout:.1f}s", self.ip) from None
        except ssl.SSLError as e:
            raise FetchError("tls_error", str(e), self.ip) from None
        except OSError as e:
            raise FetchError("connection_error", f"read failed: {e}", self.ip) from None
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_until(self, marker: bytes, limit: int) -> bytes | None:
        """Bytes up to and including ``marker``; None at EOF or past ``limit`` bytes."""
        start = 0
        while True:
            i = self.buf.find(marker, start)
            if i >= 0:
                out = bytes(self.buf[: i + len(marker)])
                del self.buf[: i + len(marker)]
                return out
            if len(self.buf) > limit:
                return None
            start = max(0, len(self.buf) - len(marker) + 1)
            if not self._fill():
                return None

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n and self._fill():
            pass
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_to_eof(self, limit: int) -> bytes:
        while len(self.buf) <= limit and self._fill():
            pass
        out = bytes(self.buf[:limit + 1])
        self.buf.clear()
        return out


def _parse_head(head: bytes, ip: str) -> tuple[str, int, str, list[tuple[str, str]]]:
    lines = head.decode("iso-8859-1").replace("\r\n", "\n").split("\n")
    status_line = lines[0]
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise FetchError("bad_response", f"not an HTTP status line: {status_line[:100]!r}", ip)
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t" and headers:  # obsolete line folding
            headers[-1] = (headers[-1][0], headers[-1][1] + " " + line.strip())
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise FetchError("bad_response", f"bad header line {line[:100]!r}", ip)
        headers.append((name.strip(), value.strip()))
    return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "", headers


def _read_chunked(conn: _Conn, limit: int) -> tuple[bytes, bool]:
    out = bytearray()
    while True:
        line = conn.read_until(b"\n", 1024)
        if line is None:
            raise FetchError("incomplete_body", "chunked body ended early", conn.ip)
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise FetchError("bad_response", f"bad chunk size {size_text[:20]!r}", conn.ip) from None
        if size == 0:
            return bytes(out), False
        take = min(size, limit + 1 - len(out))
        data = conn.read_exact(take)
        if len(data) < take:
            raise FetchError("incomplete_body", "chunked body ended early", conn.ip)
        out += data
        if len(out) > limit:
            return bytes(out[:limit]), True
        conn.read_exact(size - take)
        conn.read_until(b"\n", 16)


class Fetcher:
    def __init__(self, policy: AddressPolicy, user_agent: str, connect_timeout: float = 5.0,
                 read_timeout: float = 10.0, total_timeout: float = 30.0):
        self.policy = policy
        self.user_agent = user_agent
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.total_timeout = total_timeout
        self._tls: ssl.SSLContext | None = None  # made on first https use (loading CAs takes ~25 ms)

    def get(self, url: str, max_bytes: int, content_types: set[str] | None = None,
            accept: str = "text/html,application/xhtml+xml;q=0.9,text/plain;q=0.8,*/*;q=0.1") -> Response:
        """GET a normalised ``url``. The body is read only for a 2xx answer whose content type is in
        ``content_types`` (any type when None), and at most ``max_bytes`` of it. Raises
        :class:`FetchError`."""
        started = time.time()
        deadline = time.monotonic() + self.total_timeout
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or DEFAULT_PORTS[parts.scheme]
        try:
            addresses = self.policy.resolve(host if ":" not in host else f"[{host}]", port,
                                            min(self.connect_timeout, deadline - time.monotonic()))
        except AddressRefused as e:
            raise FetchError(e.reason, e.detail) from None
        sock, ip = self._connect(addresses, port, deadline)
        try:
            if parts.scheme == "https":
                sock = self._wrap_tls(sock, host, ip, deadline)
            target = parts.path or "/"
            if parts.query:
                target += "?" + parts.query
            request_line = f"GET {target} HTTP/1.1"
            request_headers = [("Host", parts.netloc), ("User-Agent", self.user_agent), ("Accept", accept),
                               ("Accept-Encoding", "identity"), ("Connection", "close")]
            raw = request_line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in request_headers) + "\r\n"
            try:
                sock.settimeout(max(0.001, min(self.read_timeout, deadline - time.monotonic())))
                sock.sendall(raw.encode("ascii"))
            except (socket.timeout, TimeoutError):
                raise FetchError("timeout", "sending the request timed out", ip) from None
            except OSError as e:
                raise FetchError("connection_error", f"send failed: {e}", ip) from None
            conn = _Conn(sock, deadline, self.read_timeout, ip)
            while True:
                head = conn.read_until(b"\r\n\r\n", MAX_HEADER_BYTES)
                if head is None:
                    if conn.eof:
                        raise FetchError("bad_response", "connection closed before the end of the headers", ip)
                    raise FetchError("bad_response", f"headers larger than {MAX_HEADER_BYTES} bytes", ip)
                protocol, status, reason, headers = _parse_head(head[:-4], ip)
                if status >= 200 or status == 101:
                    break  # 1xx interim answers (100 Continue, 103 Early Hints) are skipped
            response = Response(url, ip, status, reason, headers, None, request_line, request_headers,
                                protocol=protocol, started=started)
            if 200 <= status < 300 and status not in (204, 205) and (
                    content_types is None or response.content_type in content_types):
                self._read_body(conn, response, max_bytes)
            return response
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def _connect(self, addresses: list[str], port: int, deadline: float) -> tuple[socket.socket, str]:
        last: FetchError | None = None
        for ip in addresses[:3]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise FetchError("deadline_exceeded", "the total request deadline passed", ip)
            try:
                return socket.create_connection((ip, port), timeout=min(self.connect_timeout, left)), ip
            except (socket.timeout, TimeoutError):
                last = FetchError("timeout", f"connecting to {ip}:{port} took longer than {self.connect_timeout:.1f}s", ip)
            except OSError as e:
                last = FetchError("connection_error", f"cannot connect to {ip}:{port}: {e.strerror or e}", ip)
        assert last is not None
        raise last

    def _wrap_tls(self, sock: socket.socket, host: str, ip: str, deadline: float) -> socket.socket:
        try:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            sock.settimeout(max(0.001, min(self.connect_timeout, deadline - time.monotonic())))
            return self._tls.wrap_socket(sock, server_hostname=host)
        except (socket.timeout, TimeoutError):
            sock.close()
            raise FetchError("timeout", "TLS handshake timed out", ip) from None
        except (ssl.SSLError, ssl.CertificateError, OSError) as e:
            sock.close()
            raise FetchError("tls_error", f"TLS handshake failed: {e}", ip) from None

    def _read_body(self, conn: _Conn, response: Response, max_bytes: int) -> None:
        transfer = response.header("transfer-encoding") or ""
        encoding = transfer.lower()
        length_text = response.header("content-length")
        if "chunked" in encoding:
            body, truncated = _read_chunked(conn, max_bytes)
            response.headers = [(k, v) for k, v in response.headers if k.lower() not in ("transfer-encoding", "content-length")]
            response.headers += [("X-Crawler-Transfer-Encoding", transfer),
                                 ("Content-Length", str(len(body)))]
        elif length_text is not None and length_text.strip().isdigit():
            length = int(length_text.strip())
            body = conn.read_exact(min(length, max_bytes))
            if len(body) < min(length, max_bytes):
                raise FetchError("incomplete_body", f"got {len(body)} of {length} bytes", conn.ip, response.status)
            truncated = length > max_bytes
        else:
            body = conn.read_to_eof(max_bytes)
            truncated = len(body) > max_bytes
            body = body[:max_bytes]
        response.body = body
        response.truncated = truncated
