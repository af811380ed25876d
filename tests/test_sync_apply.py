"""sync_up / apply_plan / ChecksumCache against the real local store and real files.

Transfers are counted (ApplyResult and a counting wrapper around the real store), never timed.
Wrappers that fail on purpose inject faults the local store cannot produce by itself.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from hangar.errors import BucketNotFound, StoreError, SyncError
from hangar.models import LocalRoot
from hangar.stores.base import FileMeta, ObjectInfo, Progress
from hangar.stores.local import LocalStore
from hangar.sync import ChecksumCache, SyncReport, UploadError, sync_up
from hangar.sync.apply import apply_plan
from hangar.sync.download import download
from hangar.sync.plan import make_plan
from hangar.sync.scan import LocalFile, scan_local

HOUR_NS = 3600 * 10**9


# -- helpers --------------------------------------------------------------------------------


def write(path: Path, data: str | bytes = "x", *, mtime_ns: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def old(hours: int = 1) -> int:
    return time.time_ns() - hours * HOUR_NS


class CountingStore:
    """The real local store, counting put_file calls and failing the keys in `fail`."""

    def __init__(self, inner: LocalStore, fail: Iterable[str] = (), fail_after: int | None = None):
        self.inner = inner
        self.fail = set(fail)
        self.fail_after = fail_after
        self.puts: list[str] = []
        self.deletes: list[str] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put_file(self, path: Path, key: str, *, meta: FileMeta, progress: Progress) -> ObjectInfo:
        with self._lock:
            n = len(self.puts)
            self.puts.append(key)
        if key in self.fail or (self.fail_after is not None and n >= self.fail_after):
            raise StoreError(f"injected failure for {key}")
        return self.inner.put_file(path, key, meta=meta, progress=progress)

    def delete(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        self.deletes.extend(keys)
        self.inner.delete(keys)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)


class Recorder:
    """A ProgressSink that records what it was told (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: list[tuple[str, int, int]] = []
        self.bytes = 0
        self.done: list[str] = []
        self.notes: list[str] = []
        self.finished = 0

    def start(self, label: str, total_files: int, total_bytes: int) -> None:
        self.started.append((label, total_files, total_bytes))

    def advance(self, nbytes: int) -> None:
        with self.lock:
            self.bytes += nbytes

    def file_done(self, key: str) -> None:
        with self.lock:
            self.done.append(key)

    def finish(self) -> None:
        self.finished += 1

    def note(self, message: str) -> None:
        self.notes.append(message)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    s = LocalStore("sync-test", root=tmp_path / "buckets")
    s.create_bucket()
    return s


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    write(d / "a.txt", "alpha", mtime_ns=old())
    write(d / "b" / "b.txt", "bravo", mtime_ns=old())
    write(d / "b" / "c" / "c.bin", os.urandom(3000), mtime_ns=old())
    return d


def roots(path: Path) -> list[LocalRoot]:
    return [LocalRoot(str(path), "", "file_mounts./data.source")]


def bucket_files(store: LocalStore) -> dict[str, bytes]:
    base = store.local_path()
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()}


def tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def sync(src: Path, store: Any, **kw: Any) -> SyncReport:
    return sync_up(roots(src), store, **kw)


# -- incremental uploads --------------------------------------------------------------------


def test_first_sync_uploads_everything_with_metadata(src: Path, store: LocalStore) -> None:
    report = sync(src, store)
    assert report.result is not None
    assert report.result.uploaded == 3
    assert report.result.bytes_sent == 5 + 5 + 3000
    assert bucket_files(store) == tree(src)
    info = store.head("b/c/c.bin")
    assert info.mtime_ns == os.stat(src / "b/c/c.bin").st_mtime_ns
    assert info.md5 == hashlib.md5((src / "b/c/c.bin").read_bytes()).hexdigest()


def test_second_sync_uploads_nothing(src: Path, store: LocalStore) -> None:
    sync(src, store)
    counting = CountingStore(store)
    report = sync(src, counting)
    assert report.result is not None and report.result.uploaded == 0
    assert counting.puts == []
    assert report.plan.summary() == "3 unchanged"


