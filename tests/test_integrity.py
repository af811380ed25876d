"""Integrity end to end: what Hangar uploads is checked by the server (S3 x-amz-checksum-sha256)
or against the MD5 the server reports for what it stored (S3 ETag, GCS md5Hash, Azure
Content-MD5); what COPY downloads is checked against the MD5 recorded at upload; and
`hangar storage verify` finds corrupt, missing and extra objects. Damage is made in flight by
the fault proxy, or in the bucket with the cloud's own client."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from backends import Backend
from click.testing import CliRunner
from conftest import unique_bucket
from servers.faultproxy import FaultProxy
from trust_helpers import is_object_write, md5s, route_through, seeded_tree, sizes, statuses

from hangar.api import Storage, download
from hangar.cli import app
from hangar.errors import HangarError, SyncError


def _corrupt_in_place(backend: Any, bucket: str, key: str) -> None:
    """Replace an object's bytes (same size) but keep Hangar's recorded metadata, with the
    cloud's own client: the sneakiest corruption, invisible to a size/mtime comparison."""
    if backend.store_type == "s3":
        client = backend.client
        old = client.get_object(Bucket=bucket, Key=key)
        data = bytes(b ^ 0x55 for b in old["Body"].read())
        client.put_object(Bucket=bucket, Key=key, Body=data, Metadata=old["Metadata"])
    elif backend.store_type == "gcs":
        bkt = backend.client.bucket(bucket)
        blob = bkt.get_blob(key)
        data = bytes(b ^ 0x55 for b in blob.download_as_bytes())
        fresh = bkt.blob(key)
        fresh.metadata = blob.metadata
        fresh.upload_from_string(data)
    else:
        client = backend.client.get_container_client(bucket).get_blob_client(key)
        metadata = client.get_blob_properties().metadata
        data = bytes(b ^ 0x55 for b in client.download_blob().readall())
        client.upload_blob(data, overwrite=True, metadata=metadata)


