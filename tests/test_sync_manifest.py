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
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large file (sent in parts; the local store: above CRC_ONLY_ABOVE) whose MD5 is not
    known records a CRC-32 and no MD5 on S3, Azure and the local store (see Store.put_file).
    A re-sync compares a touched one with that checksum, from the manifest and from a
    listing (S3: a HEAD per multipart object), and sends it again only when its content
    changed; the manifest then holds the new object's checksum."""
    from hangar.stores import local
    from hangar.sync.plan import SAME_CHECKSUM

    monkeypatch.setenv("HANGAR_PART_SIZE", "5MiB")
    monkeypatch.setattr(local, "CRC_ONLY_ABOVE", 5 * MiB)
    src = tmp_path / "src"
    src.mkdir()
    big = src / "model.bin"

    def write(data: bytes, mtime_ns: int) -> None:
        big.write_bytes(data)
        os.utime(big, ns=(mtime_ns, mtime_ns))  # old: not "racy"

    def recorded(data: bytes) -> str:
        if backend.store_type == "gcs":  # the MD5 the server computed
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
    st = hangar.Storage(name=unique_bucket("crc"), source=str(src), stores=[backend.store_type])
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
    assert backend.objects(st.name) == {"model.bin": second}  # the cloud's own client


def _blobs(url: str) -> tuple[bytes, bytes | None]:
    import sqlite3

    from hangar.config import catalog_path

    db = sqlite3.connect(catalog_path())
    try:
        entries, recent = db.execute(
            "SELECT entries, recent FROM manifests WHERE url=?", (url,)
        ).fetchone()
    finally:
        db.close()
    return entries, recent


def test_a_trusted_resync_writes_only_the_rows_it_changed(
    tmp_path: Path, hangar_home: Path, counting: type[ListCounting]
) -> None:
    """Updating a few rows of a large manifest writes them to its small `recent` blob, not the
    whole manifest again; reads see one row per key, the newest; once `recent` outgrows a
    quarter of the rest, the two are merged."""
    import marshal

    src = tmp_path / "src"
    _tree(src, n=200)
    st = hangar.Storage(name="man-r", source=str(src), stores=["local"])
    assert _sent(st) == 200
    with Catalog() as cat:
        url = cat.get("man-r").stores[0].url  # type: ignore[union-attr]
    entries, recent = _blobs(url)
    assert recent is None

    for i in (3, 7):
        (src / f"f{i}.txt").write_text(f"CONTENT {i}\n")
        os.utime(src / f"f{i}.txt", ns=(10**18 + 500, 10**18 + 500))
    assert _sent(st) == 2 and counting.lists == 1
    after, recent = _blobs(url)
    assert after == entries  # the 200 rows were not rewritten
    assert recent is not None
    assert sorted(r[0] for r in marshal.loads(recent)[1]) == ["f3.txt", "f7.txt"]
    with Catalog() as cat:
        found = cat.manifest(url)
    assert found is not None
    rows = {r[0]: r for r in found[1]}
    assert len(found[1]) == len(rows) == 200
    assert rows["f3.txt"][2] == 10**18 + 500 and rows["f4.txt"][2] == 10**18 + 4
    assert _sent(st) == 0 and counting.lists == 1  # the updated rows are trusted

    for i in range(100):  # half the rows change: `recent` is merged into the entries
        (src / f"f{i}.txt").write_text(f"new {i:04d}\n")
        os.utime(src / f"f{i}.txt", ns=(10**18 + 900, 10**18 + 900))
    assert _sent(st) == 100 and counting.lists == 1
    merged, recent = _blobs(url)
    assert recent is None
    rows = {r[0]: r for r in marshal.loads(merged)[1]}
    assert len(rows) == 200 and rows["f3.txt"][2] == 10**18 + 900
    assert rows["f150.txt"][2] == 10**18 + 150
    assert _sent(st) == 0 and counting.lists == 1


def test_a_catalog_from_before_recent_rows_still_trusts_its_manifest(
    tmp_path: Path, hangar_home: Path, counting: type[ListCounting]
) -> None:
    """A catalog written before manifests had a `recent` blob gets the column; its version-1
    manifest is read and trusted as before."""
    import marshal
    import sqlite3

    from hangar.config import catalog_path

    src = tmp_path / "src"
    _tree(src, n=4)
    st = hangar.Storage(name="man-o", source=str(src), stores=["local"])
    assert _sent(st) == 4
    db = sqlite3.connect(catalog_path())
    (url, entries) = db.execute("SELECT url, entries FROM manifests").fetchone()
    rows = marshal.loads(entries)[1]
    db.execute("ALTER TABLE manifests DROP COLUMN recent")
    db.execute("UPDATE manifests SET entries=?", (marshal.dumps((1, rows)),))
    db.commit()
    db.close()
    assert _sent(st) == 0 and counting.lists == 1
    (src / "f1.txt").write_text("CONTENT 1\n")
    os.utime(src / "f1.txt", ns=(10**18 + 99, 10**18 + 99))
    assert _sent(st) == 1 and counting.lists == 1
    version, rows = marshal.loads(_blobs(url)[0])  # 1 row of 4: merged, rewritten
    assert version == 2 and {r[0]: r for r in rows}["f1.txt"][2] == 10**18 + 99
