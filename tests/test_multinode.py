"""Multi-node tasks (`num_nodes: 2`) on a real two-node Ray cluster on this machine.

The cluster (tests/ray_cluster.py: head on 127.0.0.2, second node on 127.0.0.3, one CPU each)
is started once for the module and stopped by PID. Every test runs the real `hangar launch` as
a subprocess, as a user would, and checks what a user would see: output, exit codes, objects
in the buckets, and nothing left behind (mounts, symlinks, processes).

Both nodes share this machine, so they share one attachment per mount path
(hangar.node.hostmount); the tests pass the test's HANGAR_HOME to the nodes with
``--env HANGAR_HOME=...`` so the local store's buckets are the launcher's.
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import unique_bucket
from helpers import REPO, hangar, make_tree, storage_ls, write_yaml
from mount_helpers import wait_for
from ray_cluster import RayCluster, start_cluster

pytest.importorskip("ray", reason="multi-node tests need Ray: pip install 'hangar[ray]'")

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]

HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    c = start_cluster(2)
    try:
        yield c
    finally:
        c.stop()
    assert not c.pids(), "the test cluster left processes behind"


def _launch_args(task: Path, cluster: RayCluster, home: Path) -> list[str]:
    return ["launch", str(task), "--cluster", cluster.address, "--env", f"HANGAR_HOME={home}"]


def _no_ray_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def _proc_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:
        return False


def runner_pids(home: Path) -> list[int]:
    """Live node runners working for this test's HANGAR_HOME (a runner's stderr is its
    node.log, under that HANGAR_HOME; its environment at start names no test)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if b"hangar.executors._ray_node" not in Path(f"/proc/{entry}/cmdline").read_bytes():
                continue
            stderr = os.readlink(f"/proc/{entry}/fd/2")
        except OSError:
            continue
        if stderr.startswith(str(home)) and _proc_alive(int(entry)):
            found.append(int(entry))
    return found


def assert_nothing_left(home: Path, *paths: Path) -> None:
    """No attachment left at `paths`, no shared-attachment record, no node runner."""
    wait_for(lambda: not runner_pids(home), 30, "the node runners to exit")
    for path in paths:
        assert not os.path.lexists(path), f"{path} was left behind"
    with open("/proc/self/mountinfo") as fh:
        assert not [line for line in fh if str(home) in line or any(str(p) in line for p in paths)]
    records = list((home / "run" / "hostmounts").glob("*/*.json"))
    assert records == [], records


def _by_rank(stdout: str) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for line in stdout.splitlines():
        assert line.startswith("(rank "), f"unprefixed output line: {line!r}"
        rank, _, text = line[len("(rank ") :].partition(") ")
        out.setdefault(int(rank), []).append(text)
    return out


def _fields(lines: list[str]) -> dict[str, str]:
    """`key=value` words from a node's output lines."""
    return dict(word.split("=", 1) for line in lines for word in line.split() if "=" in word)


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rpartition(")")[2].split()[1])


