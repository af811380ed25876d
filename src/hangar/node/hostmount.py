"""One attachment per host, shared by every node of a task that runs on that host.

Several Ray nodes can share one machine (the tests run two on one host; a cloud VM may run one
node per GPU). They all want the same storage at the same path, and a path can hold only one
mount. So the first node of a task to reach a path on a host makes the attachment (FUSE mount,
symlink to a local bucket, or COPY download) and the others join it; the attachment is undone
when the last of them has left.

State, per host and task, lives in ``$HANGAR_HOME/run/hostmounts/<host>/``: a lock file and a
JSON record per mount path (who made it, who holds it). `<host>` is the hostname plus the
kernel's boot id, so a `$HANGAR_HOME` on a shared filesystem still keeps one record per machine.
Holders are identified by PID and process start time, so a node that died (SIGKILL, OOM) is
dropped from the count instead of pinning the mount forever.

The node that made an attachment owns it (a FUSE mount's rclone is its child): when its own
task is done it waits until every other holder on the host has left, then undoes it. A node
that joins never undoes anything. Plain copies of local paths (`file_mounts` strings) are shared
the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from hangar.config import hangar_home
from hangar.node import _procfs
from hangar.node.attach import check_target
from hangar.progress import NullProgress, ProgressSink

_POLL = 0.1


def host_id() -> str:
    """This machine's identity: hostname + boot id (stable while it runs, new after a reboot)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "noboot"
    name = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "host"
    return f"{name}-{boot.replace('-', '')[:12]}"


def state_dir() -> Path:
    path = hangar_home() / "run" / "hostmounts" / host_id()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Holder:
    pid: int
    start: str
    rank: int

    @classmethod
    def me(cls, rank: int) -> Holder:
        pid = os.getpid()
        return cls(pid, _procfs.start_time(pid), rank)

    def alive(self) -> bool:
        return _procfs.alive(self.pid, self.start)

    def as_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "start": self.start, "rank": self.rank}


class _Record:
    """The JSON record of one shared attachment, read and written under its lock."""

    def __init__(self, base: Path) -> None:
        self.file = base.with_suffix(".json")
        self.creator: Holder | None = None
        self.holders: list[Holder] = []
        self.closing = False

    def load(self) -> bool:
        try:
            data = json.loads(self.file.read_text())
        except (OSError, ValueError):
            return False
        self.creator = Holder(**data["creator"])
        self.holders = [Holder(**h) for h in data["holders"]]
        self.closing = bool(data.get("closing"))
        return True

    def save(self, path: str, task_id: str) -> None:
        assert self.creator is not None
        data = {
            "path": path,
            "task_id": task_id,
            "creator": self.creator.as_json(),
            "holders": [h.as_json() for h in self.holders],
            "closing": self.closing,
        }
        tmp = self.file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, self.file)

    def forget(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.file.unlink()

    def live_holders(self) -> list[Holder]:
        return [h for h in self.holders if h.alive()]


def _base(task_id: str, path: str) -> Path:
    digest = hashlib.sha256(f"{task_id}\0{os.path.abspath(path)}".encode()).hexdigest()[:20]
    return state_dir() / digest


@contextmanager
def _locked(base: Path) -> Iterator[None]:
    lock = FileLock(str(base.with_suffix(".lock")))
    lock.acquire(poll_interval=0.05)
    try:
        yield
    finally:
        lock.release()


def _join_or_create(
    base: Path,
    *,
    task_id: str,
    path: str,
    where: str,
    me: Holder,
    make: Callable[[], AbstractContextManager[Any]],
    progress: ProgressSink,
) -> ExitStack | None:
    """Join the host's attachment at `path`, or make it. Returns the ExitStack that undoes it
    when this process made it, None when it joined one."""
    while True:
        with _locked(base):
            record = _Record(base)
            if record.load() and record.creator is not None and record.creator.alive():
                if not record.closing:
                    record.holders = [*record.live_holders(), me]
                    record.save(path, task_id)
                    return None
            else:
                if record.creator is not None:
                    progress.note(
                        f"warning: the node that attached {path} on this host is gone; "
                        "attaching it again"
                    )
                    record.forget()
                check_target(path, where)
                stack = ExitStack()
                stack.enter_context(make())
                record = _Record(base)
                record.creator = me
                record.holders = [me]
                try:
                    record.save(path, task_id)
                except BaseException:
                    stack.close()
                    raise
                return stack
        time.sleep(_POLL)  # the last holder is undoing it: wait, then make it again


def _leave(base: Path, *, path: str, task_id: str, me: Holder) -> None:
    with _locked(base):
        record = _Record(base)
        if not record.load():
            return
        record.holders = [h for h in record.live_holders() if h != me]
        record.save(path, task_id)


def _wait_for_others(base: Path, *, path: str, task_id: str, progress: ProgressSink) -> None:
    """Block until no other live process holds the attachment; then mark it closing."""
    told = False
    while True:
        with _locked(base):
            record = _Record(base)
            if not record.load():
                return
            others = record.live_holders()
            if not others:
                record.holders = []
                record.closing = True
                record.save(path, task_id)
                return
        if not told:
            ranks = ", ".join(str(h.rank) for h in others)
            progress.note(f"keeping {path} attached for rank(s) {ranks} on this host")
            told = True
        time.sleep(_POLL)


@contextmanager
def shared_attachment(
    path: str,
    where: str,
    make: Callable[[], AbstractContextManager[Any]],
    *,
    task_id: str,
    rank: int,
    progress: ProgressSink | None = None,
) -> Iterator[bool]:
    """Attach `path` for this node, sharing one attachment per host between the task's nodes.

    `make()` returns the context manager that attaches (e.g. `attach(mount, store)`); it is
    entered only by the first node on the host, after `check_target(path, where)`. Yields True
    when this process made the attachment. On the way out a joining node only leaves; the
    node that made it waits for the others to leave, then undoes it (with this block's
    exception, so its error reporting is unchanged).
    """
    progress = progress or NullProgress()
    base = _base(task_id, path)
    me = Holder.me(rank)
    stack = _join_or_create(
        base, task_id=task_id, path=path, where=where, me=me, make=make, progress=progress
    )
    if stack is None:
        progress.note(f"{path}: sharing the attachment another node made on this host")
        try:
            yield False
        finally:
            _leave(base, path=path, task_id=task_id, me=me)
        return
    try:
        with stack:
            try:
                yield True
            finally:
                _leave(base, path=path, task_id=task_id, me=me)
                _wait_for_others(base, path=path, task_id=task_id, progress=progress)
    finally:
        with _locked(base):
            _Record(base).forget()
        _collect_old_locks(base.parent)


def _collect_old_locks(directory: Path, age: float = 86400.0) -> None:
    """Remove lock files of attachments that ended more than `age` seconds ago.

    A lock file is never removed while its attachment may be in use (a waiting process would
    then lock a file nobody else sees); its key includes the task id, so a day after its record
    is gone no process of that task is still waiting for it.
    """
    cutoff = time.time() - age
    for lock in directory.glob("*.lock"):
        with contextlib.suppress(OSError):
            if lock.stat().st_mtime < cutoff and not lock.with_suffix(".json").exists():
                lock.unlink()
