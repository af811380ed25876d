"""The benchmark: Hangar against s5cmd, `aws s3 sync` and rclone on one local SeaweedFS.

    python -m benchmarks [--quick] [--workloads W1,W2,W3] [--tools hangar,s5cmd,aws,rclone]
                         [--cases upload,nochange,onepct,download,mount] [--repeat 3]
                         [--out results.json] [--markdown table.md]

Every case runs each tool `--repeat` times and reports the median. A run whose first try takes
longer than `--max-case-seconds` is not repeated (marked "n=1"), so a slow peer on 100,000 files
cannot hold the whole run for an hour. See benchmarks/README.md for what each case measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import workloads as wl
from benchmarks.tools import (
    BIN,
    PEERS,
    TOOLS,
    Clients,
    Run,
    available,
    hangar_can_mount,
    measure,
    start_seaweedfs,
)

CASES = ("upload", "nochange", "onepct", "download", "mount")
_SENT = re.compile(r"sent (\d+) file")


@dataclass
class Result:
    """One (case, workload, tool) cell: its runs and summary."""

    case: str
    workload: str
    tool: str
    files: int
    nbytes: int
    runs: list[Run] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)  # Hangar: files it reported sending per run
    note: str = ""
    error: str = ""

    @property
    def ok_runs(self) -> list[Run]:
        return [r for r in self.runs if r.rc == 0]

    @property
    def median(self) -> float | None:
        ok = self.ok_runs
        return statistics.median(r.seconds for r in ok) if ok else None

    def as_json(self) -> dict[str, Any]:
        med = self.median
        ok = self.ok_runs
        return {
            "case": self.case,
            "workload": self.workload,
            "tool": self.tool,
            "files": self.files,
            "bytes": self.nbytes,
            "median_s": None if med is None else round(med, 4),
            "mb_s": None if not med else round(self.nbytes / 1e6 / med, 1),
            "files_s": None if not med else round(self.files / med, 1),
            "cpu_s": round(statistics.median(r.cpu for r in ok), 3) if ok else None,
            "peak_rss_mb": round(max(r.rss_mb for r in ok), 1) if ok else None,
            "runs": [r.as_json() for r in self.runs],
            "sent": self.sent,
            "note": self.note,
            "error": self.error,
        }


def round_order(tools: list[str], r: int) -> list[str]:
    """The order of round `r` (see Bench.rounds): rotated by r // 2, reversed when r is odd."""
    k = (r // 2) % len(tools)
    rotated = tools[k:] + tools[:k]
    return rotated[::-1] if r % 2 else rotated


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sizes = wl.sizes(quick=args.quick, tiny=args.tiny)
        self.workloads = [w for w in args.workloads.split(",") if w]
        self.tools = [t for t in args.tools.split(",") if t]
        self.cases = [c for c in args.cases.split(",") if c]
        self.results: list[Result] = []
        self.uid = uuid.uuid4().hex[:6]
        self.work = Path(tempfile.mkdtemp(prefix="hangar-bench-", dir=args.work_dir))
        (self.work / "logs").mkdir()
        self.data: dict[str, Path] = {}
        self.buckets: dict[tuple[str, str], str] = {}  # (workload, tool) -> last uploaded bucket
        self.homes: dict[str, Path] = {}  # workload -> HANGAR_HOME of Hangar's last upload
        self.log_n = 0
        self.clients: Clients

    # -- helpers -----------------------------------------------------------------------------
    def say(self, text: str) -> None:
        if not self.args.silent:
            print(text, file=sys.stderr, flush=True)

    def log(self) -> Path:
        self.log_n += 1
        return self.work / "logs" / f"{self.log_n:04d}.log"

    def bucket(self, *parts: str) -> str:
        return "-".join(("hb", *[p.lower() for p in parts], self.uid))

    def run(self, res: Result, argv: list[str], env: dict[str, str]) -> Run | None:
        run = measure(argv, env, self.log())
        res.runs.append(run)
        if run.rc != 0:
            res.error = f"exit {run.rc}: {run.output.strip().splitlines()[-1:]!s}"
            self.say(f"    FAILED {res.tool}: {run.output[-1500:]}")
            return None
        if res.tool.startswith("hangar"):
            found = _SENT.findall(run.output)
            if found:
                res.sent.append(sum(int(n) for n in found))
        self.say(
            f"    {res.tool:8s} {run.seconds:8.3f}s cpu {run.cpu:6.2f}s rss {run.rss_mb:5.0f}M"
        )
        return run

    def repeats(self, res: Result, first: Run | None) -> int:
        """How many runs this cell gets, given its first one."""
        if first is None:
            return 1
        if first.seconds > self.args.max_case_seconds and self.args.repeat > 1:
            res.note = f"n=1 (first run over {self.args.max_case_seconds:.0f}s)"
            return 1
        return int(self.args.repeat)

    def rounds(self, cells: dict[str, Result], one: Callable[[str, int], Run | None]) -> None:
        """Run every tool's cell `--repeat` times, round-robin, in an order that changes each
        round (A B C, C B A, B C A, A C B, ...: every other round reversed, every two rounds
        rotated by one), so that no tool always runs first after a case that changed the
        machine's state (page cache to refill, memory the host took back) nor always right
        after the same peer (a rotation alone keeps each tool's predecessor: A always after
        C). `one(tool, r)` makes run r; a failed run (None, or an error set on the cell) ends
        that tool's cell, and a first run slower than --max-case-seconds ends it after one."""
        n = dict.fromkeys(cells, 1)
        order = list(cells)
        if not order:
            return
        for r in range(self.args.repeat):
            for tool in round_order(order, r):
                res = cells[tool]
                if r >= n[tool]:
                    continue
                run = one(tool, r)
                if run is None or res.error:
                    n[tool] = 0
                elif r == 0:
                    n[tool] = self.repeats(res, run)

    # -- cases -------------------------------------------------------------------------------
    def case_upload(self, name: str) -> None:
        w = self.sizes[name]
        cells = {t: Result("upload", name, t, w.files, w.total_bytes) for t in self.uploaders()}
        self.results.extend(cells.values())

        self.rounds(cells, lambda tool, r: self._upload(name, tool, str(r), cells[tool]))
        for tool, res in cells.items():
            last = self.buckets.get((name, tool))
            if last and not res.error:
                count = self.clients.count_objects(last)
                if count != w.files:
                    res.error = f"bucket holds {count} objects, expected {w.files}"

    def _upload(self, name: str, tool: str, tag: str, res: Result) -> Run | None:
        """Upload workload `name` with `tool` to a fresh bucket (Hangar: with a fresh
        HANGAR_HOME), recorded in `res`; the bucket becomes the one later cases use."""
        bucket = self.bucket(name, tool, tag)
        if tool == "hangar":
            home = self.work / f"home-{name}-{tag}"
            argv = self.clients.hangar_upload(self.data[name], bucket)
            env = self.clients.hangar_env(home)
        else:
            self.clients.create_bucket(bucket)
            argv = self.clients.peer_upload(tool, self.data[name], bucket)
            env = self.clients.env(tool)
        run = self.run(res, argv, env)
        if run is not None:
            self.buckets[(name, tool)] = bucket
            if tool == "hangar":
                self.homes[name] = home
        return run

    def uploaders(self) -> list[str]:
        """The tools that upload: those of --upload-tools when given, else all, in order."""
        only = self.args.upload_tools.split(",") if self.args.upload_tools else self.tools
        return [t for t in self.tools if t in only]

    def seed(self, name: str) -> None:
        """Without the upload case, the cases that need buckets get them from one untimed
        upload per tool (those of --upload-tools, when given), reported nowhere."""
        w = self.sizes[name]
        for tool in self.uploaders():
            res = Result("seed", name, tool, w.files, w.total_bytes)
            if self._upload(name, tool, "seed", res) is None:
                self.say(f"    seed upload of {name} with {tool} failed: {res.error}")

    def _resync_argv(
        self, name: str, tool: str, res: Result | None = None
    ) -> tuple[list[str], dict[str, str]] | None:
        bucket = self.buckets.get((name, tool))
        if bucket is None and tool != "hangar":
            # A peer left out of the upload case (--upload-tools) re-syncs another peer's
            # bucket: its objects are newer than the local files and the same size, which is
            # "unchanged" to every peer's rule.
            donors = [t for t in self.tools if t != "hangar" and (name, t) in self.buckets]
            if donors:
                bucket = self.buckets[(name, donors[0])]
                if res is not None:
                    res.note = f"re-syncs the bucket {donors[0]} uploaded"
        if bucket is None:
            return None
        src = self.data[name]
        if tool == "hangar":
            env = self.clients.hangar_env(self.homes[name])
            return self.clients.hangar_upload(src, bucket), env
        return self.clients.peer_upload(tool, src, bucket), self.clients.env(tool)

    def case_nochange(self, name: str) -> None:
        w = self.sizes[name]
        cells: dict[str, Result] = {}
        cmds: dict[str, tuple[list[str], dict[str, str]]] = {}
        for tool in self.tools:
            res = Result("nochange", name, tool, w.files, w.total_bytes)
            self.results.append(res)
            cmd = self._resync_argv(name, tool, res)
            if cmd is None:
                res.error = "no uploaded bucket to re-sync (run the upload case first)"
                continue
            cells[tool], cmds[tool] = res, cmd
        self.rounds(cells, lambda tool, r: self.run(cells[tool], *cmds[tool]))

    def case_onepct(self, name: str) -> None:
        """Change 1% of the files, then let each tool re-sync; and, as the target's yardstick,
        upload only the changed files with Hangar to a fresh bucket."""
        w = self.sizes[name]
        src = self.data[name]
        cells: dict[str, Result] = {}
        changed_all: set[int] = set()
        n_changed = len(wl.picks(w, 0.01, 0))
        for tool in self.tools:
            cells[tool] = Result("onepct", name, tool, n_changed, n_changed * w.file_size)
            self.results.append(cells[tool])
        only = Result("upload-changed", name, "hangar", n_changed, n_changed * w.file_size)
        only.note = "Hangar uploading just the changed files to a fresh bucket"
        if "hangar" in self.tools:
            self.results.append(only)
        try:
            for r in range(self.args.repeat):
                picked = wl.picks(w, 0.01, r)
                changed_all.update(picked)
                time.sleep(0.01)
                wl.change(w, src, picked, generation=r + 1)
                for tool in self.tools:
                    cmd = self._resync_argv(name, tool, cells[tool])
                    if cmd is None:
                        cells[tool].error = "no uploaded bucket to re-sync"
                        continue
                    self.run(cells[tool], *cmd)
                if "hangar" in self.tools:
                    subset = self.work / f"changed-{name}-{r}"
                    for i in picked:
                        target = subset / w.rel(i)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        os.link(src / w.rel(i), target)
                    home = self.work / f"home-changed-{name}-{r}"
                    bucket = self.bucket(name, "changed", str(r))
                    argv = self.clients.hangar_upload(subset, bucket)
                    self.run(only, argv, self.clients.hangar_env(home))
                    shutil.rmtree(subset, ignore_errors=True)
        finally:
            wl.restore(w, src, sorted(changed_all))

    def case_download(self, name: str) -> None:
        w = self.sizes[name]
        cells: dict[str, Result] = {}
        for tool in self.tools:
            res = Result("download", name, tool, w.files, w.total_bytes)
            self.results.append(res)
            if (name, tool) not in self.buckets:
                res.error = "no uploaded bucket to download"
                continue
            cells[tool] = res

        def one(tool: str, r: int) -> Run | None:
            bucket = self.buckets[(name, tool)]
            dest = self.work / f"dl-{name}-{tool}-{r}"
            if tool == "hangar":
                env = self.clients.hangar_env(self.homes[name])
                argv = self.clients.hangar_download(bucket, dest)
            else:
                env = self.clients.env(tool)
                argv = self.clients.peer_download(tool, bucket, dest)
                dest.mkdir()
            run = self.run(cells[tool], argv, env)
            got = wl.file_count(dest) if dest.exists() else 0
            shutil.rmtree(dest, ignore_errors=True)
            if run is not None and got != w.files:
                cells[tool].error = f"downloaded {got} files, expected {w.files}"
            return run

        self.rounds(cells, one)

    def case_mount(self, name: str) -> None:
        w = self.sizes[name]
        parallel = 1 if w.files == 1 else 16
        res = Result("mount", name, "hangar", w.files, w.total_bytes)
        res.note = f"{parallel} reader(s) through `hangar storage mount` (CPU/RSS: the reader)"
        self.results.append(res)
        if "hangar" not in self.tools or name not in self.homes:
            res.error = "n/a: needs Hangar's upload of this workload"
            return
        env = self.clients.hangar_env(self.homes[name])
        why = hangar_can_mount(env)
        if why:
            res.error = f"n/a: {why}"
            return
        bucket = self.buckets[(name, "hangar")]
        hangar = str(BIN / "hangar")
        reader = [sys.executable, "-m", "benchmarks.reader"]
        env_reader = {**env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        for r in range(self.args.repeat):
            point = self.work / f"mnt-{name}-{r}"
            mounted = measure(
                [hangar, "storage", "mount", bucket, str(point), "--read-only"], env, self.log()
            )
            if mounted.rc != 0:
                res.error = f"n/a: mount failed: {mounted.output.strip()[-300:]}"
                return
            try:
                self.run(res, [*reader, str(point), str(parallel)], env_reader)
            finally:
                measure([hangar, "storage", "unmount", str(point)], env, self.log())

    # -- driver ------------------------------------------------------------------------------
    def main(self) -> dict[str, Any]:
        for tool in list(self.tools):
            why = available(tool)
            if why:
                self.say(f"skipping {tool}: {why}")
                self.tools.remove(tool)
        data_base = Path(self.args.data_dir)
        for name in self.workloads:
            w = self.sizes[name]
            t0 = time.perf_counter()
            self.data[name] = wl.ensure(w, data_base)
            self.say(f"{name}: {w.files} x {w.file_size} B ready ({time.perf_counter() - t0:.1f}s)")
        compile_hangar()
        server = start_seaweedfs(self.work / "server")
        started = time.time()
        try:
            self.clients = Clients(server, self.work)
            plan = [
                ("upload", self.workloads),
                ("nochange", [w for w in self.workloads if w != "W1"]),
                ("onepct", [w for w in self.workloads if w == "W3"]),
                ("download", self.workloads),
                ("mount", [w for w in self.workloads if w in ("W1", "W2")]),
            ]
            if "upload" not in self.cases and self.cases:
                for name in self.workloads:
                    self.say(f"== seed {name} (untimed upload: the upload case was not asked for)")
                    self.seed(name)
            for case, names in plan:
                if case not in self.cases:
                    continue
                for name in names:
                    self.say(f"== {case} {name}")
                    getattr(self, f"case_{case}")(name)
        finally:
            server.stop()
            if not self.args.keep:
                shutil.rmtree(self.work, ignore_errors=True)
        return {
            "meta": {
                "when": time.strftime("%Y-%m-%d %H:%M:%S"),
                "host": platform.node(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "quick": self.args.quick,
                "tiny": self.args.tiny,
                "repeat": self.args.repeat,
                "seconds": round(time.time() - started, 1),
                "sizes": {n: [w.files, w.file_size] for n, w in self.sizes.items()},
            },
            "results": with_ratios([r.as_json() for r in self.results]),
        }


def compile_hangar() -> None:
    """Write Hangar's bytecode before measuring, as `pip install` does for an installed copy.
    In a checkout whose environment sets PYTHONDONTWRITEBYTECODE (these VMs do), every
    `hangar` call would otherwise compile its ~11,000 lines anew (~0.06 s per call), a cost
    no installed Hangar pays. The peers' Python code (aws-cli) is pip-installed, compiled."""
    import compileall

    import hangar

    compileall.compile_dir(str(Path(hangar.__file__).parent), quiet=2)


def with_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add `ratio` (Hangar median / best peer median) to Hangar's rows, and for the 1% re-sync
    `vs_changed_only` (re-sync / uploading just the changed files)."""
    for row in rows:
        row["ratio"] = None
        if row["tool"] != "hangar" or row["median_s"] is None:
            continue
        peers = [
            p["median_s"]
            for p in rows
            if p["case"] == row["case"]
            and p["workload"] == row["workload"]
            and p["tool"] in PEERS
            and p["median_s"]
        ]
        if peers:
            row["ratio"] = round(row["median_s"] / min(peers), 3)
        if row["case"] == "onepct":
            only = [
                p["median_s"]
                for p in rows
                if p["case"] == "upload-changed" and p["workload"] == row["workload"]
            ]
            if only and only[0]:
                row["vs_changed_only"] = round(row["median_s"] / only[0], 3)
    return rows


def table(report: dict[str, Any], markdown: bool = False) -> str:
    head = ["case", "wl", "tool", "median s", "MB/s", "files/s", "CPU s", "RSS MB", "ratio", "note"]
    lines: list[list[str]] = []
    for r in report["results"]:

        def f(v: Any, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)

        notes = [r["error"] or r["note"]]
        if r.get("vs_changed_only") is not None:
            notes.append(f"{r['vs_changed_only']:.2f}x changed-only upload")
        if r["sent"] and r["case"] in ("nochange", "onepct"):
            notes.append(f"sent {r['sent']}")
        note = "; ".join(n for n in notes if n)
        lines.append(
            [
                r["case"], r["workload"], r["tool"], f(r["median_s"], ".3f"), f(r["mb_s"], ".1f"),
                f(r["files_s"], ".0f"), f(r["cpu_s"], ".2f"), f(r["peak_rss_mb"], ".0f"),
                f(r["ratio"], ".2f"), note,
            ]
        )  # fmt: skip
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(row[i]) for row in lines)) if lines else len(h) for i, h in
              enumerate(head)]  # fmt: skip
    fmt_row = "  ".join(f"{{:{'<' if i < 3 or i == 9 else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt_row.format(*row) for row in [head, *lines])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small workloads (minutes)")
    p.add_argument("--tiny", action="store_true", help="tiny workloads (the smoke test)")
    p.add_argument("--workloads", default="W1,W2,W3")
    p.add_argument("--tools", default=",".join(TOOLS))
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument(
        "--upload-tools",
        default="",
        help="only these tools run the upload case (default: all); the other peers re-sync the "
        "first uploaded peer's bucket (100,000 files through aws s3 sync take many minutes)",
    )
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--max-case-seconds", type=float, default=150.0)
    p.add_argument("--out", default="", help="write the JSON report here")
    p.add_argument("--markdown", default="", help="write the table as Markdown here")
    p.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "hangar-bench-data"))
    p.add_argument("--work-dir", default=None, help="parent of the per-run directory")
    p.add_argument("--keep", action="store_true", help="keep the per-run directory")
    p.add_argument("--silent", action="store_true", help="no progress lines on stderr")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = Bench(args).main()
    print(table(report))
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / "latest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(table(report, markdown=True) + "\n")
    print(f"JSON: {out}", file=sys.stderr)
    return 0 if not any(r["error"] and not r["error"].startswith("n/a") for r in
                        report["results"]) else 1  # fmt: skip
