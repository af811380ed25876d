"""Execute a plan against a store: parallel uploads, then (only after a clean upload) deletes.

Contract of `apply_plan`:

- Uploads run on `workers` threads, each pulling the next file when free (at most `workers` in
  flight, nothing queued), largest first. Each file is re-stat'ed before it is read and after
  it was sent; a file whose size or mtime differs from the scan fails ("changed ..."), so the
  mtime and checksum recorded in the object's metadata always describe the bytes that were sent.
- Failures are collected per file, never stopping at the first; but after one wave of store
  failures in a row (`give_up_after`: the files in flight, each after its own retries) no
  further file is started, and the error says how many were not tried. Deletes (mirror) run
  only when every upload succeeded: nothing is deleted by a sync that had an error.
- Any failure raises `UploadError` (a `SyncError`) naming the count and the first few keys and
  causes; it carries `.failures` and the partial `.result`. Objects uploaded before the error are
  complete, so the next sync sends only what is still missing.
- BucketNotFound is about the bucket, not a file: it cancels the rest and propagates as is.
  KeyboardInterrupt starts no further file, aborts those in flight (at their next progress
  report) and re-raises.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from hangar.errors import AccessDenied, BucketNotFound, HangarError, StoreError, SyncError
from hangar.progress import ProgressSink
from hangar.stores.base import FileMeta, Progress, Store
from hangar.sync.checksum import ChecksumCache
from hangar.sync.plan import Plan, PlanItem
from hangar.sync.scan import LocalFile

T = TypeVar("T")

DELETE_BATCH = 1000
_SHOWN_FAILURES = 5


@dataclass
class ApplyResult:
    uploaded: int = 0
    bytes_sent: int = 0
    deleted: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    retries: int = 0
    # key -> the checksum the store recorded for the bytes uploaded (ObjectInfo.checksum)
    sent: dict[str, str] = field(default_factory=dict)


class UploadError(SyncError):
    """Some uploads (or deletes) failed; `result` holds what was done before."""

    def __init__(self, message: str, failures: Sequence[tuple[str, str]], result: ApplyResult):
        super().__init__(message, failures)
        self.result = result


class Cancelled(Exception):
    """Raised inside a worker to abandon its file after the run was cancelled."""


class FileChanged(Exception):
    """The local file is not the one the scan saw."""


def describe(exc: BaseException) -> str:
    """A short, user-facing cause for one failed file."""
    if isinstance(exc, OSError) and not isinstance(exc, HangarError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def failure_message(what: str, failures: Sequence[tuple[str, str]], total: int) -> str:
    """'N of M <what> failed: key: cause; ... (and K more)'."""
    shown = "; ".join(f"{k}: {r}" for k, r in failures[:_SHOWN_FAILURES])
    more = len(failures) - _SHOWN_FAILURES
    tail = f" (and {more} more)" if more > 0 else ""
    return f"{len(failures)} of {total} {what} failed: {shown}{tail}."


@dataclass
class Bounded(Generic[T]):
    """What `run_bounded` did: the items that raised, and how many were never started
    because it gave up (`give_up_after` store failures in a row)."""

    failures: list[tuple[T, BaseException]] = field(default_factory=list)
    not_started: int = 0

    def gave_up_note(self, give_up_after: int) -> str:
        """' Stopped after N failures in a row ...' (empty when it did not give up)."""
        if not self.not_started:
            return ""
        return (
            f" Stopped after {give_up_after} failures in a row (the store looks unreachable "
            f"or refuses every request): {self.not_started} file(s) not tried."
        )


def _store_failure(exc: BaseException) -> bool:
    """A failure that says something about the store (unreachable, refusing), not the file."""
    return isinstance(exc, StoreError | AccessDenied)


def run_bounded(
    items: Iterable[T],
    work: Callable[[T], None],
    *,
    workers: int,
    cancel: threading.Event,
    give_up_after: int = 0,
) -> Bounded[T]:
    """Run `work(item)` for every item on up to `workers` threads; returns the (item, exception)
    pairs of items that raised, and how many items were never started.

    Each thread pulls the next item from the shared iterator only when it is free, so at most
    `workers` items are in flight and nothing is queued (per-item overhead: one lock). When
    `cancel` is set (by BucketNotFound from any item, or by anything raised in the calling
    thread, e.g. KeyboardInterrupt), threads stop pulling items; items in flight should watch
    `cancel` themselves. BucketNotFound and the caller's exception propagate after every
    thread has stopped.

    With `give_up_after` > 0, that many store failures in a row (each one after its own
    retries, none succeeding in between) mean the store is down or refuses everything: no
    further item is started (those in flight finish), instead of spending a full retry budget
    on every remaining item.
    """
    it = iter(items)
    lock = threading.Lock()
    out: Bounded[T] = Bounded()
    failures: list[tuple[T, BaseException]] = []
    fatal: list[BaseException] = []
    halt = threading.Event()
    streak = 0

    def worker() -> None:
        nonlocal streak
        while not cancel.is_set() and not halt.is_set():
            with lock:
                try:
                    item = next(it)
                except StopIteration:
                    return
            try:
                work(item)
            except BaseException as exc:
                if isinstance(exc, BucketNotFound):
                    cancel.set()
                    with lock:
                        fatal.append(exc)
                    return
                if isinstance(exc, Cancelled) and cancel.is_set():
                    return
                with lock:
                    failures.append((item, exc))
                    if _store_failure(exc):
                        streak += 1
                        if give_up_after and streak >= give_up_after:
                            halt.set()
            else:
                with lock:
                    streak = 0

    n_threads = max(1, min(workers, len(items)) if isinstance(items, Sized) else workers)
    threads = [
        threading.Thread(target=worker, name=f"hangar-sync-{n}", daemon=True)
        for n in range(n_threads)
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.1)  # a timed join lets KeyboardInterrupt through promptly
    except BaseException:
        cancel.set()
        for t in threads:
            if t.is_alive():
                t.join()
        raise
    if fatal:
        raise fatal[0]
    out.failures = list(failures)
    if halt.is_set():
        out.not_started = sum(1 for _ in it)
    return out


def give_up_after(workers: int) -> int:
    """Store failures in a row after which a transfer stops starting files: one full wave of
    the files in flight (at least 8), each of which spent its own retries."""
    return max(8, workers)


def _same(st: os.stat_result, f: LocalFile) -> bool:
    return st.st_size == f.size and st.st_mtime_ns == f.mtime_ns


def apply_plan(
    plan: Plan,
    store: Store,
    *,
    checksums: ChecksumCache,
    progress: ProgressSink,
    workers: int = 16,
    label: str = "",
) -> ApplyResult:
    """Upload the plan's UPLOAD items, then delete its DELETE items if nothing failed.

    A file whose MD5 `checksums` does not know yet is not read for it beforehand: the store
    computes a checksum while it sends (see Store.put_file); an MD5 is recorded in `checksums`
    (for the next run) when the file did not change meanwhile, and every upload's checksum is
    in the result's `sent` (for the manifest).

    Raises UploadError (a SyncError, with `.failures` and `.result`) when any file failed.
    """
    uploads = sorted(plan.uploads, key=lambda i: -(i.local.size if i.local else 0))
    result = ApplyResult()
    lock = threading.Lock()
    cancel = threading.Event()

    def advance(n: int) -> None:
        if cancel.is_set():
            raise Cancelled("cancelled")
        progress.advance(n)

    def upload(item: PlanItem) -> None:
        if cancel.is_set():
            raise Cancelled("cancelled")
        f = item.local
        assert f is not None
        try:
            before = os.stat(f.path)
        except FileNotFoundError:
            raise FileChanged("deleted since the scan; run the sync again") from None
        if not _same(before, f):
            raise FileChanged("changed since the scan; run the sync again")
        md5 = checksums.cached(f)
        started_ns = time.time_ns()
        sink: Progress = advance
        info = store.put_file(
            Path(f.path), f.key, meta=FileMeta(mtime_ns=f.mtime_ns, md5=md5), progress=sink
        )
        after = os.stat(f.path)
        if not _same(after, f):
            raise FileChanged("changed while being uploaded; run the sync again")
        if md5 is None and info.md5 is not None:
            checksums.remember(f, info.md5, after, started_ns=started_ns)
        with lock:
            result.uploaded += 1
            result.bytes_sent += f.size
            if info.checksum is not None:
                result.sent[f.key] = info.checksum
        progress.file_done(f.key)

    progress.start(label or f"upload {store.url}", len(uploads), plan.bytes_to_send)
    try:
        give_up = give_up_after(workers)
        ran = run_bounded(uploads, upload, workers=workers, cancel=cancel, give_up_after=give_up)
        result.failures = [(item.key, describe(exc)) for item, exc in ran.failures]
        if result.failures:
            deletes = len(plan.deletes)
            note = f" Skipped deleting {deletes} objects only in the bucket." if deletes else ""
            raise UploadError(
                failure_message(f"uploads to {store.url}", result.failures, len(uploads))
                + ran.gave_up_note(give_up)
                + note
                + " To fix: address the cause and run the sync again; files already uploaded"
                " are not sent again.",
                result.failures,
                result,
            )
        _delete(plan, store, result)
    finally:
        progress.finish()
    return result


def _delete(plan: Plan, store: Store, result: ApplyResult) -> None:
    keys = [i.key for i in plan.deletes]
    for start in range(0, len(keys), DELETE_BATCH):
        batch = keys[start : start + DELETE_BATCH]
        try:
            store.delete(batch)
        except BucketNotFound:
            raise
        except Exception as exc:
            cause = describe(exc)
            result.failures.extend((k, cause) for k in keys[start:])
            raise UploadError(
                failure_message(f"deletions from {store.url}", result.failures, len(keys))
                + " To fix: address the cause and run the sync again.",
                result.failures,
                result,
            ) from exc
        result.deleted += len(batch)
