"""Helpers shared by the FUSE mount tests: finding our rclone processes, running the mount CLI."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hangar.progress import NullProgress

FUSE_OK = os.path.exists("/dev/fuse") and bool(
    shutil.which("fusermount3") or shutil.which("fusermount")
)
needs_fuse = pytest.mark.skipif(not FUSE_OK, reason="needs /dev/fuse and fusermount3 (fuse3)")

# The real CLI, run by this interpreter (the test's environment, without relying on PATH).
_CLI = "import sys\nfrom hangar.cli import app\nsys.argv[0] = 'hangar'\napp()\n"


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-c", _CLI, *args]


def hangar_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run(
        cli_argv(*args),
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


class Notes(NullProgress):
    """A progress sink that keeps the notes."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, message: str) -> None:
        self.notes.append(message)


def _state(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0]
    except OSError:
        return "X"


def rclone_pids(home: Path) -> list[int]:
    """Live rclone processes working for this test's $HANGAR_HOME (their log file is in it)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if not argv or os.path.basename(argv[0]) != b"rclone":
            continue
        if any(str(home).encode() in a for a in argv) and _state(entry) not in ("Z", "X"):
            out.append(int(entry))
    return out


def mounted(path: Path | str) -> bool:
    with open("/proc/self/mountinfo") as fh:
        return any(line.split()[4] == str(path) for line in fh)


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def assert_clean(home: Path, *paths: Path) -> None:
    """No mount left at `paths`, no rclone process left, nothing left in the registry."""
    for path in paths:
        assert not mounted(path), f"{path} is still mounted"
    assert rclone_pids(home) == []
    registry = home / "mounts.json"
    if registry.exists():
        assert '"mounts": {}' in registry.read_text()
    cache = home / "cache" / "rclone"
    assert not cache.exists() or list(cache.iterdir()) == []


@pytest.fixture
def no_leftover_mounts(hangar_home: Path, tmp_path: Path) -> Iterator[None]:
    """After a test (even a failed one), undo whatever mount or rclone it left behind, so one
    failure cannot leak mounts into the machine. Tests assert cleanliness themselves."""
    yield
    from hangar.node import _registry
    from hangar.node.mount import unmount

    for record in _registry.all_records():
        with contextlib.suppress(Exception):
            unmount(record.path)
    with open("/proc/self/mountinfo") as fh:
        leftovers = [line.split()[4] for line in fh if str(tmp_path) in line.split()[4]]
    tool = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount3"
    for path in reversed(leftovers):
        subprocess.run([tool, "-u", "-z", path], capture_output=True, check=False)
    for pid in rclone_pids(hangar_home):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
