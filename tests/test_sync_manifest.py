"""The upload manifest: a re-sync trusts it instead of listing the bucket only under the trust
rule (hangar.sync.manifest), and it never hides a local change."""

from __future__ import annotations

import hashlib
import os
import shutil
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from backends import Backend
from conftest import unique_bucket

import hangar
from hangar.catalog import Catalog
from hangar.stores.local import LocalStore

MiB = 1024 * 1024


class ListCounting(LocalStore):
    lists = 0

    def list(self, prefix: str = "") -> Iterator[object]:  # type: ignore[override]
        type(self).lists += 1
        return super().list(prefix)  # type: ignore[return-value]


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> type[ListCounting]:
    import hangar.stores.local as local_mod

    ListCounting.lists = 0
    monkeypatch.setattr(local_mod, "LocalStore", ListCounting)
    return ListCounting


def _tree(root: Path, n: int = 5) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"f{i}.txt").write_text(f"content {i}\n")
        os.utime(root / f"f{i}.txt", ns=(10**18, 10**18 + i))  # old: not "racy"


def _sent(storage: hangar.Storage) -> int:
    reports = storage.upload()
    result = reports[0].result
    assert result is not None
    return result.uploaded


def test_resync_trusts_manifest_and_still_sees_local_changes(
    tmp_path: Path, hangar_home: Path, counting: type[ListCounting]
) -> None:
    src = tmp_path / "src"
    _tree(src)
    st = hangar.Storage(name="man-a", source=str(src), stores=["local"])
    assert _sent(st) == 5
    assert counting.lists == 1  # first sync: no manifest, listed
    assert _sent(st) == 0
    assert counting.lists == 1  # re-sync: manifest trusted, no listing

    # Same size, new mtime, new content: noticed without a listing.
    (src / "f1.txt").write_text("CONTENT 1\n")
    os.utime(src / "f1.txt", ns=(10**18 + 99, 10**18 + 99))
    assert _sent(st) == 1
    # Same content rewritten (new inode, new mtime): compared by checksum, not sent.
    shutil.copy(src / "f2.txt", tmp_path / "tmp")
    os.replace(tmp_path / "tmp", src / "f2.txt")
    assert _sent(st) == 0
    assert counting.lists == 1
    # Other content, same size and the very same mtime, as a new file (new inode): the
    # manifest's mtime is not trusted for another inode, so the checksum catches it.
    old_ns = os.stat(src / "f3.txt").st_mtime_ns
    (tmp_path / "tmp").write_text("CONTENT 3\n")
    os.utime(tmp_path / "tmp", ns=(old_ns, old_ns))
    os.replace(tmp_path / "tmp", src / "f3.txt")
    assert _sent(st) == 1
    # A file deleted locally stays in the bucket (additive sync) and is counted as kept.
    (src / "f4.txt").unlink()
    report = st.upload()[0]
    assert report.plan.summary() == "4 unchanged, 1 only in bucket (kept)"
    assert counting.lists == 1
    bucket = hangar_home / "buckets" / "man-a"
    if bucket.is_dir():
        assert (bucket / "f1.txt").read_text() == "CONTENT 1\n"
        assert (bucket / "f3.txt").read_text() == "CONTENT 3\n"


def test_full_mirror_and_max_age_list_the_bucket(
    tmp_path: Path, hangar_home: Path, counting: type[ListCounting], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    _tree(src)
    st = hangar.Storage(name="man-b", source=str(src), stores=["local"])
    _sent(st)
    st.upload(full=True)
    assert counting.lists == 2
    monkeypatch.setenv("HANGAR_MANIFEST_MAX_AGE", "0")
    _sent(st)
    assert counting.lists == 3
    monkeypatch.delenv("HANGAR_MANIFEST_MAX_AGE")
    mirror = hangar.Storage(name="man-b", source=str(src), stores=["local"], sync="mirror")
    mirror.upload()
    assert counting.lists == 4


def test_objects_removed_behind_its_back_are_caught_by_the_sample(
    tmp_path: Path, hangar_home: Path, counting: type[ListCounting]
) -> None:
    src = tmp_path / "src"
    _tree(src, n=3)
    st = hangar.Storage(name="man-c", source=str(src), stores=["local"])
    _sent(st)
    store = ListCounting("man-c")
    store.delete(["f0.txt", "f1.txt", "f2.txt"])  # someone empties the bucket
    assert _sent(st) == 3  # the sample saw it: listed, and sent everything again
    assert counting.lists == 2


def test_failed_sync_and_deleted_storage_forget_the_manifest(
    tmp_path: Path, hangar_home: Path
) -> None:
    src = tmp_path / "src"
    _tree(src, n=2)
    st = hangar.Storage(name="man-d", source=str(src), stores=["local"])
    _sent(st)
    with Catalog() as cat:
        url = cat.get("man-d").stores[0].url  # type: ignore[union-attr]
        assert cat.manifest(url) is not None
    st.delete()
    with Catalog() as cat:
        assert cat.manifest(url) is None
    # A new bucket of the same name starts without a manifest: everything is sent.
    assert _sent(st) == 2


def test_large_file_sent_in_parts_is_compared_by_its_recorded_checksum(
    cloud: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file sent in parts whose MD5 is not known records a CRC-32 and no MD5 on S3 and Azure
    (see Store.put_file). A re-sync compares a touched one with that checksum, from the
    manifest and from a listing (S3: a HEAD per multipart object), and sends it again only
    when its content changed; the manifest then holds the new object's checksum."""
    from hangar.sync.plan import SAME_CHECKSUM

    monkeypatch.setenv("HANGAR_PART_SIZE", "5MiB")
    src = tmp_path / "src"
    src.mkdir()
    big = src / "model.bin"

    def write(data: bytes, mtime_ns: int) -> None:
        big.write_bytes(data)
        os.utime(big, ns=(mtime_ns, mtime_ns))  # old: not "racy"

    def recorded(data: bytes) -> str:
        if cloud.store_type == "gcs":  # GCS computes the MD5 before sending
            return hashlib.md5(data).hexdigest()
        return f"crc32:{zlib.crc32(data):08x}"

    def manifest_checksum() -> str:
        with Catalog() as cat:
            record = cat.get(st.name)
            assert record is not None
            found = cat.manifest(record.stores[0].url)
        assert found is not None
        [row] = found[1]
        return str(row[3])

    first = os.urandom(6 * MiB + 5)
    write(first, 10**18)
    st = hangar.Storage(name=unique_bucket("crc"), source=str(src), stores=[cloud.store_type])
    assert _sent(st) == 1
    assert manifest_checksum() == recorded(first)

    write(first, 10**18 + 1)  # touched: same content, new mtime
    [report] = st.upload()
    assert report.result is not None and report.result.uploaded == 0
    assert [i.reason for i in report.plan.items] == [SAME_CHECKSUM]
    write(first, 10**18 + 2)  # and again, compared with a listing of the bucket
    [report] = st.upload(full=True)
    assert report.result is not None and report.result.uploaded == 0
    assert [i.reason for i in report.plan.items] == [SAME_CHECKSUM]

    second = os.urandom(len(first))  # same size, new content
    write(second, 10**18 + 3)
    assert _sent(st) == 1
    assert manifest_checksum() == recorded(second)  # not the replaced object's
    write(second, 10**18 + 4)
    assert _sent(st) == 0
    assert cloud.objects(st.name) == {"model.bin": second}  # the cloud's own client
