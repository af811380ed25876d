"""Run a task on N nodes of an existing Ray cluster (`num_nodes: N`).

The launcher has already uploaded every storage, once. Here:

1. Connect to the cluster (`hangar launch --cluster ADDRESS`, else `RAY_ADDRESS`).
2. Reserve the nodes: one placement group, STRICT_SPREAD, one bundle per node sized from the
   task's `resources` (`cpus`, `accelerators`; default one CPU). Waiting for it is bounded by
   HANGAR_RAY_PG_TIMEOUT seconds (default 60): an impossible request would wait forever.
3. Rank the nodes from the placement table (bundle order is not node order): the head node is
   rank 0, the others follow by IP address.
4. Start one `NodeAgent` actor in each bundle; each starts a node runner that attaches every
   storage (shared per host), reports ``attached``, and runs setup and run once every node is
   attached. Output streams back, each line prefixed with ``(rank N)``, and is kept in
   ``$HANGAR_HOME/logs/<task-id>/rank-N.log`` here (each node also keeps ``rank-N/`` logs).
5. The first node to fail gives the exit code, and the others are stopped; Ctrl-C (or SIGTERM)
   stops every node. Either way this returns only after every node has undone its attachments
   (or HANGAR_RAY_STOP_TIMEOUT seconds, default 120, after asking them to stop).

Credentials and the task's variables reach the nodes as the argument of an actor call, then
through a pipe: never in `runtime_env` (the dashboard shows it), a command line or a file.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from hangar.config import env_seconds
from hangar.errors import (
    ExecutionError,
    HangarError,
    MountError,
    SpecError,
    StoreError,
    StoreUnavailable,
)
from hangar.executors._ray_wire import GO, STOP, NodeJob, NodeMount, out_bytes
from hangar.executors.local import NodeContext
from hangar.models import MountSpec, Task
from hangar.progress import NullProgress, ProgressSink

DEFAULT_PG_TIMEOUT = 60.0
DEFAULT_STOP_TIMEOUT = 120.0
HEAD_RESOURCE = "node:__internal_head__"

# Environment forwarded from the launcher to every node: Hangar's own settings and each
# cloud's standard variables (credentials included), so a node reaches the stores exactly as
# the launcher does. Not HANGAR_HOME: a node keeps its own state directory (a task's `envs`,
# e.g. `--env HANGAR_HOME=...`, can set it). The task's envs and secrets are applied on top.
FORWARD_PREFIXES = ("HANGAR_", "AWS_", "AZURE_", "GOOGLE_", "GCLOUD_", "CLOUDSDK_", "R2_")
FORWARD_NAMES = ("STORAGE_EMULATOR_HOST",)
NOT_FORWARDED = ("HANGAR_HOME",)


class ClusterError(HangarError):
    """The Ray cluster cannot be reached, or cannot host the task."""


def import_ray() -> Any:
    """The `ray` module, or StoreUnavailable naming the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise StoreUnavailable(
            f"multi-node tasks run on Ray, which is not installed ({exc.name or exc}).\n"
            "To fix: pip install 'hangar[ray]'   (on the launching machine and on every node)"
        ) from exc
    return ray


def cluster_address(flag: str | None) -> str | None:
    """The cluster to use: `--cluster` > RAY_ADDRESS > none."""
    return flag or os.environ.get("RAY_ADDRESS") or None


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """ClusterError unless something accepts connections at `address` (HOST:PORT, or
    ray://HOST:PORT): a wrong address fails in seconds, before anything is uploaded, instead
    of after Ray's own connection retries (minutes)."""
    target = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        if address in ("auto", "local"):
            return
        raise SpecError(
            f"--cluster / RAY_ADDRESS {address!r} is not HOST:PORT. To fix: e.g. 10.0.0.1:6379 "
            "(the head node's address, shown by `ray status` there)."
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ClusterError(
            f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}. To fix: check "
            "the address (the head node's IP and GCS port, 6379 by default; `ray status` on "
            "the head node shows it) and that this machine can reach it."
        ) from None


