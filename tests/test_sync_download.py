"""download: whole bucket, prefix, single object, skip-if-current, and refusal of hostile keys.

The local store refuses unsafe keys itself, so hostile listings come from a tiny in-test store
(the one fault a real store here cannot produce); everything else uses the real local store.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hangar.errors import ObjectNotFound, StoreError, SyncError
from hangar.stores.base import Capabilities, FileMeta, ObjectInfo, Progress, RcloneRemote
from hangar.stores.local import LocalStore
from hangar.sync.download import DownloadError, download, unsafe_key_reason

MTIME = 1_600_000_000_123_456_789


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    s = LocalStore("dl-test", root=tmp_path / "buckets")
    s.create_bucket()
    return s


def put(store: LocalStore, tmp_path: Path, key: str, data: bytes, mtime: int = MTIME) -> None:
    src = tmp_path / "staging" / hashlib.md5(key.encode()).hexdigest()
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(data)
    meta = FileMeta(mtime_ns=mtime, md5=hashlib.md5(data).hexdigest())
    store.put_file(src, key, meta=meta, progress=lambda n: None)


def tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


class FakeStore:
    """A store whose listing is whatever the test says (hostile keys included)."""

    scheme = "fake"
    bucket = "hostile-bucket"
    prefix = ""
    capabilities = Capabilities()

    def __init__(self, objects: dict[str, bytes], fail: Iterable[str] = ()) -> None:
        self.objects = objects
        self.fail = set(fail)
        self.gets: list[str] = []

    @property
    def url(self) -> str:
        return "fake://hostile-bucket"

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for key, data in self.objects.items():
            if key.startswith(prefix):
                yield ObjectInfo(key=key, size=len(data), mtime_ns=MTIME)

    def head(self, key: str) -> ObjectInfo:
        if key not in self.objects:
            raise ObjectNotFound(key)
        return ObjectInfo(key=key, size=len(self.objects[key]), mtime_ns=MTIME)

    def get_file(
        self,
        key: str,
        path: Path,
        *,
        progress: Progress,
        size: int | None = None,
        listed: ObjectInfo | None = None,
    ) -> None:
        self.gets.append(key)
        if key in self.fail:
            raise StoreError(f"injected failure for {key}")
        path.write_bytes(self.objects[key])
        progress(len(self.objects[key]))

    def bucket_exists(self) -> bool:
        return True

    def create_bucket(self, region: str | None = None) -> None: ...
    def delete_bucket(self) -> None: ...

    def put_file(self, path: Path, key: str, *, meta: FileMeta, progress: Progress) -> ObjectInfo:
        raise NotImplementedError

    def delete(self, keys: Iterable[str]) -> None: ...

    def mount_remote(self) -> RcloneRemote:
        raise NotImplementedError


def test_whole_bucket_download_preserves_content_and_mtime(
    store: LocalStore, tmp_path: Path
) -> None:
    objects = {"a.txt": b"alpha", "d/b.txt": b"bravo", "d/e/c.bin": os.urandom(5000)}
    for k, v in objects.items():
        put(store, tmp_path, k, v)
    dest = tmp_path / "out" / "deep"
    result = download(store, dest)
    assert (result.files, result.bytes, result.skipped) == (3, 5010, 0)
    assert tree(dest) == objects
    assert os.stat(dest / "d/e/c.bin").st_mtime_ns == MTIME


def test_second_download_skips_current_files(store: LocalStore, tmp_path: Path) -> None:
    put(store, tmp_path, "a.txt", b"alpha")
    put(store, tmp_path, "b.txt", b"bravo")
    dest = tmp_path / "out"
    download(store, dest)
    (dest / "b.txt").write_bytes(b"local edit")
    result = download(store, dest)
    assert (result.files, result.skipped) == (1, 1)
    assert (dest / "b.txt").read_bytes() == b"bravo"


def test_mtime_is_set_from_listing_for_stores_that_do_not(tmp_path: Path) -> None:
    fake = FakeStore({"x/y.txt": b"yankee"})
    dest = tmp_path / "out"
    download(fake, dest)
    assert os.stat(dest / "x/y.txt").st_mtime_ns == MTIME
    assert download(fake, dest).skipped == 1
    assert fake.gets == ["x/y.txt"]


@pytest.mark.parametrize("subpath", ["data", "data/", "/data/"])
def test_prefix_download_lands_relative_to_prefix(
    store: LocalStore, tmp_path: Path, subpath: str
) -> None:
    put(store, tmp_path, "data/train/1.csv", b"one")
    put(store, tmp_path, "data/val.csv", b"two")
    put(store, tmp_path, "database.txt", b"not under data/")
    put(store, tmp_path, "other.txt", b"no")
    dest = tmp_path / "out"
    result = download(store, dest, subpath=subpath)
    assert result.files == 2
    assert tree(dest) == {"train/1.csv": b"one", "val.csv": b"two"}


def test_single_object_download_writes_dest_as_the_file(store: LocalStore, tmp_path: Path) -> None:
    put(store, tmp_path, "models/v1/model.pt", b"weights")
    dest = tmp_path / "out" / "model.pt"
    result = download(store, dest, subpath="models/v1/model.pt")
    assert result.files == 1
    assert dest.read_bytes() == b"weights"
    assert os.stat(dest).st_mtime_ns == MTIME
    assert download(store, dest, subpath="models/v1/model.pt").skipped == 1


def test_single_object_to_an_existing_directory_is_refused(
    store: LocalStore, tmp_path: Path
) -> None:
    put(store, tmp_path, "model.pt", b"weights")
    (tmp_path / "out").mkdir()
    with pytest.raises(SyncError, match="is a directory"):
        download(store, tmp_path / "out", subpath="model.pt")


def test_missing_subpath_is_object_not_found(store: LocalStore, tmp_path: Path) -> None:
    put(store, tmp_path, "a.txt", b"a")
    with pytest.raises(ObjectNotFound, match="nope"):
        download(store, tmp_path / "out", subpath="nope")
    with pytest.raises(ObjectNotFound, match="nope/"):
        download(store, tmp_path / "out", subpath="nope/")
    assert not (tmp_path / "out").exists()


def test_empty_bucket_makes_an_empty_directory(store: LocalStore, tmp_path: Path) -> None:
    result = download(store, tmp_path / "out")
    assert (result.files, result.skipped) == (0, 0)
    assert (tmp_path / "out").is_dir()


def test_store_prefix_is_the_download_root(tmp_path: Path) -> None:
    base = LocalStore("pfx", root=tmp_path / "buckets")
    base.create_bucket()
    put(base, tmp_path, "runs/one/a.txt", b"a")
    put(base, tmp_path, "runs/two/b.txt", b"b")
    dest = tmp_path / "out"
    download(LocalStore("pfx", "runs/one", root=tmp_path / "buckets"), dest)
    assert tree(dest) == {"a.txt": b"a"}


HOSTILE = [
    "../escape.txt",
    "/etc/passwd-copy",
    "ok/../../escape.txt",
    "a//b.txt",
    "./dot.txt",
    "nul\x00byte",
    "x" * 256,
    "dir/" + "y" * 300 + "/z",
]


@pytest.mark.parametrize("key", HOSTILE)
def test_hostile_key_refuses_the_whole_download(tmp_path: Path, key: str) -> None:
    fake = FakeStore({"good.txt": b"fine", key: b"evil"})
    dest = tmp_path / "jail" / "dest"
    with pytest.raises(SyncError) as err:
        download(fake, dest)
    assert repr(key) in str(err.value)
    assert "fake://hostile-bucket" in str(err.value)
    assert [k for k, _ in err.value.failures] == [key]
    assert fake.gets == []  # nothing fetched, nothing written
    assert not dest.exists()
    assert list((tmp_path).rglob("*escape*")) == []


def test_refusal_message_names_the_first_few_keys(tmp_path: Path) -> None:
    fake = FakeStore({f"../e{i}": b"" for i in range(8)})
    with pytest.raises(SyncError) as err:
        download(fake, tmp_path / "dest")
    assert "8 unsafe" in str(err.value) and "and 3 more" in str(err.value)
    assert len(err.value.failures) == 8


def test_unsafe_key_reasons() -> None:
    assert unsafe_key_reason("a/b/c.txt") is None
    assert unsafe_key_reason("..hidden/..x") is None  # dots inside names are fine
    assert unsafe_key_reason("/a") == "absolute"
    assert unsafe_key_reason("a/../b") == "has a '..' component"
    assert unsafe_key_reason("a//b") == "has an empty component"
    assert unsafe_key_reason("é" * 128) == "has a name longer than 255 bytes"


def test_key_that_is_both_file_and_directory_is_refused(tmp_path: Path) -> None:
    fake = FakeStore({"a": b"file", "a/b": b"child"})
    with pytest.raises(SyncError, match="both a file and a directory") as err:
        download(fake, tmp_path / "dest")
    assert [k for k, _ in err.value.failures] == ["a"]
    assert fake.gets == []


def test_directory_markers_are_skipped(tmp_path: Path) -> None:
    fake = FakeStore({"dir/": b"", "dir/f.txt": b"f", "empty/": b""})
    dest = tmp_path / "dest"
    result = download(fake, dest)
    assert result.files == 1
    assert tree(dest) == {"dir/f.txt": b"f"}


def test_symlink_in_dest_cannot_lead_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "link").symlink_to(outside, target_is_directory=True)
    fake = FakeStore({"link/planted.txt": b"evil", "fine.txt": b"ok"})
    with pytest.raises(SyncError, match="symlink"):
        download(fake, dest)
    assert list(outside.iterdir()) == []
    assert fake.gets == []


def test_dest_itself_may_be_a_symlink(store: LocalStore, tmp_path: Path) -> None:
    put(store, tmp_path, "a/b.txt", b"b")
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    download(store, tmp_path / "alias")
    assert tree(tmp_path / "real") == {"a/b.txt": b"b"}


def test_per_file_failures_are_collected(tmp_path: Path) -> None:
    fake = FakeStore({f"f{i}": b"data" for i in range(10)}, fail={"f3", "f7"})
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError) as err:
        download(fake, dest, workers=3)
    assert sorted(k for k, _ in err.value.failures) == ["f3", "f7"]
    assert err.value.result.files == 8
    assert "2 of 10 downloads" in str(err.value)
    assert len(tree(dest)) == 8
    # The retry fetches only what is missing.
    fake.fail.clear()
    fake.gets.clear()
    result = download(fake, dest)
    assert sorted(fake.gets) == ["f3", "f7"]
    assert (result.files, result.skipped) == (2, 8)


def test_large_object_roundtrip(store: LocalStore, tmp_path: Path) -> None:
    data = os.urandom(20 * 1024 * 1024)
    put(store, tmp_path, "big/blob.bin", data)
    dest = tmp_path / "out"
    progress: Any = Recorder()
    result = download(store, dest, progress=progress)
    assert result.bytes == len(data)
    assert hashlib.sha256((dest / "big/blob.bin").read_bytes()).digest() == (
        hashlib.sha256(data).digest()
    )
    assert progress.bytes == len(data) and progress.files == 1


class Recorder:
    def __init__(self) -> None:
        self.bytes = 0
        self.files = 0

    def start(self, label: str, total_files: int, total_bytes: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        self.bytes += nbytes

    def file_done(self, key: str) -> None:
        self.files += 1

    def finish(self) -> None:
        pass

    def note(self, message: str) -> None:
        pass


def test_local_file_in_the_way_of_a_directory_fails_those_keys_only(tmp_path: Path) -> None:
    fake = FakeStore({"sub/a.txt": b"a", "sub/deeper/b.txt": b"b", "top.txt": b"t"})
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "sub").write_text("a local file where the bucket has a directory")
    with pytest.raises(DownloadError) as err:
        download(fake, dest)
    assert sorted(k for k, _ in err.value.failures) == ["sub/a.txt", "sub/deeper/b.txt"]
    assert "cannot create directory" in err.value.failures[0][1]
    assert "2 of 3 downloads" in str(err.value)
    assert (dest / "top.txt").read_bytes() == b"t"
