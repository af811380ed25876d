"""Faults on the wire: a real proxy (tests/servers/faultproxy.py) between Hangar and each real
server answers 500 / 503 SlowDown, resets connections mid-body, cuts responses short, stalls,
or damages bytes, for a seeded fraction of requests. Hangar must end with every object
byte-identical (checked with the cloud's own client, straight to the server) or fail cleanly.

Sizes: 1,000 small files plus one large file of HANGAR_TEST_BIG_MIB MiB (default 40, three
16 MiB multipart parts / resumable chunks, to fit CI's time budget; 200 is the issue's size).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from backends import Backend
from conftest import unique_bucket
from servers.faultproxy import FaultProxy
from trust_helpers import (
    MiB,
    catalog_rows,
    is_bucket_create,
    is_object_read,
    is_object_write,
    md5_tree,
    md5s,
    proxied_env,
    route_through,
    seeded_tree,
    statuses,
    write_random,
)

from hangar.api import Storage, download
from hangar.errors import HangarError, StoreError, SyncError

BIG_MIB = int(os.environ.get("HANGAR_TEST_BIG_MIB", "40"))
SMALL_FILES = 1000


def test_ten_percent_faults_lose_nothing(
    cloud: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10% of requests fail (500, 503 SlowDown, mid-body reset, response cut short): the
    upload of 1,000 files + one multipart-sized file and the COPY download back both complete,
    byte-identical; the proxy counts the retries."""
    src = tmp_path / "src"
    seeded_tree(src, SMALL_FILES, seed=6)
    write_random(src / "big" / "model.bin", BIG_MIB * MiB + 12_345, seed=7)
    expected = md5_tree(src)
    name = unique_bucket("flt")
    with FaultProxy(cloud.endpoint) as proxy:  # type: ignore[attr-defined]
        route_through(proxy, cloud, monkeypatch)
        proxy.fault_fraction(
            0.10,
            ("500", "503", "reset", "cut"),
            seed=2024,
            match=lambda m, p: not is_bucket_create(m, p),
        )
        storage = Storage(name=name, source=str(src), stores=[cloud.store_type])
        [report] = storage.upload()
        uploaded = proxy.summary()
        dest = tmp_path / "copy"
        result = download(name, dest)
        faults = proxy.state.injected
        summary = proxy.summary()
    print(f"\n{cloud.store_type}: upload {uploaded}; upload + download {summary}")
    assert report.result is not None and report.result.uploaded == SMALL_FILES + 1
    assert result.files == SMALL_FILES + 1
    assert faults >= 100, summary  # the faults really happened (and were retried)
    assert md5s(cloud.objects(name)) == expected  # the cloud's own client, no proxy
    assert md5_tree(dest) == expected
    assert [p.name for p in dest.rglob(".*hangar-*")] == []  # no temporary files left
    assert statuses(Path(os.environ["HANGAR_HOME"]), name) == ["READY"]


def test_every_request_faulted_fails_cleanly_and_deletes_nothing(
    cloud: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hangar_home: Path
) -> None:
    """Every request of an upload fails: bounded time, an error naming the store and the cause,
    status UPLOAD_FAILED, and nothing deleted (even with mirror, which plans a deletion)."""
    src = tmp_path / "src"
    seeded_tree(src, 20, seed=1)
    name = unique_bucket("all")
    monkeypatch.setenv("HANGAR_MAX_RETRIES", "2")
    monkeypatch.setenv("HANGAR_RETRY_TIMEOUT", "3")
    with FaultProxy(cloud.endpoint) as proxy:  # type: ignore[attr-defined]
        route_through(proxy, cloud, monkeypatch)
        Storage(name=name, source=str(src), stores=[cloud.store_type], sync="mirror").upload()
        before = md5s(cloud.objects(name))
        (src / "d0" / "f00000.bin").unlink()  # mirror would delete its object
        (src / "new.txt").write_text("new")
        storage = Storage(name=name, source=str(src), stores=[cloud.store_type], sync="mirror")
        from hangar.storage import ensure, upload

        stores = ensure(storage.spec, command="test")
        proxy.fault_fraction(1.0, ("503",), seed=1)
        started = time.monotonic()
        with pytest.raises(HangarError) as err:
            upload(storage.spec, stores)
        elapsed = time.monotonic() - started
        attempts = proxy.state.injected
    message = str(err.value)
    assert elapsed < 60, elapsed
    assert stores[0].url in message
    assert "503" in message or "SlowDown" in message, message
    assert attempts >= 2
    assert statuses(hangar_home, name) == ["UPLOAD_FAILED"]
    assert md5s(cloud.objects(name)) == before  # nothing deleted, nothing half-written


