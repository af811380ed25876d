"""Make each storage appear at its mount path on this machine, and undo it afterwards.

MOUNT / MOUNT_CACHED: a store that lives on this machine's disk (the embedded local store) is
attached with a symlink to its bucket directory, so no FUSE is needed and the task's writes land
in the bucket directly. Other stores, and read-only mounts, go through FUSE (`hangar.node.mount`).
COPY downloads the bucket (or a prefix, or one object) before `setup`; the copy lives for the task.

Every attachment is a context manager: leaving it (success, failure, Ctrl-C) undoes the mount,
removes what Hangar created, and never touches anything that was there before.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from hangar.errors import MountError, SpecError
from hangar.models import FileCopy, MountMode, MountSpec
from hangar.node.mount import effective_read_only, fuse_mount, is_mount_point
from hangar.progress import NullProgress, ProgressSink
from hangar.stores.base import Store
from hangar.sync.download import download


def check_target(path: str, where: str) -> None:
    """Refuse a mount path Hangar must not use: a non-empty directory, a file, a mount point.

    Raises SpecError (nothing has been changed when it does).
    """
    p = Path(path)
    if is_mount_point(path):  # reads the mount table: a dead FUSE mount cannot hang us
        raise SpecError(
            f"{path} is already a mount point. To fix: unmount it (`hangar storage unmount "
            f"{path}` or `umount {path}`) or choose another mount_path.",
            where,
        )
    if p.is_symlink():
        raise SpecError(
            f"{path} is a symbolic link. To fix: remove the link or choose another mount_path.",
            where,
        )
    if p.exists() and not p.is_dir():
        raise SpecError(
            f"{path} exists and is not a directory. To fix: choose another mount_path.", where
        )
    if p.is_dir() and any(p.iterdir()):
        raise SpecError(
            f"{path} exists and is not empty; Hangar never deletes or hides your files. "
            "To fix: choose another mount_path, or empty or remove that directory yourself.",
            where,
        )


@contextmanager
def _prepared_dir(path: Path) -> Iterator[bool]:
    """Create `path` and its missing parents; on exit remove those Hangar created, if empty.

    Yields whether `path` itself existed before (then nothing is removed on exit).
    """
    missing: list[Path] = []
    cursor = path
    while not cursor.exists():
        missing.append(cursor)
        cursor = cursor.parent
    existed = path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield existed
    finally:
        for created in missing:  # deepest first
            with contextlib.suppress(OSError):
                created.rmdir()


@contextmanager
def _symlink_mount(path: Path, target: Path) -> Iterator[None]:
    with _prepared_dir(path) as existed:
        path.rmdir()  # empty: checked before anything ran
        os.symlink(target, path, target_is_directory=True)
        try:
            yield
        finally:
            if path.is_symlink():
                path.unlink()
            if existed:
                path.mkdir(exist_ok=True)


def _remove_tree(path: Path) -> None:
    """Remove a tree Hangar created (it was empty or absent before the task)."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def _copy_mount(mount: MountSpec, store: Store, progress: ProgressSink) -> Iterator[None]:
    path = Path(mount.path)
    single_object = bool(mount.subpath) and not mount.subpath.endswith("/")
    if single_object and not any(True for _ in store.list(mount.subpath.rstrip("/") + "/")):
        with _prepared_dir(path.parent):
            try:
                download(store, path, subpath=mount.subpath, progress=progress)
                yield
            finally:
                _remove_tree(path)
        return
    with _prepared_dir(path) as existed:
        try:
            download(store, path, subpath=mount.subpath, progress=progress)
            yield
        finally:
            _remove_tree(path)
            if existed:
                path.mkdir(exist_ok=True)


@contextmanager
def attach(mount: MountSpec, store: Store, progress: ProgressSink | None = None) -> Iterator[None]:
    """Attach one storage at `mount.path` for the duration of the context."""
    progress = progress or NullProgress()
    path = Path(mount.path)
    if mount.mode is MountMode.COPY:
        with _copy_mount(mount, store, progress):
            yield
        return
    if store.capabilities.native_mount and not effective_read_only(mount):
        local_path = getattr(store, "local_path", None)
        if local_path is None:
            raise MountError(f"{store.url}: store declares native_mount but has no local_path")
        target = Path(local_path()) / mount.subpath if mount.subpath else Path(local_path())
        if not target.is_dir():
            raise MountError(f"{store.url}/{mount.subpath}: not a directory; cannot mount it")
        with _symlink_mount(path, target):
            yield
        return
    with _prepared_dir(path), fuse_mount(store, mount, progress=progress):
        yield


@contextmanager
def copy_in(copy: FileCopy) -> Iterator[None]:
    """A plain `file_mounts` entry: copy a local file or directory to its destination."""
    dest = Path(copy.path)
    src = Path(copy.source)
    if src.is_dir():
        with _prepared_dir(dest) as existed:
            try:
                shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)
                yield
            finally:
                _remove_tree(dest)
                if existed:
                    dest.mkdir(exist_ok=True)
    else:
        with _prepared_dir(dest.parent):
            try:
                shutil.copy2(src, dest)
                yield
            finally:
                _remove_tree(dest)


@contextmanager
def attach_all(
    mounts: Sequence[tuple[MountSpec, Store]],
    copies: Sequence[FileCopy] = (),
    progress: ProgressSink | None = None,
) -> Iterator[None]:
    """Attach everything, in order; undo all of it (in reverse) on the way out."""
    with ExitStack() as stack:
        for copy in copies:
            stack.enter_context(copy_in(copy))
        for mount, store in mounts:
            stack.enter_context(attach(mount, store, progress))
        yield