def test_changed_file_is_the_only_upload(src: Path, store: LocalStore) -> None:
    sync(src, store)
    write(src / "b" / "b.txt", "BRAVO!")  # new size, new mtime
    write(src / "a.txt", "ALPHA")  # same size, new content, new mtime
    counting = CountingStore(store)
    report = sync(src, counting)
    assert sorted(counting.puts) == ["a.txt", "b/b.txt"]
    assert {i.key: i.reason for i in report.plan.uploads} == {
        "a.txt": "content changed",
        "b/b.txt": "size changed",
    }
    assert bucket_files(store) == tree(src)


def test_same_content_new_mtime_is_unchanged_by_checksum(src: Path, store: LocalStore) -> None:
    sync(src, store)
    os.utime(src / "a.txt", ns=(old(0), old(0)))
    counting = CountingStore(store)
    report = sync(src, counting)
    assert counting.puts == []
    assert report.result is not None and report.result.uploaded == 0
    reasons = {i.key: i.reason for i in report.plan.items}
    assert reasons["a.txt"] == "unchanged (same checksum)"


def test_new_file_added_later(src: Path, store: LocalStore) -> None:
    sync(src, store)
    write(src / "new" / "n.txt", "november")
    counting = CountingStore(store)
    sync(src, counting)
    assert counting.puts == ["new/n.txt"]


def test_dry_run_transfers_nothing_and_shows_the_plan(src: Path, store: LocalStore) -> None:
    counting = CountingStore(store)
    report = sync(src, counting, dry_run=True)
    assert report.result is None
    assert counting.puts == []
    assert bucket_files(store) == {}
    assert report.plan.summary() == "3 new"


def test_ignored_and_git_paths_are_not_uploaded(src: Path, store: LocalStore) -> None:
    write(src / ".skyignore", "*.tmp\n")
    write(src / "junk.tmp")
    write(src / ".git" / "HEAD", "ref")
    report = sync(src, store)
    assert set(bucket_files(store)) == {".skyignore", "a.txt", "b/b.txt", "b/c/c.bin"}
    assert report.scan.ignored == 1


def test_list_roots_land_under_their_prefixes(tmp_path: Path, store: LocalStore) -> None:
    write(tmp_path / "d" / "x.txt", "x")
    f = write(tmp_path / "cfg.yaml", "k: v")
    rs = [
        LocalRoot(str(tmp_path / "d"), "d/", "s[0]"),
        LocalRoot(str(f), "cfg.yaml", "s[1]"),
    ]
    sync_up(rs, store)
    assert bucket_files(store) == {"d/x.txt": b"x", "cfg.yaml": b"k: v"}


def test_store_prefix_is_respected(tmp_path: Path, src: Path) -> None:
    s = LocalStore("prefixed", "runs/one", root=tmp_path / "buckets")
    s.create_bucket()
    sync(src, s)
    base = tmp_path / "buckets" / "prefixed"
    assert sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()) == [
        "runs/one/a.txt",
        "runs/one/b/b.txt",
        "runs/one/b/c/c.bin",
    ]


# -- mirror vs additive, and the deletion guard ---------------------------------------------


def test_additive_keeps_objects_deleted_locally(src: Path, store: LocalStore) -> None:
    sync(src, store)
    (src / "a.txt").unlink()
    report = sync(src, store)
    assert "a.txt" in bucket_files(store)
    assert report.plan.summary() == "2 unchanged, 1 only in bucket (kept)"
    assert report.result is not None and report.result.deleted == 0


def test_mirror_deletes_objects_deleted_locally(src: Path, store: LocalStore) -> None:
    sync(src, store)
    (src / "a.txt").unlink()
    report = sync(src, store, mirror=True)
    assert report.result is not None and report.result.deleted == 1
    assert bucket_files(store) == tree(src)


