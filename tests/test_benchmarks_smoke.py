"""The benchmark harness runs end to end on tiny data, so it cannot rot. No time is asserted:
the work is counted instead (what Hangar reports sending, what landed where)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.s3


def _bench(tmp_path: Path, *args: str) -> tuple[dict[str, Any], dict[tuple[str, ...], Any], str]:
    """Run the harness on tiny data with `args`: (the JSON report, its rows by (case,
    workload, tool), what it printed)."""
    out = tmp_path / "results.json"
    argv = [
        sys.executable, "-m", "benchmarks", "--tiny", "--silent", *args,
        "--data-dir", str(tmp_path / "data"), "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    rows = {(r["case"], r["workload"], r["tool"]): r for r in report["results"]}
    return report, rows, proc.stdout


def test_harness_counts_work_on_tiny_data(tmp_path: Path) -> None:
    report, rows, printed = _bench(
        tmp_path, "--repeat", "1", "--workloads", "W3", "--tools", "hangar,s5cmd",
        "--cases", "upload,nochange,onepct,download",
    )  # fmt: skip
    files = report["meta"]["sizes"]["W3"][0]

    for key, row in rows.items():
        assert not row["error"], (key, row["error"])
        assert len(row["runs"]) == 1 and row["runs"][0]["rc"] == 0, key
        assert row["median_s"] > 0 and row["cpu_s"] is not None and row["peak_rss_mb"] > 0

    assert rows[("upload", "W3", "hangar")]["sent"] == [files]
    assert rows[("nochange", "W3", "hangar")]["sent"] == [0]  # no-change re-sync sends nothing
    changed = rows[("onepct", "W3", "hangar")]
    assert changed["files"] == max(1, files // 100)
    assert changed["sent"] == [changed["files"]]  # exactly the 1% that changed
    assert rows[("upload-changed", "W3", "hangar")]["sent"] == [changed["files"]]
    assert rows[("upload", "W3", "hangar")]["ratio"] is not None  # compared with s5cmd
    assert "median s" in printed  # the table was printed

    # The changed files were put back: the data directory is the generated workload again.
    from benchmarks import workloads

    w = workloads.sizes(tiny=True)["W3"]
    root = workloads.ensure(w, tmp_path / "data")
    probe = tmp_path / "probe"
    probe.mkdir()
    for i in workloads.picks(w, 0.01, 0):
        (probe / w.rel(i)).parent.mkdir(parents=True, exist_ok=True)
        assert w.write_file(probe, i).read_bytes() == (root / w.rel(i)).read_bytes()


def test_files_a_run_changed_and_did_not_restore_are_restored_before_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 1% re-sync rewrites files and puts them back afterwards; if that never happens (the
    run was killed, or someone called `change` by hand), the next `ensure` restores them, so
    a later run's "changed" files really get new bytes."""
    monkeypatch.syspath_prepend(str(REPO))
    from benchmarks import workloads as wl

    w = wl.sizes(tiny=True)["W3"]
    root = wl.ensure(w, tmp_path)
    original = {i: (root / w.rel(i)).read_bytes() for i in range(w.files)}
    picked = wl.picks(w, 0.05, 0)
    wl.change(w, root, picked, generation=1)
    assert all((root / w.rel(i)).read_bytes() != original[i] for i in picked)
    assert wl.ensure(w, tmp_path) == root  # not regenerated: only the changed files rewritten
    assert {i: (root / w.rel(i)).read_bytes() for i in range(w.files)} == original
    wl.change(w, root, picked, generation=2)
    wl.restore(w, root, picked)
    assert not (root.parent / ".bench-changed.json").exists()


def test_cases_without_the_upload_case_get_their_buckets_from_an_untimed_upload(
    tmp_path: Path,
) -> None:
    """`--cases download` alone (or with nochange) uploads each tool's bucket first, reported
    nowhere, instead of failing for want of a bucket."""
    _, rows, _ = _bench(
        tmp_path, "--repeat", "2", "--workloads", "W2", "--tools", "hangar,s5cmd",
        "--cases", "nochange,download",
    )  # fmt: skip
    assert set(rows) == {
        (case, "W2", tool) for case in ("nochange", "download") for tool in ("hangar", "s5cmd")
    }
    for key, row in rows.items():
        assert not row["error"], (key, row["error"])
        assert [run["rc"] for run in row["runs"]] == [0, 0], key
    assert rows[("nochange", "W2", "hangar")]["sent"] == [0, 0]


def test_rounds_vary_both_who_goes_first_and_who_goes_after_whom(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(REPO))
    from benchmarks.run import round_order

    tools = ["hangar", "s5cmd", "aws"]
    rounds = [round_order(tools, r) for r in range(6)]
    assert rounds[0] == tools
    assert all(sorted(o) == sorted(tools) for o in rounds)
    assert {o[0] for o in rounds[:3]} == set(tools)  # each tool first once in 3 rounds
    before_hangar = {o[o.index("hangar") - 1] for o in rounds if o[0] != "hangar"}
    assert before_hangar == {"s5cmd", "aws"}  # not always the same predecessor
