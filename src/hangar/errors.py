"""One exception tree for everything Hangar raises on purpose.

Each class also inherits the matching built-in, so callers may catch either. Messages say what
happened, to what, and how to fix it. The CLI maps `SpecError` to exit status 2 and every other
`HangarError` to exit status 1, printing the message without a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence


class HangarError(Exception):
    """Base of every error Hangar raises deliberately."""

    exit_code = 1


class SpecError(HangarError, ValueError):
    """The task YAML (or a CLI argument standing in for it) is invalid.

    `where` is the YAML path of the offending value, e.g. ``file_mounts./data.source``.
    """

    exit_code = 2

    def __init__(self, message: str, where: str | None = None) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)


class StoreUnavailable(HangarError, ImportError):
    """A store's optional dependency is missing; the message names the pip command."""


class BucketNotFound(HangarError, FileNotFoundError):
    """The bucket does not exist (or is not visible with the current credentials)."""


class ObjectNotFound(HangarError, FileNotFoundError):
    """The object key does not exist in the bucket."""


class BucketExists(HangarError, FileExistsError):
    """The bucket name is taken (by someone else, or by a bucket Hangar does not know)."""


class AccessDenied(HangarError, PermissionError):
    """The store refused the request for lack of permission."""


class NotOwned(HangarError, PermissionError):
    """Hangar refuses to delete or empty a bucket it did not create."""


class StoreError(HangarError, OSError):
    """A store operation failed after retries (network, server error)."""


class ChecksumMismatch(StoreError):
    """Bytes read from a store do not match the checksum recorded when they were uploaded."""


class StorageNotFound(HangarError, LookupError):
    """No storage of that name is in the catalog."""


class SyncError(HangarError):
    """A sync finished with per-file failures; `failures` holds (key, reason) pairs."""

    def __init__(self, message: str, failures: Sequence[tuple[str, str]] = ()) -> None:
        self.failures = list(failures)
        super().__init__(message)


class MountError(HangarError, OSError):
    """Attaching a storage at its mount path failed; carries the argv and the log tail."""

    def __init__(self, message: str, argv: Sequence[str] = (), log_tail: str = "") -> None:
        self.argv = list(argv)
        self.log_tail = log_tail
        text = message
        if log_tail:
            text += "\n--- mount log (last lines) ---\n" + log_tail
        super().__init__(text)


class ExecutionError(HangarError):
    """The task's processes could not be started (not: they ran and failed)."""
