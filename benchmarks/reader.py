"""Read every file under a directory (a mount) with N parallel readers; print bytes and files.

Run as a child process by the benchmark so its CPU and RSS are measured like any client's.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor

_BUF = 4 * 1024 * 1024


def _read(path: str) -> int:
    buf = bytearray(_BUF)
    view = memoryview(buf)
    total = 0
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(view):
            total += n
    return total


def main(argv: list[str]) -> int:
    root, parallel = argv[0], int(argv[1]) if len(argv) > 1 else 1
    paths = [os.path.join(d, f) for d, _, files in os.walk(root) for f in files]
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        total = sum(pool.map(_read, paths))
    print(f"read {len(paths)} files, {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
