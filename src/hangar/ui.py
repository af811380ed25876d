"""Progress and messages for the CLI: a rich bar on a terminal, plain lines elsewhere.

Everything goes to stderr so that stdout carries only the task's own output (and `--json`).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # rich is imported only for a terminal: ~40 ms of every command's start-up
    from rich.console import Console
    from rich.progress import Progress, TaskID


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class RichProgress:
    """A live bar with bytes, files, rate and ETA (terminal only)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._files = 0
        self._total_files = 0

    def start(self, label: str, total_files: int, total_bytes: int) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        with self._lock:
            self._files = 0
            self._total_files = total_files
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TextColumn("{task.fields[files]}"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._task = self._progress.add_task(
                label, total=max(total_bytes, 1), files=f"0/{total_files} files"
            )
            self._progress.start()

    def advance(self, nbytes: int) -> None:
        with self._lock:
            if self._progress is not None and self._task is not None:
                self._progress.advance(self._task, nbytes)

    def file_done(self, key: str) -> None:
        with self._lock:
            self._files += 1
            if self._progress is not None and self._task is not None:
                self._progress.update(self._task, files=f"{self._files}/{self._total_files} files")

    def finish(self) -> None:
        with self._lock:
            if self._progress is not None:
                if self._task is not None:
                    total = self._progress.tasks[0].total or 0
                    self._progress.update(self._task, completed=total)
                self._progress.stop()
            self._progress = None
            self._task = None

    def note(self, message: str) -> None:
        self.console.print(message, markup=False, highlight=False)


class PlainProgress:
    """Plain progress lines (at most one every `interval` seconds) for logs and pipes."""

    def __init__(self, stream: TextIO, interval: float = 5.0) -> None:
        self.stream = stream
        self.interval = interval
        self._lock = threading.Lock()
        self._reset("", 0, 0)

    def _reset(self, label: str, files: int, nbytes: int) -> None:
        self.label = label
        self.total_files = files
        self.total_bytes = nbytes
        self.files = 0
        self.bytes = 0
        self.started = time.monotonic()
        self.last = self.started

    def _line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.bytes / elapsed
        remaining = self.total_bytes - self.bytes
        eta = f", ETA {remaining / rate:.0f}s" if rate > 0 and remaining > 0 else ""
        return (
            f"{self.label}: {self.files}/{self.total_files} files, "
            f"{human_bytes(self.bytes)}/{human_bytes(self.total_bytes)}, "
            f"{human_bytes(rate)}/s{eta}"
        )

    def start(self, label: str, total_files: int, total_bytes: int) -> None:
        with self._lock:
            self._reset(label, total_files, total_bytes)
            self.stream.write(f"{label}: {total_files} files, {human_bytes(total_bytes)}\n")
            self.stream.flush()

    def _maybe_print(self) -> None:
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self.stream.write(self._line() + "\n")
            self.stream.flush()

    def advance(self, nbytes: int) -> None:
        with self._lock:
            self.bytes += nbytes
            self._maybe_print()

    def file_done(self, key: str) -> None:
        with self._lock:
            self.files += 1
            self._maybe_print()

    def finish(self) -> None:
        with self._lock:
            elapsed = time.monotonic() - self.started
            self.stream.write(f"{self._line()} (done in {elapsed:.1f}s)\n")
            self.stream.flush()

    def note(self, message: str) -> None:
        with self._lock:
            self.stream.write(message + "\n")
            self.stream.flush()


def make_progress(quiet: bool = False) -> RichProgress | PlainProgress:
    """Rich bar on a terminal; plain lines when stderr is not a terminal."""
    if sys.stderr.isatty() and not quiet:
        from rich.console import Console

        return RichProgress(Console(stderr=True))
    return PlainProgress(sys.stderr)