def test_no_deletes_when_any_upload_failed(src: Path, store: LocalStore) -> None:
    sync(src, store)
    (src / "a.txt").unlink()
    write(src / "b" / "b.txt", "changed!")
    write(src / "z.txt", "zulu")
    counting = CountingStore(store, fail={"z.txt"})
    with pytest.raises(UploadError) as err:
        sync(src, counting, mirror=True)
    exc = err.value
    assert isinstance(exc, SyncError)
    assert exc.failures == [("z.txt", "injected failure for z.txt")]
    assert "1 of 2 uploads" in str(exc) and "z.txt" in str(exc)
    assert "Skipped deleting 1" in str(exc)
    assert exc.result.uploaded == 1 and exc.result.deleted == 0
    assert counting.deletes == []
    assert "a.txt" in bucket_files(store)  # the guard held
    assert bucket_files(store)["b/b.txt"] == b"changed!"  # the other upload completed
    # Once the fault is gone, the next sync sends only the missing file, then deletes.
    retry = CountingStore(store)
    report = sync(src, retry, mirror=True)
    assert retry.puts == ["z.txt"]
    assert retry.deletes == ["a.txt"]
    assert report.result is not None and report.result.deleted == 1
    assert bucket_files(store) == tree(src)


def test_interrupted_upload_resumes_with_only_what_is_missing(
    tmp_path: Path, store: LocalStore
) -> None:
    src = tmp_path / "many"
    for i in range(40):
        write(src / f"f{i:02d}.txt", f"file {i}" * (i + 1), mtime_ns=old())
    flaky = CountingStore(store, fail_after=15)  # the network goes away after 15 files
    with pytest.raises(UploadError) as err:
        sync(src, flaky, workers=1)  # one at a time: the counts below are exact
    sent = err.value.result.uploaded
    assert sent == 15
    # It stops starting files after 8 failures in a row (the store looks unreachable): the
    # rest are reported as not tried.
    assert len(err.value.failures) == 8
    assert "8 of 40 uploads" in str(err.value) and "(and 3 more)" in str(err.value)
    assert "17 file(s) not tried" in str(err.value)
    assert len(bucket_files(store)) == 15
    resumed = CountingStore(store)
    report = sync(src, resumed, workers=4)
    assert len(resumed.puts) == 25
    assert set(resumed.puts).isdisjoint(bucket_files(store).keys() - set(resumed.puts))
    assert report.plan.summary() == "25 new, 15 unchanged"
    assert bucket_files(store) == tree(src)


def test_every_file_is_tried_while_uploads_still_succeed_in_between(
    tmp_path: Path, store: LocalStore
) -> None:
    """Giving up needs failures in a row: with every other file failing, all 40 are tried."""
    src = tmp_path / "many"
    for i in range(40):
        write(src / f"f{i:02d}.txt", "x" * 10, mtime_ns=old())
    flaky = CountingStore(store, fail={f"f{i:02d}.txt" for i in range(0, 40, 2)})
    with pytest.raises(UploadError) as err:
        sync(src, flaky, workers=1)
    assert len(flaky.puts) == 40
    assert len(err.value.failures) == 20 and "not tried" not in str(err.value)


def test_keyboard_interrupt_cancels_pending_work_and_reraises(
    tmp_path: Path, store: LocalStore
) -> None:
    src = tmp_path / "many"
    for i in range(200):
        write(src / f"f{i:03d}.txt", f"{i:03d}")  # same size: uploaded in key order

    class CtrlC(CountingStore):
        def put_file(
            self, path: Path, key: str, *, meta: FileMeta, progress: Progress
        ) -> ObjectInfo:
            info = super().put_file(path, key, meta=meta, progress=progress)
            if key == "f005.txt":
                # What Ctrl-C does: SIGINT, KeyboardInterrupt in the main thread.
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
            time.sleep(0.01)
            return info

    interrupting = CtrlC(store)
    progress = Recorder()
    with pytest.raises(KeyboardInterrupt):
        sync(src, interrupting, workers=2, progress=progress)
    assert progress.finished == 1
    attempted = len(interrupting.puts)
    assert attempted < 20  # queued files were dropped
    time.sleep(0.05)
    assert len(interrupting.puts) == attempted  # nothing keeps running in the background


def test_bucket_not_found_aborts_the_whole_apply(src: Path, tmp_path: Path) -> None:
    s = LocalStore("later-deleted", root=tmp_path / "buckets")
    s.create_bucket()
    plan = make_plan(
        scan_local(roots(src)).files, {}, mirror=False, md5_of=lambda f: "0", crc32_of=lambda f: "0"
    )
    s.delete_bucket()
    with pytest.raises(BucketNotFound):
        apply_plan(plan, s, checksums=ChecksumCache(tmp_path / "c.db"), progress=Recorder())


