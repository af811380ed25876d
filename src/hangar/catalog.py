"""The catalog: a SQLite record of every storage Hangar knows, in ``$HANGAR_HOME/catalog.db``.

One row per storage and one per (storage, store). A store's status is INIT (bucket created or
attached, upload not finished), UPLOAD_FAILED or READY; `created` says whether Hangar created
that bucket, which is what allows it to delete it. WAL mode and a busy timeout let concurrent
launches share the file safely. Secrets are never written here.
"""

from __future__ import annotations

import json
import marshal
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from hangar.config import catalog_path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS storages (
    name TEXT PRIMARY KEY,
    source TEXT NOT NULL DEFAULT '',
    persistent INTEGER NOT NULL DEFAULT 1,
    mode TEXT NOT NULL DEFAULT '',
    sync TEXT NOT NULL DEFAULT 'additive',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    object_count INTEGER NOT NULL DEFAULT 0,
    total_bytes INTEGER NOT NULL DEFAULT 0,
    last_command TEXT NOT NULL DEFAULT '',
    roots TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS storage_stores (
    name TEXT NOT NULL REFERENCES storages(name) ON DELETE CASCADE,
    store_type TEXT NOT NULL,
    url TEXT NOT NULL,
    status TEXT NOT NULL,
    created INTEGER NOT NULL,
    position INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (name, store_type)
);
CREATE TABLE IF NOT EXISTS manifests (
    url TEXT PRIMARY KEY,
    listed_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    entries BLOB NOT NULL,
    recent BLOB
);
"""

# 2: rows updated since the last rewrite live in `recent`. Version 1 (no `recent`) still reads;
# a Hangar that knows only version 1 ignores a version 2 manifest and lists the bucket instead
# of trusting `entries` without `recent`.
_MANIFEST_VERSION = 2
_MANIFEST_READS = (1, 2)
# `recent` is merged into `entries` when its blob grows past this fraction of theirs.
_RECENT_SHARE = 0.25
# One manifest row: key, size, source mtime_ns (None: do not trust it), checksum (an MD5, or
# "crc32:<hex>": see ObjectInfo.checksum), dev, ino.
ManifestRow = tuple[str, int, int | None, str | None, int | None, int | None]


class Status(StrEnum):
    INIT = "INIT"
    UPLOAD_FAILED = "UPLOAD_FAILED"
    READY = "READY"


@dataclass(frozen=True)
class StoreRecord:
    store_type: str
    url: str
    status: Status
    created: bool  # Hangar created this bucket (and so may delete it)


@dataclass(frozen=True)
class StorageRecord:
    name: str
    source: str
    persistent: bool
    mode: str
    sync: str
    created_at: float
    updated_at: float
    object_count: int
    total_bytes: int
    last_command: str
    stores: tuple[StoreRecord, ...] = field(default=())
    roots: tuple[tuple[str, str], ...] = ()  # the local source as (path, key prefix) pairs

    @property
    def status(self) -> Status:
        """The worst status among the stores (READY only if every store is READY)."""
        statuses = {s.status for s in self.stores}
        for worst in (Status.UPLOAD_FAILED, Status.INIT):
            if worst in statuses:
                return worst
        return Status.READY if statuses else Status.INIT

    def store(self, store_type: str) -> StoreRecord | None:
        return next((s for s in self.stores if s.store_type == store_type), None)

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "source": self.source,
            "persistent": self.persistent,
            "mode": self.mode,
            "sync": self.sync,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "objects": self.object_count,
            "bytes": self.total_bytes,
            "last_command": self.last_command,
            "status": str(self.status),
            "stores": [
                {"store": s.store_type, "url": s.url, "status": str(s.status), "created": s.created}
                for s in self.stores
            ],
        }


class Catalog:
    """Access to the catalog database. Cheap to create; open one per operation or thread."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or catalog_path()
        new = not self.path.exists()
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        if new:
            os.chmod(self.path, 0o600)
        self._db.execute("PRAGMA busy_timeout=30000")
        if self._db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            # Switching to WAL needs the database to itself, and SQLite answers "database is
            # locked" at once rather than wait when another connection is busy with it: the
            # first openers (threads or processes) take turns. Once WAL, this is skipped.
            from filelock import FileLock

            with FileLock(f"{self.path}.init.lock", timeout=60, mode=0o600):
                self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(storages)")}
        if "roots" not in columns:  # catalogs written before the column existed
            self._db.execute("ALTER TABLE storages ADD COLUMN roots TEXT NOT NULL DEFAULT '[]'")
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(manifests)")}
        if "recent" not in columns:
            self._db.execute("ALTER TABLE manifests ADD COLUMN recent BLOB")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- reads -----------------------------------------------------------------------------------
    def _stores(self, name: str) -> tuple[StoreRecord, ...]:
        rows = self._db.execute(
            "SELECT store_type, url, status, created FROM storage_stores WHERE name=? "
            "ORDER BY position, store_type",
            (name,),
        ).fetchall()
        return tuple(StoreRecord(r[0], r[1], Status(r[2]), bool(r[3])) for r in rows)

    def _record(self, row: tuple[object, ...]) -> StorageRecord:
        name = str(row[0])
        return StorageRecord(
            name=name,
            source=str(row[1]),
            persistent=bool(row[2]),
            mode=str(row[3]),
            sync=str(row[4]),
            created_at=float(row[5]),  # type: ignore[arg-type]
            updated_at=float(row[6]),  # type: ignore[arg-type]
            object_count=int(row[7]),  # type: ignore[call-overload]
            total_bytes=int(row[8]),  # type: ignore[call-overload]
            last_command=str(row[9]),
            stores=self._stores(name),
            roots=tuple((str(p), str(k)) for p, k in json.loads(str(row[10]))),
        )

    _COLUMNS = (
        "name, source, persistent, mode, sync, created_at, updated_at, object_count, "
        "total_bytes, last_command, roots"
    )

    def get(self, name: str) -> StorageRecord | None:
        row = self._db.execute(
            f"SELECT {self._COLUMNS} FROM storages WHERE name=?", (name,)
        ).fetchone()
        return self._record(row) if row else None

    def list(self) -> list[StorageRecord]:
        rows = self._db.execute(f"SELECT {self._COLUMNS} FROM storages ORDER BY name").fetchall()
        return [self._record(r) for r in rows]

    # -- writes ----------------------------------------------------------------------------------
    def upsert_storage(
        self,
        name: str,
        *,
        source: str,
        persistent: bool,
        mode: str,
        sync: str,
        command: str,
        roots: Sequence[tuple[str, str]] = (),
    ) -> None:
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO storages (name, source, persistent, mode, sync, created_at, "
                "updated_at, last_command, roots) VALUES (?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(name) DO UPDATE SET source=excluded.source, "
                "persistent=excluded.persistent, mode=excluded.mode, sync=excluded.sync, "
                "updated_at=excluded.updated_at, last_command=excluded.last_command, "
                "roots=excluded.roots",
                (name, source, int(persistent), mode, sync, now, now, command, json.dumps(roots)),
            )

    def set_store(
        self, name: str, store_type: str, *, url: str, status: Status, created: bool, position: int
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO storage_stores (name, store_type, url, status, created, position) "
                "VALUES (?,?,?,?,?,?) ON CONFLICT(name, store_type) DO UPDATE SET "
                "url=excluded.url, status=excluded.status, position=excluded.position",
                (name, store_type, url, str(status), int(created), position),
            )
            db.execute("UPDATE storages SET updated_at=? WHERE name=?", (time.time(), name))

    def set_status(self, name: str, store_type: str, status: Status) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE storage_stores SET status=? WHERE name=? AND store_type=?",
                (str(status), name, store_type),
            )
            db.execute("UPDATE storages SET updated_at=? WHERE name=?", (time.time(), name))

    def set_stats(self, name: str, *, objects: int, nbytes: int) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE storages SET object_count=?, total_bytes=?, updated_at=? WHERE name=?",
                (objects, nbytes, time.time(), name),
            )

    def forget_store(self, name: str, store_type: str) -> None:
        with self._tx() as db:
            for (url,) in db.execute(
                "SELECT url FROM storage_stores WHERE name=? AND store_type=?", (name, store_type)
            ).fetchall():
                self._forget_manifest(db, url)
            db.execute(
                "DELETE FROM storage_stores WHERE name=? AND store_type=?", (name, store_type)
            )

    def forget(self, name: str) -> None:
        with self._tx() as db:
            for (url,) in db.execute(
                "SELECT url FROM storage_stores WHERE name=?", (name,)
            ).fetchall():
                self._forget_manifest(db, url)
            db.execute("DELETE FROM storage_stores WHERE name=?", (name,))
            db.execute("DELETE FROM storages WHERE name=?", (name,))

    # -- the upload manifest (policy: hangar.sync.manifest) --------------------------------------
    # One row per store URL, its entries in one marshal'ed blob: loading 100,000 entries takes
    # milliseconds this way (as SQL rows, a quarter of a second). Rows updated by a sync that
    # trusted the manifest go to a second, small blob (`recent`), so that updating 1,000 rows
    # does not load, merge and rewrite all 100,000 (0.3 s of a 1% re-sync of W3); `recent` is
    # merged into `entries` once it grows past _RECENT_SHARE of them. The blobs are only ever
    # read back by this code; one that does not load (another Python version) counts as no
    # manifest.
    @staticmethod
    def _forget_manifest(db: sqlite3.Connection, url: str) -> None:
        db.execute("DELETE FROM manifests WHERE url=?", (url,))

    @staticmethod
    def _rows(blob: bytes | None) -> Sequence[ManifestRow] | None:
        """The rows in a manifest blob (none in NULL), or None when it does not load."""
        if blob is None:
            return []
        try:
            version, rows = marshal.loads(blob)
        except (ValueError, EOFError, TypeError):
            return None
        if version not in _MANIFEST_READS or not isinstance(rows, list):
            return None
        return rows

    def manifest(self, url: str) -> tuple[float, Sequence[ManifestRow]] | None:
        """(when it was last rebuilt from a full listing, its rows, one per key), or None: no
        manifest."""
        row = self._db.execute(
            "SELECT listed_at, entries, recent FROM manifests WHERE url=?", (url,)
        ).fetchone()
        if row is None:
            return None
        rows, recent = self._rows(row[1]), self._rows(row[2])
        if rows is None or recent is None:
            return None
        if recent:
            newer = {r[0] for r in recent}
            rows = [*(r for r in rows if r[0] not in newer), *recent]
        return float(row[0]), rows

    def manifest_replace(self, url: str, rows: Sequence[ManifestRow], listed_at: float) -> None:
        """Make `rows` the whole manifest of `url` (after a full listing)."""
        blob = marshal.dumps((_MANIFEST_VERSION, list(rows)))
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO manifests (url, listed_at, updated_at, entries, recent) "
                "VALUES (?,?,?,?,NULL)",
                (url, listed_at, time.time(), blob),
            )

    def manifest_update(self, url: str, rows: Sequence[ManifestRow]) -> None:
        """Upsert `rows` (by key) into the existing manifest of `url` (no-op when it has none)."""
        with self._tx() as db:
            found = db.execute(
                "SELECT length(entries), recent FROM manifests WHERE url=?", (url,)
            ).fetchone()
            if found is None:
                return
            recent = self._rows(found[1])
            if recent is None:  # unreadable: the next sync lists the bucket
                self._forget_manifest(db, url)
                return
            merged = {r[0]: r for r in recent}
            merged.update((r[0], r) for r in rows)
            blob = marshal.dumps((_MANIFEST_VERSION, list(merged.values())))
            if len(blob) <= found[0] * _RECENT_SHARE:
                db.execute(
                    "UPDATE manifests SET recent=?, updated_at=? WHERE url=?",
                    (blob, time.time(), url),
                )
                return
            (entries,) = db.execute("SELECT entries FROM manifests WHERE url=?", (url,)).fetchone()
            stored = self._rows(entries)
            if stored is None:
                self._forget_manifest(db, url)
                return
            whole = {r[0]: r for r in stored}
            whole.update(merged)  # `recent` and the new rows, newest last
            db.execute(
                "UPDATE manifests SET entries=?, recent=NULL, updated_at=? WHERE url=?",
                (marshal.dumps((_MANIFEST_VERSION, list(whole.values()))), time.time(), url),
            )

    def manifest_forget(self, url: str) -> None:
        """Drop the manifest of `url`: the next sync lists the bucket."""
        with self._tx() as db:
            self._forget_manifest(db, url)
