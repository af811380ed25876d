"""The Python API, mirroring `sky.Storage`: build storages in code, upload, delete, launch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hangar.models import MountMode, StorageSpec, Task
from hangar.progress import NullProgress, ProgressSink
from hangar.spec import parse_task
from hangar.storage import delete as delete_storage
from hangar.storage import download as download_storage
from hangar.storage import ensure, storage_lock
from hangar.storage import upload as upload_storage
from hangar.stores import parse_uri
from hangar.sync import SyncReport
from hangar.sync.download import DownloadResult

if TYPE_CHECKING:  # the launcher (mounts, executors) is imported only when used
    from hangar.launcher import LaunchPlan


class Storage:
    """A storage object: `Storage(name=..., source=..., stores=[...], persistent=..., mode=...)`.

    `source` is a local directory, a list of local paths, or a bucket URI; with no source the
    storage is an empty scratch bucket. Validation follows the task YAML's rules exactly.
    """

    def __init__(
        self,
        name: str | None = None,
        source: str | list[str] | None = None,
        stores: list[str] | str | None = None,
        persistent: bool = True,
        mode: str | MountMode = MountMode.MOUNT,
        sync: str | None = None,
    ) -> None:
        if name is None and isinstance(source, str) and (parsed := parse_uri(source)):
            name = parsed.bucket
        entry: dict[str, Any] = {"name": name, "persistent": persistent}
        if source is not None:
            entry["source"] = source
        if stores:
            entry["force_stores"] = [stores] if isinstance(stores, str) else list(stores)
        if sync:
            entry["sync"] = sync
        task = parse_task({"storage": [entry]}, {})
        self.spec: StorageSpec = task.storages[0]
        self.mode = MountMode(str(mode).upper())

    @property
    def name(self) -> str:
        return self.spec.name

    def _task(self) -> Task:
        return Task(
            name=None,
            workdir=None,
            envs={},
            secrets={},
            setup=None,
            run=None,
            num_nodes=1,
            resources=None,
            storages=(self.spec,),
            mounts=(),
            copies=(),
        )

    def plan(self) -> LaunchPlan:
        """What `upload()` would do; changes nothing."""
        from hangar.launcher import plan_launch

        return plan_launch(self._task())

    def upload(
        self,
        progress: ProgressSink | None = None,
        command: str = "hangar.Storage.upload",
        full: bool = False,
    ) -> list[SyncReport]:
        """Create the buckets if needed and sync the source into each (incrementally).
        `full` lists the bucket even when the manifest of the last sync could stand in."""
        progress = progress or NullProgress()
        from hangar.launcher import preflight

        preflight(self._task())  # the same checks a launch makes (ensure checks the buckets)
        with storage_lock(self.name, progress):
            stores = ensure(self.spec, command=command, mode=str(self.mode))
            return upload_storage(self.spec, stores, progress=progress, full=full)

    def delete(self) -> None:
        """Delete the buckets Hangar created for this storage and forget it."""
        delete_storage(self.name)


def download(
    name_or_uri: str, directory: str | Path, progress: ProgressSink | None = None
) -> DownloadResult:
    """Download a storage (by catalog name) or a bucket URI (optionally a prefix) to `directory`."""
    return download_storage(name_or_uri, directory, progress)


def launch(task: Task, progress: ProgressSink | None = None, *, cluster: str | None = None) -> int:
    """Run `task`; returns its exit code. One node runs on this machine; `num_nodes: N` runs
    on the Ray cluster at `cluster` (``host:port``; default: RAY_ADDRESS), as
    ``hangar launch --cluster`` does."""
    from hangar.launcher import launch as do_launch

    return do_launch(task, progress=progress, cluster=cluster)
