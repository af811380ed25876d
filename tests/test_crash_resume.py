"""Crash and resume: `kill -9` of `hangar storage upload` / `hangar launch` at points the tests
choose (a fault proxy slows the server so each point is reached deterministically).

After a kill: every object visible under its final key is complete (checked with the cloud's own
client), the catalog says INIT or UPLOAD_FAILED (never READY), and the next run sends exactly
the files that were not complete. Multipart uploads a killed run left behind are aborted by the
next upload (S3: list_multipart_uploads shows none for Hangar's keys).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from backends import Backend
from conftest import unique_bucket
from servers.faultproxy import FaultProxy
from trust_helpers import (
    MiB,
    catalog_rows,
    is_object_write,
    kill9,
    md5_tree,
    md5s,
    proxied_env,
    run_cli,
    seeded_tree,
    sent_count,
    sizes,
    start_cli,
    statuses,
    wait_for,
    write_random,
)

FILES = 200


def _watch_partial(
    backend: Backend, bucket: str, expected: dict[str, int]
) -> Callable[[], dict[str, int]]:
    """A listing that fails the test if any visible object is not its source's full size."""

    def listing() -> dict[str, int]:
        try:
            seen = sizes(backend, bucket)
        except Exception:
            return {}  # the bucket does not exist yet
        partial = {k: v for k, v in seen.items() if expected.get(k) != v}
        assert not partial, f"objects visible before they were complete: {partial}"
        return seen

    return listing


def _settle(proxy: FaultProxy) -> None:
    """After a kill: let the requests the proxy still holds end (forwarded or dropped)."""
    proxy.clear()
    wait_for(lambda: proxy.state.inflight == 0, timeout=60, what="the proxy to go idle")


@pytest.mark.parametrize("point", [10, 150], ids=["early", "late"])
def test_kill_upload_then_resume_sends_only_the_rest(
    cloud: Backend, tmp_path: Path, hangar_home: Path, point: int
) -> None:
    src = tmp_path / "src"
    files = seeded_tree(src, FILES, seed=point, max_size=20_000)
    expected = {k: len(v) for k, v in files.items()}
    name = unique_bucket("kill")
    args = ["storage", "upload", str(src), "-n", name, "-s", cloud.store_type]
    listing = _watch_partial(cloud, name, expected)
    with FaultProxy(cloud.endpoint) as proxy:  # type: ignore[attr-defined]
        proxy.delay(0.2, is_object_write)  # about 80 files/s: every kill point is reachable
        proc = start_cli(args, proxied_env(cloud, proxy.url), tmp_path / "first.log")
        try:
            wait_for(lambda: len(listing()) >= point, timeout=120, what=f"{point} objects")
        finally:
            kill9(proc)
        _settle(proxy)
    visible = listing()
    assert point <= len(visible) < FILES, "the kill point was not mid-upload"
    assert set(statuses(hangar_home, name)) <= {"INIT", "UPLOAD_FAILED"}
    complete = cloud.objects(name)
    assert md5s(complete) == md5s({k: files[k] for k in complete})  # whole objects only

    resumed = run_cli(args)
    assert resumed.returncode == 0, resumed.stderr
    assert sent_count(resumed.stderr) == FILES - len(visible)  # only what was not complete
    assert md5s(cloud.objects(name)) == md5s(files)
    assert statuses(hangar_home, name) == ["READY"]


def _held_part(method: str, path: str) -> bool:
    return method == "PUT" and "partNumber=" in path and "partNumber=1&" not in path


def _held_completion(method: str, path: str) -> bool:
    return method == "POST" and "uploadId=" in path


@pytest.mark.parametrize(
    "hold, reached",
    [
        (_held_part, lambda p: p.completed("PUT", "partNumber=1&") >= 1),
        (_held_completion, lambda p: p.count("POST", "uploadId=") >= 1),
    ],
    ids=["after-first-part", "completion-pending"],
)
def test_kill_mid_multipart_leaves_nothing_visible_and_is_cleaned_up(
    s3_backend: Any, tmp_path: Path, hangar_home: Path, hold: Any, reached: Any
) -> None:
    src = tmp_path / "src"
    write_random(src / "big.bin", 40 * MiB + 1, seed=3)  # three 16 MiB parts
    (src / "small.txt").write_text("small")
    name = unique_bucket("mpu")
    args = ["storage", "upload", str(src), "-n", name, "-s", "s3"]
    client = s3_backend.client
    with FaultProxy(s3_backend.endpoint) as proxy:
        proxy.delay(120, hold)
        proc = start_cli(args, proxied_env(s3_backend, proxy.url), tmp_path / "first.log")
        try:
            wait_for(lambda: reached(proxy), timeout=120, what="the multipart kill point")
        finally:
            kill9(proc)
        _settle(proxy)  # the held requests are dropped, never forwarded
    assert "big.bin" not in sizes(s3_backend, name)  # no partial object under the final key
    left = client.list_multipart_uploads(Bucket=name).get("Uploads", [])
    assert [u["Key"] for u in left] == ["big.bin"]
    assert set(statuses(hangar_home, name)) <= {"INIT", "UPLOAD_FAILED"}

    resumed = run_cli(args)
    assert resumed.returncode == 0, resumed.stderr
    assert "aborted 1 unfinished multipart upload(s)" in resumed.stderr
    assert client.list_multipart_uploads(Bucket=name).get("Uploads", []) == []
    assert md5s(s3_backend.objects(name)) == md5_tree(src)
    assert statuses(hangar_home, name) == ["READY"]