def test_damaged_upload_is_caught_and_sent_again(
    cloud: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    files = seeded_tree(src, 4, seed=1, max_size=5000)
    (src / "one.bin").write_bytes(os.urandom(3000))
    files["one.bin"] = (src / "one.bin").read_bytes()
    name = unique_bucket("dmgup")
    with FaultProxy(cloud.endpoint) as proxy:  # type: ignore[attr-defined]
        route_through(proxy, cloud, monkeypatch)
        proxy.fail_next(1, "corrupt", match=is_object_write)
        Storage(name=name, source=str(src), stores=[cloud.store_type]).upload()
        damaged = proxy.state.by_kind["corrupt"]
    assert damaged == 1
    assert md5s(cloud.objects(name)) == md5s(files)


def test_always_damaged_upload_fails_and_stores_nothing_wrong(
    cloud: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hangar_home: Path
) -> None:
    src = tmp_path / "src"
    (src / "k").mkdir(parents=True)
    (src / "k" / "data.bin").write_bytes(os.urandom(4000))
    name = unique_bucket("dmgall")
    with FaultProxy(cloud.endpoint) as proxy:  # type: ignore[attr-defined]
        route_through(proxy, cloud, monkeypatch)
        proxy.fault_fraction(1.0, ("corrupt",), match=is_object_write)
        with pytest.raises(HangarError) as err:
            Storage(name=name, source=str(src), stores=[cloud.store_type]).upload()
    assert "k/data.bin" in str(err.value)
    assert sizes(cloud, name) == {}  # no damaged object left under the key
    assert statuses(hangar_home, name) == ["UPLOAD_FAILED"]


def test_verify_and_copy_catch_corruption_in_the_bucket(cloud: Backend, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = seeded_tree(src, 6, seed=4, max_size=3000)
    keys = sorted(k for k, v in files.items() if v)
    name = unique_bucket("ver")
    Storage(name=name, source=str(src), stores=[cloud.store_type]).upload()
    runner = CliRunner()
    clean = runner.invoke(app, ["storage", "verify", name])
    assert clean.exit_code == 0, clean.output
    assert "OK: bucket matches the source" in clean.output

    corrupt, missing = keys[0], keys[1]
    _corrupt_in_place(cloud, name, corrupt)
    if cloud.store_type == "s3":
        cloud.client.delete_object(Bucket=name, Key=missing)  # type: ignore[attr-defined]
    elif cloud.store_type == "gcs":
        cloud.client.bucket(name).blob(missing).delete()  # type: ignore[attr-defined]
    else:
        cloud.client.get_container_client(name).delete_blob(missing)  # type: ignore[attr-defined]
    result = runner.invoke(app, ["storage", "verify", name])
    assert result.exit_code == 1, result.output
    assert f"corrupt: {corrupt}" in result.output
    assert f"missing: {missing}" in result.output
    assert "PROBLEMS FOUND" in result.output

    dest = tmp_path / "copy"
    with pytest.raises(SyncError) as err:
        download(name, dest)
    assert corrupt in str(err.value)
    assert not (dest / corrupt).exists()  # never under its final name
    assert [p.name for p in dest.rglob(".*hangar-*")] == []


def test_large_files_are_hashed_while_sent_and_checked_by_crc32_on_copy(
    cloud: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A multipart upload is not read once beforehand for its MD5: the MD5 comes from the bytes
    sent (recorded for the next sync), the object records a CRC-32, and COPY (in parallel
    ranges) checks it, refusing an object damaged in the bucket."""
    import hashlib
    import zlib

    from hangar.stores import _ranges

    monkeypatch.setenv("HANGAR_PART_SIZE", "5MiB")
    monkeypatch.setattr(_ranges, "PARALLEL_MIN", 6 * 1024 * 1024)
    monkeypatch.setattr(_ranges, "RANGE_SIZE", 2 * 1024 * 1024 + 17)  # ranges of odd sizes
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(12 * 1024 * 1024 + 123)
    (src / "big.bin").write_bytes(data)
    (src / "small.txt").write_bytes(b"small")
    name = unique_bucket("big")
    storage = Storage(name=name, source=str(src), stores=[cloud.store_type])
    (report,) = storage.upload()
    assert report.result is not None and report.result.uploaded == 2
    if cloud.store_type == "s3":
        meta = cloud.client.head_object(Bucket=name, Key="big.bin")["Metadata"]  # type: ignore[attr-defined]
        assert meta["hangar-crc32"] == f"{zlib.crc32(data):08x}"
        assert "hangar-md5" not in meta  # not known before sending: not read for it
        small = cloud.client.head_object(Bucket=name, Key="small.txt")["Metadata"]  # type: ignore[attr-defined]
        assert small["hangar-crc32"] == f"{zlib.crc32(b'small'):08x}"
        assert small["hangar-md5"] == hashlib.md5(b"small").hexdigest()
    # The MD5 computed while sending was recorded: a touched file is compared, not re-sent.
    os.utime(src / "big.bin", ns=(1_700_000_000_000_000_000,) * 2)
    (again,) = storage.upload()
    assert again.result is not None and again.result.uploaded == 0
    assert hashlib.md5(cloud.objects(name)["big.bin"]).digest() == hashlib.md5(data).digest()

    dest = tmp_path / "copy"
    download(name, dest)
    assert (dest / "big.bin").read_bytes() == data

    _corrupt_in_place(cloud, name, "big.bin")
    other = tmp_path / "copy2"
    with pytest.raises(SyncError) as err:
        download(name, other)
    assert "big.bin" in str(err.value)
    if cloud.store_type != "gcs":  # GCS checks its own MD5; the others the recorded CRC-32
        assert "CRC32" in str(err.value)
    assert not (other / "big.bin").exists()
    assert [p.name for p in other.rglob(".*hangar-*")] == []
