"""make_plan: the equality rule, checksum laziness, mirror vs additive, the summary line."""

from __future__ import annotations

import pytest

from hangar.stores.base import ObjectInfo
from hangar.sync.plan import Action, checksum_candidates, make_plan
from hangar.sync.scan import LocalFile


def lf(key: str, size: int = 10, mtime: int = 1000, ino: int = 1) -> LocalFile:
    return LocalFile(key=key, path=f"/nowhere/{key}", size=size, mtime_ns=mtime, dev=1, ino=ino)


def obj(
    key: str, size: int = 10, mtime: int | None = 1000, md5: str | None = None,
    crc32: str | None = None,
) -> ObjectInfo:  # fmt: skip
    return ObjectInfo(key=key, size=size, mtime_ns=mtime, md5=md5, crc32=crc32)


class Md5s:
    """An md5_of (or crc32_of) callback that records which files were asked about."""

    def __init__(self, digests: dict[str, str] | None = None, width: int = 32) -> None:
        self.digests = digests or {}
        self.width = width
        self.calls: list[str] = []

    def __call__(self, f: LocalFile) -> str:
        self.calls.append(f.key)
        return self.digests.get(f.key, "0" * self.width)


def Crcs(digests: dict[str, str] | None = None) -> Md5s:
    return Md5s(digests, width=8)


def test_rule_table() -> None:
    local = [
        lf("new"),
        lf("resized", size=11),
        lf("same-mtime"),
        lf("touched-same-content", mtime=2000),
        lf("touched-new-content", mtime=2000),
        lf("no-checksum", mtime=2000),
        lf("no-mtime-recorded"),
        lf("touched-same-crc", mtime=2000),
        lf("touched-new-crc", mtime=2000),
        lf("both-recorded", mtime=2000),
    ]
    remote = {
        "resized": obj("resized", md5="a" * 32),
        "same-mtime": obj("same-mtime", md5="a" * 32),
        "touched-same-content": obj("touched-same-content", md5="AB" * 16),
        "touched-new-content": obj("touched-new-content", md5="c" * 32),
        "no-checksum": obj("no-checksum"),
        "no-mtime-recorded": obj("no-mtime-recorded", mtime=None, md5="d" * 32),
        # uploaded in parts with no MD5 known: only a CRC-32 recorded
        "touched-same-crc": obj("touched-same-crc", crc32="0A0B0C0D"),
        "touched-new-crc": obj("touched-new-crc", crc32="11111111"),
        # both recorded: the MD5 decides (a CRC-32 match would have said "same")
        "both-recorded": obj("both-recorded", md5="e" * 32, crc32="22222222"),
    }
    md5 = Md5s({"touched-same-content": "ab" * 16, "no-mtime-recorded": "d" * 32})
    crc = Crcs({"touched-same-crc": "0a0b0c0d", "touched-new-crc": "11111112",
                "both-recorded": "22222222"})  # fmt: skip
    plan = make_plan(local, remote, mirror=False, md5_of=md5, crc32_of=crc)
    got = {i.key: (i.action, i.reason) for i in plan.items}
    assert got == {
        "new": (Action.UPLOAD, "new"),
        "resized": (Action.UPLOAD, "size changed"),
        "same-mtime": (Action.SKIP, "unchanged"),
        "touched-same-content": (Action.SKIP, "unchanged (same checksum)"),
        "touched-new-content": (Action.UPLOAD, "content changed"),
        "no-checksum": (Action.UPLOAD, "cannot verify (no checksum)"),
        "no-mtime-recorded": (Action.SKIP, "unchanged (same checksum)"),
        "touched-same-crc": (Action.SKIP, "unchanged (same checksum)"),
        "touched-new-crc": (Action.UPLOAD, "content changed"),
        "both-recorded": (Action.UPLOAD, "content changed"),
    }
    # Checksums only where size matched and mtime did not: the MD5 where one was recorded,
    # else the CRC-32.
    assert sorted(md5.calls) == [
        "both-recorded",
        "no-mtime-recorded",
        "touched-new-content",
        "touched-same-content",
    ]
    assert sorted(crc.calls) == ["touched-new-crc", "touched-same-crc"]
    # checksum_candidates predicts exactly those calls (for parallel prefetching).
    assert sorted(f.key for f in checksum_candidates(local, remote)) == sorted(md5.calls)


def test_no_checksum_for_new_resized_or_mtime_matching_files() -> None:
    local = [lf("a"), lf("b", size=99), lf("c")]
    remote = {"b": obj("b", md5="x" * 32), "c": obj("c", md5="y" * 32)}
    md5 = Md5s()
    make_plan(local, remote, mirror=True, md5_of=md5, crc32_of=Crcs())
    assert md5.calls == []


def test_additive_keeps_bucket_only_keys_and_lists_them() -> None:
    plan = make_plan([lf("a")], {"a": obj("a"), "z": obj("z"), "m": obj("m")}, mirror=False,
                     md5_of=Md5s(), crc32_of=Crcs())  # fmt: skip
    assert plan.deletes == []
    kept = [(i.key, i.action, i.reason) for i in plan.items if i.local is None]
    assert kept == [
        ("m", Action.SKIP, "only in bucket (kept)"),
        ("z", Action.SKIP, "only in bucket (kept)"),
    ]
    assert plan.summary() == "1 unchanged, 2 only in bucket (kept)"


def test_mirror_deletes_bucket_only_keys() -> None:
    plan = make_plan(
        [lf("a")], {"a": obj("a"), "gone": obj("gone")}, mirror=True, md5_of=Md5s(), crc32_of=Crcs()
    )
    assert [(i.key, i.reason) for i in plan.deletes] == [("gone", "only in bucket")]
    assert plan.deletes[0].remote == obj("gone")
    assert plan.summary() == "1 unchanged, 1 only in bucket (to delete)"


def test_summary_counts_and_bytes_to_send() -> None:
    local = [lf("n1", size=5), lf("n2", size=7), lf("n3", size=1), lf("m", size=3), lf("u")]
    remote = {"m": obj("m", size=4), "u": obj("u"), "x1": obj("x1"), "x2": obj("x2")}
    plan = make_plan(local, remote, mirror=False, md5_of=Md5s(), crc32_of=Crcs())
    assert plan.summary() == "3 new, 1 modified, 1 unchanged, 2 only in bucket (kept)"
    assert plan.bytes_to_send == 5 + 7 + 1 + 3
    assert [i.key for i in plan.uploads] == ["n1", "n2", "n3", "m"]
    assert len(plan.skipped) == 3
    assert plan.counts() == {"new": 3, "modified": 1, "unchanged": 1, "deleted": 0, "kept": 2}


def test_empty_plan_summary() -> None:
    assert make_plan([], {}, mirror=True, md5_of=Md5s(), crc32_of=Crcs()).summary() == "no files"


def test_unreadable_file_during_compare_is_planned_for_upload() -> None:
    def unreadable(f: LocalFile) -> str:
        raise PermissionError(13, "Permission denied", f.path)

    plan = make_plan([lf("a", mtime=5)], {"a": obj("a", md5="e" * 32)}, mirror=True,
                     md5_of=unreadable, crc32_of=Crcs())  # fmt: skip
    assert [(i.key, i.action) for i in plan.items] == [("a", Action.UPLOAD)]
    assert plan.summary() == "1 modified"


def test_non_os_errors_from_md5_of_propagate() -> None:
    def broken(f: LocalFile) -> str:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        make_plan(
            [lf("a", mtime=5)],
            {"a": obj("a", md5="e" * 32)},
            mirror=False,
            md5_of=broken,
            crc32_of=Crcs(),
        )
