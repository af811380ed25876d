"""Copy a bucket (or a prefix of it, or one object) into a local directory: COPY mode.

Contract of `download`:

- Trust first: every key is checked before anything is written. A key that is absolute,
  contains NUL, has an empty, "." or ".." component, has a component over 255 bytes or makes a
  path too long, or would land outside `dest` through an existing symlink, refuses the whole
  download (SyncError naming the keys and the bucket). So does a key that is both a file and a
  directory of other keys ("a" and "a/b").
- Keys ending with "/" (directory markers) are skipped. Parent directories are created.
- A local file with the object's size and its recorded source mtime is left alone (counted in
  `skipped`). Downloaded files get the recorded mtime, so the next download skips them.
- Per-file failures are collected; any failure raises DownloadError (a SyncError) with
  `.failures` and the partial `.result`. After one wave of store failures in a row no further
  file is started (see `hangar.sync.apply.give_up_after`); the error says how many were not
  tried.
"""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from hangar.errors import ObjectNotFound, SyncError
from hangar.progress import NullProgress, ProgressSink
from hangar.stores.base import ObjectInfo, Store
from hangar.sync.apply import Cancelled, describe, failure_message, give_up_after, run_bounded
from hangar.sync.scan import dir_prefixes

NAME_MAX = 255
PATH_MAX = 4096
_SHOWN = 5


@dataclass
class DownloadResult:
    files: int = 0
    bytes: int = 0
    skipped: int = 0


class DownloadError(SyncError):
    """Some downloads failed; `result` holds what was done."""

    def __init__(
        self, message: str, failures: list[tuple[str, str]], result: DownloadResult
    ) -> None:
        super().__init__(message, failures)
        self.result = result


def unsafe_key_reason(rel: str) -> str | None:
    """Why `rel` (a key relative to the download root) must not become a local path, or None."""
    if rel.startswith("/"):
        return "absolute"
    if "\x00" in rel:
        return "contains NUL"
    for part in rel.split("/"):
        if not part:
            return "has an empty component"
        if part in (".", ".."):
            return f"has a {part!r} component"
        if len(os.fsencode(part)) > NAME_MAX:
            return f"has a name longer than {NAME_MAX} bytes"
    return None


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


@dataclass(frozen=True, slots=True)
class _Job:
    obj: ObjectInfo
    path: str


