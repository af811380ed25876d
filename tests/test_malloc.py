"""hangar._malloc: freed memory is kept for reuse by glibc (counted in page faults, not time),
and a user's own malloc settings are left alone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or not os.confstr("CS_GNU_LIBC_VERSION"), reason="glibc only"
)

# Eight threads allocate, fill and free buffers of the sizes a transfer uses (obstore's receive
# chunks, 16 MiB parts); prints whether the settings were made and the page faults taken.
_CHURN = """
import ctypes, random, resource, sys, threading
from hangar._malloc import keep_freed_memory, release_freed_memory
made = keep_freed_memory() if sys.argv[1] == "keep" else False
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
def churn(seed):
    rnd = random.Random(seed)
    for _ in range(120):
        n = rnd.choice((212, 65483, 130966, 262144, 16 << 20))
        p = libc.malloc(n)
        libc.memset(p, 1, n)
        libc.free(p)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
threads = [threading.Thread(target=churn, args=(i,)) for i in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
release_freed_memory()
print(made, faults)
"""


def _churn(mode: str, **env: str) -> tuple[bool, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    clean.pop("GLIBC_TUNABLES", None)
    out = subprocess.run(
        [sys.executable, "-c", _CHURN, mode],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    made, faults = out.stdout.split()
    return made == "True", int(faults)


def test_kept_memory_is_reused_instead_of_faulted_in_again() -> None:
    made, kept = _churn("keep")
    assert made
    _, default = _churn("default")
    # Each thread's first 16 MiB is faulted in either way (8 x 4096 pages); by default glibc
    # hands freed buffers back to the kernel and faults them in again.
    assert kept < 0.75 * default, (kept, default)


@pytest.mark.parametrize(
    "env",
    [
        {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"},
        {"MALLOC_ARENA_MAX": "2"},
        {"MALLOC_TRIM_THRESHOLD_": "0"},
    ],
)
def test_a_users_own_malloc_settings_are_left_alone(env: dict[str, str]) -> None:
    made, _ = _churn("keep", **env)
    assert not made