def _gcs_chunk(method: str, path: str) -> bool:
    return method == "PUT" and "upload_id=" in path  # a chunk of a resumable upload


def _azure_commit(method: str, path: str) -> bool:
    return method == "PUT" and "comp=blocklist" in path  # Put Block List: the object appears


@pytest.mark.parametrize(
    "store, hold",
    [("gcs", _gcs_chunk), ("azure", _azure_commit)],
    ids=["gcs-session-started", "azure-blocks-sent-commit-pending"],
)
def test_kill_mid_large_upload_on_gcs_and_azure_leaves_nothing_visible(
    request: pytest.FixtureRequest, tmp_path: Path, hangar_home: Path, store: str, hold: Any
) -> None:
    """GCS resumable uploads and Azure block blobs have no multipart listing to clean up: an
    unfinished session / uncommitted blocks are never visible and expire on the server (GCS
    after a week; Azure discards uncommitted blocks when the blob is committed, or after a
    week). What must hold: nothing under the final key after the kill, and the next run
    completes byte-identical (Azure: with no uncommitted block left)."""
    backend: Any = request.getfixturevalue(f"{store}_backend")
    src = tmp_path / "src"
    write_random(src / "big.bin", 40 * MiB + 1, seed=5)  # above part_size: chunked / blocks
    (src / "small.txt").write_text("small")
    name = unique_bucket("mpu")
    args = ["storage", "upload", str(src), "-n", name, "-s", store]
    with FaultProxy(backend.endpoint) as proxy:
        proxy.delay(120, hold)
        proc = start_cli(args, proxied_env(backend, proxy.url), tmp_path / "first.log")
        try:
            wait_for(
                lambda: proxy.count("PUT", "upload_id=" if store == "gcs" else "comp=blocklist"),
                timeout=120,
                what="the large upload's kill point",
            )
        finally:
            kill9(proc)
        _settle(proxy)  # the held request is dropped, never forwarded
    assert "big.bin" not in sizes(backend, name)  # nothing under the final key
    assert set(statuses(hangar_home, name)) <= {"INIT", "UPLOAD_FAILED"}

    resumed = run_cli(args)
    assert resumed.returncode == 0, resumed.stderr
    assert md5s(backend.objects(name)) == md5_tree(src)
    assert statuses(hangar_home, name) == ["READY"]
    if store == "azure":
        blob = backend.client.get_container_client(name).get_blob_client("big.bin")
        committed, uncommitted = blob.get_block_list("all")
        assert committed and uncommitted == []


def test_kill_launch_mid_upload_then_relaunch(
    s3_backend: Any, tmp_path: Path, hangar_home: Path
) -> None:
    src = tmp_path / "src"
    files = seeded_tree(src, FILES, seed=11, max_size=20_000)
    name = unique_bucket("klaunch")
    task = tmp_path / "task.yaml"
    out = tmp_path / "data"
    task.write_text(
        f"file_mounts:\n  {out}:\n    name: {name}\n    source: {src}\n    store: s3\n"
        f"    mode: COPY\nrun: ls {out} | wc -l\n"
    )
    listing = _watch_partial(s3_backend, name, {k: len(v) for k, v in files.items()})
    with FaultProxy(s3_backend.endpoint) as proxy:
        proxy.delay(0.2, is_object_write)
        proc = start_cli(
            ["launch", str(task)], proxied_env(s3_backend, proxy.url), tmp_path / "l.log"
        )
        try:
            wait_for(lambda: len(listing()) >= 40, timeout=120, what="40 objects")
        finally:
            kill9(proc)
        _settle(proxy)
    visible = listing()
    assert 40 <= len(visible) < FILES
    assert [r["status"] for r in catalog_rows(hangar_home)] in (["INIT"], ["UPLOAD_FAILED"])
    assert not out.exists() or not any(out.iterdir())  # the task never ran

    again = run_cli(["launch", str(task)])
    assert again.returncode == 0, again.stderr
    assert sent_count(again.stderr) == FILES - len(visible)
    assert again.stdout.strip() == "7"  # the COPY landed: seven directories
    assert md5s(s3_backend.objects(name)) == md5s(files)
    assert statuses(hangar_home, name) == ["READY"]
