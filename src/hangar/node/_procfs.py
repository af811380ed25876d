"""What the kernel says about mounts and processes, read from /proc without touching a mount.

`is_mounted` reads /proc/self/mountinfo instead of calling stat() on the path: a stat of a
FUSE mount whose daemon is stuck would hang, and reading mountinfo never does.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time

_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def mounts() -> dict[str, str]:
    """Mount point -> filesystem type, for every mount in this mount namespace."""
    out: dict[str, str] = {}
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
            lines = fh.readlines()
    except OSError:
        return out
    for line in lines:
        left, sep, right = line.partition(" - ")
        parts = left.split()
        if not sep or len(parts) < 5:
            continue
        fstype = right.split()[0] if right.split() else ""
        out[_unescape(parts[4])] = fstype
    return out


def is_mounted(path: str) -> bool:
    """True when `path` (an absolute, symlink-free path) is a mount point."""
    return path in mounts()


def fstype(path: str) -> str | None:
    return mounts().get(path)


def start_time(pid: int) -> str:
    """The process's start time (clock ticks since boot), "" when there is no such process.

    Recorded with a PID so that a PID reused by another process is never signalled.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return ""
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


def alive(pid: int, started: str) -> bool:
    """True when process `pid` still runs and is the one that started at `started`.

    A zombie counts as gone: it holds no mount and does no work, it only waits to be reaped.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return False
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return False
    return not started or fields[19] == started


def wait_gone(pid: int, started: str, timeout: float) -> bool:
    """Wait (polling /proc) until the process is gone; True if it went within `timeout`."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while alive(pid, started):
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    return True


def signal_process(pid: int, started: str, sig: signal.Signals) -> None:
    """Send `sig` to `pid` only if it is still the process we started."""
    if alive(pid, started):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
