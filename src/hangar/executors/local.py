"""Run a task's `setup` and `run` on this machine, with bash.

Output streams live (to `out`) and is kept in ``<log_dir>/setup.log`` and ``run.log``. The
task's variables reach the commands as environment variables, never spliced into the command
text. Ctrl-C is forwarded to the whole process group of the running command.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from hangar.errors import ExecutionError


@dataclass(frozen=True)
class NodeContext:
    """What a node knows about itself and the task (becomes HANGAR_* / SKYPILOT_* variables)."""

    task_id: str
    rank: int = 0
    num_nodes: int = 1
    node_ips: tuple[str, ...] = ("127.0.0.1",)

    def env(self) -> dict[str, str]:
        values = {
            "NODE_RANK": str(self.rank),
            "NUM_NODES": str(self.num_nodes),
            "NODE_IPS": "\n".join(self.node_ips),
            "TASK_ID": self.task_id,
        }
        env = {f"HANGAR_{k}": v for k, v in values.items()}
        env.update({f"SKYPILOT_{k}": v for k, v in values.items()})
        return env


def _stream(proc: subprocess.Popen[bytes], out: BinaryIO, log: BinaryIO) -> None:
    assert proc.stdout is not None
    for line in iter(proc.stdout.readline, b""):
        log.write(line)
        log.flush()
        out.write(line)
        out.flush()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the command's whole process group: SIGINT, then SIGTERM, then SIGKILL."""
    for sig, wait in ((signal.SIGINT, 5.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


def run_command(
    script: str,
    *,
    env: Mapping[str, str],
    cwd: str,
    log_path: Path,
    out: BinaryIO | None = None,
) -> int:
    """Run `script` with bash; return its exit code (130 when interrupted by Ctrl-C)."""
    bash = shutil.which("bash")
    if bash is None:
        raise ExecutionError("bash was not found on PATH. To fix: install bash.")
    out = out or sys.stdout.buffer
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        os.chmod(log_path, 0o600)
        try:
            proc = subprocess.Popen(
                [bash, "-c", script],
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise ExecutionError(f"could not start bash in {cwd}: {exc}") from exc
        try:
            _stream(proc, out, log)
            return proc.wait()
        except KeyboardInterrupt:
            _stop(proc)
            raise
        finally:
            if proc.poll() is None:
                _stop(proc)


def run_task(
    *,
    setup: str | None,
    run: str | None,
    envs: Mapping[str, str],
    node: NodeContext,
    workdir: str | None,
    log_dir: Path,
    out: BinaryIO | None = None,
) -> int:
    """Run `setup` then `run`; a failing setup's code is returned and `run` is skipped."""
    env = dict(os.environ)
    env.update(envs)
    env.update(node.env())
    cwd = workdir or os.getcwd()
    if not Path(cwd).is_dir():
        raise ExecutionError(f"workdir {cwd} is not a directory. To fix: create it or fix workdir.")
    for phase, script in (("setup", setup), ("run", run)):
        if not script:
            continue
        code = run_command(script, env=env, cwd=cwd, log_path=log_dir / f"{phase}.log", out=out)
        if code != 0:
            return code
    return 0
