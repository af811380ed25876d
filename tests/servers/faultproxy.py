"""A real HTTP proxy in front of a real test server that injects the faults a server cannot be
asked to produce, and counts the requests it sees.

Requests are forwarded byte for byte, Host header included, so signatures made for the proxy's
address stay valid. Addresses of the upstream in responses (a resumable-upload `Location`, a
GCS `mediaLink`) are rewritten to the proxy's, so follow-up requests come back through it.

Faults (`kind`):

- ``"500"``, ``"503"`` (S3's SlowDown), ``"429"``, ``"403"``: answer that status without
  forwarding;
- ``"drop"``: close the connection without answering (nothing forwarded);
- ``"reset"``: a mid-body TCP reset: a request with a body is read half-way and reset (nothing
  reaches the server); a request without one is forwarded and its response reset half-way;
- ``"cut"``: forward the request (the server does the work), then cut the response short: the
  headers announce the full length but only half the body (none for an empty body) is sent
  before the connection closes;
- ``"stall"``: read the request, then send nothing for `stall_s` seconds (or until the proxy
  stops) and close: the client's read timeout must fire;
- ``"corrupt"``: flip one byte in the middle of the request body before forwarding it (what a
  checksum sent with an upload must catch);
- ``"corrupt-response"``: flip one byte in the middle of the response body (what a download
  that verifies checksums must catch).

`fail_next(n, kind)` fails the next `n` matching requests; `fault_fraction(rate, kinds, seed)`
fails a seeded pseudo-random fraction of matching requests with kinds drawn from `kinds`.
`count()`, `state.injected` and `state.by_kind` report what happened.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "te"}
SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
INTERNAL = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)
FORBIDDEN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access denied.</Message></Error>"
)
KINDS = ("500", "503", "429", "403", "drop", "reset", "cut", "stall", "corrupt", "corrupt-response")
Match = Callable[[str, str], bool]


def _any(method: str, path: str) -> bool:
    return True


@dataclass
class Fault:
    remaining: int
    kind: str
    match: Match  # (method, path) -> bool


@dataclass
class RandomFaults:
    rate: float
    kinds: tuple[str, ...]
    rng: random.Random
    match: Match


@dataclass
class ProxyState:
    upstream: tuple[str, int]
    faults: list[Fault] = field(default_factory=list)
    random_faults: RandomFaults | None = None
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    # (path, Authorization header) of the requests that carried one
    authorizations: list[tuple[str, str]] = field(default_factory=list)
    agents: list[tuple[str, str]] = field(default_factory=list)  # (path, User-Agent)
    # (method, path, status) of requests forwarded and answered in full
    completed: list[tuple[str, str, int]] = field(default_factory=list)
    delays: list[tuple[float, Match]] = field(default_factory=list)
    injected: int = 0
    inflight: int = 0  # requests being handled now
    by_kind: Counter[str] = field(default_factory=Counter)
    stall_s: float = 30.0
    stopping: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)  # ends current holds
    lock: threading.Lock = field(default_factory=threading.Lock)

    def delay_for(self, method: str, path: str) -> float:
        with self.lock:
            return sum(seconds for seconds, match in self.delays if match(method, path))

    def take_fault(self, method: str, path: str) -> str | None:
        with self.lock:
            self.requests.append((method, path))
            kind = None
            for fault in self.faults:
                if fault.remaining > 0 and fault.match(method, path):
                    fault.remaining -= 1
                    kind = fault.kind
                    break
            rnd = self.random_faults
            if (
                kind is None
                and rnd is not None
                and rnd.match(method, path)
                and rnd.rng.random() < rnd.rate
            ):
                kind = rnd.rng.choice(rnd.kinds)
            if kind is not None:
                self.injected += 1
                self.by_kind[kind] += 1
            return kind


def _kind(status_or_kind: int | str) -> str:
    kind = (
        {0: "drop"}.get(status_or_kind, str(status_or_kind))
        if isinstance(status_or_kind, int)
        else status_or_kind
    )
    if kind not in KINDS:
        raise ValueError(f"unknown fault {status_or_kind!r}; one of {KINDS}")
    return kind


def _flip(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: ProxyState  # set on the per-proxy subclass
    rewrite: tuple[bytes, bytes]  # (upstream address, proxy address)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def finish(self) -> None:
        with contextlib.suppress(OSError):  # the connection was reset or closed on purpose
            super().finish()

    def _length(self) -> int:
        return int(self.headers.get("Content-Length") or 0)

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
        return self.rfile.read(self._length())

    def _reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0), as a crashed peer would."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    def _answer(self, status: int) -> None:
        payload = {503: SLOWDOWN, 500: INTERNAL, 403: FORBIDDEN}.get(status, b"Too Many Requests")
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Retry-After", "0")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _forward(self, body: bytes) -> tuple[http.client.HTTPResponse, bytes]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        if "Transfer-Encoding" in self.headers:
            headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(*self.state.upstream, timeout=120)
        try:
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        return resp, data

    def _handle(self) -> None:
        with self.state.lock:
            self.state.inflight += 1
        try:
            self._handle_one()
        finally:
            with self.state.lock:
                self.state.inflight -= 1

    def _handle_one(self) -> None:
        authorization = self.headers.get("Authorization")
        with self.state.lock:
            self.state.agents.append((self.path, self.headers.get("User-Agent", "")))
            if authorization:
                self.state.authorizations.append((self.path, authorization))
        kind = self.state.take_fault(self.command, self.path)
        if kind == "reset" and self._length() > 1:
            self.rfile.read(self._length() // 2)
            self._reset()
            return
        body = self._body()
        if kind in ("500", "503", "429", "403"):
            self._answer(int(kind))
            return
        if kind == "drop":
            self.close_connection = True
            self.connection.close()
            return
        if kind == "stall":
            self.state.stopping.wait(self.state.stall_s)
            self.close_connection = True
            self.connection.close()
            return
        if kind == "corrupt" and body:
            body = _flip(body)
        delay = self.state.delay_for(self.command, self.path)
        if delay > 0 and self.state.release.wait(delay):  # released: drop, never forward
            self.close_connection = True
            self.connection.close()
            return
        resp, data = self._forward(body)
        if kind == "corrupt-response" and data and self.command == "GET":
            data = _flip(data)
        old, new = self.rewrite
        if old in data and "json" in (resp.getheader("Content-Type") or ""):
            data = data.replace(old, new)
        self.send_response(resp.status, resp.reason)
        for key, value in resp.getheaders():
            if key.lower() not in _HOP and key.lower() != "content-length":
                if key.lower() == "location":
                    value = value.replace(old.decode(), new.decode())
                self.send_header(key, value)
        if self.command == "HEAD":
            self.send_header("Content-Length", resp.getheader("Content-Length") or "0")
        else:
            self.send_header("Content-Length", str(len(data)))
        if kind in ("reset", "cut"):
            self.close_connection = True
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data[: len(data) // 2])
            if kind == "reset":
                self._reset()
            else:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()
        with self.state.lock:
            self.state.completed.append((self.command, self.path, resp.status))

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # faults make handlers fail on purpose; the counts tell the story


class FaultProxy:
    """A proxy on a free loopback port forwarding to `upstream_url`'s host and port."""

    def __init__(self, upstream_url: str) -> None:
        parsed = urlparse(upstream_url)
        host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.state = ProxyState(upstream=(host, port))
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = _Server(("127.0.0.1", 0), handler)
        self.port = self._server.server_address[1]
        handler.rewrite = (f"{host}:{port}".encode(), f"127.0.0.1:{self.port}".encode())
        # Keep the upstream's path (Azurite's /devstoreaccount1) in the proxy's URL.
        self.url = f"http://127.0.0.1:{self.port}{parsed.path}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.state.stopping.set()
        self.state.release.set()
        self._server.shutdown()
        self._server.server_close()

    def fail_next(self, count: int, status: int | str = 503, match: Match = _any) -> None:
        """Fail the next `count` requests that `match` with `status`: an HTTP status (500, 503,
        429), 0 (drop the connection), or a fault kind ("reset", "cut", "stall", ...)."""
        with self.state.lock:
            self.state.faults.append(Fault(count, _kind(status), match))

    def fault_fraction(
        self,
        rate: float,
        kinds: Sequence[str] = ("500", "503", "reset", "cut"),
        *,
        seed: int = 0,
        match: Match = _any,
    ) -> None:
        """Fail about `rate` (0..1) of the matching requests from now on, each with a kind drawn
        from `kinds`, pseudo-randomly from `seed`. `rate` 0 stops."""
        chosen = tuple(_kind(k) for k in kinds)
        with self.state.lock:
            self.state.random_faults = (
                RandomFaults(rate, chosen, random.Random(seed), match) if rate > 0 else None
            )

    def delay(self, seconds: float, match: Match = _any) -> None:
        """Hold each matching request `seconds` before forwarding it (a slow server), so a test
        can act while a transfer is in a known state. `clear()` and the proxy's exit end every
        hold, dropping the held requests."""
        with self.state.lock:
            self.state.delays.append((seconds, match))

    def clear(self) -> None:
        """Stop injecting faults and delays (counts are kept); requests held by a delay now
        are dropped without being forwarded."""
        with self.state.lock:
            self.state.faults.clear()
            self.state.delays.clear()
            self.state.random_faults = None
            released, self.state.release = self.state.release, threading.Event()
        released.set()

    def completed(self, method: str | None = None, contains: str = "") -> int:
        """Requests forwarded and answered in full, with `method`, whose path has `contains`."""
        with self.state.lock:
            return sum(
                1
                for m, p, _ in self.state.completed
                if (method is None or m == method) and contains in p
            )

    def count(self, method: str | None = None, contains: str = "") -> int:
        """Requests seen (faulted ones included) with `method` whose path contains `contains`."""
        with self.state.lock:
            return sum(
                1
                for m, p in self.state.requests
                if (method is None or m == method) and contains in p
            )

    def summary(self) -> str:
        """'N requests, M faulted (kind: n, ...)' for test reports."""
        with self.state.lock:
            kinds = ", ".join(f"{k}: {n}" for k, n in sorted(self.state.by_kind.items()))
            return f"{len(self.state.requests)} requests, {self.state.injected} faulted ({kinds})"
