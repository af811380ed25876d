"""A real HTTP proxy in front of a real test server that injects faults a server cannot be asked
to produce (503 SlowDown, 429, dropped connections) and counts the requests it sees.

Requests are forwarded byte for byte, Host header included, so signatures made for the proxy's
address stay valid. `fail_next(n, ...)` makes the next `n` matching requests fail.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "te"}
SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


@dataclass
class Fault:
    remaining: int
    status: int  # 0: drop the connection without answering
    match: Callable[[str, str], bool]  # (method, path) -> bool


@dataclass
class ProxyState:
    upstream: tuple[str, int]
    faults: list[Fault] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    injected: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            self.requests.append((method, path))
            for fault in self.faults:
                if fault.remaining > 0 and fault.match(method, path):
                    fault.remaining -= 1
                    self.injected += 1
                    return fault
            return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: ProxyState  # set on the per-proxy subclass

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        body = self._body()
        fault = self.state.take_fault(self.command, self.path)
        if fault is not None:
            if fault.status == 0:
                self.close_connection = True
                self.connection.close()
                return
            payload = SLOWDOWN if fault.status == 503 else b"Too Many Requests"
            self.send_response(fault.status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Retry-After", "0")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        if "Transfer-Encoding" in self.headers:
            headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(*self.state.upstream, timeout=60)
        try:
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        self.send_response(resp.status, resp.reason)
        for key, value in resp.getheaders():
            if key.lower() not in _HOP and key.lower() != "content-length":
                self.send_header(key, value)
        if self.command == "HEAD":
            self.send_header("Content-Length", resp.getheader("Content-Length") or "0")
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = _handle


class FaultProxy:
    """A proxy on a free loopback port forwarding to `upstream_url`'s host and port."""

    def __init__(self, upstream_url: str) -> None:
        parsed = urlparse(upstream_url)
        self.state = ProxyState(upstream=(parsed.hostname or "127.0.0.1", parsed.port or 80))
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        # Keep the upstream's path (Azurite's /devstoreaccount1) in the proxy's URL.
        self.url = f"http://127.0.0.1:{self.port}{parsed.path}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail_next(
        self,
        count: int,
        status: int = 503,
        match: Callable[[str, str], bool] = lambda method, path: True,
    ) -> None:
        """Fail the next `count` requests that `match` with `status` (0: drop the connection)."""
        with self.state.lock:
            self.state.faults.append(Fault(count, status, match))

    def count(self, method: str | None = None, contains: str = "") -> int:
        """Requests seen (faulted ones included) with `method` whose path contains `contains`."""
        with self.state.lock:
            return sum(
                1
                for m, p in self.state.requests
                if (method is None or m == method) and contains in p
            )