def _count(value: object, where: str) -> float:
    text = str(value).strip().rstrip("+") if not isinstance(value, bool) else ""
    try:
        number = float(text)
    except ValueError:
        number = -1.0
    if number < 0:
        raise SpecError(
            f"expected a number (optionally with a trailing +), got {value!r}. To fix: e.g. 4.",
            where,
        )
    return number


def node_bundle(resources: Mapping[str, object] | None) -> dict[str, float]:
    """The placement-group bundle for one node: `cpus` (default 1) and `accelerators` as GPUs.

    ``cpus: 4`` or ``"4+"`` -> 4 CPUs; ``accelerators: A100:8`` or ``{A100: 8}`` -> 8 GPUs.
    Other `resources` fields are not used to place nodes.
    """
    resources = resources or {}
    bundle: dict[str, float] = {"CPU": 1.0}
    if resources.get("cpus") is not None:
        bundle["CPU"] = _count(resources["cpus"], "resources.cpus")
    acc = resources.get("accelerators")
    if acc is not None:
        if isinstance(acc, Mapping):
            if len(acc) != 1:
                raise SpecError(
                    "give one accelerator type, e.g. {A100: 8}.", "resources.accelerators"
                )
            gpus = _count(next(iter(acc.values())), "resources.accelerators")
        elif isinstance(acc, str):
            _, sep, count = acc.partition(":")
            gpus = _count(count, "resources.accelerators") if sep else 1.0
        else:
            raise SpecError(
                f"expected e.g. A100:8 or {{A100: 8}}, got {acc!r}.", "resources.accelerators"
            )
        if gpus:
            bundle["GPU"] = gpus
    return {k: v for k, v in bundle.items() if v}


def forwarded_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    environ = os.environ if environ is None else environ
    return {
        k: v
        for k, v in environ.items()
        if (k.startswith(FORWARD_PREFIXES) or k in FORWARD_NAMES) and k not in NOT_FORWARDED
    }


@dataclass(eq=False)
class _Node:
    rank: int
    bundle: int
    node_id: str
    ip: str
    agent: Any = None
    log: BinaryIO | None = None
    attached: bool = False
    exit_code: int | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)


def _ip_key(ip: str) -> tuple[int, int, str]:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return (9, 0, ip)
    return (addr.version, int(addr), ip)


def rank_nodes(
    bundles_to_node: Mapping[int, str], node_ips: Mapping[str, str], head: str | None
) -> list[tuple[int, str, str]]:
    """(bundle index, node id, ip) in rank order: the head node first, then by IP address."""
    rows = [(b, n, node_ips.get(n, "")) for b, n in bundles_to_node.items()]
    rows.sort(key=lambda r: (r[1] != head, _ip_key(r[2]), r[1]))
    return rows