# -- files that change under our feet -------------------------------------------------------


def test_file_changed_after_scan_fails_that_file_only(src: Path, store: LocalStore) -> None:
    scan = scan_local(roots(src))
    plan = make_plan(scan.files, {}, mirror=False, md5_of=lambda f: "0", crc32_of=lambda f: "0")
    write(src / "a.txt", "rewritten after the scan")
    (src / "b" / "b.txt").unlink()
    with ChecksumCache() as cache, pytest.raises(UploadError) as err:
        apply_plan(plan, store, checksums=cache, progress=Recorder())
    reasons = dict(err.value.failures)
    assert "changed since the scan" in reasons["a.txt"]
    assert "deleted since the scan" in reasons["b/b.txt"]
    assert set(bucket_files(store)) == {"b/c/c.bin"}


def test_file_changed_while_uploading_is_a_failure(src: Path, store: LocalStore) -> None:
    class Appending(CountingStore):
        def put_file(
            self, path: Path, key: str, *, meta: FileMeta, progress: Progress
        ) -> ObjectInfo:
            info = super().put_file(path, key, meta=meta, progress=progress)
            if key == "a.txt":
                with open(path, "a") as fh:
                    fh.write(" and more")
            return info

    with pytest.raises(UploadError) as err:
        sync(src, Appending(store))
    assert err.value.failures == [("a.txt", "changed while being uploaded; run the sync again")]
    # The next run sees the new size and sends it again.
    counting = CountingStore(store)
    sync(src, counting)
    assert counting.puts == ["a.txt"]
    assert bucket_files(store)["a.txt"] == b"alpha and more"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file_is_a_per_file_failure(src: Path, store: LocalStore) -> None:
    (src / "a.txt").chmod(0)
    try:
        with pytest.raises(UploadError) as err:
            sync(src, store)
    finally:
        (src / "a.txt").chmod(0o644)
    assert [k for k, _ in err.value.failures] == ["a.txt"]
    assert "Permission denied" in err.value.failures[0][1]
    assert set(bucket_files(store)) == {"b/b.txt", "b/c/c.bin"}


# -- progress -------------------------------------------------------------------------------


def test_progress_reports_files_bytes_and_scan_warnings(
    src: Path, store: LocalStore, tmp_path: Path
) -> None:
    write(tmp_path / "outside.txt")
    (src / "out").symlink_to(tmp_path / "outside.txt")
    progress = Recorder()
    sync(src, store, progress=progress)
    assert len(progress.notes) == 1 and "pointing outside" in progress.notes[0]
    assert progress.started == [(f"upload {store.url}", 3, 3010)]
    assert progress.bytes == 3010
    assert sorted(progress.done) == ["a.txt", "b/b.txt", "b/c/c.bin"]
    assert progress.finished == 1


# -- checksum cache -------------------------------------------------------------------------


def local_file(path: Path, key: str = "k") -> LocalFile:
    st = path.stat()
    return LocalFile(key, str(path), st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino)


def test_checksum_is_md5_of_content_and_streams_large_files(tmp_path: Path) -> None:
    data = os.urandom(9 * 1024 * 1024 + 7)  # spans several read chunks
    f = write(tmp_path / "big", data, mtime_ns=old())
    with ChecksumCache(tmp_path / "c.db") as cache:
        assert cache.md5(local_file(f)) == hashlib.md5(data).hexdigest()
    empty = write(tmp_path / "empty", b"", mtime_ns=old())
    with ChecksumCache(tmp_path / "c.db") as cache:
        assert cache.md5(local_file(empty)) == hashlib.md5(b"").hexdigest()


def test_checksum_cache_hit_never_rereads(tmp_path: Path) -> None:
    f = write(tmp_path / "f", "content", mtime_ns=old())
    lf = local_file(f)
    db = tmp_path / "c.db"
    with ChecksumCache(db) as first:
        digest = first.md5(lf)
        assert first.md5(lf) == digest
        assert (first.hashed, first.hits) == (1, 1)
    rows = sqlite3.connect(db).execute("SELECT dev, ino, size, mtime_ns, md5 FROM checksums")
    assert list(rows) == [(lf.dev, lf.ino, lf.size, lf.mtime_ns, digest)]
    os.unlink(f)  # a cache hit must not even open the file
    with ChecksumCache(db) as second:
        assert second.md5(lf) == digest
        assert second.hashed == 0


