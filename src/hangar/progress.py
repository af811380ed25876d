"""The progress interface the library reports through; the CLI renders it.

Library code calls a `ProgressSink`; it never prints. `NullProgress` ignores everything; the CLI
provides a rich bar on a terminal and plain periodic lines elsewhere. Implementations must be
thread-safe: transfers report from worker threads.
"""

from __future__ import annotations

from typing import Protocol


class ProgressSink(Protocol):
    def start(self, label: str, total_files: int, total_bytes: int) -> None:
        """A transfer phase begins (e.g. "upload sky-data -> s3://sky-data")."""

    def advance(self, nbytes: int) -> None:
        """`nbytes` more bytes moved (called often, from worker threads)."""

    def file_done(self, key: str) -> None:
        """One more file completed."""

    def finish(self) -> None:
        """The phase is over (successfully or not)."""

    def note(self, message: str) -> None:
        """A one-line informational message (a warning, a decision worth telling)."""


class NullProgress:
    """Reports nothing."""

    def start(self, label: str, total_files: int, total_bytes: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def file_done(self, key: str) -> None:
        pass

    def finish(self) -> None:
        pass

    def note(self, message: str) -> None:
        pass