def test_two_nodes_mount_copy_scratch_ranks_and_ips(
    cluster: RayCluster, tmp_path: Path, hangar_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_ray_address(monkeypatch)
    src = make_tree(tmp_path / "src", {"hello.txt": "hello from the bucket", "sub/x.txt": "xx"})
    data, out = unique_bucket("mn-data"), unique_bucket("mn-out")
    task = write_yaml(
        tmp_path / "t.yaml",
        f"""
name: mn-main
num_nodes: 2
file_mounts:
  {tmp_path}/data:
    name: {data}
    source: {src}
  {tmp_path}/copy:
    name: {data}
    mode: COPY
  {tmp_path}/out:
    name: {out}
setup: echo "setup on rank $HANGAR_NODE_RANK"
run: |
  echo "rank=$HANGAR_NODE_RANK n=$HANGAR_NUM_NODES task=$HANGAR_TASK_ID raylet=$RAY_RAYLET_PID"
  echo "sky_rank=$SKYPILOT_NODE_RANK sky_n=$SKYPILOT_NUM_NODES sky_task=$SKYPILOT_TASK_ID"
  echo "ips=$(printf %s "$HANGAR_NODE_IPS" | tr '\\n' ,)" \\
       "sky_ips=$(printf %s "$SKYPILOT_NODE_IPS" | tr '\\n' ,)"
  echo "mount=$(cat {tmp_path}/data/hello.txt | tr ' ' _) copy=$(cat {tmp_path}/copy/sub/x.txt)"
  echo "written by rank $HANGAR_NODE_RANK" > {tmp_path}/out/rank-$HANGAR_NODE_RANK.txt
""",
    )
    result = hangar(*_launch_args(task, cluster, hangar_home), timeout=180)
    assert result.returncode == 0, result.stderr
    ranks = _by_rank(result.stdout)
    assert sorted(ranks) == [0, 1]
    task_ids = set()
    for rank, lines in ranks.items():
        assert lines[0] == f"setup on rank {rank}"
        f = _fields(lines)
        assert f["rank"] == f["sky_rank"] == str(rank)
        assert f["n"] == f["sky_n"] == "2"
        assert f["ips"] == f["sky_ips"] == f"{HEAD_IP},{WORKER_IP}"
        assert f["mount"] == "hello_from_the_bucket" and f["copy"] == "xx"
        assert f["task"] == f["sky_task"]
        task_ids.add(f["task"])
        # Rank 0 ran on the head node (127.0.0.2), rank 1 on the other: each node's raylet is
        # a child of that node's `ray start`.
        assert _parent(int(f["raylet"])) == cluster.nodes[rank].proc.pid
    (task_id,) = task_ids
    # What the task wrote through the MOUNT on both nodes is in the bucket.
    bucket = hangar_home / "buckets" / out
    assert sorted(p.name for p in bucket.iterdir()) == ["rank-0.txt", "rank-1.txt"]
    assert (bucket / "rank-1.txt").read_text() == "written by rank 1\n"
    # Logs, per node (kept by the node) and as streamed (kept by the launcher).
    logs = hangar_home / "logs" / task_id
    for rank in (0, 1):
        assert f"rank={rank} " in (logs / f"rank-{rank}" / "run.log").read_text()
        assert (logs / f"rank-{rank}" / "setup.log").read_text() == f"setup on rank {rank}\n"
        assert f"rank={rank} " in (logs / f"rank-{rank}.log").read_text()
    assert "rank 0 = 127.0.0.2, rank 1 = 127.0.0.3" in result.stderr
    assert_nothing_left(hangar_home, tmp_path / "data", tmp_path / "copy", tmp_path / "out")
    assert {r["name"] for r in storage_ls()} == {data, out}


class OpenCounter:
    """Counts opens of the files in one directory, as the kernel reports them (inotify): every
    COPY download of an object from the local store opens its file in the bucket once."""

    IN_OPEN = 0x20
    IN_ISDIR = 0x40000000

    def __init__(self, directory: Path) -> None:
        self._libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        wd = self._libc.inotify_add_watch(self.fd, str(directory).encode(), self.IN_OPEN)
        assert wd >= 0, os.strerror(ctypes.get_errno())
        self.opens: Counter[str] = Counter()

    def read(self) -> Counter[str]:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return self.opens
            offset = 0
            while offset < len(data):
                _, mask, _, length = struct.unpack_from("iIII", data, offset)
                name = data[offset + 16 : offset + 16 + length].rstrip(b"\0").decode()
                offset += 16 + length
                if name and not mask & self.IN_ISDIR:
                    self.opens[name] += 1

    def close(self) -> None:
        os.close(self.fd)


def test_copy_downloads_once_per_host(
    cluster: RayCluster, tmp_path: Path, hangar_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_ray_address(monkeypatch)
    files = {f"part-{i}.bin": os.urandom(20_000 * (i + 1)) for i in range(4)}
    src = make_tree(tmp_path / "src", files)
    name = unique_bucket("mn-copy")
    up = hangar("storage", "upload", str(src), "--name", name)
    assert up.returncode == 0, up.stderr
    counter = OpenCounter(hangar_home / "buckets" / name)
    try:
        task = write_yaml(
            tmp_path / "t.yaml",
            f"""
num_nodes: 2
file_mounts:
  {tmp_path}/c:
    name: {name}
    source: {src}
    mode: COPY
run: cd {tmp_path}/c && echo "sum=$(cat part-*.bin | md5sum | cut -c1-32)"
""",
        )
        result = hangar(*_launch_args(task, cluster, hangar_home), timeout=180)
        assert result.returncode == 0, result.stderr
        opens = counter.read()
    finally:
        counter.close()
    import hashlib

    expected = hashlib.md5(b"".join(files[k] for k in sorted(files))).hexdigest()
    ranks = _by_rank(result.stdout)
    assert {r: _fields(lines)["sum"] for r, lines in ranks.items()} == {0: expected, 1: expected}
    # Two nodes on one host, one download: every object was read from the store once.
    assert opens == Counter(dict.fromkeys(files, 1)), opens
    read_bytes = sum(len(files[k]) * n for k, n in opens.items())
    assert read_bytes == sum(len(v) for v in files.values())
    assert result.stderr.count(f"download local://{name}") == 1
    assert_nothing_left(hangar_home, tmp_path / "c")


def _collect(stream: Any, sink: queue.Queue[str]) -> None:
    for line in stream:
        sink.put(line)
    sink.put("")


def _start(args: list[str], stderr: Path) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    with open(stderr, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hangar.cli", *args],
            cwd=str(REPO),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_collect, args=(proc.stdout, lines), daemon=True).start()
    return proc, lines


def _read_until(
    lines: queue.Queue[str], pred: Callable[[list[str]], bool], seen: list[str], stderr: Path
) -> None:
    deadline = time.monotonic() + 150
    while not pred(seen):
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(
                f"timed out; stdout: {seen}\nstderr: {stderr.read_text()}"
            ) from None
        assert line, f"output ended early: {seen}\nstderr: {stderr.read_text()}"
        seen.append(line.rstrip("\n"))


@pytest.mark.parametrize("failing", [0, 1])
def test_failing_rank_gives_its_code_and_stops_the_other(
    cluster: RayCluster,
    tmp_path: Path,
    hangar_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    failing: int,
) -> None:
    """Either rank failing (so, whichever node made the shared attachment) gives its code and
    stops the other, whose command is still running."""
    _no_ray_address(monkeypatch)
    flags = unique_bucket("mn-flags")
    other = 1 - failing
    task = write_yaml(
        tmp_path / "t.yaml",
        f"""
num_nodes: 2
file_mounts:
  {tmp_path}/flags:
    name: {flags}
    persistent: false
run: |
  if [ "$HANGAR_NODE_RANK" = {failing} ]; then
    until [ -e {tmp_path}/flags/running ]; do sleep 0.05; done
    echo "rank {failing} fails"; exit 7
  fi
  echo $$ > {tmp_path}/other.pid
  touch {tmp_path}/flags/running
  echo "rank {other} waits"
  exec sleep 600
""",
    )
    started = time.monotonic()
    result = hangar(*_launch_args(task, cluster, hangar_home), timeout=180)
    assert result.returncode == 7, result.stderr
    assert time.monotonic() - started < 120  # the other rank's `sleep 600` was stopped
    ranks = _by_rank(result.stdout)
    assert ranks[failing] == [f"rank {failing} fails"]
    assert ranks[other] == [f"rank {other} waits"]
    ip = [HEAD_IP, WORKER_IP][failing]
    expected = f"rank {failing} ({ip}) failed (exit code 7); stopping the other 1 node(s)"
    assert expected in result.stderr
    sleeper = int((tmp_path / "other.pid").read_text())
    wait_for(lambda: not _proc_alive(sleeper), 30, "the other rank's command to be stopped")
    assert_nothing_left(hangar_home, tmp_path / "flags")
    assert not (hangar_home / "buckets" / flags).exists()  # non-persistent: deleted once
    assert storage_ls() == []


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["sigint", "sigterm", "sigkill"]
)
def test_interrupted_launch_stops_every_node_and_undoes_every_mount(
    cluster: RayCluster,
    tmp_path: Path,
    hangar_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    sig: signal.Signals,
) -> None:
    """Ctrl-C: every node stops and undoes its attachments before `hangar launch` exits (130).
    SIGKILL: Ray ends the dead launcher's actors, and the node runners clean up by themselves."""
    _no_ray_address(monkeypatch)
    src = make_tree(tmp_path / "src", {"a.txt": "a"})
    name = unique_bucket("mn-int")
    task = write_yaml(
        tmp_path / "t.yaml",
        f"""
num_nodes: 2
file_mounts:
  {tmp_path}/m/data:
    name: {name}
    source: {src}
  {tmp_path}/m/copy:
    name: {name}
    mode: COPY
run: |
  echo "started pid=$$"
  exec sleep 600
""",
    )
    errors = tmp_path / "stderr.txt"
    proc, lines = _start(_launch_args(task, cluster, hangar_home), errors)
    seen: list[str] = []
    try:
        _read_until(lines, lambda s: sum("started" in x for x in s) == 2, seen, errors)
        sleepers = [int(_fields([x])["pid"]) for x in seen if "started" in x]
        assert all(_proc_alive(p) for p in sleepers)
        assert (tmp_path / "m" / "data").is_symlink() and (tmp_path / "m" / "copy").is_dir()
        proc.send_signal(sig)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = errors.read_text()
    if sig != signal.SIGKILL:
        assert code == 130, stderr
        assert "interrupted: stopping every node" in stderr
        assert not any(_proc_alive(pid) for pid in sleepers)  # stopped before launch returned
    else:
        assert code == -signal.SIGKILL
        wait_for(lambda: not any(_proc_alive(p) for p in sleepers), 60, "the commands to stop")
    assert_nothing_left(hangar_home, tmp_path / "m")


def test_interrupts_while_output_floods_in_end_promptly(
    cluster: RayCluster, tmp_path: Path, hangar_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C that lands while the launcher is busy relaying output (submitting polls,
    handling events) must not lose a node's events: the launch ends with 130 long before
    HANGAR_RAY_STOP_TIMEOUT, with every runner gone. Three tries, at different moments."""
    _no_ray_address(monkeypatch)
    task = write_yaml(
        tmp_path / "t.yaml",
        """
num_nodes: 2
run: |
  echo "started pid=$$"
  i=0; while :; do i=$((i+1)); echo "line $i"; done
""",
    )
    args = _launch_args(task, cluster, hangar_home)
    for attempt in range(3):
        errors = tmp_path / f"stderr-{attempt}.txt"
        proc, lines = _start(args, errors)
        seen: list[str] = []
        try:
            enough = 300 + 500 * attempt
            _read_until(lines, lambda s, n=enough: len(s) >= n, seen, errors)
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=60)  # HANGAR_RAY_STOP_TIMEOUT is 120 s
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert code == 130, errors.read_text()
        assert "did not stop within" not in errors.read_text()
        assert runner_pids(hangar_home) == []  # every node stopped before launch returned


def test_no_cluster_is_a_usage_error_naming_both_ways(
    tmp_path: Path, hangar_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_ray_address(monkeypatch)
    src = make_tree(tmp_path / "src", {"a.txt": "a"})
    task = write_yaml(
        tmp_path / "t.yaml",
        f"num_nodes: 3\nfile_mounts:\n  {tmp_path}/d:\n    name: nc-data\n    source: {src}\n"
        "run: echo hi\n",
    )
    result = hangar("launch", str(task))
    assert result.returncode == 2
    assert "--cluster" in result.stderr and "RAY_ADDRESS" in result.stderr
    assert not (hangar_home / "buckets" / "nc-data").exists()  # nothing was uploaded
    unreachable = hangar("launch", str(task), env={"RAY_ADDRESS": "127.0.0.1:9"})
    assert unreachable.returncode == 1
    assert "cannot reach the Ray cluster at 127.0.0.1:9" in unreachable.stderr
    assert not (hangar_home / "buckets" / "nc-data").exists()


def test_missing_ray_names_the_extra(tmp_path: Path, hangar_home: Path) -> None:
    task = write_yaml(tmp_path / "t.yaml", "num_nodes: 2\nrun: echo hi\n")
    code = (
        "import sys\n"
        "sys.modules['ray'] = None  # as if Ray were not installed\n"
        "from hangar.cli import main\n"
        "sys.argv = ['hangar', 'launch', sys.argv[1], '--cluster', '127.0.0.1:9']\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(task)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "pip install 'hangar[ray]'" in result.stderr


def test_cluster_too_small_is_a_clear_error(
    cluster: RayCluster, tmp_path: Path, hangar_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_ray_address(monkeypatch)
    src = make_tree(tmp_path / "src", {"a.txt": "a"})
    name = unique_bucket("mn-small")
    task = write_yaml(
        tmp_path / "t.yaml",
        f"""
num_nodes: 3
file_mounts:
  {tmp_path}/d:
    name: {name}
    source: {src}
    persistent: false
run: echo never
""",
    )
    result = hangar(*_launch_args(task, cluster, hangar_home), env={"HANGAR_RAY_PG_TIMEOUT": "2"})
    assert result.returncode == 1
    assert "could not reserve 3 nodes with 1 CPU each within 2s" in result.stderr
    assert "it has 2 alive node(s)" in result.stderr
    assert result.stdout == ""
    assert not (hangar_home / "buckets" / name).exists()
    assert storage_ls() == []


# Counts the processes whose command line holds the S3 secret (run by the task on each node,
# while the mounts, the node runners and Ray's workers are all alive).
_LEAKS = """
import os
secret = os.environ["AWS_SECRET_ACCESS_KEY"].encode()
count = 0
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            count += secret in fh.read()
    except OSError:
        pass
print(count)
"""


@pytest.mark.s3
@pytest.mark.fuse
def test_s3_fuse_mount_and_copy_on_two_nodes(
    cluster: RayCluster,
    s3_backend: Any,
    tmp_path: Path,
    hangar_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """S3 through a counting proxy: MOUNT and MOUNT_CACHED (one FUSE mount per path per host,
    shared by both nodes), writes from both nodes in the bucket, the COPY downloaded once for
    the host, and no credential on any command line."""
    from mount_helpers import FUSE_OK, rclone_pids
    from servers.faultproxy import FaultProxy

    if not FUSE_OK:
        pytest.fail("needs /dev/fuse and fusermount3 (fuse3)")
    _no_ray_address(monkeypatch)
    files = {f"f{i}.bin": os.urandom(10_000 + i) for i in range(3)}
    src = make_tree(tmp_path / "src", files)
    shared = make_tree(tmp_path / "shared", {"hello.txt": "hello over fuse"})
    data, out = unique_bucket("mn-s3d"), unique_bucket("mn-s3o")
    mounted = unique_bucket("mn-s3m")
    leaks = write_yaml(tmp_path / "leaks.py", _LEAKS)
    task = write_yaml(
        tmp_path / "t.yaml",
        f"""
num_nodes: 2
file_mounts:
  {tmp_path}/copy:
    name: {data}
    source: {src}
    store: s3
    mode: COPY
  {tmp_path}/out:
    name: {out}
    store: s3
  {tmp_path}/mnt:
    name: {mounted}
    source: {shared}
    store: s3
    mode: MOUNT
  {tmp_path}/cached:
    name: {mounted}
    mode: MOUNT_CACHED
run: |
  echo "sum=$(cat {tmp_path}/copy/f*.bin | md5sum | cut -c1-32)"
  echo "mount=$(tr ' ' _ < {tmp_path}/mnt/hello.txt)" \
       "cached=$(tr ' ' _ < {tmp_path}/cached/hello.txt)"
  echo "rank $HANGAR_NODE_RANK" > {tmp_path}/out/rank-$HANGAR_NODE_RANK.txt
  echo "leaks=$({sys.executable} {leaks})"
  grep -q " {tmp_path}/out .* - fuse" /proc/self/mountinfo && echo "fuse=yes"
""",
    )
    with FaultProxy(s3_backend.endpoint) as proxy:
        env = {"AWS_ENDPOINT_URL_S3": proxy.url}
        result = hangar(*_launch_args(task, cluster, hangar_home), env=env, timeout=180)
        assert result.returncode == 0, result.stderr
        gets = {k: proxy.count("GET", f"/{data}/{k}") for k in files}
    import hashlib

    expected = hashlib.md5(b"".join(files[k] for k in sorted(files))).hexdigest()
    ranks = _by_rank(result.stdout)
    for rank in (0, 1):
        f = _fields(ranks[rank])
        assert f["sum"] == expected and f["leaks"] == "0" and f["fuse"] == "yes"
        assert f["mount"] == f["cached"] == "hello_over_fuse"
    assert gets == dict.fromkeys(files, 1), gets  # downloaded once for the host
    assert s3_backend.objects(out) == {"rank-0.txt": b"rank 0\n", "rank-1.txt": b"rank 1\n"}
    # One FUSE mount per path for both nodes.
    assert result.stderr.count(f"mounted s3://{out} ") == 1
    assert result.stderr.count(f"mounted s3://{mounted} ") == 2  # at mnt/ and at cached/
    paths = [tmp_path / p for p in ("copy", "out", "mnt", "cached")]
    assert_nothing_left(hangar_home, *paths)
    assert rclone_pids(hangar_home) == []


def test_example_runs(
    cluster: RayCluster, hangar_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_ray_address(monkeypatch)
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)  # the other way to name the cluster
    result = hangar("launch", "examples/multinode.yaml", "--env", f"HANGAR_HOME={hangar_home}")
    assert result.returncode == 0, result.stderr
    ranks = _by_rank(result.stdout)
    for rank in (0, 1):
        assert f"node {rank}: 3 shards mounted" in ranks[rank]
        assert f"I am rank {rank} of 2; the head node is {HEAD_IP}" in ranks[rank]
        assert f"rank-{rank}.txt" in ranks[rank]
    assert "deleted non-persistent storage hangar-multinode-outputs" in result.stderr
    assert_nothing_left(hangar_home, Path("/tmp/hangar-multinode/data"))
    assert not Path("/tmp/hangar-multinode").exists()


def test_python_api_takes_the_cluster(
    cluster: RayCluster, tmp_path: Path, hangar_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`hangar.launch(task, cluster=...)` is the API's `--cluster` (run in a fresh process:
    a Ray driver is process-wide)."""
    _no_ray_address(monkeypatch)
    task = write_yaml(
        tmp_path / "t.yaml",
        f"""
num_nodes: 2
envs:
  HANGAR_HOME: {hangar_home}
run: echo "api rank $HANGAR_NODE_RANK of $HANGAR_NUM_NODES"
""",
    )
    script = (
        "import sys, hangar\n"
        f"task = hangar.Task.from_yaml({str(task)!r})\n"
        f"sys.exit(hangar.launch(task, cluster={cluster.address!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=str(REPO)
    )
    assert result.returncode == 0, result.stderr
    ranks = _by_rank(result.stdout)
    assert ranks[0] == ["api rank 0 of 2"] and ranks[1] == ["api rank 1 of 2"], result.stdout
    assert_nothing_left(hangar_home)


def test_a_node_that_cannot_attach_fails_the_launch_with_the_reason(
    cluster: RayCluster, tmp_path: Path, hangar_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mount path is a non-empty directory on the nodes' host: Hangar never hides files,
    so no node runs anything and the launch fails with the node's message (exit 2)."""
    _no_ray_address(monkeypatch)
    make_tree(tmp_path / "busy", {"mine.txt": "keep me"})
    task = write_yaml(
        tmp_path / "t.yaml",
        f"""
num_nodes: 2
file_mounts:
  {tmp_path}/busy:
    name: {unique_bucket("mn-busy")}
    persistent: false
run: echo "must not run"
""",
    )
    result = hangar(*_launch_args(task, cluster, hangar_home), timeout=180)
    assert result.returncode == 2, result.stderr
    assert "exists and is not empty" in result.stderr
    assert "must not run" not in result.stdout
    assert (tmp_path / "busy" / "mine.txt").read_text() == "keep me"
    assert_nothing_left(hangar_home)
    assert storage_ls() == []


_JOIN = """
import sys, time
from hangar.node.hostmount import shared_attachment

def make():
    raise SystemExit("a joining node must not attach again")

with shared_attachment(sys.argv[1], "x", make, task_id="t1", rank=1) as created:
    print("joined" if not created else "created", flush=True)
    time.sleep(600)
"""


def test_shared_attachment_outlives_its_maker_only_while_holders_live(
    tmp_path: Path, hangar_home: Path
) -> None:
    """The node that made an attachment undoes it once the other holders on the host have
    left, and a holder that died (SIGKILL) does not pin it."""
    from contextlib import contextmanager

    from hangar.node.hostmount import shared_attachment

    path = tmp_path / "mnt"
    events: list[str] = []

    @contextmanager
    def make() -> Iterator[None]:
        path.mkdir()
        events.append("made")
        yield
        path.rmdir()
        events.append("undone")

    with shared_attachment(str(path), "x", make, task_id="t1", rank=0) as created:
        assert created and events == ["made"]
        joiner = subprocess.Popen(
            [sys.executable, "-c", _JOIN, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert joiner.stdout is not None
        assert joiner.stdout.readline().strip() == "joined"
        joiner.kill()
        joiner.wait()
    assert events == ["made", "undone"]
    assert not path.exists()
    assert list((hangar_home / "run" / "hostmounts").glob("*/*.json")) == []


def test_node_bundle_and_rank_order() -> None:
    from hangar.errors import SpecError
    from hangar.executors.ray import node_bundle, rank_nodes

    assert node_bundle(None) == {"CPU": 1.0}
    assert node_bundle({"cpus": "4+", "accelerators": "A100:8"}) == {"CPU": 4.0, "GPU": 8.0}
    assert node_bundle({"accelerators": {"V100": 2}, "memory": 64}) == {"CPU": 1.0, "GPU": 2.0}
    assert node_bundle({"accelerators": "T4"}) == {"CPU": 1.0, "GPU": 1.0}
    with pytest.raises(SpecError) as info:
        node_bundle({"cpus": "lots"})
    assert info.value.where == "resources.cpus"
    # Bundle order is not node order: the head first, then by IP (numerically).
    placed = {0: "n-b", 1: "n-head", 2: "n-a"}
    ips = {"n-a": "10.0.0.10", "n-b": "10.0.0.9", "n-head": "10.0.0.20"}
    assert rank_nodes(placed, ips, "n-head") == [
        (1, "n-head", "10.0.0.20"),
        (0, "n-b", "10.0.0.9"),
        (2, "n-a", "10.0.0.10"),
    ]
    assert [r[1] for r in rank_nodes(placed, ips, None)] == ["n-b", "n-a", "n-head"]


def test_job_message_round_trip_keeps_secrets_out_of_its_repr() -> None:
    from hangar.executors._ray_wire import NodeJob, NodeMount, out_bytes, out_event
    from hangar.executors.local import NodeContext
    from hangar.models import MountCachedConfig, MountMode, MountSpec

    mount = MountSpec(
        "/data",
        "d",
        MountMode.MOUNT_CACHED,
        "file_mounts./data",
        cached=MountCachedConfig(transfers=4, type="DATASET_RO"),
    )
    job = NodeJob(
        node=NodeContext("t-1", rank=1, num_nodes=2, node_ips=("10.0.0.1", "10.0.0.2")),
        setup="echo s",
        run="echo r",
        workdir=None,
        env={"AWS_SECRET_ACCESS_KEY": "s3cr3t"},
        mounts=(NodeMount(mount, "s3://d"),),
    )
    assert NodeJob.loads(job.dumps()) == job
    assert "s3cr3t" not in repr(job)
    line = b"caf\xe9 \xff not utf-8\n"
    import json

    assert out_bytes(json.loads(out_event(line))) == line


@pytest.mark.s3
@pytest.mark.fuse
def test_interrupted_s3_launch_unmounts_and_keeps_what_was_written(
    cluster: RayCluster,
    s3_backend: Any,
    tmp_path: Path,
    hangar_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C with FUSE mounts on both nodes: the files the nodes wrote before it reach the
    bucket, the shared mount is undone once, no rclone is left."""
    from mount_helpers import rclone_pids

    _no_ray_address(monkeypatch)
    out = unique_bucket("mn-s3i")
    task = write_yaml(
        tmp_path / "t.yaml",
        f"""
num_nodes: 2
file_mounts:
  {tmp_path}/out:
    name: {out}
    store: s3
run: |
  echo "partial result of rank $HANGAR_NODE_RANK" > {tmp_path}/out/rank-$HANGAR_NODE_RANK.txt
  echo "started pid=$$"
  exec sleep 600
""",
    )
    errors = tmp_path / "stderr.txt"
    proc, lines = _start(_launch_args(task, cluster, hangar_home), errors)
    seen: list[str] = []
    try:
        _read_until(lines, lambda s: sum("started" in x for x in s) == 2, seen, errors)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 130, errors.read_text()
    assert s3_backend.objects(out) == {
        "rank-0.txt": b"partial result of rank 0\n",
        "rank-1.txt": b"partial result of rank 1\n",
    }
    assert_nothing_left(hangar_home, tmp_path / "out")
    assert rclone_pids(hangar_home) == []


class _Runner:
    """A node runner driven directly over its pipes, as its Ray actor drives it."""

    def __init__(self, job: Any) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hangar.executors._ray_node", "run"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.events: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_collect, args=(self.proc.stdout, self.events), daemon=True).start()
        self.send(job.dumps())

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def next_event(self, kind: str) -> dict[str, Any]:
        import json

        deadline = time.monotonic() + 60
        while True:
            line = self.events.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line, f"the runner ended before sending {kind!r}"
            ev: dict[str, Any] = json.loads(line)
            if ev["ev"] == kind:
                return ev


def test_runner_reports_its_result_before_waiting_for_the_other_holders(
    tmp_path: Path, hangar_home: Path
) -> None:
    """The node that made a shared attachment fails first: it reports `done` at once (so the
    launcher can stop the other node) and only then waits for the other holder to leave."""
    from hangar.executors._ray_wire import STOP, NodeJob, NodeMount
    from hangar.executors.local import NodeContext
    from hangar.models import MountMode, MountSpec
    from hangar.stores import open_store

    bucket = unique_bucket("mn-dl")
    open_store("local", bucket).create_bucket()
    mount = MountSpec(str(tmp_path / "data"), bucket, MountMode.MOUNT, "file_mounts./data")

    def job(rank: int, run: str) -> Any:
        return NodeJob(
            node=NodeContext("t-dl", rank=rank, num_nodes=2, node_ips=(HEAD_IP, WORKER_IP)),
            setup=None,
            run=run,
            workdir=None,
            env={"HANGAR_HOME": str(hangar_home)},
            mounts=(NodeMount(mount, f"local://{bucket}"),),
        )

    maker = _Runner(job(1, "exit 7"))
    maker.next_event("attached")
    joiner = _Runner(job(0, "exec sleep 600"))
    joiner.next_event("attached")
    try:
        maker.send("go")
        joiner.send("go")
        assert maker.next_event("done")["code"] == 7
        assert maker.proc.poll() is None  # still holding the mount for the joiner
        assert (tmp_path / "data").is_symlink()
        joiner.send(STOP)
        assert joiner.next_event("exit")["code"] == 130
        assert maker.next_event("exit")["code"] == 7
        assert maker.proc.wait(timeout=30) == 7 and joiner.proc.wait(timeout=30) == 130
    finally:
        for runner in (maker, joiner):
            if runner.proc.poll() is None:
                runner.proc.kill()
                runner.proc.wait()
    assert not os.path.lexists(tmp_path / "data")
    assert list((hangar_home / "run" / "hostmounts").glob("*/*.json")) == []
