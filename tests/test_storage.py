"""Storage lifecycle and catalog: statuses, ownership, resume after an interrupted upload."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest
from helpers import make_tree

import hangar
from hangar import storage as storage_mod
from hangar.catalog import Catalog, Status
from hangar.errors import BucketExists, StorageNotFound, SyncError
from hangar.stores.base import FileMeta, ObjectInfo, Progress
from hangar.stores.local import LocalStore


class FlakyStore(LocalStore):
    """The real local store, failing every put after the first `ok` ones.

    A real server cannot be told to fail the n-th upload; this injects exactly that fault at the
    Store boundary while everything else stays real.
    """

    puts = 0
    ok = 2

    def put_file(self, path: Path, key: str, *, meta: FileMeta, progress: Progress) -> ObjectInfo:
        type(self).puts += 1
        if type(self).puts > type(self).ok:
            raise OSError("injected: connection reset")
        return super().put_file(path, key, meta=meta, progress=progress)


class CountingStore(LocalStore):
    puts: list[str] = []  # noqa: RUF012

    def put_file(self, path: Path, key: str, *, meta: FileMeta, progress: Progress) -> ObjectInfo:
        type(self).puts.append(key)
        return super().put_file(path, key, meta=meta, progress=progress)


def _use_store(monkeypatch: pytest.MonkeyPatch, cls: type[LocalStore]) -> None:
    def opener(spec: Any) -> list[Any]:
        return [cls(spec.name)]

    monkeypatch.setattr(storage_mod, "open_stores", opener)


def test_interrupted_upload_is_failed_then_resumes_sending_only_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = make_tree(tmp_path / "src", {f"f{i:02d}.txt": f"content {i}" for i in range(10)})
    st = hangar.Storage(name="resume-me", source=str(src))
    _use_store(monkeypatch, FlakyStore)
    FlakyStore.puts, FlakyStore.ok = 0, 4
    with pytest.raises(SyncError):
        st.upload()
    with Catalog() as cat:
        record = cat.get("resume-me")
    assert record is not None and record.status is Status.UPLOAD_FAILED
    sent_first = len(list(LocalStore("resume-me").list()))
    assert sent_first == 4

    _use_store(monkeypatch, CountingStore)
    CountingStore.puts = []
    st.upload()
    assert len(CountingStore.puts) == 10 - sent_first
    with Catalog() as cat:
        record = cat.get("resume-me")
    assert record is not None and record.status is Status.READY
    assert record.object_count == 10


def test_ownership_rule(tmp_path: Path, hangar_home: Path) -> None:
    foreign = make_tree(hangar_home / "buckets" / "not-mine", {"x": "1"})
    src = make_tree(tmp_path / "src", {"a": "a"})
    with pytest.raises(BucketExists, match="source: local://not-mine"):
        hangar.Storage(name="not-mine", source=str(src)).upload()
    assert sorted(p.name for p in foreign.iterdir()) == ["x"]

    attached = hangar.Storage(source="local://not-mine")
    assert attached.name == "not-mine"
    attached.upload()  # attaching uploads nothing and creates nothing
    outcome = storage_mod.delete("not-mine")
    assert outcome.forgotten == ["local://not-mine"] and outcome.deleted == []
    assert (foreign / "x").read_text() == "1"

    mine = hangar.Storage(name="mine", source=str(src))
    mine.upload()
    assert (hangar_home / "buckets" / "mine" / "a").exists()
    mine.delete()
    assert not (hangar_home / "buckets" / "mine").exists()
    with pytest.raises(StorageNotFound):
        storage_mod.delete("mine")


def test_scratch_storage_is_ready_and_empty(hangar_home: Path) -> None:
    st = hangar.Storage(name="scratch-space")
    st.upload()
    assert (hangar_home / "buckets" / "scratch-space").is_dir()
    with Catalog() as cat:
        record = cat.get("scratch-space")
    assert record is not None and record.status is Status.READY


def test_catalog_is_private_and_survives_concurrent_writers(hangar_home: Path) -> None:
    import threading

    def writer(i: int) -> None:
        with Catalog() as cat:
            for j in range(20):
                cat.upsert_storage(
                    f"s{i}-{j}",
                    source="x",
                    persistent=True,
                    mode="MOUNT",
                    sync="additive",
                    command="test",
                )
                cat.set_store(
                    f"s{i}-{j}",
                    "local",
                    url="local://x",
                    status=Status.READY,
                    created=True,
                    position=0,
                )

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with Catalog() as cat:
        assert len(cat.list()) == 80
    db = hangar_home / "catalog.db"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(hangar_home.stat().st_mode) == 0o700
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
