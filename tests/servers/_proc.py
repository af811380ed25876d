"""Start and stop a local test server: free loopback ports, Popen from an argv list, a health
check, a stop by PID, and the log's tail in every failure message.

Free ports are found by binding port 0 and closing the socket, which races with any other
process doing the same; `start_server` therefore retries the whole start (new ports, fresh data
directory) when a server does not come up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class ServerStartError(RuntimeError):
    """A server did not come up; the message carries its argv and log tail."""


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that were free a moment ago (all bound at once)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGTERM the server when the process that started it dies (a test run
    killed by a timeout or a signal leaves no server behind)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class ServerProcess:
    """One running server process, its log file and the directory it owns."""

    name: str
    argv: list[str]
    workdir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, env: dict[str, str] | None = None) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.workdir,
                env={**os.environ, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal does not hit it first
                preexec_fn=_die_with_parent,
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def failure(self, what: str) -> ServerStartError:
        code = self.proc.poll() if self.proc else None
        status = f"exited with status {code}" if code is not None else "still running"
        return ServerStartError(
            f"{self.name}: {what} ({status}).\nargv: {self.argv}\nlog {self.log_path}:\n"
            f"{self.log_tail()}"
        )

    def wait_until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll `check` until it returns True; raise with the log tail on exit or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive:
                raise self.failure(f"exited while waiting for {what}")
            with contextlib.suppress(Exception):
                if check():
                    return
            if time.monotonic() > deadline:
                raise self.failure(f"no {what} after {timeout:.0f}s")
            time.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process (by PID), then SIGKILL if it outlives `timeout`."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """True when GET `url` answers with any HTTP status below 500."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status) < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500


def start_server(name: str, base: Path, launch: Callable[[Path], T], attempts: int = 3) -> T:
    """Call `launch(fresh_dir)` until it returns a started server; each try gets a fresh
    directory (and so, inside `launch`, fresh ports). The last failure is raised."""
    errors: list[str] = []
    for attempt in range(1, attempts + 1):
        workdir = base / f"{name}-{attempt}"
        try:
            return launch(workdir)
        except ServerStartError as exc:
            errors.append(str(exc))
    raise ServerStartError(
        f"{name} did not start after {attempts} tries:\n" + "\n---\n".join(errors[-1:])
    )


def which_in_venv(binary: str, extra_dirs: Sequence[Path] = ()) -> str | None:
    """`binary` from the running interpreter's bin directory, `extra_dirs`, or PATH."""
    import shutil
    import sys

    for directory in (Path(sys.executable).parent, *extra_dirs):
        candidate = directory / binary
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(binary)
