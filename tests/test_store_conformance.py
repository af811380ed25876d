"""One conformance suite for the Store contract, run unchanged against every store type.

Results are checked with the cloud's own client (`backend.objects`), not with the store under
test.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from backends import Backend
from conftest import unique_bucket

from hangar.errors import BucketExists, BucketNotFound, ObjectNotFound
from hangar.stores.base import FileMeta, Store


def _meta(path: Path) -> FileMeta:
    return FileMeta(
        mtime_ns=path.stat().st_mtime_ns, md5=hashlib.md5(path.read_bytes()).hexdigest()
    )


@pytest.fixture
def bucket(backend: Backend) -> Store:
    store = backend.open(unique_bucket())
    store.create_bucket()
    return store


def _put(store: Store, tmp_path: Path, key: str, data: bytes) -> Path:
    src = tmp_path / "src" / key.replace("/", "__")
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(data)
    os.utime(src, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    moved: list[int] = []
    store.put_file(src, key, meta=_meta(src), progress=moved.append)
    assert sum(moved) == len(data)
    return src


def test_create_exists_delete(backend: Backend) -> None:
    store = backend.open(unique_bucket())
    assert not store.bucket_exists()
    store.create_bucket()
    assert store.bucket_exists()
    assert backend.bucket_exists(store.bucket)
    with pytest.raises(BucketExists):
        store.create_bucket()
    store.delete_bucket()
    assert not store.bucket_exists()
    assert not backend.bucket_exists(store.bucket)


def test_delete_bucket_with_objects(backend: Backend, bucket: Store, tmp_path: Path) -> None:
    for i in range(5):
        _put(bucket, tmp_path, f"d/{i}.txt", b"x" * i)
    bucket.delete_bucket()
    assert not backend.bucket_exists(bucket.bucket)


def test_put_list_head_get_roundtrip(backend: Backend, bucket: Store, tmp_path: Path) -> None:
    payloads = {
        "a.txt": b"hello",
        "dir/b.bin": os.urandom(70_000),
        "dir/sub/c with space.txt": b"",
        "unicode-é.txt": "ünïcode".encode(),
    }
    for key, data in payloads.items():
        _put(bucket, tmp_path, key, data)
    # The cloud's own client sees the same tree, keys = relative paths.
    assert backend.objects(bucket.bucket) == payloads

    listed = {o.key: o for o in bucket.list()}
    assert set(listed) == set(payloads)
    for key, data in payloads.items():
        info = listed[key]
        assert info.size == len(data)
        assert info.md5 == hashlib.md5(data).hexdigest()
        if bucket.capabilities.listing_has_meta:  # else (S3) the listing has no source mtime
            assert info.mtime_ns == 1_600_000_000_123_456_789
        head = bucket.head(key)
        assert (head.size, head.mtime_ns) == (len(data), 1_600_000_000_123_456_789)
        assert head.md5 == hashlib.md5(data).hexdigest()

    assert {o.key for o in bucket.list("dir/")} == {"dir/b.bin", "dir/sub/c with space.txt"}

    out = tmp_path / "out.bin"
    got: list[int] = []
    bucket.get_file("dir/b.bin", out, progress=got.append)
    assert out.read_bytes() == payloads["dir/b.bin"]
    assert sum(got) == len(payloads["dir/b.bin"])
    assert out.stat().st_mtime_ns == 1_600_000_000_123_456_789  # the recorded source mtime


def test_overwrite_replaces_object(backend: Backend, bucket: Store, tmp_path: Path) -> None:
    _put(bucket, tmp_path, "k", b"first")
    _put(bucket, tmp_path, "k", b"second version")
    assert backend.objects(bucket.bucket) == {"k": b"second version"}


def test_missing_objects_and_buckets(backend: Backend, bucket: Store, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound):
        bucket.head("nope")
    with pytest.raises(ObjectNotFound):
        bucket.get_file("nope", tmp_path / "x", progress=lambda n: None)
    assert not (tmp_path / "x").exists()
    missing = backend.open(unique_bucket())
    with pytest.raises(BucketNotFound):
        list(missing.list())


def test_delete_batch_ignores_missing(backend: Backend, bucket: Store, tmp_path: Path) -> None:
    for i in range(3):
        _put(bucket, tmp_path, f"k{i}", b"v")
    bucket.delete(["k0", "k2", "not-there"])
    assert set(backend.objects(bucket.bucket)) == {"k1"}


def test_prefix_scopes_keys(backend: Backend, bucket: Store, tmp_path: Path) -> None:
    scoped = backend.open(bucket.bucket, "pre/fix")
    _put(scoped, tmp_path, "x.txt", b"scoped")
    _put(bucket, tmp_path, "top.txt", b"top")
    assert backend.objects(bucket.bucket) == {"pre/fix/x.txt": b"scoped", "top.txt": b"top"}
    assert [o.key for o in scoped.list()] == ["x.txt"]
    assert scoped.url.endswith("/pre/fix")


def test_foreign_bucket_is_visible(backend: Backend) -> None:
    name = unique_bucket("foreign")
    backend.create_foreign_bucket(name, {"data/one.txt": b"1"})
    try:
        store = backend.open(name)
        assert store.bucket_exists()
        infos = list(store.list())
        assert [(o.key, o.size) for o in infos] == [("data/one.txt", 1)]
        # Written by another tool: no Hangar metadata, and that is fine.
        assert infos[0].md5 is None or infos[0].md5 == hashlib.md5(b"1").hexdigest()
    finally:
        backend.delete_foreign_bucket(name)


def test_mount_remote_has_no_secrets_in_config(backend: Backend) -> None:
    remote = backend.open(unique_bucket()).mount_remote()
    for value in remote.config.values():
        assert "secret" not in value.lower()
