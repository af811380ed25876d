"""The node runner: attach every storage on this node, run setup and run, undo the attachments.

It runs outside the Ray worker that starts it (`python -m hangar.executors._ray_node spawn`
forks it into its own session and exits, so it is not the worker's child): Ray kills a worker's
children when the worker ends, and a FUSE mount whose process is killed is left stale. The
runner talks to the worker over its stdin and stdout only (see `_ray_wire`). When the worker
goes away (end of input) or says ``stop``, the runner stops the task's commands and undoes
every attachment before it exits, exactly as a Ctrl-C does for `hangar launch` on one machine.

Attachments are shared per host (`hangar.node.hostmount`), so nodes that land on one machine
mount each path once and download each COPY once. Logs: ``$HANGAR_HOME/logs/<task-id>/rank-N/``
(setup.log, run.log, and node.log for the runner's own messages).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from functools import partial
from typing import Any, BinaryIO, TextIO, cast

from hangar._malloc import keep_freed_memory, release_freed_memory
from hangar.errors import HangarError, SpecError
from hangar.executors._ray_wire import GO, STOP, NodeJob, event, out_event
from hangar.stores.base import Store


class _Channel:
    """Events out (stdout, one line each, from any thread)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, line: str) -> None:
        with self._lock:
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (BrokenPipeError, ValueError):
                pass  # the worker is gone; the stdin watcher stops us


class _OutputStream:
    """A binary file-like object that turns each line of the task's output into an event."""

    def __init__(self, channel: _Channel) -> None:
        self._channel = channel

    def write(self, data: bytes) -> int:
        self._channel.send(out_event(data))
        return len(data)

    def flush(self) -> None:
        pass


class _NodeProgress:
    """Notes become events; a finished transfer becomes one summary note."""

    def __init__(self, channel: _Channel) -> None:
        self._channel = channel
        self._lock = threading.Lock()
        self._label = ""
        self._files = 0
        self._bytes = 0

    def start(self, label: str, total_files: int, total_bytes: int) -> None:
        with self._lock:
            self._label, self._files, self._bytes = label, 0, 0

    def advance(self, nbytes: int) -> None:
        with self._lock:
            self._bytes += nbytes

    def file_done(self, key: str) -> None:
        with self._lock:
            self._files += 1

    def finish(self) -> None:
        with self._lock:
            label, files, nbytes = self._label, self._files, self._bytes
        if label:
            self.note(f"{label}: {files} file(s), {nbytes} bytes")

    def note(self, message: str) -> None:
        self._channel.send(event("note", text=message))


class _Control:
    """Reads ``go`` / ``stop`` from stdin. Stop (or end of input) interrupts the main thread
    once, like a Ctrl-C, so the running command is stopped and attachments undone."""

    def __init__(self, stream: TextIO) -> None:
        self.go = threading.Event()
        self.stopped = threading.Event()
        self._stream = stream
        self._lock = threading.Lock()
        self._armed = True
        self._main = threading.main_thread().ident

    def start(self) -> None:
        threading.Thread(target=self._read, name="hangar-control", daemon=True).start()

    def disarm(self) -> None:
        """From now on a stop no longer interrupts (the runner is reporting its exit)."""
        with self._lock:
            self._armed = False

    def _read(self) -> None:
        for line in self._stream:
            word = line.strip()
            if word == GO:
                self.go.set()
            elif word == STOP:
                break
        self._stop()

    def _stop(self) -> None:
        self.stopped.set()
        with self._lock:
            if self._armed and self._main is not None:
                self._armed = False
                signal.pthread_kill(self._main, signal.SIGINT)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _attachments(job: NodeJob, progress: _NodeProgress, stack: ExitStack) -> None:
    from hangar.node.attach import attach, copy_in
    from hangar.node.hostmount import shared_attachment
    from hangar.stores import store_from_uri

    task_id, rank = job.node.task_id, job.node.rank

    def enter(path: str, where: str, make: Callable[[], AbstractContextManager[Any]]) -> None:
        stack.enter_context(
            shared_attachment(path, where, make, task_id=task_id, rank=rank, progress=progress)
        )

    for copy in job.copies:
        if not os.path.exists(copy.source):
            raise SpecError(
                f"{copy.source} does not exist on this node; a local path in file_mounts is "
                "copied from the node's own disk in a multi-node task. To fix: put it in a "
                "storage (name + source) so it is uploaded once and attached on every node.",
                copy.where,
            )
        enter(copy.path, copy.where, partial(copy_in, copy))
    for item in job.mounts:
        store = store_from_uri(item.url)
        _check_local_store(store, item.url, item.mount.where)
        enter(
            item.mount.path,
            item.mount.where,
            partial(attach, item.mount, store, progress),
        )