class _Cluster:
    """One connection to the cluster, for one task."""

    def __init__(self, ray: Any, address: str) -> None:
        self.ray = ray
        self.address = address
        self.pg: Any = None

    def connect(self) -> None:
        # ray.init replaces the SIGTERM handler with sys.exit; keep ours (SIGTERM = Ctrl-C).
        term = signal.getsignal(signal.SIGTERM)
        try:
            self.ray.init(
                address=self.address,
                logging_level=logging.ERROR,
                log_to_driver=False,
                namespace="hangar",
            )
        except Exception as exc:
            raise ClusterError(
                f"cannot connect to the Ray cluster at {self.address}: {exc}. To fix: check "
                "the address (`ray status` on the head node shows the cluster; the address is "
                "HEAD_IP:6379 by default), or start the cluster (`ray start --head`)."
            ) from exc
        finally:
            if term is not None:
                signal.signal(signal.SIGTERM, term)

    def nodes(self) -> list[dict[str, Any]]:
        return [n for n in self.ray.nodes() if n.get("Alive")]

    def reserve(self, count: int, bundle: dict[str, float], name: str) -> dict[int, str]:
        """Reserve `count` distinct nodes; return bundle index -> node id."""
        from ray.util.placement_group import placement_group, placement_group_table

        timeout = env_seconds("HANGAR_RAY_PG_TIMEOUT", DEFAULT_PG_TIMEOUT)
        self.pg = placement_group([dict(bundle)] * count, strategy="STRICT_SPREAD", name=name)
        ready, _ = self.ray.wait([self.pg.ready()], timeout=timeout)
        if not ready:
            alive = self.nodes()
            fits = [
                n
                for n in alive
                if all(n.get("Resources", {}).get(k, 0) >= v for k, v in bundle.items())
            ]
            raise ClusterError(
                f"the Ray cluster at {self.address} could not reserve {count} nodes with "
                f"{_fmt(bundle)} each within {timeout:.0f}s: it has {len(alive)} alive "
                f"node(s), {len(fits)} of them with that much in total, and each node of the "
                "task must be a different Ray node. To fix: 1. add nodes, or lower num_nodes; "
                "2. lower resources (cpus, accelerators); 3. wait for other work to finish, or "
                "raise HANGAR_RAY_PG_TIMEOUT (seconds) if the cluster is autoscaling."
            )
        table = placement_group_table(self.pg)
        return {int(k): str(v) for k, v in table["bundles_to_node_id"].items()}

    def agents_ready(self, nodes: Sequence[_Node]) -> int:
        """Wait (bounded like the reservation) until every node's agent answers; return the
        number of distinct hosts they run on."""
        timeout = env_seconds("HANGAR_RAY_PG_TIMEOUT", DEFAULT_PG_TIMEOUT)
        refs = [n.agent.info.remote() for n in nodes]
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=timeout)
        if len(ready) < len(refs):
            late = [str(n.rank) for n, ref in zip(nodes, refs, strict=True) if ref not in ready]
            raise ClusterError(
                f"the Hangar agents on rank(s) {', '.join(late)} did not start within "
                f"{timeout:.0f}s (Ray could not start a worker there). To fix: check those "
                "nodes' Ray logs (/tmp/ray/session_latest/logs); raise HANGAR_RAY_PG_TIMEOUT "
                "(seconds) if the nodes are just slow."
            )
        try:
            infos = self.ray.get(refs)
        except Exception as exc:
            raise ClusterError(
                f"a Hangar agent failed to start on the cluster: {exc}. To fix: install Hangar "
                "(pip install 'hangar[ray]') on every node, in the Python that runs Ray."
            ) from exc
        return len({info["host"] for info in infos})

    def close(self) -> None:
        if self.pg is not None:
            with contextlib.suppress(Exception):
                from ray.util.placement_group import remove_placement_group

                remove_placement_group(self.pg)  # also ends the agents in it
        with contextlib.suppress(Exception):
            self.ray.shutdown()


def _fmt(bundle: Mapping[str, float]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in bundle.items())


_ERRORS: dict[str, type[HangarError]] = {
    "SpecError": SpecError,
    "MountError": MountError,
    "StoreError": StoreError,
    "StoreUnavailable": StoreUnavailable,
}


def _node_error(node: _Node, ev: dict[str, Any]) -> HangarError:
    text = f"rank {node.rank} ({node.ip}): {ev.get('text', '')}"
    cls = _ERRORS.get(str(ev.get("kind")))
    if cls is SpecError:
        return SpecError(text)
    if cls is MountError:
        return MountError(text)
    if cls is not None:
        return cls(text)
    err = ExecutionError(text)
    err.exit_code = int(ev.get("exit_code") or 1)
    return err


