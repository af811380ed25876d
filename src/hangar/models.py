"""The validated, frozen task model that `hangar.spec` produces and the rest of Hangar consumes.

Nothing here does I/O. Paths are already expanded (``~``, ``$VAR``) and absolute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class MountMode(StrEnum):
    MOUNT = "MOUNT"
    COPY = "COPY"
    MOUNT_CACHED = "MOUNT_CACHED"


class SyncPolicy(StrEnum):
    ADDITIVE = "additive"  # objects that exist only in the bucket stay
    MIRROR = "mirror"  # local deletions are propagated


@dataclass(frozen=True)
class LocalRoot:
    """One local path feeding a storage, and the key prefix its contents land under.

    A directory source is ``LocalRoot("/abs/dir", "")``. In a list source each element is
    ``LocalRoot("/abs/elem", "elem")`` (its basename): a file lands at key ``elem`` (at the bucket
    root), a directory's contents under ``elem/``. The spec cannot tell files from directories (it
    does no I/O), so it writes the prefix without a trailing ``/``; consumers must treat
    ``"elem"`` and ``"elem/"`` alike for a directory. Whether the path exists / is a file or a
    directory is checked later (preflight), not here.
    """

    path: str
    prefix: str
    where: str  # YAML location, for error messages


@dataclass(frozen=True)
class StorageSpec:
    """A storage object: one bucket name, its source, and the stores that keep it."""

    name: str  # bucket name (for a bucket-URI source: the URI's bucket)
    where: str  # YAML location of the declaration, e.g. "file_mounts./data" or "storage[0]"
    local_roots: tuple[LocalRoot, ...] = ()  # empty when the source is a bucket URI or absent
    bucket_uri: str | None = None  # set when the source is an existing bucket (s3://b/prefix)
    stores: tuple[str, ...] = ()  # canonical store types in order; () = the default store
    persistent: bool = True
    sync: SyncPolicy = SyncPolicy.ADDITIVE
    source_display: str = ""  # the source as the user wrote it (expanded), for tables

    @property
    def is_scratch(self) -> bool:
        """A name alone: an empty bucket created for the task to write into."""
        return not self.local_roots and self.bucket_uri is None

    @property
    def is_external(self) -> bool:
        """Backed by a bucket the user already has (Hangar neither uploads nor deletes it)."""
        return self.bucket_uri is not None


@dataclass(frozen=True)
class MountCachedConfig:
    """`config.mount_cached` options (validated; only allowed with MOUNT_CACHED)."""

    transfers: int | None = None
    buffer_size: str | None = None
    vfs_cache_max_size: str | None = None
    vfs_cache_max_age: str | None = None
    vfs_read_ahead: str | None = None
    vfs_read_chunk_size: str | None = None
    vfs_read_chunk_streams: int | None = None
    vfs_write_back: str | None = None
    read_only: bool | None = None
    type: str | None = None  # MODEL_CHECKPOINT_RO, MODEL_CHECKPOINT_RW, DATASET_RO, DATASET_RW


@dataclass(frozen=True)
class MountSpec:
    """Attach `storage` at `path` (absolute) in `mode`."""

    path: str
    storage: str  # StorageSpec.name
    mode: MountMode
    where: str
    read_only: bool = False
    cached: MountCachedConfig | None = None
    # For COPY of an existing bucket: the URI's key prefix or single object to download.
    subpath: str = ""


@dataclass(frozen=True)
class FileCopy:
    """A plain `file_mounts` entry `/remote/path: ~/local/path`: copied in before setup."""

    path: str  # destination (absolute)
    source: str  # local source (absolute; file or directory)
    where: str


@dataclass(frozen=True)
class Task:
    name: str | None
    workdir: str | None
    envs: dict[str, str]
    secrets: dict[str, str]
    setup: str | None
    run: str | None
    num_nodes: int
    resources: dict[str, object] | None
    storages: tuple[StorageSpec, ...]
    mounts: tuple[MountSpec, ...]
    copies: tuple[FileCopy, ...]
    warnings: tuple[str, ...] = field(default=())
    source_path: str | None = None  # the YAML file, when loaded from one

    def storage(self, name: str) -> StorageSpec:
        for spec in self.storages:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @classmethod
    def from_yaml(cls, path: str, env: dict[str, str] | None = None) -> Task:
        """Load and validate a task YAML file; `env` overrides `envs` (like ``--env K=V``)."""
        from hangar.spec import load_task

        return load_task(path, env or {})
