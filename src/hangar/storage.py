"""A storage's lifecycle: ensure its buckets, upload its source, delete it.

This module (with the catalog) is the only caller of `create_bucket` / `delete_bucket`, and it
holds the ownership rule: Hangar never adopts a bucket it finds already existing (unless the
source names it as an existing bucket), and deletes only buckets it created. Everything else is
forgotten, never emptied.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hangar.catalog import Catalog, Status
from hangar.config import default_store, hangar_home
from hangar.errors import BucketExists, BucketNotFound, HangarError, StorageNotFound
from hangar.models import StorageSpec, SyncPolicy
from hangar.progress import NullProgress, ProgressSink
from hangar.stores import open_store, parse_uri, store_from_uri
from hangar.stores.base import Store
from hangar.sync import SyncReport, sync_up
from hangar.sync.download import DownloadResult
from hangar.sync.download import download as download_store
from hangar.sync.manifest import Manifest


def store_types(spec: StorageSpec) -> list[str]:
    """The stores that keep `spec`, in order (the first is the one a task attaches)."""
    return list(spec.stores) or [default_store()]


def open_stores(spec: StorageSpec) -> list[Store]:
    """The Store objects for `spec` (no I/O)."""
    if spec.bucket_uri is not None:
        return [store_from_uri(spec.bucket_uri)]
    return [open_store(t, spec.name) for t in store_types(spec)]


@contextmanager
def storage_lock(name: str, progress: ProgressSink) -> Iterator[None]:
    """Serialise work on one storage across processes; say so when we have to wait."""
    from filelock import FileLock, Timeout  # here only: ~20 ms, and a download takes no lock

    locks = hangar_home() / "locks"
    locks.mkdir(mode=0o700, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    lock = FileLock(str(locks / f"{safe}.lock"), mode=0o600)
    try:
        lock.acquire(timeout=0.2)
    except Timeout:
        progress.note(f"waiting for {name} (another hangar process is using it)")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def taken_message(spec: StorageSpec, store: Store) -> str:
    return (
        f"bucket {store.url} already exists, but Hangar did not create it "
        f"(it is not in the catalog), so storage '{spec.name}' ({spec.where}) will not "
        "adopt it.\nTo fix: 1. choose another name for the storage; or 2. to use the existing "
        f"bucket as it is, write `source: {store.url}` (no upload; Hangar will never delete it)."
    )


def ensure(spec: StorageSpec, *, command: str, mode: str = "") -> list[Store]:
    """Make sure every bucket of `spec` exists and is recorded; return its stores, in order.

    New buckets are created and recorded as created by Hangar (status INIT until uploaded).
    An existing bucket the catalog does not know is refused (BucketExists) unless the source
    is a bucket URI, which attaches it without ever deleting it.
    """
    stores = open_stores(spec)
    with Catalog() as cat:
        record = cat.get(spec.name)
        # Check every bucket before changing anything, so a refusal creates nothing.
        exists = [store.bucket_exists() for store in stores]
        for store, present in zip(stores, exists, strict=True):
            known = record.store(store.scheme) if record else None
            if spec.is_external and not present:
                raise BucketNotFound(
                    f"{spec.where}: bucket {store.url} does not exist (or is not visible with "
                    "your credentials). To fix: check the name and your credentials."
                )
            if spec.is_external:
                continue
            if known is None and present:
                raise BucketExists(taken_message(spec, store))
            if known is not None and not known.created and not present:
                raise BucketNotFound(
                    f"bucket {store.url} of storage '{spec.name}' no longer exists; Hangar "
                    f"did not create it, so it will not recreate it. To fix: run "
                    f"`hangar storage delete {spec.name}` to forget it, then launch again."
                )
        cat.upsert_storage(
            spec.name,
            source=spec.source_display,
            persistent=spec.persistent,
            mode=mode,
            sync=str(spec.sync),
            command=command,
            roots=[(r.path, r.prefix) for r in spec.local_roots],
        )
        for position, (store, present) in enumerate(zip(stores, exists, strict=True)):
            known = record.store(store.scheme) if record else None
            created = known.created if known else not spec.is_external
            if not present:
                cat.manifest_forget(store.url)  # whatever it said was in an older bucket
                try:
                    store.create_bucket()
                except BucketExists as exc:  # taken between our check and the create
                    raise BucketExists(taken_message(spec, store)) from exc
                status = Status.INIT
            else:
                status = known.status if known else Status.INIT
            if spec.is_external or spec.is_scratch:
                status = Status.READY
            cat.set_store(
                spec.name,
                store.scheme,
                url=store.url,
                status=status,
                created=created,
                position=position,
            )
    return stores


def upload(
    spec: StorageSpec,
    stores: list[Store],
    *,
    progress: ProgressSink | None = None,
    mirror: bool | None = None,
    full: bool = False,
) -> list[SyncReport]:
    """Sync `spec`'s local source into each of its stores.

    A re-sync compares the local files with the manifest of the last clean sync instead of
    listing the bucket when `hangar.sync.manifest`'s trust rule allows; `full` always lists.

    The store's status becomes READY only when its sync completed without a failure; any
    error (including Ctrl-C) leaves UPLOAD_FAILED, and the next upload resumes, sending only
    what is missing or changed.
    """
    progress = progress or NullProgress()
    if not spec.local_roots:
        return []
    mirror = spec.sync is SyncPolicy.MIRROR if mirror is None else mirror
    reports: list[SyncReport] = []
    with Catalog() as cat:
        record = cat.get(spec.name)
        for store in stores:
            cat.set_status(spec.name, store.scheme, Status.INIT)
            try:
                known = record.store(store.scheme) if record else None
                # Only a run that did not finish (status still INIT or UPLOAD_FAILED) can have
                # left unfinished uploads; skipping the check after a clean one saves a request
                # and the control-plane client's start-up on every re-sync.
                if (
                    store.capabilities.unfinished_uploads
                    and known is not None
                    and known.created
                    and known.status is not Status.READY
                ):
                    _abort_unfinished(store, progress)
                report = sync_up(
                    spec.local_roots,
                    store,
                    mirror=mirror,
                    progress=progress,
                    manifest=Manifest(cat, store.url, full=full),
                )
            except BaseException:
                cat.set_status(spec.name, store.scheme, Status.UPLOAD_FAILED)
                raise
            cat.set_status(spec.name, store.scheme, Status.READY)
            reports.append(report)
        if reports:
            scan = reports[0].scan
            kept = [i for i in reports[0].plan.items if i.local is None and i.remote is not None]
            if mirror:
                kept = []
            cat.set_stats(
                spec.name,
                objects=scan.count + len(kept),
                nbytes=scan.total_bytes + sum(i.remote.size for i in kept if i.remote),
            )
    return reports


def _abort_unfinished(store: Store, progress: ProgressSink) -> None:
    """Abort multipart uploads a killed run left in a bucket Hangar created (we hold the
    storage's lock, so no other Hangar process is uploading to it)."""
    aborted = int(getattr(store, "abort_unfinished_uploads")())  # noqa: B009
    if aborted:
        progress.note(
            f"{store.url}: aborted {aborted} unfinished multipart upload(s) left by an earlier run"
        )


@dataclass(frozen=True)
class DeleteOutcome:
    name: str
    deleted: list[str]  # URLs of buckets deleted
    forgotten: list[str]  # URLs of buckets only forgotten (not created by Hangar)


def delete(name: str) -> DeleteOutcome:
    """Delete storage `name`: its buckets that Hangar created, and its catalog record.

    A bucket Hangar did not create is only forgotten: its contents are never touched.
    """
    deleted: list[str] = []
    forgotten: list[str] = []
    with Catalog() as cat:
        record = cat.get(name)
        if record is None:
            raise StorageNotFound(
                f"no storage named {name!r} in the catalog. To see them: hangar storage ls"
            )
        for srec in record.stores:
            if not srec.created:
                forgotten.append(srec.url)
                cat.forget_store(name, srec.store_type)
                continue
            store = store_from_uri(srec.url)
            try:
                store.delete_bucket()
            except BucketNotFound:
                pass
            except HangarError:
                raise
            deleted.append(srec.url)
            cat.forget_store(name, srec.store_type)
        cat.forget(name)
    return DeleteOutcome(name, deleted, forgotten)


def download(
    name_or_uri: str, directory: str | Path, progress: ProgressSink | None = None
) -> DownloadResult:
    """Download a storage (by catalog name) or a bucket URI (optionally a prefix) to `directory`."""
    parsed = parse_uri(name_or_uri)
    if parsed is not None:
        options = {"account": parsed.account} if parsed.account else {}
        store = open_store(parsed.store_type, parsed.bucket, **options)
        subpath = parsed.prefix
    else:
        with Catalog() as cat:
            record = cat.get(name_or_uri)
        if record is None or not record.stores:
            raise StorageNotFound(
                f"no storage named {name_or_uri!r} in the catalog. To see them: hangar storage ls"
            )
        store = store_from_uri(record.stores[0].url)
        subpath = ""
    dest = Path(directory).expanduser().absolute()
    dest.mkdir(parents=True, exist_ok=True)
    return download_store(store, dest, subpath=subpath, progress=progress or NullProgress())