class _Run:
    """The event loop over every node's agent."""

    def __init__(self, ray: Any, nodes: list[_Node], out: BinaryIO, progress: ProgressSink) -> None:
        self.ray = ray
        self.nodes = nodes
        self.out = out
        self.progress = progress
        self.failed: _Node | None = None
        self.failed_code = 0
        self.stopping = False
        self.went = False
        self.stop_timeout = env_seconds("HANGAR_RAY_STOP_TIMEOUT", DEFAULT_STOP_TIMEOUT)
        self.deadline: float | None = None  # set when the nodes are told to stop

    def _stop_all(self) -> None:
        self.stopping = True
        if self.deadline is None:
            self.deadline = time.monotonic() + self.stop_timeout
        for node in self.nodes:
            if node.exit_code is None:
                node.agent.send.remote(STOP)

    def _handle(self, node: _Node, ev: dict[str, Any]) -> None:
        kind = ev.get("ev")
        if kind == "out":
            data = out_bytes(ev)
            if node.log is not None:
                node.log.write(data)
                node.log.flush()
            self.out.write(f"(rank {node.rank}) ".encode() + data)
            self.out.flush()
        elif kind == "note":
            self.progress.note(f"(rank {node.rank}) {ev.get('text', '')}")
        elif kind == "attached":
            node.attached = True
            if not self.stopping and not self.went and all(n.attached for n in self.nodes):
                self.went = True
                for n in self.nodes:
                    n.agent.send.remote(GO)
        elif kind == "error":
            node.errors.append(ev)
        elif kind == "done":  # its commands ended; it is now undoing its attachments
            self._check(node, int(ev.get("code", 1)))
        elif kind == "exit":
            node.exit_code = int(ev.get("code", 1))
            node.agent.close.remote()
            self._check(node, node.exit_code)

    def _check(self, node: _Node, code: int) -> None:
        """The first node to fail gives the exit code, and the others are stopped at once
        (a node undoing a shared attachment waits for them)."""
        if code == 0 or self.failed is not None or self.stopping:
            return
        self.failed, self.failed_code = node, code
        others = [n for n in self.nodes if n is not node and n.exit_code is None]
        if others:
            self.progress.note(
                f"rank {node.rank} ({node.ip}) failed (exit code {code}); "
                f"stopping the other {len(others)} node(s)"
            )
        self._stop_all()

    def loop(self, signals: _Signals) -> bool:
        """Relay events until every node has exited; False if, once the nodes were told to
        stop, they did not all exit within HANGAR_RAY_STOP_TIMEOUT, or on a second Ctrl-C.

        A Ctrl-C (or SIGTERM) only counts in `signals`; it is acted on here, between Ray
        calls. Raising KeyboardInterrupt inside one could drop a poll that is already in
        flight, and with it the events a node sends as it stops (its ``exit`` among them),
        after which this would wait for an exit it had already been sent."""
        pending: dict[Any, _Node] = {}  # poll in flight -> its node
        for n in self.nodes:
            if n.exit_code is None:
                pending[n.agent.poll.remote(0.5)] = n
        seen = 0
        while pending:
            if signals.count != seen:
                seen = signals.count
                if seen >= 2:
                    self.progress.note("interrupted again: ending every node now")
                    return False
                self.progress.note("interrupted: stopping every node and undoing its mounts")
                self._stop_all()
            if self.deadline is not None and time.monotonic() > self.deadline:
                return False
            ready, _ = self.ray.wait(list(pending), num_returns=1, timeout=0.25)
            for ref in ready:
                node = pending.pop(ref)
                try:
                    events = self.ray.get(ref)
                except Exception as exc:  # the agent died (its node failed)
                    events = [
                        {"ev": "error", "kind": "ExecutionError", "exit_code": 1,
                         "text": f"lost contact with the node: {exc}"},
                        {"ev": "exit", "code": 1},
                    ]  # fmt: skip
                for ev in events:
                    self._handle(node, ev)
                if node.exit_code is None:
                    pending[node.agent.poll.remote(0.5)] = node
        return True

    def _warn_unfinished(self, finished: bool, interrupts: int) -> None:
        if finished or interrupts >= 2:
            return
        late = ", ".join(str(n.rank) for n in self.nodes if n.exit_code is None)
        self.progress.note(
            f"warning: rank(s) {late} did not stop within {self.stop_timeout:.0f}s "
            "(HANGAR_RAY_STOP_TIMEOUT); ending their agents, after which they stop and "
            "undo their mounts on their own"
        )

    def run(self, jobs: Mapping[int, str]) -> int:
        """Start every node's runner (`jobs`: rank -> NodeJob JSON) and relay until all end.
        Raises KeyboardInterrupt, once every node has stopped, when interrupted."""
        with _Signals() as signals:
            for node in self.nodes:
                node.agent.start.remote(jobs[node.rank])
            finished = self.loop(signals)
        self._warn_unfinished(finished, signals.count)
        if signals.count:
            raise KeyboardInterrupt
        failed = self.failed
        if failed is None:
            return 0
        if failed.errors:
            raise _node_error(failed, failed.errors[0])
        return self.failed_code


