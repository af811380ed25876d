"""The upload manifest: what this machine last synced to a store, so that a re-sync can compare
the local tree with it instead of listing the bucket (100,000 objects = 100 LIST requests).

Rows live in the catalog (`manifest` table, keyed by store URL and key): size, the source mtime_ns,
checksum (the MD5, or the CRC-32 of a file uploaded in parts), device and inode of the file that
was sent. A manifest is written only by a sync that finished without any failure: rebuilt whole
after a sync that listed the bucket, updated with the files sent (or found unchanged by checksum)
after one that trusted it. Any failed, interrupted or cancelled sync forgets it, and so do
creating the bucket and forgetting the store.

The trust rule (when a sync uses the manifest instead of a listing), all of:

1. the sync is additive: a mirror sync deletes what is not local, so it must see the bucket;
2. the caller did not ask for a full sync (``full=True``, ``hangar storage upload --full``);
3. the manifest was rebuilt from a full listing less than `max_age` seconds ago
   (``HANGAR_MANIFEST_MAX_AGE``, default 1 day; 0 = always list);
4. a sample of up to `SAMPLE` recorded objects still exists with the recorded size and checksum
   (parallel HEADs, a few milliseconds): a bucket emptied, recreated or rewritten by someone else
   is caught here.

What it protects: every local change is still seen. Each file is stat'ed and compared with the
row of what was sent: size, then mtime_ns, device and inode must all match for a skip; else the
content's checksum decides (an MD5 is cached, so unchanged files are not re-read; a CRC-32 is
read again, at ~10 GB/s per core). A row whose mtime was within `RACY_NS` of the scan (the file
could change again within one timestamp tick) keeps no mtime, so that file is compared by
checksum next time.

What it does not see (until the next full listing, at most `max_age` later, or ``--full``): an
object that someone else (another machine, a writable mount, the cloud console) deleted or
overwrote while the local file stayed the same. A listing-based sync would upload the local
file again; a manifest-based one leaves the bucket as it is. Local data is never lost either way.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from hangar.catalog import Catalog, ManifestRow
from hangar.errors import BucketNotFound, HangarError, ObjectNotFound
from hangar.stores.base import ObjectInfo, Store
from hangar.sync.checksum import RACY_NS
from hangar.sync.plan import SAME_CHECKSUM, Action, Plan
from hangar.sync.scan import LocalFile, ScanResult

MAX_AGE_ENV = "HANGAR_MANIFEST_MAX_AGE"
DEFAULT_MAX_AGE = 24 * 3600.0
SAMPLE = 8


def max_age_from_env() -> float:
    raw = os.environ.get(MAX_AGE_ENV, "").strip()
    try:
        return float(raw) if raw else DEFAULT_MAX_AGE
    except ValueError:
        return DEFAULT_MAX_AGE


class Manifest:
    """The manifest of one store URL in `catalog` (which the caller keeps open)."""

    def __init__(
        self, catalog: Catalog, url: str, *, full: bool = False, max_age: float | None = None
    ) -> None:
        self.catalog = catalog
        self.url = url
        self.full = full
        self.max_age = max_age_from_env() if max_age is None else max_age
        self.why_listed = ""  # why the last `remote()` returned None (for notes and tests)
        self.trusted = False

    def trusted_rows(self, store: Store, *, mirror: bool) -> dict[str, ManifestRow] | None:
        """The manifest's rows by key, when the trust rule allows using them instead of a
        listing; else None (`why_listed` says why). Raises BucketNotFound."""
        self.trusted = False
        found = None if mirror or self.full else self.catalog.manifest(self.url)
        listed_at = found[0] if found is not None else None
        if mirror:
            self.why_listed = "mirror sync"
        elif self.full:
            self.why_listed = "full sync asked"
        elif listed_at is None:
            self.why_listed = "no manifest"
        elif time.time() - listed_at > self.max_age:
            self.why_listed = "manifest older than its maximum age"
        else:
            self.why_listed = ""
        if self.why_listed:
            return None
        assert found is not None
        rows = found[1]
        if not self._sample_ok(store, rows):
            self.why_listed = "the bucket differs from the manifest"
            return None
        self.trusted = True
        return {row[0]: row for row in rows}

    @staticmethod
    def split(
        scan: ScanResult, rows: dict[str, ManifestRow]
    ) -> tuple[list[LocalFile], dict[str, ObjectInfo], int]:
        """Compare the scan (made with ``known=rows``) with the trusted rows: (files to plan,
        the bucket as the manifest knows it for those files and for keys with no local file,
        how many files are unchanged).

        A file is unchanged, and needs no plan item, when its row has the same size, a
        recorded mtime_ns equal to the file's, and the same device and inode (the scan already
        set those aside in `scan.unchanged`; a scan made without `known` is compared here).
        For any other file with a row, the row's mtime is passed on only when device and inode
        match, so a different file (a restored copy, a new checkout) is compared by checksum."""
        rest: list[LocalFile] = []
        remote: dict[str, ObjectInfo] = {}
        get = rows.get
        unchanged = len(scan.unchanged)
        for f in scan.files:
            row = get(f.key)
            if row is None:
                rest.append(f)
                continue
            _key, size, mtime_ns, checksum, dev, ino = row
            if size == f.size and ino == f.ino and dev == f.dev:
                if mtime_ns == f.mtime_ns:
                    unchanged += 1
                    continue
                remote[f.key] = ObjectInfo.with_checksum(f.key, size, mtime_ns, checksum)
            else:
                remote[f.key] = ObjectInfo.with_checksum(f.key, size, None, checksum)
            rest.append(f)
        if len(rows) > unchanged + len(remote):  # keys with no local file (kept)
            local_keys = {f.key for f in scan.files}
            local_keys.update(scan.unchanged)
            for key, size, _mtime, checksum, _dev, _ino in rows.values():
                if key not in local_keys:
                    remote[key] = ObjectInfo.with_checksum(key, size, None, checksum)
        return rest, remote, unchanged

    def _sample_ok(self, store: Store, rows: Sequence[ManifestRow]) -> bool:
        picked = random.sample(rows, min(SAMPLE, len(rows)))
        if not picked:
            return True

        def same(row: ManifestRow) -> bool:
            try:
                obj = store.head(row[0])
            except ObjectNotFound:
                return False
            if obj.size != row[1]:
                return False
            known = ObjectInfo.with_checksum(row[0], row[1], None, row[3])
            pairs = ((obj.md5, known.md5), (obj.crc32, known.crc32))
            return all(a is None or b is None or a.lower() == b.lower() for a, b in pairs)

        try:
            with ThreadPoolExecutor(max_workers=len(picked)) as pool:
                return all(pool.map(same, picked))
        except BucketNotFound:
            raise
        except HangarError:
            return False

    def record(
        self,
        plan: Plan,
        known_md5: Callable[[LocalFile], str | None],
        sent: Mapping[str, str],
        *,
        scan_started_ns: int,
        listed_at: float | None,
    ) -> None:
        """Write what a sync that finished cleanly left in the bucket. `known_md5` gives the
        MD5s the sync computed (of files compared by checksum) without reading anything,
        `sent` the checksum recorded for each file uploaded (ApplyResult.sent); `listed_at` is
        when the sync listed the bucket (None: it trusted us). A row's checksum is spelled as
        ObjectInfo.checksum spells it: an MD5, or "crc32:<hex>"."""
        limit = scan_started_ns - RACY_NS
        rows: list[ManifestRow] = []
        for item in plan.items:
            f, obj = item.local, item.remote
            if f is not None:
                if self.trusted and item.action is Action.SKIP and item.reason != SAME_CHECKSUM:
                    continue  # the row already says exactly this
                if item.action is Action.UPLOAD:  # never the replaced object's checksum
                    checksum = sent.get(item.key) or known_md5(f)
                else:
                    checksum = known_md5(f) or (obj.checksum if obj is not None else None)
                mtime = f.mtime_ns if f.mtime_ns < limit else None
                rows.append((item.key, f.size, mtime, checksum, f.dev, f.ino))
            elif obj is not None and item.action is Action.SKIP and not self.trusted:
                rows.append((item.key, obj.size, None, obj.checksum, None, None))  # kept
        if listed_at is None:
            if rows:
                self.catalog.manifest_update(self.url, rows)
        else:
            self.catalog.manifest_replace(self.url, rows, listed_at=listed_at)

    def forget(self) -> None:
        self.catalog.manifest_forget(self.url)
