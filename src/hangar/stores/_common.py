"""Helpers shared by the cloud stores: key checks, progress-reporting readers, atomic downloads,
and secret-free error messages. No SDK imports here."""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, BinaryIO

from zlib_ng.zlib_ng import crc32, crc32_combine

from hangar.config import usable_cpus
from hangar.errors import StoreError
from hangar.stores.base import Progress

# Part size for multipart / resumable uploads and the number of parts in flight per file.
# Memory held per large upload is about part_size * max_concurrency.
DEFAULT_PART_SIZE = 16 * 1024 * 1024
DEFAULT_PART_CONCURRENCY = 8
# Retries of a data-plane request (an object's or a part's bytes). The backoff grows fast
# (see ObstoreStore.retry_config), so these ride out a server restart or a network blip of a
# minute; HANGAR_RETRY_TIMEOUT is what bounds a request that keeps failing.
DEFAULT_MAX_RETRIES = 20
DEFAULT_RETRY_TIMEOUT = 120.0  # seconds, from a request's first try to its last retry
# Control-plane calls (bucket checks, listings) retry less: they come first, and a server that
# cannot be reached then is more likely a wrong endpoint than a blip, so fail in seconds.
CONTROL_MAX_RETRIES = 4
DEFAULT_READ_TIMEOUT = 60.0  # seconds without a byte from the server before a request is retried
MIN_PART_SIZE = 5 * 1024 * 1024  # S3's minimum (all but the last part)
DOWNLOAD_CHUNK = 8 * 1024 * 1024

_MD5_HEX = re.compile(r"^[0-9a-f]{32}$")
_CRC32_HEX = re.compile(r"^[0-9a-f]{8}$")


def check_key(key: str) -> str:
    """Refuse keys that cannot name a file safely: empty, absolute, NUL, '.'/'..' or empty
    segments. Returns `key` unchanged."""
    parts = key.split("/")
    if (
        not key
        or key.startswith("/")
        or key.endswith("/")
        or "\x00" in key
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise StoreError(f"refusing unsafe object key {key!r} (empty, absolute, '..' or NUL)")
    return key


def transfer_option(option: float | None, env: str, default: float) -> float:
    """A retry/timeout setting: the store option, else the environment variable `env`
    (``HANGAR_MAX_RETRIES``, ``HANGAR_RETRY_TIMEOUT``, ``HANGAR_READ_TIMEOUT``), else `default`.
    Reads only the environment (constructors do no I/O)."""
    if option is not None:
        return float(option)
    raw = os.environ.get(env, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise StoreError(f"{env}={raw!r} is not a number. To fix: unset it.") from None
    if value < 0:
        raise StoreError(f"{env}={raw!r} is negative. To fix: unset it or give a number >= 0.")
    return value


def control_retries(max_retries: int) -> int:
    """Retries for a control-plane call: `max_retries`, at most CONTROL_MAX_RETRIES."""
    return min(max_retries, CONTROL_MAX_RETRIES)


def norm_prefix(prefix: str) -> str:
    """'' or 'a/b/' (no leading slash, one trailing slash)."""
    stripped = prefix.strip("/")
    return stripped + "/" if stripped else ""


_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]?)(?:i?B)?\s*$", re.IGNORECASE)


def parse_size(raw: str, name: str) -> int:
    """Bytes from ``16777216``, ``16M``, ``16MiB`` or ``16MB`` (K/M/G are binary units, as in
    rclone). Raises StoreError naming `name`."""
    m = _SIZE.match(raw)
    if m is None:
        raise StoreError(f"{name}={raw!r} is not a size. To fix: give bytes or e.g. 16MiB.")
    unit: str = m.group(2).upper() or " "
    return int(m.group(1)) << (10 * " KMG".index(unit))


def check_part_size(part_size: int | None) -> int:
    """The store option, else HANGAR_PART_SIZE, else DEFAULT_PART_SIZE; at least 5 MiB."""
    if part_size is not None:
        size = int(part_size)
    elif raw := os.environ.get("HANGAR_PART_SIZE", "").strip():
        size = parse_size(raw, "HANGAR_PART_SIZE")
    else:
        size = DEFAULT_PART_SIZE
    if size < MIN_PART_SIZE:
        raise StoreError(f"part_size {size} is below the 5 MiB minimum of multipart uploads")
    return size


def part_concurrency(option: int | None) -> int:
    """Parts in flight per large file: the store option, else HANGAR_PART_CONCURRENCY, else
    DEFAULT_PART_CONCURRENCY."""
    value = option or int(transfer_option(None, "HANGAR_PART_CONCURRENCY", 0)) or None
    return max(1, int(value or DEFAULT_PART_CONCURRENCY))