def test_checksum_cache_misses_when_size_or_mtime_changes(tmp_path: Path) -> None:
    f = write(tmp_path / "f", "one", mtime_ns=old())
    db = tmp_path / "c.db"
    with ChecksumCache(db) as cache:
        cache.md5(local_file(f))
    write(f, "two", mtime_ns=old(2))
    with ChecksumCache(db) as cache:
        assert cache.md5(local_file(f)) == hashlib.md5(b"two").hexdigest()
        assert cache.hashed == 1


def test_recently_modified_files_are_not_persisted(tmp_path: Path) -> None:
    f = write(tmp_path / "fresh", "just written")  # mtime = now: could change within the tick
    db = tmp_path / "c.db"
    with ChecksumCache(db) as cache:
        cache.md5(local_file(f))
        cache.md5(local_file(f))
        assert cache.hashed == 1  # remembered for this run
    assert list(sqlite3.connect(db).execute("SELECT * FROM checksums")) == []


def test_file_changed_before_hashing_is_not_cached_under_old_identity(tmp_path: Path) -> None:
    f = write(tmp_path / "f", "old content", mtime_ns=old(2))
    stale = local_file(f)
    write(f, "new content", mtime_ns=old(1))
    with ChecksumCache(tmp_path / "c.db") as cache:
        assert cache.md5(stale) == hashlib.md5(b"new content").hexdigest()
        cache.md5(stale)
        assert cache.hashed == 2


def test_checksum_cache_is_thread_safe(tmp_path: Path) -> None:
    files = [write(tmp_path / f"f{i}", f"data {i}", mtime_ns=old()) for i in range(300)]
    lfs = [local_file(p, p.name) for p in files] * 3
    with ChecksumCache(tmp_path / "c.db") as cache, ThreadPoolExecutor(8) as pool:
        digests = list(pool.map(cache.md5, lfs))
    assert digests == [hashlib.md5(Path(x.path).read_bytes()).hexdigest() for x in lfs]
    with ChecksumCache(tmp_path / "c.db") as cache:
        assert [cache.md5(x) for x in lfs[:300]] == digests[:300]
        assert cache.hashed == 0


def test_checksum_cache_defaults_to_hangar_home(hangar_home: Path, tmp_path: Path) -> None:
    f = write(tmp_path / "f", "x", mtime_ns=old())
    with ChecksumCache() as cache:
        cache.md5(local_file(f))
    assert (hangar_home / "cache" / "checksums.db").is_file()


def test_unusable_database_degrades_to_memory(tmp_path: Path) -> None:
    f = write(tmp_path / "f", "x", mtime_ns=old())
    (tmp_path / "dir.db").mkdir()  # not a file: sqlite cannot open it
    with ChecksumCache(tmp_path / "dir.db") as cache:
        assert cache.md5(local_file(f)) == hashlib.md5(b"x").hexdigest()


