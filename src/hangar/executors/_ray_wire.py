"""What the launcher sends each node, and what a node reports back: JSON, one message a line.

The launcher's message (one line on the node runner's stdin, through Ray as an actor method
argument and then a pipe) carries the task, the node's place in it, and the environment the
node needs, credentials included: they never appear on a command line, in Ray's runtime_env
(which the dashboard shows) or in a file. After it, the launcher sends ``go`` (every node is
attached: start setup) or ``stop``; end of input means the launcher is gone, and stops the node.

The node's messages (lines on the runner's stdout) are events: ``started``, ``attached``,
``out`` (one line of the task's output), ``note`` (Hangar's own messages), ``error`` (a Hangar
error on the node), ``done`` (the commands ended, with their code; sent before the attachments
are undone, because undoing a shared one waits for the other nodes on the host, which the
launcher may have to stop first) and ``exit`` (the last one, once every attachment is undone).
Output bytes that are not UTF-8 survive the trip (surrogate escapes).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from hangar.executors.local import NodeContext
from hangar.models import FileCopy, MountCachedConfig, MountMode, MountSpec

GO = "go"
STOP = "stop"


@dataclass(frozen=True)
class NodeMount:
    mount: MountSpec
    url: str  # the store to attach, reopened on the node with `store_from_uri`


@dataclass(frozen=True)
class NodeJob:
    """Everything one node needs to attach the storages and run the task."""

    node: NodeContext
    setup: str | None
    run: str | None
    workdir: str | None
    env: dict[str, str] = field(repr=False)  # forwarded settings + the task's envs and secrets
    mounts: tuple[NodeMount, ...] = ()
    copies: tuple[FileCopy, ...] = ()

    def dumps(self) -> str:
        data = {
            "node": {
                "task_id": self.node.task_id,
                "rank": self.node.rank,
                "num_nodes": self.node.num_nodes,
                "node_ips": list(self.node.node_ips),
            },
            "setup": self.setup,
            "run": self.run,
            "workdir": self.workdir,
            "env": self.env,
            "mounts": [{"url": m.url, "mount": asdict(m.mount)} for m in self.mounts],
            "copies": [asdict(c) for c in self.copies],
        }
        return json.dumps(data)

    @classmethod
    def loads(cls, text: str) -> NodeJob:
        data = json.loads(text)
        node = data["node"]
        mounts = []
        for item in data["mounts"]:
            raw = dict(item["mount"])
            raw["mode"] = MountMode(raw["mode"])
            cached = raw.get("cached")
            raw["cached"] = MountCachedConfig(**cached) if cached else None
            mounts.append(NodeMount(MountSpec(**raw), item["url"]))
        return cls(
            node=NodeContext(
                task_id=node["task_id"],
                rank=node["rank"],
                num_nodes=node["num_nodes"],
                node_ips=tuple(node["node_ips"]),
            ),
            setup=data["setup"],
            run=data["run"],
            workdir=data["workdir"],
            env=dict(data["env"]),
            mounts=tuple(mounts),
            copies=tuple(FileCopy(**c) for c in data["copies"]),
        )


def event(name: str, /, **fields: Any) -> str:
    """One event line (without the newline)."""
    return json.dumps({"ev": name, **fields})


def out_event(line: bytes) -> str:
    return event("out", data=line.decode("utf-8", "surrogateescape"))


def out_bytes(ev: dict[str, Any]) -> bytes:
    data: str = ev.get("data", "")
    return data.encode("utf-8", "surrogateescape")
