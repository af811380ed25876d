"""The `hangar` command: parse arguments, call the library, render results.

Exit status: the task's own code for `launch`; 2 for an invalid spec or usage; 1 for any other
Hangar error (printed as one paragraph, no traceback unless --debug); 130 on Ctrl-C.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from hangar import __version__
from hangar._malloc import keep_freed_memory
from hangar.cli_mount import register as register_mount
from hangar.errors import HangarError, SpecError

_state = {"debug": False}
T = TypeVar("T")
# Arguments that name files: paths as given (relative ones resolved by the command).
_PATH = click.Path(path_type=Path)


def _err(message: str) -> None:
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()


def _guard(fn: Callable[[], T]) -> T:
    """Run `fn`, turning Hangar errors into a message and an exit status."""
    try:
        return fn()
    except KeyboardInterrupt:
        _err("interrupted")
        raise click.exceptions.Exit(130) from None
    except HangarError as exc:
        if _state["debug"]:
            raise
        kind = "invalid task" if isinstance(exc, SpecError) else "error"
        _err(f"{kind}: {exc}")
        raise click.exceptions.Exit(exc.exit_code) from None


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SpecError(f"--env {pair!r}: expected KEY=VALUE, e.g. --env MY_BUCKET=data-1")
        env[key] = value
    return env


def _version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        print(f"hangar {__version__}")
        ctx.exit()


@click.group(help="Hangar: Sky Storage for compute tasks. Upload once, mount or copy anywhere.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.option(
    "--version", is_flag=True, callback=_version, expose_value=False, is_eager=True,
    help="Print version.",
)  # fmt: skip
def app(debug: bool) -> None:
    _state["debug"] = debug


@app.group("storage")
def storage_app() -> None:
    """Manage storages: list, upload, download, delete."""


register_mount(storage_app)


@app.command()
@click.argument("task_file", metavar="TASK.yaml", type=_PATH)
@click.option("--env", multiple=True, help="Set or override a variable: KEY=VALUE.")
@click.option("--dry-run", is_flag=True, help="Validate and print the plan; change nothing.")
@click.option(
    "--cluster", metavar="ADDRESS",
    help="Ray cluster for num_nodes > 1 (default: $RAY_ADDRESS), e.g. 10.0.0.1:6379.",
)  # fmt: skip
def launch(task_file: Path, env: tuple[str, ...], dry_run: bool, cluster: str | None) -> None:
    """Upload the task's storages, attach them, run setup and run, then clean up.

    TASK.yaml is the task file (either YAML dialect)."""
    from hangar.launcher import launch as do_launch
    from hangar.launcher import plan_launch
    from hangar.models import Task
    from hangar.ui import make_progress

    def go() -> int:
        task = Task.from_yaml(str(task_file), _parse_env(list(env)))
        if dry_run:
            for warning in task.warnings:
                _err(f"warning: {warning}")
            plan = plan_launch(task, cluster)
            print("\n".join(plan.lines()))
            print("dry run: nothing was created, uploaded or deleted")
            return 0
        return do_launch(task, progress=make_progress(), cluster=cluster)

    raise click.exceptions.Exit(_guard(go))


# -- storage commands ------------------------------------------------------------------------------


def _ago(ts: float) -> str:
    delta = max(0.0, time.time() - ts)
    for unit, seconds in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= seconds:
            return f"{int(delta // seconds)}{unit} ago"
    return f"{int(delta)}s ago"


@storage_app.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def storage_ls(as_json: bool) -> None:
    """List storages: NAME, UPDATED, STORES, SOURCE, SIZE, STATUS."""
    from hangar.catalog import Catalog
    from hangar.ui import human_bytes

    def go() -> None:
        with Catalog() as cat:
            records = cat.list()
        if as_json:
            print(json.dumps([r.as_json() for r in records], indent=2))
            return
        if not records:
            _err("No storages yet. Create one with `hangar launch` or `hangar storage upload`.")
            return
        from rich.console import Console  # here only: ~40 ms of every command's start-up
        from rich.table import Table

        table = Table(box=None, header_style="bold")
        for column in ("NAME", "UPDATED", "STORES", "SOURCE", "SIZE", "STATUS"):
            table.add_column(column)
        for r in records:
            table.add_row(
                r.name,
                _ago(r.updated_at),
                ", ".join(s.url for s in r.stores) or "-",
                r.source or "-",
                f"{human_bytes(r.total_bytes)} ({r.object_count} files)",
                str(r.status),
            )
        Console(width=200 if not sys.stdout.isatty() else None).print(table)

    _guard(go)


@storage_app.command("delete")
@click.argument("names", nargs=-1)
@click.option("--all", "-a", "all_", is_flag=True, help="Delete every storage.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def storage_delete(names: tuple[str, ...], all_: bool, yes: bool) -> None:
    """Delete storages: buckets Hangar created are deleted; others are only forgotten.

    NAMES are storage names or globs."""
    from hangar.catalog import Catalog
    from hangar.storage import delete

    def go() -> int:
        if not names and not all_:
            raise SpecError("name at least one storage (globs allowed), or pass --all.")
        if names and all_:
            raise SpecError("pass either names or --all, not both.")
        with Catalog() as cat:
            known = [r.name for r in cat.list()]
        if all_:
            chosen = known
        else:
            chosen = []
            for pattern in names:
                matched = [n for n in known if fnmatch.fnmatchcase(n, pattern)]
                if not matched:
                    _err(f"error: no storage matches {pattern!r}. See `hangar storage ls`.")
                    return 1
                chosen.extend(m for m in matched if m not in chosen)
        if not chosen:
            _err("No storages to delete.")
            return 0
        if not yes:
            if not sys.stdin.isatty():
                raise SpecError(
                    f"refusing to delete {len(chosen)} storage(s) without confirmation; "
                    "standard input is not a terminal. To fix: add -y."
                )
            if not click.confirm(f"Delete {len(chosen)} storage(s): {', '.join(chosen)}?"):
                _err("Nothing deleted.")
                return 1
        for name in chosen:
            outcome = delete(name)
            for url in outcome.deleted:
                _err(f"Deleted storage {name}: bucket {url} deleted.")
            for url in outcome.forgotten:
                _err(
                    f"Forgot storage {name}: bucket {url} was not created by Hangar, so its "
                    "contents were left untouched."
                )
            if not outcome.deleted and not outcome.forgotten:
                _err(f"Forgot storage {name} (it had no buckets).")
        return 0

    raise click.exceptions.Exit(_guard(go))


@storage_app.command("upload")
@click.argument("source", nargs=-1, required=True)
@click.option("--name", "-n", required=True, help="Storage (bucket) name.")
@click.option("--store", "-s", multiple=True, help="Store type (repeatable).")
@click.option("--mirror", is_flag=True, help="Also delete objects whose local file is gone.")
@click.option("--dry-run", is_flag=True, help="Show what would be sent.")
@click.option(
    "--full", is_flag=True, help="List the bucket even if the last sync's manifest is fresh."
)
def storage_upload(
    source: tuple[str, ...],
    name: str,
    store: tuple[str, ...],
    mirror: bool,
    dry_run: bool,
    full: bool,
) -> None:
    """Create or update a storage from a local source, without running a task.

    SOURCE is a local directory, or several paths."""
    from hangar.api import Storage
    from hangar.ui import make_progress

    def go() -> None:
        src: str | list[str] = source[0] if len(source) == 1 else list(source)
        st = Storage(
            name=name, source=src, stores=list(store) or None, sync="mirror" if mirror else None
        )
        if dry_run:
            plan = st.plan()
            print("\n".join(plan.lines()))
            print("dry run: nothing was created, uploaded or deleted")
            return
        reports = st.upload(progress=make_progress(), command="hangar storage upload", full=full)
        for report in reports:
            sent = report.result.uploaded if report.result else 0
            _err(f"{name}: {report.plan.summary()}; sent {sent} file(s)")

    _guard(go)


@storage_app.command("download")
@click.argument("name")
@click.argument("directory", metavar="DIR", type=_PATH)
def storage_download(name: str, directory: Path) -> None:
    """Download a storage (COPY mode on its own) into DIR.

    NAME is a storage name, or a bucket URI (s3://bucket/prefix)."""
    from hangar.storage import download  # not hangar.api: the spec's models are not needed
    from hangar.ui import make_progress

    def go() -> None:
        result = download(name, directory, progress=make_progress())
        _err(f"{name}: {result.files} file(s) downloaded, {result.skipped} already up to date")

    _guard(go)


@storage_app.command("verify")
@click.argument("name")
def storage_verify(name: str) -> None:
    """Read every object back and compare bucket, catalog and source (exit 1 on problems)."""
    from hangar.ui import make_progress
    from hangar.verify import lines, verify

    def go() -> int:
        report = verify(name, progress=make_progress())
        print("\n".join(lines(report)))
        return 0 if report.ok else 1

    raise click.exceptions.Exit(_guard(go))


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so mounts are undone and storages cleaned up."""
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    keep_freed_memory()  # transfers reuse their buffers' memory (see hangar._malloc)
    # Cloud SDKs log retries and warnings; Hangar reports outcomes itself, so their records are
    # not printed (Python's last-resort handler would write them to stderr, unscrubbed).
    logging.getLogger().addHandler(logging.NullHandler())
    try:
        app(prog_name="hangar")
    except SystemExit as exc:
        _leave(exc.code)
    _leave(0)


def _leave(code: object) -> None:
    """Exit with `code` as SystemExit would, skipping the interpreter's teardown when nothing
    needs it. Tearing down every module and object costs ~0.1 s after a 100,000-file re-sync
    (a tenth of it); it is skipped only when no other Python thread is running (nothing to
    join) and Ray is not loaded (its exit handlers tell the cluster the driver is done).
    Output is flushed first; Hangar's own state is in committed SQLite transactions."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    if threading.active_count() > 1 or "ray" in sys.modules:
        sys.exit(status)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        status = status or 1
    logging.shutdown()
    os._exit(status)


if __name__ == "__main__":
    main()
