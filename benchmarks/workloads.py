"""Deterministic random workloads: W1 (one large file), W2 (many medium files), W3 (very many
small files).

Every file's content is a pure function of (seed, workload, file index, generation), so a data
directory can be reused between runs (a marker file records what was generated) and the files a
re-sync benchmark changed can be put back exactly. Content is random bytes, never zeros: zero
files compress and write unrealistically fast.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

_CHUNK = 8 * 1024 * 1024
_MARKER = ".bench-workload.json"
# Beside the data directory too: the files `change` rewrote that `restore` has not put back (a
# run killed mid-way, or a manual experiment), restored by the next `ensure`.
_CHANGED = ".bench-changed.json"
_PER_DIR = 1000  # files per subdirectory (100,000 files in one directory is unrealistic)


@dataclass(frozen=True)
class Workload:
    name: str  # "W1", "W2", "W3"
    files: int
    file_size: int
    seed: int = 20240601

    @property
    def total_bytes(self) -> int:
        return self.files * self.file_size

    def rel(self, index: int) -> str:
        """The path (relative to the workload's root) of file `index`."""
        if self.files == 1:
            return "big.bin"
        return f"d{index // _PER_DIR:03d}/f{index:06d}.bin"

    def _rng(self, index: int, generation: int) -> random.Random:
        wid = int(self.name[1:]) if self.name[1:].isdigit() else 0
        return random.Random((self.seed << 48) ^ (wid << 40) ^ (generation << 32) ^ index)

    def write_file(self, root: Path, index: int, generation: int = 0) -> Path:
        """Write file `index` (content of `generation`; 0 is the original) and return its path."""
        path = root / self.rel(index)
        rng = self._rng(index, generation)
        left = self.file_size
        with open(path, "wb") as out:
            while left > 0:
                n = min(left, _CHUNK)
                out.write(rng.randbytes(n))
                left -= n
        return path


def sizes(quick: bool = False, tiny: bool = False) -> dict[str, Workload]:
    """The workloads at full size, or scaled down for `--quick` or the smoke test."""
    if tiny:
        return {
            "W1": Workload("W1", 1, 6 * 1024 * 1024),
            "W2": Workload("W2", 20, 100 * 1024),
            "W3": Workload("W3", 200, 4 * 1024),
        }
    if quick:
        return {
            "W1": Workload("W1", 1, 128 * 1024 * 1024),
            "W2": Workload("W2", 1000, 100 * 1024),
            "W3": Workload("W3", 5000, 4 * 1024),
        }
    return {
        "W1": Workload("W1", 1, 1024 * 1024 * 1024),
        "W2": Workload("W2", 10_000, 100 * 1024),
        "W3": Workload("W3", 100_000, 4 * 1024),
    }


def ensure(w: Workload, base: Path) -> Path:
    """The workload's data directory under `base`, generated unless a matching one is there
    (the marker file sits beside the data directory, so no tool uploads it)."""
    top = base / f"{w.name}-{w.files}x{w.file_size}-s{w.seed}"
    root = top / "data"
    marker = top / _MARKER
    try:
        if json.loads(marker.read_text()) == asdict(w):
            pending = _changed(root)
            if pending:
                restore(w, root, sorted(pending))
            return root
    except (OSError, ValueError):
        pass
    if top.exists():
        shutil.rmtree(top)
    root.mkdir(parents=True)
    for d in range(0, w.files, _PER_DIR):
        if w.files > 1:
            (root / w.rel(d)).parent.mkdir(exist_ok=True)
    for i in range(w.files):
        w.write_file(root, i)
    marker.write_text(json.dumps(asdict(w)))
    return root


def change(w: Workload, root: Path, indices: list[int], generation: int) -> None:
    """Rewrite files `indices` with new content of the same size (a new mtime, too), recorded
    (before writing) as changed until `restore` puts them back."""
    if generation:
        _record_changed(root, _changed(root) | set(indices))
    for i in indices:
        w.write_file(root, i, generation)


def restore(w: Workload, root: Path, indices: list[int]) -> None:
    """Put back the original content of files `indices`."""
    change(w, root, indices, 0)
    _record_changed(root, _changed(root) - set(indices))


def _changed(root: Path) -> set[int]:
    try:
        return set(json.loads((root.parent / _CHANGED).read_text()))
    except (OSError, ValueError, TypeError):
        return set()


def _record_changed(root: Path, indices: set[int]) -> None:
    path = root.parent / _CHANGED
    if not indices:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(sorted(indices)))
    os.replace(tmp, path)


def picks(w: Workload, fraction: float, round_: int) -> list[int]:
    """A deterministic, distinct-per-round choice of `fraction` of the files (at least one)."""
    n = max(1, int(w.files * fraction))
    rng = random.Random(w.seed + 7919 * (round_ + 1))
    return sorted(rng.sample(range(w.files), n))


def file_count(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))