def download(
    store: Store,
    dest: Path,
    *,
    subpath: str = "",
    progress: ProgressSink | None = None,
    workers: int = 16,
) -> DownloadResult:
    """Download `subpath` of `store` to `dest`.

    `subpath` "" is the whole store; "p" or "p/" is that prefix, whose keys land relative to
    it under `dest`; "p" naming one object (and no keys under "p/") makes `dest` the file to
    write. Raises ObjectNotFound when `subpath` names nothing, SyncError for unsafe keys,
    DownloadError for per-file failures, BucketNotFound.
    """
    sink = progress if progress is not None else NullProgress()
    sub = subpath.strip("/")
    prefix = sub + "/" if sub else ""
    objects = list(store.list(prefix))
    if sub and not objects:
        if subpath.endswith("/"):
            raise ObjectNotFound(
                f"{store.url}/{prefix} holds no objects. To fix: check the path in the URI."
            )
        try:
            obj = store.head(sub)
        except ObjectNotFound:
            raise ObjectNotFound(
                f"{store.url}/{sub}: no such object or prefix. To fix: check the path in the URI."
            ) from None
        if dest.is_dir():
            raise SyncError(
                f"cannot download the object {store.url}/{sub} to {dest}: it is a directory. "
                "To fix: give a file path as the destination."
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        return _run(store, [_Job(obj, str(dest))], sink, workers, dest, existed=dest.exists())

    root = os.path.realpath(dest)
    existed = os.path.isdir(root)
    if not existed and os.path.lexists(root):
        raise SyncError(f"cannot download {store.url} into {dest}: it is not a directory.")
    files: dict[str, ObjectInfo] = {}
    bad: list[tuple[str, str]] = []
    for obj in objects:
        rel = obj.key[len(prefix) :]
        if not rel or rel.endswith("/"):
            continue  # a directory marker
        reason = unsafe_key_reason(rel)
        if reason is None and len(os.fsencode(os.path.join(root, rel))) >= PATH_MAX:
            reason = "makes a path too long"
        if reason:
            bad.append((obj.key, reason))
        else:
            files[rel] = obj
    dirs = dir_prefixes(files)
    clashes = sorted(dirs & files.keys())
    bad.extend((files[d].key, "is both a file and a directory") for d in clashes)
    if not bad and existed:  # existing symlinks in dest must not lead outside it
        out = {d for d in dirs if not _inside(os.path.realpath(os.path.join(root, d)), root)}
        if out:
            why = f"would be written through a symlink out of {dest}"
            bad.extend((o.key, why) for r, o in files.items() if r.rpartition("/")[0] in out)
    if bad:
        shown = "; ".join(f"{k!r} ({why})" for k, why in bad[:_SHOWN])
        more = f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
        raise SyncError(
            f"refusing to download {store.url} to {dest}: {len(bad)} unsafe object key(s): "
            f"{shown}{more}. Nothing was written. To fix: rename or remove those objects in "
            "the bucket.",
            bad,
        )
    os.makedirs(root, exist_ok=True)
    unmade: dict[str, str] = {}  # directory -> why it could not be created
    for d in sorted(dirs):
        try:
            os.makedirs(os.path.join(root, d), exist_ok=True)
        except OSError as exc:
            unmade[d] = f"cannot create directory {os.path.join(root, d)}: {describe(exc)}"
    jobs: list[_Job] = []
    failures: list[tuple[str, str]] = []
    for rel, obj in files.items():
        parent = rel.rpartition("/")[0]
        if parent in unmade:
            failures.append((obj.key, unmade[parent]))
        else:
            jobs.append(_Job(obj, os.path.join(root, rel)))
    return _run(store, jobs, sink, workers, dest, existed=existed, failures=failures)


def _run(
    store: Store,
    jobs: list[_Job],
    sink: ProgressSink,
    workers: int,
    dest: Path,
    *,
    existed: bool,
    failures: list[tuple[str, str]] | None = None,
) -> DownloadResult:
    """Fetch `jobs` (skipping current files); `failures` are ones already known to fail."""
    result = DownloadResult()
    failures = list(failures or ())
    todo: list[_Job] = []
    for job in jobs:
        if existed and job.obj.mtime_ns is not None:
            try:
                st = os.stat(job.path)
            except OSError:
                pass
            else:
                if (
                    stat.S_ISREG(st.st_mode)
                    and st.st_size == job.obj.size
                    and st.st_mtime_ns == job.obj.mtime_ns
                ):
                    result.skipped += 1
                    continue
        todo.append(job)
    lock = threading.Lock()
    cancel = threading.Event()

    def advance(n: int) -> None:
        if cancel.is_set():
            raise Cancelled("cancelled")
        sink.advance(n)

    def fetch(job: _Job) -> None:
        if cancel.is_set():
            raise Cancelled("cancelled")
        store.get_file(
            job.obj.key, Path(job.path), progress=advance, size=job.obj.size, listed=job.obj
        )
        mtime = job.obj.mtime_ns
        if mtime is not None:
            os.utime(job.path, ns=(mtime, mtime))
        with lock:
            result.files += 1
            result.bytes += job.obj.size
        sink.file_done(job.obj.key)

    todo.sort(key=lambda j: -j.obj.size)
    sink.start(f"download {store.url} -> {dest}", len(todo), sum(j.obj.size for j in todo))
    give_up = give_up_after(workers)
    try:
        ran = run_bounded(todo, fetch, workers=workers, cancel=cancel, give_up_after=give_up)
    finally:
        sink.finish()
    failures.extend((job.obj.key, describe(exc)) for job, exc in ran.failures)
    if failures:
        total = len(todo) + len(failures) - len(ran.failures)  # fetched + known to fail
        raise DownloadError(
            failure_message(f"downloads from {store.url} to {dest}", failures, total)
            + ran.gave_up_note(give_up)
            + " To fix: address the cause and run again; files already downloaded are kept.",
            failures,
            result,
        )
    return result
