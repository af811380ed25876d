"""Content checksums (MD5, hex) of local files, cached so an unchanged file is never re-read.

The cache key is (device, inode, size, mtime_ns): a file whose size or mtime changed misses the
cache. Entries live in memory for the run and in SQLite (`$HANGAR_HOME/cache/checksums.db`)
across runs. Two guards keep the persistent cache honest:

- A digest is stored only when the opened file still has the scanned size and mtime (so a file
  changed between scan and hashing never files its new digest under its old identity).
- A digest is persisted only when the file's mtime is at least `RACY_NS` older than the moment
  hashing began: a file rewritten within the same timestamp tick (same size, same mtime) could
  otherwise keep a stale digest forever. Such "racy" files are hashed again on the next run.

The cache is only an optimisation: if the database cannot be opened or written, it degrades to
memory only, silently.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from pathlib import Path
from types import TracebackType

from hangar.stores._common import file_crc32, md5_and_stat
from hangar.sync.scan import LocalFile

CHUNK = 4 * 1024 * 1024
RACY_NS = 2_000_000_000
_BATCH = 1000

_Key = tuple[int, int, int, int]  # dev, ino, size, mtime_ns


class ChecksumCache:
    """Thread-safe MD5 cache. Use as a context manager, or call `close()` (which flushes).

    `hashed` counts files actually read, `hits` lookups answered without reading.
    """

    def __init__(self, db_path: Path | None = None) -> None:
        if db_path is None:
            from hangar.config import cache_dir

            db_path = cache_dir() / "checksums.db"
        self.db_path = db_path
        self.hashed = 0
        self.hits = 0
        self._lock = threading.Lock()
        self._memo: dict[_Key, str] = {}
        self._pending: list[tuple[int, int, int, int, str]] = []
        self._local = threading.local()
        self._db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(db_path, timeout=30, check_same_thread=False)
            with contextlib.suppress(OSError):
                os.chmod(db_path, 0o600)  # before the WAL exists: SQLite gives it this mode
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=30000")
            db.execute(
                "CREATE TABLE IF NOT EXISTS checksums (dev INTEGER, ino INTEGER, size INTEGER,"
                " mtime_ns INTEGER, md5 TEXT NOT NULL, PRIMARY KEY (dev, ino))"
            )
            db.commit()
            self._db = db
        except sqlite3.Error:
            self._db = None

    def __enter__(self) -> ChecksumCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _lookup(self, key: _Key) -> str | None:
        with self._lock:
            found = self._memo.get(key)
            if found is not None or self._db is None:
                return found
            try:
                row = self._db.execute(
                    "SELECT md5 FROM checksums WHERE dev=? AND ino=? AND size=? AND mtime_ns=?",
                    key,
                ).fetchone()
            except sqlite3.Error:
                return None
            if row is None:
                return None
            self._memo[key] = row[0]
            return str(row[0])

    def known(self, f: LocalFile) -> str | None:
        """`f`'s MD5 when this run already computed or looked it up; never reads anything."""
        with self._lock:
            return self._memo.get((f.dev, f.ino, f.size, f.mtime_ns))

    def cached(self, f: LocalFile) -> str | None:
        """`f`'s MD5 when this run or an earlier one recorded it; never reads the file."""
        found = self._lookup((f.dev, f.ino, f.size, f.mtime_ns))
        if found is not None:
            with self._lock:
                self.hits += 1
        return found

    def md5(self, f: LocalFile) -> str:
        """Hex MD5 of `f`'s content. Reads the file only on a cache miss (in 4 MiB chunks).

        Raises OSError when the file cannot be read.
        """
        found = self.cached(f)
        if found is not None:
            return found
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = bytearray(CHUNK)
        started = time.time_ns()
        digest, st = md5_and_stat(f.path, buf)
        with self._lock:
            self.hashed += 1
        self.remember(f, digest, st, started_ns=started)
        return digest

    def crc32(self, f: LocalFile) -> str:
        """Hex CRC-32 of `f`'s content (what a file uploaded in parts records instead of an
        MD5), computed every time, in parallel slices: at about 10 GB/s per core it is not
        worth a cache entry. Counted in `hashed`. Raises OSError when the file cannot be read.
        """
        digest = file_crc32(f.path)
        with self._lock:
            self.hashed += 1
        return digest

    def remember(self, f: LocalFile, digest: str, st: os.stat_result, *, started_ns: int) -> None:
        """Record `digest`, the MD5 of `f`'s content read from `started_ns` on (by an upload
        that hashed what it sent, say), when `st`, a stat of the file taken around that read,
        still shows `f`'s identity; see the module doc for when it is persisted."""
        key = (f.dev, f.ino, f.size, f.mtime_ns)
        if (st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino) != (f.size, f.mtime_ns, f.dev, f.ino):
            return
        with self._lock:
            self._memo[key] = digest
            if f.mtime_ns <= started_ns - RACY_NS:
                self._pending.append((*key, digest))
            flush = len(self._pending) >= _BATCH
        if flush:
            self.flush()

    def flush(self) -> None:
        """Write pending digests to the database in one transaction."""
        with self._lock:
            rows, self._pending = self._pending, []
            if not rows or self._db is None:
                return
            try:
                with self._db:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO checksums (dev, ino, size, mtime_ns, md5)"
                        " VALUES (?, ?, ?, ?, ?)",
                        rows,
                    )
            except sqlite3.Error:
                pass  # a cache that cannot be written is merely a slower cache

    def close(self) -> None:
        """Flush and close the database (idempotent)."""
        self.flush()
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None
