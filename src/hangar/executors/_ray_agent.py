"""The Ray actor that stands for one node of a task: it starts the node runner and relays.

The launcher places one `NodeAgent` in each bundle of the task's placement group. The agent
starts the runner (`_ray_node`) outside its own process tree, hands it the job on its stdin,
and relays the runner's events to the launcher (`poll`) and the launcher's ``go`` / ``stop`` to
the runner (`send`). When the agent dies (the launcher was interrupted, the placement group was
removed) the runner's stdin closes, and the runner stops and undoes its mounts by itself.

This module does not import Ray at the top: the launcher wraps the class with `ray.remote`.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
from typing import IO, Any

from hangar.executors._ray_wire import event

_MAX_EVENTS = 2000


class NodeAgent:
    """Runs in a Ray worker on the node (a threaded actor: `poll` blocks while `send` runs)."""

    def __init__(self) -> None:
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._stdin: IO[bytes] | None = None
        self._lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        """Where this agent runs: Ray node id, host identity, process."""
        import ray

        from hangar.node.hostmount import host_id

        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "host": host_id(),
            "pid": os.getpid(),
        }

    def start(self, job: str) -> None:
        """Start the runner and give it `job` (a `NodeJob` as JSON)."""
        spawner = subprocess.Popen(
            [sys.executable, "-m", "hangar.executors._ray_node", "spawn"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        code = spawner.wait()
        assert spawner.stdin is not None and spawner.stdout is not None
        if code != 0:
            self._events.put(
                json.loads(
                    event(
                        "error",
                        kind="ExecutionError",
                        exit_code=1,
                        text=f"could not start the node runner ({sys.executable}): exit {code}",
                    )
                )
            )
            self._events.put({"ev": "exit", "code": 1})
            return
        self._stdin = spawner.stdin
        self._write(job)
        threading.Thread(
            target=self._pump, args=(spawner.stdout,), name="hangar-events", daemon=True
        ).start()

    def _pump(self, stream: IO[bytes]) -> None:
        exited = False
        for raw in stream:
            try:
                ev = json.loads(raw)
            except ValueError:
                continue
            exited = exited or ev.get("ev") == "exit"
            self._events.put(ev)
        if not exited:
            self._events.put(
                {
                    "ev": "error",
                    "kind": "ExecutionError",
                    "exit_code": 1,
                    "text": "the node runner ended without reporting an exit status "
                    "(killed?); see node.log in the node's log directory",
                }
            )
            self._events.put({"ev": "exit", "code": 1})

    def _write(self, line: str) -> None:
        with self._lock:
            if self._stdin is None:
                return
            try:
                self._stdin.write(line.encode() + b"\n")
                self._stdin.flush()
            except (BrokenPipeError, ValueError):
                pass

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        """The events since the last call; waits up to `timeout` seconds for the first."""
        try:
            first = self._events.get(timeout=timeout)
        except queue.Empty:
            return []
        out = [first]
        while len(out) < _MAX_EVENTS:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                break
        return out

    def send(self, word: str) -> None:
        """``go`` or ``stop``."""
        self._write(word)

    def close(self) -> None:
        """Close the runner's input: a runner still working stops, as on ``stop``."""
        with self._lock:
            if self._stdin is not None:
                with contextlib.suppress(OSError):
                    self._stdin.close()
                self._stdin = None
