"""`hangar storage mount NAME PATH` and `hangar storage unmount PATH`.

`mount` returns once the mount is live and leaves rclone running on its own (in its own session,
recorded with its PID in `$HANGAR_HOME/mounts.json`), like `mount` itself does; `unmount` waits
for the mount's uploads, unmounts it and stops that rclone. `--foreground` instead holds the
mount until Ctrl-C or SIGTERM and then undoes it. Registered on the `storage` sub-app by
`register(storage_group)`.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TypeVar

import click

from hangar.errors import HangarError, SpecError
from hangar.stores.base import Store

T = TypeVar("T")
_WHERE = "hangar storage mount"
_TYPES = ("MODEL_CHECKPOINT_RO", "MODEL_CHECKPOINT_RW", "DATASET_RO", "DATASET_RW")


def _err(message: str) -> None:
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()


def _guard(ctx: click.Context, fn: Callable[[], T]) -> T:
    """Hangar errors -> one paragraph and an exit status (as everywhere in the CLI)."""
    try:
        return fn()
    except KeyboardInterrupt:
        _err("interrupted")
        raise click.exceptions.Exit(130) from None
    except HangarError as exc:
        if ctx.find_root().params.get("debug"):
            raise
        kind = "invalid arguments" if isinstance(exc, SpecError) else "error"
        _err(f"{kind}: {exc}")
        raise click.exceptions.Exit(exc.exit_code) from None


def _open_store(name: str) -> Store:
    """The store a bucket URI (prefix included) or a catalog storage name refers to."""
    from hangar.catalog import Catalog
    from hangar.errors import StorageNotFound
    from hangar.stores import parse_uri, store_from_uri

    if parse_uri(name) is not None:
        return store_from_uri(name)
    with Catalog() as cat:
        record = cat.get(name)
    if record is None or not record.stores:
        raise StorageNotFound(
            f"no storage named {name!r} in the catalog. To see them: hangar storage ls "
            "(or give a bucket URI such as s3://bucket/prefix)"
        )
    return store_from_uri(record.stores[0].url)


def _prepare(path: Path) -> list[str]:
    """Create `path` and missing parents; the ones created, deepest first."""
    created: list[str] = []
    cursor = path
    while not cursor.exists() and not cursor.is_symlink():
        created.append(str(cursor))
        cursor = cursor.parent
    path.mkdir(parents=True, exist_ok=True)
    return created


def _hold_until_signal(pid: int, started: str) -> None:
    """Block until Ctrl-C / SIGTERM (raised as KeyboardInterrupt) or rclone ends by itself."""
    from hangar.node import _procfs

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    while _procfs.alive(pid, started):
        time.sleep(0.5)


@click.command("mount")
@click.argument("name")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--read-only", is_flag=True, help="Refuse writes.")
@click.option(
    "--mode", default="MOUNT", show_default=True,
    help="MOUNT (stream) or MOUNT_CACHED (local disk cache).",
)  # fmt: skip
@click.option("--type", "cache_type", help=f"MOUNT_CACHED preset: {', '.join(_TYPES)}.")
@click.option("--foreground", is_flag=True, help="Stay running; unmount on Ctrl-C or SIGTERM.")
@click.pass_context
def storage_mount(
    ctx: click.Context,
    name: str,
    path: Path,
    read_only: bool,
    mode: str,
    cache_type: str | None,
    foreground: bool,
) -> None:
    """Mount a storage at PATH through FUSE (rclone). Undo with `hangar storage unmount PATH`.

    NAME is a storage name, or a bucket URI (s3://bucket/prefix); PATH an empty or missing
    directory."""
    from hangar.models import MountCachedConfig, MountMode, MountSpec
    from hangar.node.attach import check_target
    from hangar.node.mount import fuse_mount, is_mount_point, mount_detached
    from hangar.ui import make_progress

    def go() -> None:
        chosen = mode.strip().upper()
        if chosen not in (MountMode.MOUNT.value, MountMode.MOUNT_CACHED.value):
            raise SpecError(
                f"--mode {mode!r}: expected MOUNT or MOUNT_CACHED. To copy a storage instead, "
                "use `hangar storage download NAME DIR`."
            )
        kind = cache_type.strip().upper() if cache_type else None
        if kind is not None:
            if kind not in _TYPES:
                raise SpecError(f"--type {cache_type!r}: expected one of {', '.join(_TYPES)}.")
            if chosen != MountMode.MOUNT_CACHED.value:
                raise SpecError("--type applies only to --mode MOUNT_CACHED.")
        target = Path(os.path.abspath(path.expanduser()))
        if is_mount_point(str(target)):  # before any stat: a dead mount makes stat fail
            raise SpecError(
                f"{target} is already a mount point. To fix: `hangar storage unmount {target}` "
                "(or `umount` it), or choose another PATH.",
                "PATH",
            )
        check_target(str(target), "PATH")
        store = _open_store(name)
        spec = MountSpec(
            path=str(target),
            storage=name,
            mode=MountMode(chosen),
            where=_WHERE,
            read_only=read_only,
            cached=MountCachedConfig(type=kind) if kind else None,
        )
        created = _prepare(target)
        real = os.path.realpath(target)
        progress = make_progress()
        if foreground:
            try:
                with fuse_mount(store, spec, progress=progress, owner="foreground"):
                    _err(f"Mounted {name} at {target}. Press Ctrl-C to unmount.")
                    from hangar.node import _registry

                    record = _registry.get(real)
                    if record is not None:
                        _hold_until_signal(record.pid, record.pid_start)
            except KeyboardInterrupt:
                pass
            finally:
                for directory in created:
                    try:
                        os.rmdir(directory)
                    except OSError:
                        break
            _err(f"Unmounted {target}.")
            return
        try:
            record = mount_detached(store, spec, created=created)
        except BaseException:
            for directory in created:
                try:
                    os.rmdir(directory)
                except OSError:
                    break
            raise
        ro = ", read-only" if record.read_only else ""
        _err(
            f"Mounted {record.url} at {record.path} ({record.mode}{ro}; rclone pid {record.pid}, "
            f"log {record.log_file}).\nTo unmount: hangar storage unmount {record.path}"
        )

    _guard(ctx, go)


@click.command("unmount")
@click.argument("path", type=click.Path(path_type=Path))
@click.pass_context
def storage_unmount(ctx: click.Context, path: Path) -> None:
    """Wait for a mount's uploads, unmount it and stop its rclone.

    PATH is a mount point made by `hangar storage mount`."""
    from hangar.node.mount import unmount
    from hangar.ui import make_progress

    def go() -> None:
        record = unmount(str(path.expanduser()), progress=make_progress())
        if record is None:
            _err(f"Unmounted {path} (a FUSE mount Hangar had not recorded).")
        else:
            _err(f"Unmounted {record.url} from {record.path}.")

    _guard(ctx, go)


def register(storage_group: click.Group) -> None:
    """Add `mount` and `unmount` to the `hangar storage` commands."""
    storage_group.add_command(storage_mount)
    storage_group.add_command(storage_unmount)