def test_sync_reuses_checksums_across_runs(src: Path, store: LocalStore, tmp_path: Path) -> None:
    sync(src, store)
    for p in src.rglob("*"):
        if p.is_file():
            os.utime(p, ns=(old(0) - HOUR_NS // 2,) * 2)  # "touched": same content
    db = tmp_path / "c.db"
    with ChecksumCache(db) as cache:
        sync(src, store, checksums=cache)
        assert cache.hashed == 3
    with ChecksumCache(db) as cache:
        report = sync(src, store, checksums=cache)
        assert cache.hashed == 0 and cache.hits >= 3
    assert report.result is not None and report.result.uploaded == 0


def test_touched_files_are_hashed_once_small_ones_by_the_syncing_thread(
    tmp_path: Path, store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-sync compares touched files (same size, new mtime) by content, hashing each once:
    small files on the sync's own thread (16 threads only queued for the GIL), larger ones
    on at most one thread per CPU."""
    import hangar.sync as sync_pkg
    import hangar.sync.checksum as checksum_module

    src = tmp_path / "touched"
    small = [write(src / f"s{i}", os.urandom(100 + i), mtime_ns=old()) for i in range(40)]
    large = [
        write(src / f"l{i}", os.urandom(sync_pkg.INLINE_HASH_MAX + i), mtime_ns=old())
        for i in range(6)
    ]
    sync(src, store)
    for p in [*small, *large]:
        os.utime(p, ns=(old(0) - HOUR_NS // 2,) * 2)
    write(src / "s0", os.urandom(100), mtime_ns=old(0) - HOUR_NS // 3)  # same size, new bytes
    monkeypatch.setattr(sync_pkg, "usable_cpus", lambda: 2)
    threads: dict[str, set[int]] = {"small": set(), "large": set()}
    real = checksum_module.md5_and_stat

    def md5_and_stat(path: str, buf: bytearray) -> tuple[str, os.stat_result]:
        big = os.path.getsize(path) >= sync_pkg.INLINE_HASH_MAX
        threads["large" if big else "small"].add(threading.get_ident())
        return real(path, buf)

    monkeypatch.setattr(checksum_module, "md5_and_stat", md5_and_stat)
    with ChecksumCache(tmp_path / "c.db") as cache:
        report = sync(src, store, checksums=cache)
        assert cache.hashed == len(small) + len(large)  # each once, prefetch then plan
    assert report.result is not None and report.result.uploaded == 1  # s0, by content
    assert threads["small"] == {threading.get_ident()}
    assert threading.get_ident() not in threads["large"] and len(threads["large"]) <= 2


# -- large file ----------------------------------------------------------------------------


def test_local_store_records_a_large_files_crc32_without_an_md5_pass(
    tmp_path: Path, store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above CRC_ONLY_ABOVE, a file whose MD5 is not known is not read for one (a serial
    0.6 GB/s pass before the copy): the object records its CRC-32, which put_file, list and
    head return; a smaller file still records its MD5, and a known MD5 is recorded as is."""
    import zlib

    from hangar.stores import local

    monkeypatch.setattr(local, "CRC_ONLY_ABOVE", 1024 * 1024)
    _quiet: Progress = lambda n: None  # noqa: E731
    md5_calls: list[int] = []
    real_md5 = hashlib.md5

    def counted_md5(*args: Any, **kwargs: Any) -> Any:
        md5_calls.append(1)
        return real_md5(*args, **kwargs)

    monkeypatch.setattr(hashlib, "md5", counted_md5)
    data = os.urandom(2 * 1024 * 1024 + 3)
    big = write(tmp_path / "big", data, mtime_ns=old())
    info = store.put_file(big, "big", meta=FileMeta(mtime_ns=old(), md5=None), progress=_quiet)
    crc = f"{zlib.crc32(data):08x}"
    assert md5_calls == []
    assert (info.md5, info.crc32, info.checksum) == (None, crc, "crc32:" + crc)
    for got in (store.head("big"), *store.list()):
        assert (got.md5, got.crc32, got.size) == (None, crc, len(data))
    assert os.getxattr(store.local_path() / "big", "user.hangar.crc32").startswith(crc.encode())
    assert "user.hangar.md5" not in os.listxattr(store.local_path() / "big")
    small = write(tmp_path / "small", b"small", mtime_ns=old())
    assert store.put_file(small, "small", meta=FileMeta(old(), None), progress=_quiet).md5 == (
        real_md5(b"small").hexdigest()
    )
    known = real_md5(data).hexdigest()
    again = store.put_file(big, "big", meta=FileMeta(old(), known), progress=_quiet)
    assert (again.md5, again.crc32, store.head("big").md5) == (known, None, known)


def test_large_file_roundtrip_by_content(tmp_path: Path, store: LocalStore) -> None:
    data = os.urandom(20 * 1024 * 1024)
    src = tmp_path / "big"
    write(src / "weights.bin", data)
    report = sync(src, store)
    assert report.result is not None and report.result.bytes_sent == len(data)
    dest = tmp_path / "restored"
    result = download(store, dest)
    assert result.files == 1
    assert hashlib.sha256((dest / "weights.bin").read_bytes()).digest() == (
        hashlib.sha256(data).digest()
    )