def _check_local_store(store: Store, url: str, where: str) -> None:
    """The embedded local store lives on the launching machine's disk: say so when a node
    cannot see it, instead of failing later with a missing directory."""
    if store.scheme != "local" or store.bucket_exists():
        return
    raise SpecError(
        f"{url} is not on this node: the local store keeps its buckets on the launching "
        "machine's disk ($HANGAR_HOME/buckets). To fix: 1. use a cloud store (store: s3, gcs, "
        "azure or r2) for multi-node tasks; or 2. when every node runs on the launching "
        "machine, give the nodes its state directory: --env HANGAR_HOME=<the launcher's>.",
        where,
    )


def _failure(exc: BaseException) -> tuple[int, str | None]:
    """The exit code for `exc`, and the ``error`` event that describes it (None for a stop)."""
    if isinstance(exc, KeyboardInterrupt):
        return 130, None
    if isinstance(exc, HangarError):
        kind = next(
            (c.__name__ for c in type(exc).__mro__ if c.__module__ == "hangar.errors"),
            "HangarError",
        )
        code = exc.exit_code
    else:
        traceback.print_exception(exc)
        code, kind = 1, "internal"
    return code, event("error", kind=kind, exit_code=code, text=str(exc))


class _Reported(Exception):
    """Carries an exception already reported to the launcher, with its exit code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _run(job: NodeJob, channel: _Channel, control: _Control) -> int:
    """Attach, wait for ``go``, run. The outcome of the commands (``done``) is reported before
    the attachments are undone: undoing a shared one waits for the other nodes on this host,
    which the launcher must first be able to stop."""
    from hangar.config import logs_dir
    from hangar.executors.local import run_task

    log_dir = logs_dir() / job.node.task_id / f"rank-{job.node.rank}"
    log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    progress = _NodeProgress(channel)
    with ExitStack() as stack:
        try:
            _attachments(job, progress, stack)
            release_freed_memory()  # the transfers are done; the task runs beside us
            channel.send(event("attached"))
            while not control.go.wait(0.2):
                if control.stopped.is_set():
                    raise KeyboardInterrupt
            code = run_task(
                setup=job.setup,
                run=job.run,
                envs={},
                node=job.node,
                workdir=job.workdir,
                log_dir=log_dir,
                out=cast(BinaryIO, _OutputStream(channel)),
            )
        except BaseException as exc:
            control.disarm()  # finishing now: a stop must not cut the undoing short
            code, error = _failure(exc)
            if error is not None:
                channel.send(error)
            channel.send(event("done", code=code))
            raise _Reported(code) from exc
        # The commands are done: a stop from now on (another node failed) must not cut short
        # the upload of what they wrote through a mount. Undo the attachments in full.
        control.disarm()
        channel.send(event("done", code=code))
        return code


def _redirect_stderr(job: NodeJob) -> None:
    from hangar.config import logs_dir

    log_dir = logs_dir() / job.node.task_id / f"rank-{job.node.rank}"
    log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(log_dir / "node.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 2)
    os.close(fd)


def run_node() -> int:
    """The runner's main: read the job, attach, wait for ``go``, run, detach, report."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    channel = _Channel(sys.stdout)
    first = sys.stdin.readline()
    if not first:
        return 1
    job = NodeJob.loads(first)
    os.environ.update(job.env)
    keep_freed_memory()  # COPY downloads reuse their buffers' memory (see hangar._malloc)
    code = 1
    try:
        _redirect_stderr(job)
        channel.send(event("started", pid=os.getpid()))
        control = _Control(sys.stdin)
        control.start()
        try:
            code = _run(job, channel, control)
        finally:
            control.disarm()
    except _Reported as reported:
        code = reported.code
    except BaseException as exc:  # undoing the attachments failed, or a stop came then
        code, error = _failure(exc)
        if error is not None:
            channel.send(error)
    channel.send(event("exit", code=code))
    return code


def spawn() -> int:
    """Start the runner in its own session, not as a child of this process, and return at
    once. stdin and stdout (the worker's pipes) are inherited by the runner."""
    pid = os.fork()
    if pid:
        return 0
    try:
        os.setsid()
        # A Ray worker's threads block SIGINT, and a blocked mask is inherited: unblock
        # everything, or neither the runner nor the task's commands could be interrupted.
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.execv(sys.executable, [sys.executable, "-m", "hangar.executors._ray_node", "run"])
    finally:
        os._exit(127)


def main(argv: list[str]) -> int:
    if argv == ["spawn"]:
        return spawn()
    if argv == ["run"]:
        return run_node()
    sys.stderr.write("usage: python -m hangar.executors._ray_node spawn|run\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
