"""Large downloads as parallel ranged GETs written in place: the part every store shares.

Objects above PARALLEL_MIN are fetched as ranged GETs of RANGE_SIZE bytes, RANGE_WINDOW at a
time, by at most two files at once (RANGED_FILES). Measured on W1 (1 GiB, SeaweedFS on the same
2 cores): 8, 16, 32 and 64 MiB ranges with 4-16 streams all land within noise of each other
(1.7-2.4 s); 32 MiB x 8 needs the fewest requests of the fastest settings.

How a store gets a range's bytes is its own (`FetchRange`: the standard library's client on a
signed URL first, then its SDK from the byte reached); how they reach the file is here: each
chunk is written at its offset by the thread that received it, one `pwrite` at a time, and
summed into the range's checksum as it passes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any, Literal

from hangar.errors import StoreError
from hangar.stores.base import Progress

PARALLEL_MIN = 64 * 1024 * 1024
RANGE_SIZE = 32 * 1024 * 1024
RANGE_WINDOW = 8
RANGED_FILES = threading.BoundedSemaphore(2)

Write = Callable[[Any], None]
# fetch(start, end, write): pass the bytes [start, end) of the object to `write`, in order, as
# they arrive. Stopping short is allowed (it is checked); transfer errors raise.
FetchRange = Callable[[int, int, Write], None]
Checksum = Literal["crc32", "crc32c"]


def _summer(kind: Checksum | None) -> Callable[[Any, int], int] | None:
    if kind == "crc32":
        from zlib_ng.zlib_ng import crc32

        return crc32
    if kind == "crc32c":
        import google_crc32c  # comes with google-cloud-storage, the only store that asks

        def crc32c(chunk: Any, crc: int) -> int:
            # Its C function takes bytes only (not a view of a reused buffer): one copy of a
            # 256 KiB chunk, still in the CPU's cache.
            return int(
                google_crc32c.extend(crc, chunk if isinstance(chunk, bytes) else bytes(chunk))
            )

        return crc32c
    return None


def fetch_ranges(
    fd: int,
    size: int,
    fetch: FetchRange,
    progress: Progress,
    *,
    checksum: Checksum | None,
    where: str,
) -> list[int]:
    """Fetch `size` bytes into the open file `fd` (already allocated) as RANGE_SIZE ranges,
    RANGE_WINDOW at a time; returns each range's `checksum` in order (zeros for None). A range
    that came short or long raises StoreError naming `where`; the first failure stops the
    ranges not started yet and is raised (the earliest range's, if several) once the running
    ones end."""
    summed = _summer(checksum)
    # One writer at a time: ext4 (like most filesystems) serializes buffered writes to a file
    # on its inode lock anyway, and threads queued there spin on the CPU the server needs
    # (perf of a slow COPY: rwsem_spin_on_owner 11%); a Python lock waits asleep. 1 GiB COPY
    # right after a 10,000-file upload (when every tool here runs slower), 5 rounds: medians
    # 2.03 -> 1.62 s, client CPU 1.71 -> 1.13 s.
    writing = threading.Lock()

    def one(start: int) -> int:
        end = min(start + RANGE_SIZE, size)
        crc, pos = 0, start

        def write(chunk: Any) -> None:
            nonlocal crc, pos
            view = memoryview(chunk)
            if len(view) > end - pos:
                raise StoreError(
                    f"download {where}: the server sent more than the {end - start} bytes of "
                    f"the range {start}-{end}; nothing was written. To fix: run it again."
                )
            with writing:
                while view:
                    n = os.pwrite(fd, view, pos)
                    pos += n
                    view = view[n:]
            if summed is not None:
                crc = summed(chunk, crc)
            progress(len(chunk))

        fetch(start, end, write)
        if pos != end:
            raise StoreError(
                f"download {where}: the server sent {pos - start} bytes for the range "
                f"{start}-{end}; nothing was written. To fix: run it again."
            )
        return crc

    pool = ThreadPoolExecutor(max_workers=RANGE_WINDOW)
    try:
        futures = [pool.submit(one, start) for start in range(0, size, RANGE_SIZE)]
        wait(futures, return_when=FIRST_EXCEPTION)  # (an interrupt here ends it too)
    finally:  # the first failure stops the ranges not started yet
        pool.shutdown(wait=True, cancel_futures=True)
    for future in futures:  # the earliest range's failure, if several failed
        failure = None if future.cancelled() else future.exception()
        if failure is not None:
            raise failure
    return [f.result() for f in futures]
