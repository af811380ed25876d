"""Decide, per key, what a sync does: pure, no I/O except through the checksum callbacks.

The equality rule lives here and only here; see `make_plan`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from hangar.stores.base import CRC32_TAG, ObjectInfo
from hangar.sync.scan import LocalFile

# Reasons, grouped by what the summary calls them.
NEW = "new"
SIZE_CHANGED = "size changed"
CONTENT_CHANGED = "content changed"
UNVERIFIABLE = "cannot verify (no checksum)"
UNREADABLE = "cannot read to compare"
UNCHANGED = "unchanged"
SAME_CHECKSUM = "unchanged (same checksum)"
ONLY_REMOTE = "only in bucket"
ONLY_REMOTE_KEPT = "only in bucket (kept)"

_MODIFIED = frozenset({SIZE_CHANGED, CONTENT_CHANGED, UNVERIFIABLE, UNREADABLE})


class Action(StrEnum):
    UPLOAD = "upload"
    DELETE = "delete"
    SKIP = "skip"


class PlanItem(NamedTuple):
    """One key's decision. `local` is None for bucket-only keys, `remote` None for new ones.
    (A NamedTuple: a plan holds one per file, and tuples are the cheapest immutable record.)"""

    key: str
    action: Action
    reason: str
    local: LocalFile | None
    remote: ObjectInfo | None


@dataclass
class Plan:
    """Every key on either side, in order: local keys as given, then bucket-only keys sorted.
    `unchanged`: files known unchanged (from the manifest) that have no item; they are
    counted as unchanged."""

    items: list[PlanItem]
    unchanged: int = 0

    @property
    def uploads(self) -> list[PlanItem]:
        return [i for i in self.items if i.action is Action.UPLOAD]

    @property
    def deletes(self) -> list[PlanItem]:
        return [i for i in self.items if i.action is Action.DELETE]

    @property
    def skipped(self) -> list[PlanItem]:
        return [i for i in self.items if i.action is Action.SKIP]

    @property
    def bytes_to_send(self) -> int:
        return sum(i.local.size for i in self.items if i.action is Action.UPLOAD and i.local)

    def counts(self) -> dict[str, int]:
        """Items per category: new, modified, unchanged, deleted, kept."""
        counts = dict.fromkeys(("new", "modified", "unchanged", "deleted", "kept"), 0)
        counts["unchanged"] = self.unchanged
        for item in self.items:
            if item.reason == NEW:
                counts["new"] += 1
            elif item.reason in _MODIFIED:
                counts["modified"] += 1
            elif item.action is Action.DELETE:
                counts["deleted"] += 1
            elif item.remote is not None and item.local is None:
                counts["kept"] += 1
            else:
                counts["unchanged"] += 1
        return counts

    def summary(self) -> str:
        """One line, e.g. "3 new, 1 modified, 120 unchanged, 2 only in bucket (kept)"."""
        c = self.counts()
        parts = [
            f"{c['new']} new" if c["new"] else "",
            f"{c['modified']} modified" if c["modified"] else "",
            f"{c['unchanged']} unchanged" if c["unchanged"] else "",
            f"{c['deleted']} only in bucket (to delete)" if c["deleted"] else "",
            f"{c['kept']} only in bucket (kept)" if c["kept"] else "",
        ]
        return ", ".join(p for p in parts if p) or "no files"


def make_plan(
    local: Sequence[LocalFile],
    remote: Mapping[str, ObjectInfo],
    *,
    mirror: bool,
    md5_of: Callable[[LocalFile], str],
    crc32_of: Callable[[LocalFile], str],
) -> Plan:
    """Compare local files with the bucket listing (keys unique on each side).

    The equality rule, in order, per local file:

    1. not in the bucket -> UPLOAD "new";
    2. sizes differ -> UPLOAD "size changed";
    3. same size and the bucket recorded the same mtime_ns -> SKIP "unchanged";
    4. same size, mtime differs or was not recorded:
       the bucket recorded a checksum -> compare it with the local file's: the MD5
       (``md5_of(local)``) when one was recorded, else the CRC-32 (``crc32_of(local)``; a file
       uploaded in parts records only that, see Store.put_file):
       equal -> SKIP "unchanged (same checksum)", else UPLOAD "content changed";
       no checksum recorded -> UPLOAD "cannot verify (no checksum)".

    The callbacks are called only in case 4 with a recorded checksum, so unchanged files (by
    mtime) and resized files are never read; if one raises OSError the file is planned for
    upload ("cannot read to compare") and apply reports the error for that file. Keys only in
    the bucket become DELETE "only in bucket" when `mirror`, else SKIP "only in bucket (kept)"
    (listed so a dry run can show them).
    """
    items: list[PlanItem] = []
    append = items.append
    get = remote.get
    upload, skip = Action.UPLOAD, Action.SKIP
    for f in local:
        obj = get(f.key)
        if obj is None:
            append(PlanItem(f.key, upload, NEW, f, None))
        elif obj.size != f.size:
            append(PlanItem(f.key, upload, SIZE_CHANGED, f, obj))
        elif obj.mtime_ns == f.mtime_ns:
            append(PlanItem(f.key, skip, UNCHANGED, f, obj))
        elif (recorded := obj.checksum) is not None:  # the MD5, else "crc32:<hex>"
            try:
                local_sum = md5_of(f) if obj.md5 else CRC32_TAG + crc32_of(f)
            except OSError:  # unreadable or vanished: apply will report it for this file
                append(PlanItem(f.key, upload, UNREADABLE, f, obj))
                continue
            if local_sum.lower() == recorded.lower():
                append(PlanItem(f.key, skip, SAME_CHECKSUM, f, obj))
            else:
                append(PlanItem(f.key, upload, CONTENT_CHANGED, f, obj))
        else:
            append(PlanItem(f.key, upload, UNVERIFIABLE, f, obj))
    local_keys = {f.key for f in local}
    extra = sorted(k for k in remote if k not in local_keys)
    for key in extra:
        if mirror:
            append(PlanItem(key, Action.DELETE, ONLY_REMOTE, None, remote[key]))
        else:
            append(PlanItem(key, Action.SKIP, ONLY_REMOTE_KEPT, None, remote[key]))
    return Plan(items)


def checksum_candidates(
    local: Sequence[LocalFile], remote: Mapping[str, ObjectInfo]
) -> list[LocalFile]:
    """The files `make_plan` will pass to `md5_of` (step 4 with a recorded MD5), so a caller
    can compute their MD5s in parallel beforehand (a CRC-32 is computed in parallel slices by
    `crc32_of` itself)."""
    out = []
    for f in local:
        obj = remote.get(f.key)
        if obj is not None and obj.size == f.size and obj.mtime_ns != f.mtime_ns and obj.md5:
            out.append(f)
    return out
