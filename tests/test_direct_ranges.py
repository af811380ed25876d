"""The direct range reader (hangar.stores._direct) over HTTPS, against a real TLS server on
loopback: a certificate the system does not trust makes it give the range back untouched (so
obstore, with its own certificate handling, does it); one it trusts (SSL_CERT_FILE) serves the
ranges, over one kept connection per thread. The S3 and Azure paths over plain HTTP are tested
against the real servers in test_stores_cloud.py."""

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
from typing import ClassVar

import pytest

from hangar.stores import _direct

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