def md5_from_etag(etag: str | None) -> str | None:
    """The MD5 hex digest an ETag stands for, when it is a plain single-part MD5 ETag.

    Multipart ETags ("<hex>-<parts>") and opaque ETags return None. A 32-hex ETag that is not an
    MD5 (SSE-KMS on AWS) can only make a later sync upload again, never skip a change.
    """
    if not etag:
        return None
    value = etag.strip().strip('"').lower()
    return value if _MD5_HEX.match(value) else None


class ProgressReader:
    """A read-only binary file wrapper that reports bytes read to `progress`.

    Only bytes beyond the furthest position read so far are reported, so a client that seeks
    back to resend a part (a retry) does not count it twice.
    """

    def __init__(self, raw: BinaryIO, progress: Progress) -> None:
        self._raw = raw
        self._progress = progress
        self._high = raw.tell()

    def _report(self) -> None:
        pos = self._raw.tell()
        if pos > self._high:
            self._progress(pos - self._high)
            self._high = pos

    def read(self, size: int | None = -1) -> bytes:
        data = self._raw.read(-1 if size is None else size)
        self._report()
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        n = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        self._report()
        return int(n or 0)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        self._raw.close()


# What one PieceReader.read returns at most. obstore asks for a whole part (16 MiB) and
# takes shorter reads; a piece that stays in the CPU's cache while obstore copies it into its
# part buffer cost 0.15-0.3 CPU-s less per GiB uploaded than a 16 MiB one (4.71 against 4.87
# CPU-s, means of six 1 GiB uploads each, measured when an MD5 also read each piece; perf:
# obstore's copy 0.3 -> 0.14 s).
READ_PIECE = 1024 * 1024


class PieceReader(ProgressReader):
    """A ProgressReader whose `read` returns at most READ_PIECE bytes (file semantics allow
    short reads; obstore loops until it has a part)."""

    def read(self, size: int | None = -1) -> bytes:
        size = READ_PIECE if size is None or not 0 <= size <= READ_PIECE else size
        data = self._raw.read(size)
        self._report()
        return data


def parse_crc32(value: str | None) -> str | None:
    """A recorded CRC-32 as 8 lower-case hex digits, or None when it is not one."""
    value = (value or "").strip().lower()
    return value if _CRC32_HEX.match(value) else None


def join_checksums(
    crcs: Sequence[int], step: int, size: int, combine: Callable[[int, int, int], int]
) -> int:
    """The CRC of `size` bytes from the CRCs of their consecutive slices of `step` bytes (the
    last one shorter); `combine(crc_a, crc_b, len_b)` is the CRC's crc32_combine."""
    total = 0
    for start, crc in zip(range(0, size, step), crcs, strict=True):
        total = combine(total, crc, min(step, size - start))
    return total


def combined_crc32(crcs: Sequence[int], step: int, size: int) -> str:
    """The CRC-32 (8 hex digits) of `size` bytes from the CRC-32s of their consecutive slices
    of `step` bytes (the last one shorter)."""
    return f"{join_checksums(crcs, step, size, crc32_combine):08x}"  # zlib-ng's, in C


