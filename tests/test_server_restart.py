"""The object server restarting in the middle of a transfer (issue 6).

Each test starts its own SeaweedFS (so the other tests' server is never disturbed), starts a
transfer with the `hangar` command, and kills the server (`kill -9`, a crash: no goodbye to any
connection) once the transfer is under way, then starts it again on the same ports and data.

- A short outage (about as long as a real restart, ~1-3 s) is ridden out by the retries: the
  same command completes, and every object is byte-identical (read back with boto3).
- An outage longer than the retry budget ends in a clean failure, within a bounded time, naming
  the store and the cause; the storage is UPLOAD_FAILED, nothing already uploaded is deleted,
  and once the server is back the next run sends only what is missing.
- COPY download through a restart completes with every file identical, and no partial file.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import unique_bucket
from servers._proc import http_ok
from servers.cloud_backends import S3Backend
from servers.plugin import _use_env
from servers.seaweedfs import SeaweedServer, start_seaweedfs
from trust_helpers import (
    MiB,
    md5_tree,
    md5s,
    run_cli,
    seeded_tree,
    sent_count,
    sizes,
    start_cli,
    statuses,
    wait_for,
    write_random,
)

pytestmark = pytest.mark.s3

FILES = 1500  # about 4 s of uploading here: the kill lands mid-transfer


@pytest.fixture
def own_s3(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, hangar_home: Path
) -> Iterator[S3Backend]:
    server = start_seaweedfs(tmp_path_factory.mktemp("restart-s3"))
    try:
        backend = S3Backend(server)
        _use_env(monkeypatch, "s3", backend.env)
        yield backend
    finally:
        server.stop()


def _crash(server: SeaweedServer) -> None:
    """kill -9 the server (and so every connection it holds)."""
    proc = server.process.proc
    assert proc is not None and proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _start_again(server: SeaweedServer) -> None:
    """The same server, ports and data directory, back up and answering S3 calls."""
    server.process.start()
    client: Any = server.client()
    server.process.wait_until(lambda: http_ok(f"{server.endpoint}/healthz"), 60, "S3 health")
    server.process.wait_until(lambda: client.list_buckets() is not None, 60, "S3 bucket API")


def _source(root: Path) -> dict[str, bytes]:
    files = seeded_tree(root, FILES, seed=41, max_size=8_000)
    write_random(root / "big.bin", 48 * MiB + 7, seed=42)  # three parts, in flight at the crash
    return files


def _crash_once_under_way(
    backend: S3Backend, bucket: str, proc: Any, *, down_for: float, at: int = 150
) -> int:
    """Wait until `at` objects are visible, crash the server, keep it down `down_for` seconds
    (or, with down_for < 0, until `proc` exits), start it again. Returns the objects visible
    at the crash."""

    def count() -> int:
        try:
            return len(sizes(backend, bucket))
        except Exception:
            return 0  # the bucket is not created yet

    seen = wait_for(
        lambda: count() >= at or proc.poll() is not None,
        timeout=120,
        what=f"{at} objects",
    )
    assert seen and proc.poll() is None, "the transfer ended before the crash point"
    visible = len(sizes(backend, bucket))
    _crash(backend.server)
    if down_for >= 0:
        time.sleep(down_for)
    else:
        proc.wait(timeout=120)  # a bounded failure, not a hang
    _start_again(backend.server)
    return visible


def test_upload_rides_out_a_server_restart(
    own_s3: S3Backend, tmp_path: Path, hangar_home: Path
) -> None:
    src = tmp_path / "src"
    _source(src)
    name = unique_bucket("restart")
    proc = start_cli(["storage", "upload", str(src), "-n", name, "-s", "s3"], {}, tmp_path / "a")
    try:
        visible = _crash_once_under_way(own_s3, name, proc, down_for=2.0)
        code = proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "a").read_text()
    assert visible < FILES + 1, "the crash did not land mid-upload"
    assert code == 0, log
    assert md5s(own_s3.objects(name)) == md5_tree(src)  # complete and byte-identical
    assert statuses(hangar_home, name) == ["READY"]
    assert own_s3.client.list_multipart_uploads(Bucket=name).get("Uploads", []) == []


def test_upload_fails_cleanly_when_the_server_stays_down_then_resumes(
    own_s3: S3Backend, tmp_path: Path, hangar_home: Path
) -> None:
    src = tmp_path / "src"
    _source(src)
    name = unique_bucket("restart")
    args = ["storage", "upload", str(src), "-n", name, "-s", "s3"]
    short_budget = {"HANGAR_MAX_RETRIES": "2", "HANGAR_RETRY_TIMEOUT": "3"}
    proc = start_cli(args, short_budget, tmp_path / "a")
    try:
        _crash_once_under_way(own_s3, name, proc, down_for=-1)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "a").read_text()
    assert proc.returncode == 1, log
    assert f"s3://{name}" in log, log  # names the store
    assert "connect" in log.lower(), log  # and the cause: the server cannot be reached
    assert "not tried" in log, log  # gave up after one wave, not a retry budget per file
    assert statuses(hangar_home, name) == ["UPLOAD_FAILED"]
    kept = sizes(own_s3, name)
    assert kept, "the objects uploaded before the crash are gone"
    complete = own_s3.objects(name)
    assert md5s(complete) == {k: v for k, v in md5_tree(src).items() if k in complete}

    again = run_cli(args)
    assert again.returncode == 0, again.stderr
    assert sent_count(again.stderr) == FILES + 1 - len(kept)  # only what was missing
    assert md5s(own_s3.objects(name)) == md5_tree(src)
    assert statuses(hangar_home, name) == ["READY"]


def test_copy_download_rides_out_a_server_restart(
    own_s3: S3Backend, tmp_path: Path, hangar_home: Path
) -> None:
    src = tmp_path / "src"
    _source(src)
    name = unique_bucket("restart")
    up = run_cli(["storage", "upload", str(src), "-n", name, "-s", "s3"])
    assert up.returncode == 0, up.stderr
    dest = tmp_path / "dest"
    proc = start_cli(["storage", "download", name, str(dest)], {}, tmp_path / "d")
    try:
        wait_for(
            lambda: (
                (dest.is_dir() and sum(len(f) for _, _, f in os.walk(dest)) >= 150)
                or proc.poll() is not None
            ),
            timeout=120,
            what="150 files downloaded",
        )
        assert proc.poll() is None, "the download ended before the crash point"
        _crash(own_s3.server)
        time.sleep(2.0)
        _start_again(own_s3.server)
        code = proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, (tmp_path / "d").read_text()
    assert md5_tree(dest) == md5_tree(src)  # every file whole; no temporary file left
