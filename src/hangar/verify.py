"""`hangar storage verify`: compare a storage's bucket with its catalog record and its source.

Every object is read back and hashed (nothing is trusted from metadata alone), so a corrupt
object is found even when its recorded checksum still looks right. Reports missing objects
(in the source, not in the bucket), extra objects (in the bucket only) and corrupt objects
(content differs from the source file, or from the checksum recorded at upload).
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from hangar.catalog import Catalog
from hangar.errors import ChecksumMismatch, StorageNotFound
from hangar.models import LocalRoot
from hangar.progress import NullProgress, ProgressSink
from hangar.stores import store_from_uri
from hangar.stores._common import file_md5
from hangar.stores.base import ObjectInfo, Store
from hangar.sync.checksum import ChecksumCache
from hangar.sync.scan import LocalFile, scan_local


@dataclass
class StoreReport:
    url: str
    objects: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    corrupt: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt)


@dataclass
class VerifyReport:
    name: str
    source: str
    stores: list[StoreReport]
    mirror: bool  # extra objects are a problem only when the storage mirrors its source

    @property
    def ok(self) -> bool:
        return all(s.ok and not (self.mirror and s.extra) for s in self.stores)


def _md5_of_object(store: Store, info: ObjectInfo, workdir: Path, progress: ProgressSink) -> str:
    with tempfile.NamedTemporaryFile(dir=workdir, delete=False) as tmp:
        path = Path(tmp.name)
    try:
        store.get_file(info.key, path, progress=progress.advance, size=info.size, listed=info)
        return file_md5(path)
    finally:
        path.unlink(missing_ok=True)


def _check_store(
    store: Store,
    local: dict[str, LocalFile] | None,
    checksums: ChecksumCache,
    progress: ProgressSink,
    workers: int,
) -> StoreReport:
    report = StoreReport(store.url)
    remote: dict[str, ObjectInfo] = {o.key: o for o in store.list()}
    report.objects = len(remote)
    lock = threading.Lock()
    progress.start(f"verify {store.url}", len(remote), sum(o.size for o in remote.values()))

    def check(info: ObjectInfo, workdir: Path) -> None:
        try:
            actual = _md5_of_object(store, info, workdir, progress)
        except ChecksumMismatch:  # the store's own read-back check refused the bytes
            with lock:
                report.corrupt.append(
                    (info.key, "content differs from the checksum recorded at upload")
                )
            progress.file_done(info.key)
            return
        problem = None
        if local is not None and info.key in local:
            expected = checksums.md5(local[info.key])
            if actual != expected:
                problem = "content differs from the source file"
        elif info.md5 is not None and actual != info.md5:
            problem = "content differs from the checksum recorded at upload"
        progress.file_done(info.key)
        if problem:
            with lock:
                report.corrupt.append((info.key, problem))

    try:
        with (
            tempfile.TemporaryDirectory(prefix="hangar-verify-") as tmp,
            ThreadPoolExecutor(max_workers=workers) as pool,
        ):
            for future in [pool.submit(check, info, Path(tmp)) for info in remote.values()]:
                future.result()
    finally:
        progress.finish()
    if local is not None:
        report.missing = sorted(set(local) - set(remote))
        report.extra = sorted(set(remote) - set(local))
    report.corrupt.sort()
    return report


def verify(name: str, progress: ProgressSink | None = None, workers: int = 8) -> VerifyReport:
    """Verify storage `name` in every store it is kept in."""
    progress = progress or NullProgress()
    with Catalog() as cat:
        record = cat.get(name)
    if record is None:
        raise StorageNotFound(
            f"no storage named {name!r} in the catalog. To see them: hangar storage ls"
        )
    roots = [LocalRoot(path, prefix, "source") for path, prefix in record.roots]
    local: dict[str, LocalFile] | None = None
    if roots and all(Path(r.path).exists() for r in roots):
        local = {f.key: f for f in scan_local(roots).files}
    elif roots:
        progress.note(f"source {record.source} is not on this machine: checking checksums only")
    reports = []
    with ChecksumCache() as checksums:
        for srec in record.stores:
            reports.append(
                _check_store(store_from_uri(srec.url), local, checksums, progress, workers)
            )
    return VerifyReport(name, record.source, reports, record.sync == "mirror")


def lines(report: VerifyReport) -> Iterator[str]:
    """A human-readable verification report."""
    for s in report.stores:
        yield f"{report.name} @ {s.url}: {s.objects} object(s) checked"
        for key in s.missing:
            yield f"  missing: {key} (in the source, not in the bucket)"
        for key, why in s.corrupt:
            yield f"  corrupt: {key} ({why})"
        for key in s.extra:
            kept = "" if report.mirror else "; kept: this storage is additive"
            yield f"  extra:   {key} (in the bucket, not in the source{kept})"
    yield "OK: bucket matches the source" if report.ok else "PROBLEMS FOUND"
