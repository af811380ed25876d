"""A real multi-node Ray cluster on one machine, for the multi-node tests.

Each node is one `ray start --block` process: the head on 127.0.0.2, the others on 127.0.0.3,
127.0.0.4, ... (127.0.0.1 would be rewritten to the NIC address, so two nodes would look like
one). Every node has its own short `--temp-dir` (a shared one duplicates log lines, and Unix
socket paths must stay under 108 bytes), one CPU, a small object store, and every port pinned to
one that was free a moment ago. The cluster is stopped by PID: the `ray start --block`
processes, then any process left whose command line names one of our temp dirs. `ray stop` is
never used: it stops every Ray cluster on the machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from servers._proc import _die_with_parent, free_ports

OBJECT_STORE_BYTES = 80 * 1024 * 1024
WORKER_PORTS = 100  # Ray does not hand back every port at once: a short list runs dry
START_TIMEOUT = 120.0
ATTEMPTS = 3


class ClusterStartError(RuntimeError):
    """The cluster did not come up; the message carries the nodes' log tails."""


@dataclass
class RayNode:
    ip: str
    temp_dir: Path
    proc: subprocess.Popen[bytes]
    log: Path
    port: int = 0  # the GCS port (head only)

    def pids(self) -> set[int]:
        """This node's live processes: `ray start` and every process naming its temp dir."""
        found = {self.proc.pid} if self.proc.poll() is None else set()
        marker = str(self.temp_dir).encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmdline:
                found.add(int(entry))
        return found

    def stop(self) -> None:
        """SIGTERM `ray start --block` (it stops the node's processes), then SIGKILL whatever
        of this node is left, by PID."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        deadline = time.monotonic() + 15
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.ip} ({self.log}) ---\n" + "\n".join(text.splitlines()[-lines:])


@dataclass
class RayCluster:
    address: str  # GCS address of the head, for RAY_ADDRESS / --cluster
    nodes: list[RayNode] = field(default_factory=list)
    root: Path = Path()

    def pids(self) -> set[int]:
        """Every live process that belongs to this cluster."""
        return set().union(*(n.pids() for n in self.nodes)) if self.nodes else set()

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _ray_bin() -> str:
    candidate = Path(sys.executable).with_name("ray")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("ray")
    if found is None:
        raise ClusterStartError(
            "the `ray` command was not found. To fix: pip install 'ray[default]'"
        )
    return found


def _start_node(
    ray: str, ip: str, root: Path, *, head_address: str | None, gcs_port: int
) -> RayNode:
    temp_dir = Path(tempfile.mkdtemp(prefix="n", dir=root))
    ports = free_ports(6 + WORKER_PORTS)
    argv = [
        ray, "start", "--block",
        f"--node-ip-address={ip}",
        "--num-cpus=1",
        "--num-gpus=0",
        f"--object-store-memory={OBJECT_STORE_BYTES}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
        f"--node-manager-port={ports[0]}",
        f"--object-manager-port={ports[1]}",
        f"--dashboard-agent-listen-port={ports[2]}",
        f"--dashboard-agent-grpc-port={ports[3]}",
        f"--runtime-env-agent-port={ports[4]}",
        f"--metrics-export-port={ports[5]}",
        "--worker-port-list=" + ",".join(str(p) for p in ports[6:]),
    ]  # fmt: skip
    if head_address is None:
        client_port, dashboard_port = free_ports(2)
        argv += [
            "--head", f"--port={gcs_port}", "--include-dashboard=false",
            f"--dashboard-port={dashboard_port}", f"--ray-client-server-port={client_port}",
        ]  # fmt: skip
    else:
        argv += [f"--address={head_address}"]
    log = temp_dir.with_suffix(".log")
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # a killed test run leaves no cluster behind
        )
    return RayNode(ip=ip, temp_dir=temp_dir, proc=proc, log=log, port=gcs_port)


def _alive_nodes(address: str) -> int:
    """How many nodes the cluster reports alive (asked from a separate process, so this test
    process never connects to Ray itself)."""
    code = (
        "import ray, sys\n"
        "ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False)\n"
        "print(sum(1 for n in ray.nodes() if n['Alive']))\n"
    )
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run(
        [sys.executable, "-c", code, address],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    if result.returncode != 0:
        return 0
    try:
        return int(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return 0


_STARTED = "This command will now block forever"


def _started(node: RayNode) -> bool:
    """Wait until `ray start` says the node is up (it has registered with the GCS by then);
    False if it exited first or took too long."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if node.log.exists() and _STARTED in node.log.read_text(errors="replace"):
            return True
        if node.proc.poll() is not None:
            return False
        time.sleep(0.2)
    return False


def _start_with_retries(
    ray: str, ip: str, root: Path, *, head_address: str | None, gcs_port: int
) -> RayNode:
    """Start one node; on a loaded machine a node can miss Ray's fixed 30 s registration
    window, so a failed start is undone and retried (fresh ports and temp dir)."""
    tails = []
    for _ in range(ATTEMPTS):
        node = _start_node(ray, ip, root, head_address=head_address, gcs_port=gcs_port)
        if _started(node):
            return node
        tails.append(node.tail())
        node.stop()
        if head_address is None:
            gcs_port = free_ports(1)[0]
    raise ClusterStartError(f"the Ray node on {ip} did not start\n" + "\n".join(tails))


def start_cluster(count: int = 2) -> RayCluster:
    """Start a `count`-node cluster, one node after the other, and wait until all are alive."""
    ray = _ray_bin()
    root = Path(tempfile.mkdtemp(prefix="hray"))
    head_ip = "127.0.0.2"
    cluster = RayCluster(address="", root=root)
    try:
        head = _start_with_retries(ray, head_ip, root, head_address=None, gcs_port=free_ports(1)[0])
        cluster.nodes.append(head)
        cluster.address = f"{head_ip}:{head.port}"
        for i in range(1, count):
            cluster.nodes.append(
                _start_with_retries(
                    ray, f"127.0.0.{2 + i}", root, head_address=cluster.address, gcs_port=0
                )
            )
        deadline = time.monotonic() + START_TIMEOUT
        while _alive_nodes(cluster.address) < count:
            if time.monotonic() > deadline:
                raise ClusterStartError(
                    f"{count} Ray nodes were not alive after {START_TIMEOUT:.0f}s\n"
                    + "\n".join(n.tail() for n in cluster.nodes)
                )
            time.sleep(0.5)
        return cluster
    except BaseException:
        cluster.stop()
        raise