def test_a_store_refusing_every_write_stops_after_one_wave(
    cloud: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hangar_home: Path
) -> None:
    """Every object write fails: after one wave of files in flight has failed (each after its
    own retries) no further file is started, instead of spending a full retry budget on each
    of the 300 files. Counted in requests at the proxy, not in seconds."""
    from hangar.storage import ensure, upload
    from hangar.sync.apply import give_up_after

    src = tmp_path / "src"
    seeded_tree(src, 300, seed=5)
    name = unique_bucket("wave")
    monkeypatch.setenv("HANGAR_MAX_RETRIES", "1")
    monkeypatch.setenv("HANGAR_RETRY_TIMEOUT", "2")
    with FaultProxy(cloud.endpoint) as proxy:  # type: ignore[attr-defined]
        route_through(proxy, cloud, monkeypatch)
        storage = Storage(name=name, source=str(src), stores=[cloud.store_type])
        stores = ensure(storage.spec, command="test")
        proxy.fault_fraction(1.0, ("503",), seed=2, match=is_object_write)
        with pytest.raises(HangarError) as err:
            upload(storage.spec, stores)
        with proxy.state.lock:
            writes = sum(is_object_write(m, p) for m, p in proxy.state.requests)
    message = str(err.value)
    wave = give_up_after(16)  # 16: the upload's workers
    assert "not tried" in message, message
    assert writes <= (wave + 16) * 4, writes  # one wave (+ those in flight), a few tries each
    files_tried = int(message.split(" of 300 ")[0].split()[-1])
    assert wave <= files_tried < 300, message
    assert statuses(hangar_home, name) == ["UPLOAD_FAILED"]
    assert cloud.objects(name) == {}


def test_all_faulted_cli_names_the_store_and_creates_nothing(
    cloud: Backend, tmp_path: Path, hangar_home: Path
) -> None:
    """`hangar storage upload` against a store that fails every request: exit 1 within a
    bounded time, one paragraph naming the store and the cause, no traceback, no bucket."""
    src = tmp_path / "src"
    seeded_tree(src, 3, seed=3)
    name = unique_bucket("cli")
    with FaultProxy(cloud.endpoint) as proxy:  # type: ignore[attr-defined]
        env = {**os.environ, **proxied_env(cloud, proxy.url)}
        env.update(HANGAR_MAX_RETRIES="1", HANGAR_RETRY_TIMEOUT="2", HANGAR_READ_TIMEOUT="2")
        # Only faults that never reach the server: a create whose reply is lost would create.
        proxy.fault_fraction(1.0, ("500", "503", "drop"), seed=9)
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "hangar.cli", "storage", "upload", str(src), "-n", name,
             "-s", cloud.store_type],
            env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert elapsed < 90, elapsed
    assert "Traceback" not in result.stderr
    assert name in result.stderr and result.stderr.startswith("error: ")
    assert not cloud.bucket_exists(name)
    assert all(r["status"] != "READY" for r in catalog_rows(hangar_home))


def test_stalled_server_times_out_and_is_retried(
    cloud: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that accepts a request and then says nothing: the read timeout fires, the
    request is retried, and the upload completes (it never hangs)."""
    src = tmp_path / "src"
    files = seeded_tree(src, 5, seed=5)
    name = unique_bucket("stl")
    monkeypatch.setenv("HANGAR_READ_TIMEOUT", "1.5")
    with FaultProxy(cloud.endpoint) as proxy:  # type: ignore[attr-defined]
        proxy.state.stall_s = 60
        route_through(proxy, cloud, monkeypatch)
        storage = Storage(name=name, source=str(src), stores=[cloud.store_type])
        from hangar.storage import ensure, upload

        stores = ensure(storage.spec, command="test")
        proxy.fail_next(2, "stall", match=lambda m, p: m in ("PUT", "POST"))
        started = time.monotonic()
        upload(storage.spec, stores)
        elapsed = time.monotonic() - started
        stalled = proxy.state.by_kind["stall"]
    assert stalled == 2
    assert elapsed < 30, elapsed
    assert md5s(cloud.objects(name)) == md5s(files)


def test_damaged_download_never_lands(
    cloud: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every download response is damaged in flight: COPY fails, naming the object, and no file
    (not even a temporary one) is left under the target."""
    src = tmp_path / "src"
    seeded_tree(src, 3, seed=8, max_size=3000)
    (src / "d0" / "f00000.bin").write_bytes(b"x" * 2000)
    name = unique_bucket("dmg")
    Storage(name=name, source=str(src), stores=[cloud.store_type]).upload()
    with FaultProxy(cloud.endpoint) as proxy:  # type: ignore[attr-defined]
        route_through(proxy, cloud, monkeypatch)
        proxy.fault_fraction(1.0, ("corrupt-response",), seed=1, match=is_object_read)
        dest = tmp_path / "copy"
        with pytest.raises((SyncError, StoreError)) as err:
            download(name, dest)
    assert "d0/f00000.bin" in str(err.value) or "MD5" in str(err.value)
    assert [p for p in dest.rglob("*") if p.is_file()] == []