class _Signals:
    """While entered (in the main thread), SIGINT and SIGTERM are counted instead of raising
    KeyboardInterrupt wherever the main thread happens to be. Elsewhere: counts nothing."""

    def __init__(self) -> None:
        self.count = 0
        self._saved: dict[int, Any] = {}

    def _on_signal(self, signum: int, frame: object) -> None:
        self.count += 1

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)


def run_on_cluster(
    task: Task,
    mounts: Sequence[tuple[MountSpec, str]],
    *,
    task_id: str,
    address: str,
    log_dir: Path,
    out: BinaryIO | None = None,
    progress: ProgressSink | None = None,
) -> int:
    """Run `task` on `task.num_nodes` nodes of the Ray cluster at `address`.

    `mounts` pairs each MountSpec with the URL of the store to attach. Returns 0 when every
    node succeeded, else the exit code of the first node that failed. Raises HangarError for
    Hangar's own failures (the cluster, a mount on a node), KeyboardInterrupt after stopping
    every node when interrupted.
    """
    progress = progress or NullProgress()
    out = out or sys.stdout.buffer
    ray = import_ray()
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from hangar.executors._ray_agent import NodeAgent

    bundle = node_bundle(task.resources)
    cluster = _Cluster(ray, address)
    cluster.connect()
    nodes: list[_Node] = []
    try:
        progress.note(
            f"task {task_id}: reserving {task.num_nodes} nodes ({_fmt(bundle)} each) "
            f"on the Ray cluster at {address}"
        )
        placed = cluster.reserve(task.num_nodes, bundle, name=f"hangar-{task_id}")
        alive = cluster.nodes()
        ips = {str(n["NodeID"]): str(n["NodeManagerAddress"]) for n in alive}
        head = next((str(n["NodeID"]) for n in alive if HEAD_RESOURCE in n["Resources"]), None)
        order = rank_nodes(placed, ips, head)
        node_ips = tuple(ip for _, _, ip in order)
        remote_agent = ray.remote(NodeAgent)
        extra = {k: v for k, v in bundle.items() if k not in ("CPU", "GPU")}
        for rank, (index, node_id, ip) in enumerate(order):
            agent = remote_agent.options(
                num_cpus=bundle.get("CPU", 0),
                num_gpus=bundle.get("GPU", 0),
                resources=extra or None,
                max_concurrency=4,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    cluster.pg, placement_group_bundle_index=index
                ),
            ).remote()
            nodes.append(_Node(rank, index, node_id, ip, agent=agent))
        hosts = cluster.agents_ready(nodes)
        env = {**forwarded_env(), **task.envs, **task.secrets}
        node_mounts = tuple(NodeMount(m, url) for m, url in mounts)
        log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        jobs: dict[int, str] = {}
        for node in nodes:
            jobs[node.rank] = NodeJob(
                node=NodeContext(
                    task_id=task_id, rank=node.rank, num_nodes=len(nodes), node_ips=node_ips
                ),
                setup=task.setup,
                run=task.run,
                workdir=task.workdir,
                env=env,
                mounts=node_mounts,
                copies=task.copies,
            ).dumps()
            path = log_dir / f"rank-{node.rank}.log"
            node.log = open(path, "ab")  # noqa: SIM115 - closed in `finally`
            os.chmod(path, 0o600)
        shared = f" ({len(nodes)} nodes on {hosts} host(s))" if hosts < len(nodes) else ""
        progress.note(
            "nodes: "
            + ", ".join(f"rank {n.rank} = {n.ip}" for n in nodes)
            + f"{shared}; logs in {log_dir}"
        )
        return _Run(ray, nodes, out, progress).run(jobs)
    finally:
        for node in nodes:
            if node.log is not None:
                node.log.close()
        cluster.close()
