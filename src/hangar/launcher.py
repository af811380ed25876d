"""Orchestration: task -> storages (ensure + upload) -> attach -> run -> teardown.

`plan_launch` validates everything that can be checked without changing anything (the disk
state of sources and mount paths included) and says what a launch would do; `--dry-run` stops
there. `launch` then does it. Whatever happens after the first bucket is touched, mounts are
undone and storages with `persistent: false` are deleted.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from hangar._malloc import release_freed_memory
from hangar.catalog import Catalog
from hangar.config import logs_dir
from hangar.errors import BucketExists, BucketNotFound, HangarError, SpecError, StorageNotFound
from hangar.models import MountMode, MountSpec, StorageSpec, SyncPolicy, Task
from hangar.progress import NullProgress, ProgressSink
from hangar.spec import check_single_node
from hangar.storage import delete, ensure, open_stores, storage_lock, taken_message, upload
from hangar.stores.base import Store
from hangar.sync.checksum import ChecksumCache
from hangar.sync.plan import Plan, make_plan
from hangar.sync.scan import scan_local


@dataclass
class StoragePlan:
    spec: StorageSpec
    stores: list[Store]
    actions: list[str] = field(default_factory=list)
    sync: Plan | None = None


@dataclass
class LaunchPlan:
    task: Task
    storages: list[StoragePlan]

    def lines(self) -> list[str]:
        """A human-readable plan, one line per decision."""
        out = [f"Task {self.task.name or '(unnamed)'}: {len(self.storages)} storage(s)"]
        for sp in self.storages:
            persist = "persistent" if sp.spec.persistent else "deleted after the task"
            out.append(f"  storage {sp.spec.name} ({persist})")
            out.extend(f"    - {a}" for a in sp.actions)
            if sp.sync is not None:
                out.append(
                    f"    - upload {len(sp.sync.uploads)} file(s), "
                    f"{_human(sp.sync.bytes_to_send)}: {sp.sync.summary()}"
                )
                for item in sp.sync.uploads[:20]:
                    out.append(f"        {item.action}: {item.key} ({item.reason})")
                if len(sp.sync.uploads) > 20:
                    out.append(f"        ... and {len(sp.sync.uploads) - 20} more")
        for c in self.task.copies:
            out.append(f"  copy {c.source} -> {c.path}")
        for m in self.task.mounts:
            ro = ", read-only" if m.read_only else ""
            sub = f"/{m.subpath}" if m.subpath else ""
            out.append(f"  {m.mode} {m.storage}{sub} -> {m.path}{ro}")
        where = f" on each of {self.task.num_nodes} nodes" if self.task.num_nodes > 1 else ""
        for phase in ("setup", "run"):
            if getattr(self.task, phase):
                out.append(f"  then {phase}{where}")
        return out


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def preflight(task: Task, cluster: str | None = None) -> None:
    """Check the disk state the task depends on; raise SpecError before anything changes.

    A multi-node task needs `cluster` (a Ray address) and Ray installed; its mount paths are
    checked on the nodes, not here.
    """
    check_single_node(task, cluster)
    if task.num_nodes > 1:
        from hangar.executors.ray import check_reachable, import_ray, node_bundle

        node_bundle(task.resources)  # SpecError for resources Ray cannot place
        import_ray()
        assert cluster is not None
        check_reachable(cluster)
    if task.workdir and not Path(task.workdir).is_dir():
        raise SpecError(
            f"{task.workdir} is not a directory. To fix: create it or correct workdir.", "workdir"
        )
    roots = [r for s in task.storages for r in s.local_roots]
    for root in roots:
        path = Path(root.path)
        if not path.exists():
            raise SpecError(
                f"local source {root.path} does not exist. To fix: create it or correct the path.",
                root.where,
            )
        if path.is_file() and not root.prefix:
            raise SpecError(
                f"{root.path} is a single file; a single local file as a source must be written "
                f"as a list. To fix: source: [{root.path}]",
                root.where,
            )
    for copy in task.copies:
        if not Path(copy.source).exists():
            raise SpecError(
                f"local path {copy.source} does not exist. To fix: create it or correct the path.",
                copy.where,
            )
    targets = [(m.path, m.where) for m in task.mounts] + [(c.path, c.where) for c in task.copies]
    for target, where in targets:
        real = os.path.realpath(target)
        for root in roots:
            src = os.path.realpath(root.path)
            if real == src or real.startswith(src + os.sep) or src.startswith(real + os.sep):
                raise SpecError(
                    f"mount path {target} overlaps the local source {root.path}; attaching it "
                    "there would hide or overwrite your files. To fix: choose another mount_path.",
                    where,
                )
        if task.num_nodes == 1:
            from hangar.node.attach import check_target  # FUSE helpers: only when needed

            check_target(target, where)


def _mode_for(task: Task, spec: StorageSpec) -> str:
    modes = sorted({str(m.mode) for m in task.mounts if m.storage == spec.name})
    return ",".join(modes)


def plan_launch(task: Task, cluster: str | None = None) -> LaunchPlan:
    """Validate `task` against the disk and the stores, and say what launching would do.

    Reads only: no bucket, object or catalog row is created, changed or deleted. `cluster`:
    the Ray address for a multi-node task (`--cluster`; default RAY_ADDRESS).
    """
    preflight(task, _cluster_for(task, cluster))
    plans: list[StoragePlan] = []
    with Catalog() as cat, ChecksumCache() as checksums:
        for spec in task.storages:
            stores = open_stores(spec)
            sp = StoragePlan(spec, stores)
            record = cat.get(spec.name)
            remote: dict[str, object] = {}
            for store in stores:
                known = record.store(store.scheme) if record else None
                exists = store.bucket_exists()
                if spec.is_external:
                    if not exists:
                        raise BucketNotFound(
                            f"{spec.where}: bucket {store.url} does not exist (or is not "
                            "visible with your credentials)."
                        )
                    sp.actions.append(f"attach existing bucket {store.url} (never deleted)")
                elif known is None and exists:
                    raise BucketExists(taken_message(spec, store))
                elif exists:
                    sp.actions.append(f"reuse bucket {store.url} ({known.status if known else ''})")
                else:
                    sp.actions.append(f"create bucket {store.url}")
            if spec.local_roots:
                scan = scan_local(spec.local_roots)
                first = stores[0]
                if first.bucket_exists():
                    remote = {o.key: o for o in first.list()}
                sp.sync = make_plan(
                    scan.files,
                    remote,  # type: ignore[arg-type]
                    mirror=spec.sync is SyncPolicy.MIRROR,
                    md5_of=checksums.md5,
                    crc32_of=checksums.crc32,
                )
            plans.append(sp)
    return LaunchPlan(task, plans)


def _cluster_for(task: Task, cluster: str | None) -> str | None:
    """The Ray address a multi-node task runs on (`--cluster` > RAY_ADDRESS), else None."""
    if task.num_nodes == 1:
        return None
    from hangar.executors.ray import cluster_address

    return cluster_address(cluster)


def _forget_manifests_of_writable_mounts(task: Task, attached: dict[str, Store]) -> None:
    """A task that can write through a mount changes the bucket behind the re-sync manifest:
    forget it, so the next upload lists the bucket instead of trusting the manifest."""
    from hangar.node.mount import effective_read_only

    writable = {
        attached[m.storage].url
        for m in task.mounts
        if m.mode is not MountMode.COPY and not effective_read_only(m)
    }
    if writable:
        with Catalog() as cat:
            for url in writable:
                cat.manifest_forget(url)


def new_task_id(task: Task) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{task.name or 'task'}-{stamp}-{secrets.token_hex(3)}"


def launch(
    task: Task,
    *,
    progress: ProgressSink | None = None,
    out: BinaryIO | None = None,
    command: str = "hangar launch",
    cluster: str | None = None,
) -> int:
    """Run `task`: upload its storages, attach them, run setup and run, clean up.

    One node runs here; `num_nodes: N` runs on N nodes of the Ray cluster at `cluster`
    (default: RAY_ADDRESS), after one upload from here. Returns the exit code of the task
    (setup's when setup fails; the first failing node's on several nodes). Raises HangarError
    for failures of Hangar's own steps (spec, stores, mounts, the cluster).
    """
    progress = progress or NullProgress()
    address = _cluster_for(task, cluster)
    for warning in task.warnings:
        if address and warning.startswith("resources:"):
            continue  # used: cpus and accelerators size each node's reservation
        progress.note(f"warning: {warning}")
    preflight(task, address)
    task_id = new_task_id(task)
    log_dir = logs_dir() / task_id
    log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    attached: dict[str, Store] = {}
    to_delete: list[str] = []
    try:
        for spec in task.storages:
            with storage_lock(spec.name, progress):
                if not spec.persistent and not spec.is_external:
                    to_delete.append(spec.name)
                stores = ensure(spec, command=command, mode=_mode_for(task, spec))
                reports = upload(spec, stores, progress=progress)
            for store, report in zip(stores, reports, strict=False):
                sent = report.result.uploaded if report.result else 0
                sent_bytes = report.result.bytes_sent if report.result else 0
                progress.note(
                    f"{spec.name} -> {store.url}: {report.plan.summary()}; "
                    f"sent {sent} file(s), {_human(sent_bytes)}"
                )
            attached[spec.name] = stores[0]
        _forget_manifests_of_writable_mounts(task, attached)
        if address is not None:
            from hangar.executors.ray import run_on_cluster

            release_freed_memory()  # the uploads are done; the task runs while we wait
            return run_on_cluster(
                task,
                [(m, attached[m.storage].url) for m in task.mounts],
                task_id=task_id,
                address=address,
                log_dir=log_dir,
                out=out,
                progress=progress,
            )
        from hangar.executors.local import NodeContext, run_task
        from hangar.node.attach import attach_all

        mounts: list[tuple[MountSpec, Store]] = [(m, attached[m.storage]) for m in task.mounts]
        with attach_all(mounts, task.copies, progress):
            progress.note(f"task {task_id}: logs in {log_dir}")
            release_freed_memory()  # the transfers are done; the task runs beside us
            return run_task(
                setup=task.setup,
                run=task.run,
                envs={**task.envs, **task.secrets},
                node=NodeContext(task_id=task_id),
                workdir=task.workdir,
                log_dir=log_dir,
                out=out,
            )
    finally:
        for name in to_delete:
            try:
                outcome = delete(name)
            except StorageNotFound:
                continue  # never recorded: nothing was created
            except HangarError as exc:
                progress.note(f"warning: could not delete non-persistent storage {name}: {exc}")
            else:
                for url in outcome.deleted:
                    progress.note(f"deleted non-persistent storage {name} ({url})")
