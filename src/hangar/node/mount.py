"""FUSE mounts for MOUNT and MOUNT_CACHED: one `rclone mount2` per mount, driven from Python.

How a mount is made (the same for every store):

- The remote comes from `store.mount_remote()`: a backend, non-secret options and credentials,
  all passed to rclone as RCLONE_CONFIG_<NAME>_* environment variables under a name unique to
  the mount. The argv (no shell) names the remote, the path and flags only, never a credential.
- rclone runs in the foreground as Hangar's child, in its own session: its PID is the mount's,
  and Ctrl-C in the terminal reaches Hangar, which then unmounts in order. `fuse_mount` waits
  until the kernel lists the mount point (and rclone's control socket is up) before returning.
- Every mount has a remote-control socket (0700 directory, random user and password given via
  RCLONE_RC_USER/RCLONE_RC_PASS). Before unmounting, Hangar asks rclone (`vfs/stats`) until no
  upload is queued or running, so every write has reached the bucket when the task is reported
  done; queued uploads are moved forward (their write-back delay is pointless by then).
- Unmount: `fusermount3 -u` (retried while busy, then lazy `-uz`), rclone stopped by PID
  (SIGTERM, then SIGKILL), and a check that neither the mount nor the process is left. If
  rclone's cache still marks a file as not uploaded afterwards (a close the kernel had not yet
  delivered, or rclone killed), rclone is started once more on the same cache to upload it;
  the cache directory is deleted only when nothing is left in it to upload.

The FUSE layer: ``rclone mount2`` (go-fuse), or ``rclone mount`` (bazil FUSE) where the rclone
binary has no ``mount2`` or HANGAR_RCLONE_MOUNT=mount asks for it. Both serve the same VFS with
the same flags, and the whole mount test suite passes on both. bazil gets reads from the kernel
128 KiB at a time (a request, a new buffer and garbage per 128 KiB); go-fuse negotiates 1 MiB.
Reading 1 GiB through a read-only MOUNT: 2.9-3.3 s and 2.6 rclone CPU-s with ``mount``,
2.1-2.3 s and 1.2-1.3 CPU-s with ``mount2``; 16 readers of 10,000 files of 100 KiB: 18.0-18.7 s
(rclone 14.1-14.5 CPU-s) against 13.9-16.8 s (9.2-12.3 CPU-s). rclone does not list ``mount2``
in its help; that is why it is chosen only where the binary answers ``rclone mount2 --help``.

Flags, and why:

- MOUNT: ``--vfs-cache-mode writes --vfs-write-back 0s``. Reads stream from the bucket; a file
  being written is staged on local disk and its upload starts the moment it is closed (measured
  on loopback: visible in the bucket ~30-60 ms after close for 10 MB). Cache mode ``off`` would
  make close() wait for the upload, but refuses ordinary programs (open O_RDWR, seek while
  writing, append to an existing file); ``writes`` accepts them all. Read-only: ``--read-only``
  and no cache at all. ``--dir-cache-time 5s``: the task sees objects others add within seconds.
  ``--no-checksum``: otherwise rclone MD5-hashes every file read from start to end (1.7 CPU-s
  per GiB, half of what a 1 GiB read costs here) to compare at close(2), after the program has
  used the data, and only against an MD5 it knows: Hangar's multipart objects (every file over
  the part size) have none, so for them the hashing bought nothing. Measured reading 1 GiB
  through a read-only mount: 4.5-4.9 s (rclone 4.4-4.6 CPU-s) before, 2.9-3.5 s after.
  ``--use-server-modtime``: a file's time is the time its object was stored, which the listing
  already gives. Otherwise rclone sends a HEAD for every file that is stat'ed (``ls -l`` of
  1,000 files: 1,000 requests and 1.7 s, against 0.26 s), only to read an rclone ``mtime``
  metadata key that Hangar's uploads do not write. 16 readers of 10,000 files of 100 KiB:
  21-27 s (slower each pass) before, 17-18 s after. The cost: a time set on a file through the
  mount (``touch -d``, ``tar``, ``rsync -t``) is not kept; it reads back as the time stored.
- MOUNT_CACHED: ``--vfs-cache-mode full`` with the cache under
  ``$HANGAR_HOME/cache/rclone/<mount-id>``, bounded by ``--vfs-cache-max-size`` (default 10G),
  ``--vfs-write-back 1s``, ``--transfers 1`` (files reach the bucket in the order they were
  closed, so a "checkpoint done" marker written last lands last), ``--dir-cache-time 10s``,
  ``--vfs-cache-poll-interval 10s``, ``--vfs-fast-fingerprint``. `config.mount_cached` fields map
  one to one onto rclone flags and override the `type` preset, which overrides these defaults.
- Both: ``--poll-interval 0`` (object stores have no change feed), ``--attr-timeout 1s``,
  ``--config /dev/null``, no ``--allow-other`` (the task runs as the user who mounts), never
  ``--allow-non-empty`` (the mount path is checked empty first), never ``--daemon`` (its PID is
  not the mount's). A user's own RCLONE_* variables are not passed to rclone.

Timeouts (environment, seconds): HANGAR_MOUNT_TIMEOUT (mount live, default 30),
HANGAR_UPLOAD_STALL_TIMEOUT (no upload progress at all before giving up, default 600).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields, replace
from pathlib import Path

from hangar.config import env_seconds
from hangar.errors import MountError
from hangar.models import MountCachedConfig, MountMode, MountSpec
from hangar.node import _procfs, _rclone, _registry
from hangar.node._registry import MountRecord
from hangar.progress import NullProgress, ProgressSink
from hangar.stores.base import RcloneRemote, Store

DEFAULT_CACHE_MAX_SIZE = "10G"
DEFAULT_WRITE_BACK = "1s"
DEFAULT_TRANSFERS = 1

# The `type:` presets, with the same values as the reference implementation so a task tuned
# there behaves the same here: checkpoints are few large files read with many parallel chunk
# streams; datasets are many smaller files read sequentially; RW adds parallel uploads.
PRESETS: dict[str, dict[str, object]] = {
    "MODEL_CHECKPOINT_RO": {
        "vfs_read_chunk_streams": 16, "vfs_read_chunk_size": "32M", "read_only": True,
    },
    "MODEL_CHECKPOINT_RW": {
        "vfs_read_chunk_streams": 16, "vfs_read_chunk_size": "32M", "transfers": 8,
    },
    "DATASET_RO": {"vfs_read_chunk_streams": 0, "vfs_read_chunk_size": "8M", "read_only": True},
    "DATASET_RW": {"vfs_read_chunk_streams": 0, "vfs_read_chunk_size": "8M", "transfers": 16},
}  # fmt: skip

_UNIT_B = re.compile(r"^(\d+(?:\.\d+)?[kmgtpe])b$", re.IGNORECASE)


def resolve_cached(cached: MountCachedConfig | None) -> MountCachedConfig:
    """The `type` preset with every explicitly set field on top."""
    cached = cached or MountCachedConfig()
    kind = (cached.type or "").upper()
    if kind and kind not in PRESETS:
        raise MountError(f"unknown MOUNT_CACHED type {cached.type!r}; known: {', '.join(PRESETS)}")
    values: dict[str, object] = dict(PRESETS.get(kind, {}))
    for f in fields(cached):
        value = getattr(cached, f.name)
        if value is not None:
            values[f.name] = value
    return MountCachedConfig(**values)  # type: ignore[arg-type]


def effective_read_only(mount: MountSpec) -> bool:
    if mount.read_only:
        return True
    if mount.mode is MountMode.MOUNT_CACHED:
        return bool(resolve_cached(mount.cached).read_only)
    return False


def rclone_size(value: str) -> str:
    """A size as rclone parses it: ``64MB`` -> ``64M`` (rclone reads K/M/G as binary units),
    ``-1`` -> ``off``."""
    value = value.strip()
    if value == "-1":
        return "off"
    return _UNIT_B.sub(r"\1", value)


def rclone_flags(
    mode: MountMode, *, read_only: bool, cached: MountCachedConfig | None
) -> list[str]:
    """The mode-specific `rclone mount` flags (see the module docstring for the reasons)."""
    if mode is MountMode.MOUNT:
        streamed = ["--dir-cache-time", "5s", "--no-checksum", "--use-server-modtime"]
        if read_only:
            return ["--vfs-cache-mode", "off", *streamed, "--read-only"]
        return [
            "--vfs-cache-mode", "writes",
            "--vfs-write-back", "0s",
            "--vfs-cache-max-size", DEFAULT_CACHE_MAX_SIZE,
            *streamed,
        ]  # fmt: skip
    if mode is not MountMode.MOUNT_CACHED:
        raise MountError(f"mode {mode} is not a FUSE mount (COPY downloads instead)")
    c = resolve_cached(cached)
    flags = [
        "--vfs-cache-mode", "full",
        "--vfs-cache-max-size", rclone_size(c.vfs_cache_max_size or DEFAULT_CACHE_MAX_SIZE),
        "--vfs-write-back", c.vfs_write_back or DEFAULT_WRITE_BACK,
        "--transfers", str(c.transfers if c.transfers is not None else DEFAULT_TRANSFERS),
        "--dir-cache-time", "10s",
        "--vfs-cache-poll-interval", "10s",
        "--vfs-fast-fingerprint",
    ]  # fmt: skip
    if c.buffer_size is not None:
        flags += ["--buffer-size", rclone_size(c.buffer_size)]
    if c.vfs_cache_max_age is not None:
        flags += ["--vfs-cache-max-age", c.vfs_cache_max_age]
    if c.vfs_read_ahead is not None:
        flags += ["--vfs-read-ahead", rclone_size(c.vfs_read_ahead)]
    if c.vfs_read_chunk_size is not None:
        flags += ["--vfs-read-chunk-size", rclone_size(c.vfs_read_chunk_size)]
    if c.vfs_read_chunk_streams is not None:
        flags += ["--vfs-read-chunk-streams", str(c.vfs_read_chunk_streams)]
    if read_only or c.read_only:
        flags.append("--read-only")
    return flags


def is_mount_point(path: str) -> bool:
    """Whether `path` is a mount point, live or dead, asked of the kernel's mount table.

    Unlike os.path.ismount this never stats `path`: a dead FUSE mount (its rclone killed) makes
    stat fail with ENOTCONN, and one whose daemon is stuck makes it hang.
    """
    absolute = os.path.abspath(path)
    parent = os.path.realpath(os.path.dirname(absolute))
    return _procfs.is_mounted(os.path.join(parent, os.path.basename(absolute)))


def _remote_path(remote: RcloneRemote, subpath: str) -> str:
    sub = subpath.strip("/")
    if not sub:
        return remote.path
    return f"{remote.path.rstrip('/')}/{sub}" if remote.path else sub


def _start(
    store: Store,
    mount: MountSpec,
    remote: RcloneRemote,
    *,
    owner: str,
    created: list[str] | None = None,
) -> _rclone.Launched:
    """Check the tools, then start rclone on `mount.path` (an existing empty directory)."""
    rclone = _rclone.find_rclone()
    command = _rclone.mount_command(rclone)
    _rclone.check_fuse()
    read_only = effective_read_only(mount)
    flags = rclone_flags(mount.mode, read_only=read_only, cached=mount.cached)
    record = _rclone.new_record(
        url=store.url,
        storage=mount.storage,
        mode=str(mount.mode),
        read_only=read_only,
        path=os.path.realpath(mount.path),
        remote_path=_remote_path(remote, mount.subpath),
        owner=owner,
    )
    record.created_dirs = list(created or [])
    argv = _rclone.build_argv(rclone, command, record, flags)
    env = _rclone.build_env(record, remote)
    hidden = (*remote.secret_env.values(), record.rc_pass)
    timeout = _mount_timeout()
    try:
        launched = _rclone.spawn(record, argv, env, timeout=timeout, hidden=hidden)
    except BaseException:
        shutil.rmtree(record.cache_dir, ignore_errors=True)
        shutil.rmtree(record.run_dir, ignore_errors=True)
        raise
    try:
        _registry.add(record)
    except BaseException:
        with _rclone.signals_deferred():
            _rclone.discard(launched, [])
        raise
    return launched


def _reflush(record: MountRecord, remote: RcloneRemote, progress: ProgressSink) -> None:
    """Start rclone once more on the mount's cache (on a private directory) so that it uploads
    what the cache still holds, wait for that, and stop it."""
    flush_dir = Path(record.run_dir) / "flush"
    flush_dir.mkdir(mode=0o700, exist_ok=True)
    again = replace(record, path=str(flush_dir), pid=0, pid_start="")
    flags = rclone_flags(MountMode(record.mode), read_only=False, cached=None)
    rclone = _rclone.find_rclone()
    argv = _rclone.build_argv(rclone, _rclone.mount_command(rclone), again, flags)
    env = _rclone.build_env(again, remote)
    hidden = (*remote.secret_env.values(), again.rc_pass)
    progress.note(f"uploading files left in the cache of {record.path} to {record.url}")
    launched = _rclone.spawn(again, argv, env, timeout=_mount_timeout(), hidden=hidden)
    problems: list[str] = []
    try:
        _rclone.drain(again, progress, stall_timeout=_stall_timeout(), shown=record.path)
    finally:
        with _rclone.signals_deferred():
            _rclone.shutdown(launched, problems, progress)
    if problems:
        raise MountError("; ".join(problems))


def _leftover_message(record: MountRecord, dirty: list[str], unknown: list[str]) -> str:
    def listed(names: list[str]) -> str:
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        return ", ".join(names[:5]) + more

    parts = []
    if dirty:
        parts.append(
            f"{len(dirty)} file(s) written through {record.path} did not reach "
            f"{record.url} ({listed(dirty)})"
        )
    if unknown:
        parts.append(
            f"{len(unknown)} file(s) may not have ({listed(unknown)}: rclone stopped "
            "while recording their state)"
        )
    return (
        "; ".join(parts) + f". Their data is kept in {record.cache_dir}/vfs. To fix: check "
        "them against the bucket and upload what is missing (e.g. `hangar storage upload`), "
        "then delete that directory."
    )


def _mount_timeout() -> float:
    return env_seconds("HANGAR_MOUNT_TIMEOUT", 30.0, MountError)


def _stall_timeout() -> float:
    return env_seconds("HANGAR_UPLOAD_STALL_TIMEOUT", 600.0, MountError)


def teardown(
    launched: _rclone.Launched, remote: RcloneRemote | None, progress: ProgressSink
) -> list[str]:
    """Undo a mount completely: wait for its uploads, unmount, stop rclone, re-upload anything
    its cache still holds, remove what Hangar created. Returns the problems (empty when all
    went well). A Ctrl-C while waiting for uploads skips the wait (the files stay in the cache
    directory, which is then kept) and is re-raised once the mount is undone."""
    record = launched.record
    problems: list[str] = []
    interrupted = stalled = False
    drain_problem = ""
    if _procfs.alive(record.pid, record.pid_start):
        try:
            _rclone.drain(record, progress, stall_timeout=_stall_timeout())
        except KeyboardInterrupt:
            interrupted = True
            progress.note(f"interrupted: not waiting for uploads to {record.url}; unmounting")
        except MountError as exc:
            drain_problem = str(exc)
            stalled = _procfs.alive(record.pid, record.pid_start)  # else rclone died
    with _rclone.signals_deferred():
        _rclone.shutdown(launched, problems, progress)
    dirty, unknown = _rclone.dirty_files(record)
    if dirty and remote is not None and not (interrupted or stalled):
        try:
            _reflush(record, remote, progress)
        except KeyboardInterrupt:
            interrupted = True
        except MountError as exc:
            problems.append(str(exc))
        dirty, unknown = _rclone.dirty_files(record)
    with _rclone.signals_deferred():
        if dirty or unknown:
            if drain_problem:
                problems.insert(0, drain_problem)
            problems.append(_leftover_message(record, dirty, unknown))
        else:
            shutil.rmtree(record.cache_dir, ignore_errors=True)
        shutil.rmtree(record.run_dir, ignore_errors=True)
        if not _procfs.is_mounted(record.path):
            for created in record.created_dirs:
                try:
                    os.rmdir(created)
                except OSError:
                    break
        _registry.remove(record.path)
    if interrupted:
        raise KeyboardInterrupt
    return problems


@contextmanager
def fuse_mount(
    store: Store, mount: MountSpec, *, progress: ProgressSink, owner: str = "launch"
) -> Iterator[None]:
    """Mount `store` (plus `mount.subpath`) at `mount.path`, an existing empty directory, for
    the duration of the block; undo it on every exit path (see the module docstring).

    Raises MountError when the mount cannot be made (missing FUSE or rclone: the message names
    the fix; rclone failing: the argv and its log tail), or, after a block that succeeded, when
    writes could not be brought to the bucket or the mount could not be undone. After a block
    that raised, such problems are reported through `progress.note` and the block's exception
    propagates unchanged.
    """
    remote = store.mount_remote()
    launched = _start(store, mount, remote, owner=owner)
    succeeded = False
    try:
        ro = ", read-only" if launched.record.read_only else ""
        progress.note(f"mounted {store.url} at {mount.path} ({mount.mode}{ro})")
        yield
        succeeded = True
    finally:
        problems = teardown(launched, remote, progress)
        if problems:
            message = "; ".join(problems)
            if succeeded:
                raise MountError(message)
            progress.note(f"warning: {message}")


def mount_detached(
    store: Store, mount: MountSpec, *, created: list[str] | None = None
) -> MountRecord:
    """Mount for interactive use: rclone keeps running after this process exits (it is in its
    own session); `unmount(path)` undoes it. `created` lists directories to remove afterwards."""
    launched = _start(store, mount, store.mount_remote(), owner="cli", created=created)
    return launched.record


def unmount(path: str, *, progress: ProgressSink | None = None) -> MountRecord | None:
    """Undo a mount made by `mount_detached` (or left by a launch that was killed).

    Returns the record that was undone, or None when `path` was a FUSE mount Hangar did not
    record (it is then only unmounted). Raises MountError when `path` is not mounted, is not a
    FUSE mount, is in use by a running `hangar launch`, or cannot be undone cleanly.
    """
    progress = progress or NullProgress()
    absolute = os.path.abspath(path)  # resolve the parents only: never stat a mount point
    real = os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))
    record = _registry.get(real)
    if record is None:
        kind = _procfs.fstype(real)
        if kind is None:
            raise MountError(f"{path} is not mounted.")
        if not kind.startswith("fuse"):
            raise MountError(
                f"{path} is a {kind} mount, not a FUSE mount Hangar made. To fix: `umount {path}`."
            )
        problems: list[str] = []
        with _rclone.signals_deferred():
            _rclone.unmount_path(real, problems, progress)
        if problems:
            raise MountError("; ".join(problems))
        return None
    if (
        record.owner != "cli"
        and record.owner_pid != os.getpid()
        and _procfs.alive(record.owner_pid, record.owner_start)
    ):
        raise MountError(
            f"{path} is held by a running Hangar process (pid {record.owner_pid}: a `hangar "
            "launch` or `hangar storage mount --foreground`), which unmounts it when it ends. "
            f"To stop it now: press Ctrl-C there, or `kill {record.owner_pid}`."
        )
    remote = _remote_for(record, progress)
    problems = teardown(_rclone.Launched(record, []), remote, progress)
    if problems:
        raise MountError("; ".join(problems))
    return record


def _remote_for(record: MountRecord, progress: ProgressSink) -> RcloneRemote | None:
    """The remote (with credentials) again, to upload what a cache may still hold."""
    from hangar.errors import HangarError
    from hangar.stores import store_from_uri

    try:
        return store_from_uri(record.url).mount_remote()
    except HangarError as exc:
        progress.note(f"warning: cannot open {record.url} to upload leftovers: {exc}")
        return None
