"""Azurite (npm azurite@3.35.0, the newest that runs on Node 20) as the Azure Blob test server.

The package is installed on first use into ``<repo>/.test-cache/azurite`` (gitignored) with
``npm install``; later sessions reuse it.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from azure.storage.blob import BlobServiceClient

from servers._proc import ServerProcess, free_ports, http_ok, start_server

AZURITE_VERSION = "3.35.0"
ACCOUNT = "devstoreaccount1"
# The well-known Azurite development key (public, documented by Microsoft).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".test-cache" / "azurite"


def azurite_binary() -> str:
    """Path of `azurite-blob`, installing azurite into the repo's .test-cache if needed."""
    binary = CACHE / "node_modules" / ".bin" / "azurite-blob"
    if binary.exists():
        return str(binary)
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            "Azurite needs Node.js and npm, which are not installed; the Azure tests need them.\n"
            "To fix: apt-get install -y nodejs npm"
        )
    CACHE.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [npm, "install", "--prefix", str(CACHE), "--no-audit", "--no-fund",
         f"azurite@{AZURITE_VERSION}"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if result.returncode != 0 or not binary.exists():
        raise RuntimeError(
            f"npm install azurite@{AZURITE_VERSION} failed (status {result.returncode}):\n"
            f"{result.stderr[-2000:]}"
        )
    return str(binary)


@dataclass
class AzuriteServer:
    process: ServerProcess
    endpoint: str  # http://127.0.0.1:PORT/devstoreaccount1

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint={self.endpoint};"
        )

    def client(self) -> BlobServiceClient:
        """An azure-storage-blob client for this server (the test's own view)."""
        return BlobServiceClient.from_connection_string(self.connection_string)

    def stop(self) -> None:
        self.process.stop()


def _launch(workdir: Path, binary: str) -> AzuriteServer:
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    (port,) = free_ports(1)
    argv = [
        binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(data),
        "--skipApiVersionCheck", "--loose", "--disableTelemetry", "--silent",
    ]  # fmt: skip
    proc = ServerProcess("azurite", argv, workdir, workdir / "server.log")
    proc.start()
    server = AzuriteServer(proc, f"http://127.0.0.1:{port}/{ACCOUNT}")
    try:
        # Any HTTP answer (even 400/403 for an unsigned request) means it is serving.
        proc.wait_until(lambda: http_ok(f"{server.endpoint}?comp=list"), 60, "Blob API")
    except BaseException:
        proc.stop()
        raise
    return server


def start_azurite(base: Path) -> AzuriteServer:
    """Start azurite-blob on a free loopback port under `base` (retried on a port race)."""
    binary = azurite_binary()
    return start_server("azurite", base, lambda d: _launch(d, binary))