def file_crc32(path: str | Path, workers: int = 0) -> str:
    """CRC-32 of a file's content as 8 hex digits: streamed, in `workers` slices read and
    summed in parallel (default: one per usable CPU; zlib-ng releases the GIL) and then
    combined. zlib-ng's CRC-32 (carry-less multiply) runs near 10 GB/s per core here, so
    reading the file costs more than summing it."""
    size = os.stat(path).st_size
    workers = max(1, min(workers or usable_cpus(), size // DOWNLOAD_CHUNK))
    step = -(-size // workers) or 1
    with open(path, "rb", buffering=0) as fh:
        fd = fh.fileno()

        def crc_of(start: int) -> int:
            end, crc = min(start + step, size), 0
            view = memoryview(bytearray(min(DOWNLOAD_CHUNK, max(1, end - start))))
            while start < end and (n := os.preadv(fd, [view[: end - start]], start)):
                crc = crc32(view[:n], crc)
                start += n
            return crc

        starts = range(0, size, step)
        if workers == 1:
            crcs = [crc_of(start) for start in starts]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                crcs = list(pool.map(crc_of, starts))
    return combined_crc32(crcs, step, size)


def md5_and_stat(path: str | Path, buf: bytearray) -> tuple[str, os.stat_result]:
    """Hex MD5 of a file's content, streamed through `buf`, and its fstat (taken before
    reading)."""
    digest = hashlib.md5(usedforsecurity=False)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        st = os.fstat(fh.fileno())
        while n := fh.readinto(view):
            digest.update(view[:n])
    return digest.hexdigest(), st


def file_md5(path: Path) -> str:
    """Hex MD5 of a file's content (for stores that record it before sending)."""
    return md5_and_stat(path, bytearray(DOWNLOAD_CHUNK))[0]


class ProgressWriter:
    """A write-only binary file wrapper that reports bytes written to `progress`."""

    def __init__(self, raw: IO[bytes], progress: Progress) -> None:
        self._raw = raw
        self._progress = progress

    def write(self, data: bytes) -> int:
        n = self._raw.write(data)
        self._progress(n)
        return n

    def flush(self) -> None:
        self._raw.flush()

    def tell(self) -> int:
        return self._raw.tell()


@contextlib.contextmanager
def atomic_download(path: Path) -> Iterator[IO[bytes]]:
    """Yield a temporary file beside `path`; on success it is renamed onto `path`, on any
    error it is removed (so `path` is never left half-written). Set the file's mtime with
    `set_mtime` after the block."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.hangar-")
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# fallocate(2) errors that mean the file cannot have its size: the rest (EOPNOTSUPP, ENOSYS,
# EINTR...) only mean no reservation was made, and the writes allocate as they go.
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@functools.cache
def _fallocate() -> Any:
    """libc's fallocate(2) wrapper, or None (not Linux, no such symbol)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # only a large download needs it

    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    for name in ("fallocate64", "fallocate"):  # musl >= 1.2.4 has only the second
        fn = getattr(libc, name, None)
        if fn is not None:
            fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
            fn.restype = ctypes.c_int
            return fn
    return None


def preallocate(fd: int, size: int, name: str) -> None:
    """Reserve `size` bytes of disk for the empty file open as `fd` (its size becomes `size`),
    before a download writes its ranges into it out of order: the writes land in blocks already
    allocated instead of each growing the file (ext4, 1 GiB COPY from SeaweedFS, 6 alternating
    runs: client CPU 1.45 -> 1.39 s, wall 1.73 -> 1.61 s, medians), and a disk that cannot hold
    the file fails here, before a byte is fetched. Calls fallocate(2) itself: glibc's
    posix_fallocate falls back to writing every block where the filesystem has no fallocate,
    which would cost more than it saves; there nothing is reserved.
    Raises OSError (ENOSPC, EDQUOT, EFBIG) naming `name`."""
    fn = _fallocate()
    if fn is None or size <= 0:
        return
    if fn(fd, 0, 0, size) != 0:
        import ctypes

        err = ctypes.get_errno()
        if err in _NO_ROOM:
            raise OSError(err, f"{os.strerror(err)} (the file needs {size} bytes)", name)


def set_mtime(path: Path, mtime_ns: int | None) -> None:
    """Give a downloaded file the source mtime recorded at upload, when there is one."""
    if mtime_ns is not None:
        with contextlib.suppress(OSError):
            os.utime(path, ns=(mtime_ns, mtime_ns))


def parse_int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def parse_md5(value: str | None) -> str | None:
    value = (value or "").strip().lower()
    return value if _MD5_HEX.match(value) else None


_SECRET_PATTERNS = [
    # Signed-URL query parameters and connection-string parts.
    re.compile(r"(?i)\b(sig|x-amz-signature|x-amz-security-token|x-amz-credential)=[^&\s\"'<;]+"),
    re.compile(r"(?i)\b(accountkey|sharedaccesssignature|secret_access_key)=[^;\s\"']+"),
]


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with the given secret values, and anything shaped like a credential, masked."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: f"{m.group(1)}=***", text)
    return text


_LOW_LEVEL = re.compile(
    r"(?i)(connection refused|connection reset[^\"\n,)]*|broken pipe|timed out|"
    r"dns error[^\"\n]*|certificate[^\"\n]*|unexpected eof[^\"\n]*)"
)


def short_cause(text: str, limit: int = 400) -> str:
    """The informative part of an SDK error message, on one line: no debug dump, no timing
    and retry bookkeeping, plus the low-level cause (e.g. "connection refused") when the
    summary hides it."""
    head = text.split("\n\nDebug source:", 1)[0]
    code = re.search(r"<Code>([^<]+)</Code>", head)
    message = re.search(r"<Message>([^<\n]+)", head)
    first = re.sub(r"\s+", " ", head.split("<?xml", 1)[0]).strip(" :")
    first = re.sub(r"^Generic \w+ error: ", "", first)
    first = re.sub(
        r" in [0-9.]+\S*s(, after \d+ retries, max_retries: \d+, retry_timeout: \S+)?", "", first
    )
    if code:
        first += f" [{code.group(1)}" + (f": {message.group(1).strip()}]" if message else "]")
    low = _LOW_LEVEL.search(text)
    if low and low.group(1).lower() not in first.lower():
        first += f" ({low.group(1)})"
    return first if len(first) <= limit else first[: limit - 3] + "..."
