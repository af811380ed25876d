"""`$HANGAR_HOME/mounts.json`: every live rclone mount Hangar started, so it can be undone later.

`hangar storage mount` leaves rclone running after it exits; `hangar storage unmount PATH` finds
it here (PID plus its start time, so a reused PID is never signalled). Mounts made by
`hangar launch` are recorded too, so a launch killed with SIGKILL leaves a record that
`hangar storage unmount` can clean up. The file is 0600 and updated under a file lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from filelock import FileLock

from hangar.config import hangar_home


@dataclass
class MountRecord:
    """One rclone mount: where, what, and everything needed to stop it and flush its cache."""

    path: str  # the mount point (real path)
    mount_id: str
    url: str  # the store's URL
    storage: str  # storage name (or the URI given to `hangar storage mount`)
    mode: str  # MOUNT or MOUNT_CACHED
    read_only: bool
    remote_name: str  # rclone remote name (part of the cache layout)
    remote_path: str  # path on that remote (bucket[/prefix])
    pid: int = 0
    pid_start: str = ""  # /proc/<pid>/stat start time: guards against PID reuse
    # "cli": left running by `hangar storage mount`; otherwise ("launch", "foreground") the
    # process `owner_pid` undoes it when it ends.
    owner: str = "launch"
    owner_pid: int = 0
    owner_start: str = ""
    run_dir: str = ""  # holds the remote-control socket
    rc_user: str = ""
    rc_pass: str = ""  # a random token for the local socket, not a cloud credential
    cache_dir: str = ""
    log_file: str = ""
    created_dirs: list[str] = field(default_factory=list)  # removed after unmount, deepest first

    @property
    def socket_path(self) -> str:
        return os.path.join(self.run_dir, "rc.sock")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MountRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _file() -> Path:
    return hangar_home() / "mounts.json"


@contextlib.contextmanager
def _locked() -> Iterator[dict[str, dict[str, Any]]]:
    """The registry (path -> record), locked; written back when the block succeeds."""
    path = _file()
    with FileLock(str(path) + ".lock"):
        try:
            data = json.loads(path.read_text())
            mounts: dict[str, dict[str, Any]] = data.get("mounts", {})
        except FileNotFoundError:
            mounts = {}
        except ValueError:
            mounts = {}  # unreadable: start over rather than refuse every mount
        before = json.dumps(mounts, sort_keys=True)
        yield mounts
        if json.dumps(mounts, sort_keys=True) == before:
            return
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".mounts-")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump({"mounts": mounts}, fh, indent=2, sort_keys=True)
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def add(record: MountRecord) -> None:
    with _locked() as mounts:
        mounts[record.path] = asdict(record)


def remove(path: str) -> None:
    with _locked() as mounts:
        mounts.pop(path, None)


def get(path: str) -> MountRecord | None:
    with _locked() as mounts:
        data = mounts.get(path)
    return MountRecord.from_json(data) if data is not None else None


def all_records() -> list[MountRecord]:
    with _locked() as mounts:
        return [MountRecord.from_json(d) for d in mounts.values()]
