"""The direct range reader (hangar.stores._direct) over HTTPS, against a real TLS server on
loopback: a certificate the system does not trust makes it give the range back untouched (so
obstore, with its own certificate handling, does it); one it trusts (SSL_CERT_FILE) serves the
ranges, over one kept connection per thread. The S3, Azure and GCS paths over plain HTTP are
tested against the real servers in test_stores_cloud.py. Then the parallel ranges themselves
(hangar.stores._ranges), fed by a plain function."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from hangar.stores import _direct, _ranges

DATA = os.urandom(3 * 1024 * 1024 + 11)


def _certificate(tmp: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _Ranges(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as object stores do
    connections: ClassVar[set[int]] = set()
    gets: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        type(self).connections.add(self.client_address[1])
        type(self).gets.append(self.path)
        m = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
        assert m is not None
        start, last = int(m.group(1)), int(m.group(2))
        body = DATA[start : last + 1]
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{last}/{len(DATA)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, certificate) of an HTTPS server on a free loopback port."""
    cert, key = _certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ranges)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Ranges.connections, _Ranges.gets = set(), []
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert
    finally:
        server.shutdown()
        server.server_close()
        _direct._tls.cache_clear()


def _read(reader: _direct.RangeReader, start: int, end: int) -> tuple[int, bytes]:
    got = bytearray()
    return reader.fetch(start, end, got.extend), bytes(got)


def test_an_untrusted_certificate_gives_the_range_back_untouched(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = tls_server
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    _direct._tls.cache_clear()
    reader = _direct.RangeReader(lambda: f"{url}/obj?sig=secret", None, 10)
    assert _read(reader, 0, 1000) == (0, b"")
    assert reader.refused  # the rest of the file goes to obstore without asking again
    assert _read(reader, 1000, 2000) == (1000, b"")
    assert _Ranges.gets == []  # no request was ever sent over the untrusted connection
    reader.close()


def test_a_trusted_certificate_serves_ranges_over_one_kept_connection(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    _direct._tls.cache_clear()
    reader = _direct.RangeReader(lambda: f"{url}/obj?sig=secret", "etag", 10)
    size, step = len(DATA), 1024 * 1024
    for start in range(0, size, step):
        end = min(start + step, size)
        assert _read(reader, start, end) == (end, DATA[start:end])
    assert len(_Ranges.gets) == 4 and not reader.refused
    assert len(_Ranges.connections) == 1  # kept between the ranges of this thread
    reader.close()


# -- hangar.stores._ranges: the parallel ranges every store's large download is made of --------


def _ranged(
    tmp_path: Path, fetch: Any, checksum: Any, size: int = len(DATA)
) -> tuple[list[int], bytes, list[int]]:
    """(checksums, file content, progress reported) of `fetch_ranges` into a new file."""
    path, progress = tmp_path / "out.bin", []
    with open(path, "wb") as out:
        out.truncate(size)
        crcs = _ranges.fetch_ranges(
            out.fileno(), size, fetch, progress.append, checksum=checksum, where="s3://b/obj"
        )
    return crcs, path.read_bytes(), progress


@pytest.mark.parametrize("checksum", ["crc32", "crc32c", None])
def test_ranges_arrive_in_place_each_with_its_checksum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checksum: Any
) -> None:
    """Chunks of any size, in any order of ranges, land at their offsets; each range's checksum
    is of its own bytes (the stores combine them into the object's)."""
    import zlib

    import google_crc32c

    monkeypatch.setattr(_ranges, "RANGE_SIZE", 1024 * 1024 + 3)
    step = _ranges.RANGE_SIZE

    def fetch(start: int, end: int, write: Any) -> None:
        pos = start
        while pos < end:  # a fresh bytes, then a view of a reused buffer, as the two paths do
            n = min(end - pos, 70001)
            write(DATA[pos : pos + n] if pos % 2 else memoryview(bytearray(DATA[pos : pos + n])))
            pos += n

    crcs, content, progress = _ranged(tmp_path, fetch, checksum)
    assert content == DATA and sum(progress) == len(DATA)
    pieces = [DATA[s : s + step] for s in range(0, len(DATA), step)]
    if checksum == "crc32":
        assert crcs == [zlib.crc32(p) for p in pieces]
    elif checksum == "crc32c":
        assert crcs == [google_crc32c.value(p) for p in pieces]
    else:
        assert crcs == [0] * len(pieces)


def test_a_range_that_comes_short_or_long_fails_naming_the_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that sends less than a range, or more, fails the download with the object's
    name and the range; bytes past a range are never written over the next one's."""
    from hangar.errors import StoreError

    monkeypatch.setattr(_ranges, "RANGE_SIZE", 1024 * 1024)

    def short(start: int, end: int, write: Any) -> None:
        write(DATA[start : end - (1 if start else 0)])

    with pytest.raises(
        StoreError, match=r"s3://b/obj: the server sent 1048575 bytes for the range"
    ):
        _ranged(tmp_path, short, "crc32")

    def long(start: int, end: int, write: Any) -> None:
        write(DATA[start : end + (7 if start == 0 else 0)])

    with pytest.raises(StoreError, match=r"s3://b/obj: the server sent more than the 1048576 byt"):
        _ranged(tmp_path, long, None)


def test_a_failed_range_stops_the_ranges_not_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first failure ends the download as soon as the ranges running end: of 49 ranges
    taking 50 ms each, two at a time, the ones after the failed one are not asked for."""
    import time

    monkeypatch.setattr(_ranges, "RANGE_SIZE", 64 * 1024)
    monkeypatch.setattr(_ranges, "RANGE_WINDOW", 2)
    started: list[int] = []

    def fetch(start: int, end: int, write: Any) -> None:
        started.append(start)
        if start == 64 * 1024:
            raise OSError("connection reset")
        time.sleep(0.05)
        write(DATA[start:end])

    with pytest.raises(OSError, match="connection reset"):
        _ranged(tmp_path, fetch, None)
    assert len(started) < len(range(0, len(DATA), 64 * 1024)) // 2, len(started)
