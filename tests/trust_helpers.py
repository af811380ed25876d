"""Helpers shared by the trust tests (faults, crashes, concurrency, integrity, secrets): route a
backend through a fault proxy, build seeded source trees, poll for conditions with deadlines,
and read the catalog without Hangar's network code."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from backends import Backend
from servers import azurite
from servers.faultproxy import FaultProxy

T = TypeVar("T")
MiB = 1024 * 1024


def proxied_env(backend: Backend, url: str) -> dict[str, str]:
    """`backend.env` with the server's address replaced by the proxy's `url`."""
    env = dict(backend.env)
    if backend.store_type == "s3":
        env["AWS_ENDPOINT_URL_S3"] = url
    elif backend.store_type == "gcs":
        env["STORAGE_EMULATOR_HOST"] = url
    elif backend.store_type == "azure":
        env["AZURE_STORAGE_CONNECTION_STRING"] = (
            f"DefaultEndpointsProtocol=http;AccountName={azurite.ACCOUNT};"
            f"AccountKey={azurite.KEY};BlobEndpoint={url};"
        )
    return env


def route_through(proxy: FaultProxy, backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point this process's environment for `backend` at the fault proxy `proxy`."""
    for key, value in proxied_env(backend, proxy.url).items():
        monkeypatch.setenv(key, value)


def is_bucket_create(method: str, path: str) -> bool:
    """A create-bucket request (S3 PUT /bkt, GCS POST /storage/v1/b, Azure PUT ?restype=container).

    Bucket creation is not idempotent: a create retried after a reply was lost reads "taken".
    """
    bare = path.split("?", 1)[0].strip("/")
    if method == "PUT" and "/" not in bare and "restype=container" not in path and bare:
        return "uploads" not in path and "partNumber" not in path  # S3 CreateBucket
    if method == "POST" and path.split("?", 1)[0].rstrip("/").endswith("/storage/v1/b"):
        return True
    return method == "PUT" and "restype=container" in path


def is_object_read(method: str, path: str) -> bool:
    """A GET of an object's bytes (not a listing or metadata): S3 / Azure GET without a query,
    GCS ``alt=media``."""
    return method == "GET" and ("alt=media" in path or "?" not in path)


def is_object_write(method: str, path: str) -> bool:
    """A request that carries an object's bytes: S3 / Azure PUT of a key or part, GCS upload."""
    if method not in ("PUT", "POST"):
        return False
    if "/upload/storage/v1/" in path:
        return True
    if path.startswith("/storage/v1/"):
        return False  # GCS JSON API: buckets and metadata
    bare = path.split("?", 1)[0].strip("/")
    return "/" in bare and "restype=container" not in path and "comp=blocklist" not in path


def seeded_tree(root: Path, count: int, *, seed: int, max_size: int = 4096) -> dict[str, bytes]:
    """`count` small files of seeded random content under `root` (in a few directories)."""
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    for i in range(count):
        rel = f"d{i % 7}/f{i:05d}.bin"
        data = rng.randbytes(rng.randrange(0, max_size))
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[rel] = data
    return files


def write_random(path: Path, size: int, *, seed: int) -> str:
    """Write `size` seeded random bytes to `path`, in 8 MiB pieces; returns their MD5."""
    rng = random.Random(seed)
    digest = hashlib.md5()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        left = size
        while left:
            chunk = rng.randbytes(min(left, 8 * MiB))
            out.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def md5_tree(root: Path) -> dict[str, str]:
    """{relative path: MD5} of every regular file under `root`."""
    out: dict[str, str] = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            digest = hashlib.md5()
            with open(path, "rb") as fh:
                while chunk := fh.read(8 * MiB):
                    digest.update(chunk)
            out[path.relative_to(root).as_posix()] = digest.hexdigest()
    return out


def md5s(objects: dict[str, bytes]) -> dict[str, str]:
    return {k: hashlib.md5(v).hexdigest() for k, v in objects.items()}


def wait_for(check: Callable[[], T | None], *, timeout: float, what: str) -> T:
    """Poll `check` until it returns a truthy value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)


def sizes(backend: Backend, bucket: str) -> dict[str, int]:
    """{key: size} of every object, listed with the cloud's own client (no data read)."""
    client: Any = getattr(backend, "client", None)
    if backend.store_type == "s3":
        out: dict[str, int] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            out.update({o["Key"]: int(o["Size"]) for o in page.get("Contents", [])})
        return out
    if backend.store_type == "gcs":
        return {b.name: int(b.size) for b in client.list_blobs(bucket)}
    if backend.store_type == "azure":
        container = client.get_container_client(bucket)
        return {b.name: int(b.size) for b in container.list_blobs()}
    return {k: len(v) for k, v in backend.objects(bucket).items()}


def catalog_rows(home: Path) -> list[dict[str, Any]]:
    """Every (storage, store) row of the catalog, read with sqlite3 directly (not Hangar)."""
    db_path = home / "catalog.db"
    if not db_path.exists():
        return []
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute(
            "SELECT s.name, st.store_type, st.url, st.status, st.created FROM storages s "
            "LEFT JOIN storage_stores st ON st.name = s.name ORDER BY s.name"
        ).fetchall()
    finally:
        db.close()
    keys = ("name", "store", "url", "status", "created")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def statuses(home: Path, name: str) -> list[str]:
    return [r["status"] for r in catalog_rows(home) if r["name"] == name and r["status"]]


def snapshot(home: Path) -> tuple[str, list[str]]:
    """What a refused command must not change: the catalog rows and the local buckets."""
    buckets = home / "buckets"
    listing = (
        sorted(str(p.relative_to(buckets)) for p in buckets.rglob("*")) if buckets.is_dir() else []
    )
    return json.dumps(catalog_rows(home), sort_keys=True), listing


def start_cli(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`hangar ARGS` in its own process group, output to `log` (for kill points)."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "hangar.cli", *args],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def kill9(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole process group of a `start_cli` process."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def run_cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`hangar ARGS` to completion (5 minutes at most)."""
    return subprocess.run(
        [sys.executable, "-m", "hangar.cli", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def sent_count(stderr: str) -> int:
    """How many files the last transfer summary says were sent."""
    counts = re.findall(r"sent (\d+) file\(s\)", stderr)
    assert counts, stderr
    return int(counts[-1])
