"""Storage declarations and mounts, read from `file_mounts`, `storage` and `storage_mounts`.

Each YAML entry becomes a `Decl` (what one place says about one storage) and, where it attaches
the storage somewhere, a `MountSpec` or `FileCopy`. `hangar.spec_merge` then folds the `Decl`s that
share a name into one `StorageSpec` and checks the task as a whole (mount clashes, bucket names).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from hangar.errors import SpecError
from hangar.models import (
    FileCopy,
    LocalRoot,
    MountCachedConfig,
    MountMode,
    MountSpec,
    SyncPolicy,
)
from hangar.spec_env import EnvScope
from hangar.spec_messages import RawStorageEntry, describe, did_you_mean
from hangar.spec_paths import local_path, mount_path, no_trailing_slash
from hangar.stores.uri import ParsedUri, canonical_store_type, parse_uri, uri_scheme

if TYPE_CHECKING:  # pydantic (hangar.spec_schema) is loaded only for the mappings that need it
    from hangar.spec_schema import (
        RawFileMountStorage,
        RawMountCachedOptions,
        RawStorageConfig,
    )

Dialect = Literal["file_mounts", "storage"]


@dataclass
class Decl:
    """What one YAML place says about the storage called `name`.

    `stores`, `persistent` and `sync` are None where that place does not say (so it agrees with
    any other declaration). For a bucket-URI source, `uri` is the bucket (prefix dropped) and
    `stores` is the URI's store.
    """

    name: str
    where: str
    kind: Literal["local", "scratch", "uri"]
    roots: list[LocalRoot] = field(default_factory=list)
    uri: ParsedUri | None = None
    subpath: str = ""  # the URI's prefix (or object), for mounts of this declaration
    stores: tuple[str, ...] | None = None
    persistent: bool | None = None
    sync: SyncPolicy | None = None
    display: str = ""
    store_key: str = "store"  # how this place spelt it: "store" or "force_stores"


@dataclass
class Collected:
    """Everything read from the three storage sections, in declaration order."""

    decls: list[Decl] = field(default_factory=list)
    mounts: list[MountSpec] = field(default_factory=list)
    copies: list[FileCopy] = field(default_factory=list)
    places: list[tuple[str, str]] = field(default_factory=list)  # (path, where) of both kinds

    def mount(self, spec: MountSpec) -> None:
        self.mounts.append(spec)
        self.places.append((spec.path, spec.where))

    def copy(self, spec: FileCopy) -> None:
        self.copies.append(spec)
        self.places.append((spec.path, spec.where))


_MODES = ", ".join(m.value for m in MountMode)
_CACHE_TYPES = ("MODEL_CHECKPOINT_RO", "MODEL_CHECKPOINT_RW", "DATASET_RO", "DATASET_RW")
_SIZE = re.compile(r"^(?:off|-1|\d+(?:\.\d+)?(?:[kmgtpe]i?b?|b)?)$", re.IGNORECASE)
_DURATION = re.compile(r"^(?:off|\d+(?:\.\d+)?|(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h|d|w|M|y))+)$")


def read_file_mounts(raw: object, scope: EnvScope, cwd: str, out: Collected) -> None:
    """`file_mounts:` (current dialect, and the 2022 inline form with `force_stores`)."""
    if raw is None:
        return
    if not isinstance(raw, Mapping):
        raise SpecError(
            f"expected a mapping of mount path -> source, got {describe(raw)}. To fix: write "
            "e.g.\n  file_mounts:\n    /data: ~/data",
            where="file_mounts",
        )
    for key, value in raw.items():
        if not isinstance(key, str):
            raise SpecError(
                f"mount paths must be strings, got {describe(key)}. To fix: write an absolute "
                "path such as /data.",
                where="file_mounts",
            )
        where = f"file_mounts.{key}"
        path = mount_path(scope.substitute(key, where), where)
        if isinstance(value, str):
            _plain_file_mount(path, value, where, scope, cwd, out)
        elif isinstance(value, Mapping):
            from hangar.spec_schema import RawFileMountStorage, validate_raw

            entry = validate_raw(RawFileMountStorage, value, where)
            decl = _declare(entry, where, scope, cwd, "file_mounts")
            mode = _mode(entry.mode, f"{where}.mode")
            read_only, cached = _attach_options(entry.config, mode, where)
            out.decls.append(decl)
            out.mount(MountSpec(path, decl.name, mode, where, read_only, cached, decl.subpath))
        else:
            raise SpecError(
                f"expected a local path, a bucket URI or a storage mapping (name, source, "
                f"store, mode, ...), got {describe(value)}. To fix: e.g. '{key}: ~/data'.",
                where,
            )


def _plain_file_mount(
    path: str, value: str, where: str, scope: EnvScope, cwd: str, out: Collected
) -> None:
    """``/path: source``: a bucket URI is downloaded (a COPY mount), a local path copied in."""
    source = scope.substitute(value, where)
    uri = _parse_uri(source, where)
    if uri is None:
        out.copy(FileCopy(path, local_path(source, where, cwd), where))
        return
    no_trailing_slash(source, where, "source")
    decl = _uri_ref(uri, where, None, source)
    out.decls.append(decl)
    out.mount(MountSpec(path, decl.name, MountMode.COPY, where, subpath=uri.prefix))


def read_storage(raw: object, scope: EnvScope, cwd: str, out: Collected) -> None:
    """The original dialect's `storage:` (a list, or one mapping). Names must be unique."""
    seen: dict[str, str] = {}
    for where, value in _entries(raw, "storage"):
        entry = RawStorageEntry.check(value, where)
        decl = _declare(entry, where, scope, cwd, "storage")
        if decl.name in seen:
            raise SpecError(
                f"storage {decl.name!r} is declared twice: at {seen[decl.name]} and here. "
                "To fix: give each storage a unique name (mount one storage at several paths "
                "with several storage_mounts entries).",
                where=f"{where}.name",
            )
        seen[decl.name] = where
        out.decls.append(decl)


def read_storage_mounts(raw: object, scope: EnvScope, out: Collected) -> None:
    """The original dialect's `storage_mounts:`; call after every storage is declared."""
    declared = {d.name: d for d in out.decls if d.where.startswith("storage")}
    names = list(dict.fromkeys(d.name for d in out.decls))
    for where, value in _entries(raw, "storage_mounts"):
        from hangar.spec_schema import RawStorageMount, validate_raw

        entry = validate_raw(RawStorageMount, value, where)
        name = scope.substitute(entry.storage, f"{where}.storage")
        if name not in names:
            listed = ", ".join(repr(n) for n in names) or "none"
            raise SpecError(
                f"storage {name!r} is not declared (declared storages: {listed})."
                f"{did_you_mean(name, names)} To fix: declare it under storage: "
                "(name, source) or mount one of the declared names.",
                where=f"{where}.storage",
            )
        path_where = f"{where}.mount_path"
        path = mount_path(scope.substitute(entry.mount_path, path_where), path_where)
        mode = _mode(entry.mode, f"{where}.mode")
        read_only, cached = _attach_options(entry.config, mode, where)
        subpath = declared[name].subpath if name in declared else ""
        out.mount(MountSpec(path, name, mode, where, read_only, cached, subpath))


def _entries(raw: object, key: str) -> list[tuple[str, object]]:
    if raw is None:
        return []
    if isinstance(raw, Mapping):
        return [(key, raw)]
    if isinstance(raw, list):
        return [(f"{key}[{i}]", item) for i, item in enumerate(raw)]
    raise SpecError(
        f"expected a list of mappings, got {describe(raw)}. To fix: write one '- ' entry per "
        f"{'storage (name, source)' if key == 'storage' else 'mount (storage, mount_path)'}.",
        where=key,
    )


def _declare(
    entry: RawFileMountStorage | RawStorageEntry,
    where: str,
    scope: EnvScope,
    cwd: str,
    dialect: Dialect,
) -> Decl:
    """One storage mapping -> Decl, applying SkyPilot's name/source rules."""
    name = None
    if entry.name is not None:
        name = scope.substitute(entry.name, f"{where}.name")
        if not name:
            raise SpecError("the name is empty. To fix: write a bucket name.", f"{where}.name")
    stores = _stores(entry, where, scope)
    store_key = "force_stores" if entry.force_stores is not None else "store"
    persistent = entry.persistent
    sync = _sync(entry.sync, f"{where}.sync")
    source = entry.source
    if source is None:
        if name is None:
            raise SpecError(
                "a storage needs a name (an empty bucket created for the task) or a source "
                "(a local path or a bucket URI), or both. To fix: add name: or source:.",
                where,
            )
        return Decl(name, where, "scratch", [], None, "", stores, persistent, sync, "", store_key)
    if isinstance(source, list):
        roots = _list_source(source, f"{where}.source", scope, cwd)
        display = ", ".join(r.path for r in roots)
    elif isinstance(source, str):
        text = scope.substitute(source, f"{where}.source")
        uri = _parse_uri(text, f"{where}.source")
        no_trailing_slash(text, f"{where}.source", "source")
        if uri is not None:
            return _uri_decl(name, uri, text, where, stores, store_key, persistent, sync, dialect)
        path = local_path(text, f"{where}.source", cwd)
        roots, display = [LocalRoot(path, "", f"{where}.source")], path
    else:
        raise SpecError(
            f"expected a path, a bucket URI or a list of paths, got {describe(source)}. "
            "To fix: e.g. source: ~/data, source: s3://bucket or source: [~/a, ~/b].",
            f"{where}.source",
        )
    if name is None:
        raise SpecError(
            "a local source needs a name: the bucket it is uploaded to. To fix: add "
            "name: <bucket-name>.",
            where,
        )
    return Decl(name, where, "local", roots, None, "", stores, persistent, sync, display, store_key)


def _uri_decl(
    name: str | None,
    uri: ParsedUri,
    text: str,
    where: str,
    stores: tuple[str, ...] | None,
    store_key: str,
    persistent: bool | None,
    sync: SyncPolicy | None,
    dialect: Dialect,
) -> Decl:
    if name is not None and dialect == "file_mounts":
        raise SpecError(
            f"a bucket-URI source takes no name: the bucket is {uri.bucket!r}, from the URI. "
            "To fix: drop name: (or, to create a new bucket, drop the URI and keep name:).",
            f"{where}.name",
        )
    if name is not None and name != uri.bucket:
        raise SpecError(
            f"name {name!r} differs from the bucket of source {text!r}. In storage: the name "
            f"is the bucket, which storage_mounts refer to. To fix: set name: {uri.bucket}.",
            f"{where}.name",
        )
    if stores is not None and any(s != uri.store_type for s in stores):
        raise SpecError(
            f"store {', '.join(stores)} disagrees with source {text!r}, which is in "
            f"{uri.store_type}. To fix: drop {store_key} (the URI says where the bucket is).",
            f"{where}.{store_key}",
        )
    if sync is not None:
        raise SpecError(
            "sync applies to storages uploaded from a local source; this source is an existing "
            "bucket, which Hangar never uploads to. To fix: remove sync:.",
            f"{where}.sync",
        )
    return _uri_ref(uri, where, persistent, text)


def _uri_ref(uri: ParsedUri, where: str, persistent: bool | None, text: str) -> Decl:
    """A reference to an existing bucket: named after it, in the URI's store."""
    root = ParsedUri(uri.store_type, uri.bucket, "", uri.account)
    return Decl(
        name=uri.bucket,
        where=where,
        kind="uri",
        uri=root,
        subpath=uri.prefix,
        stores=(uri.store_type,),
        persistent=persistent,
        display=text,
    )


def _list_source(items: list[object], where: str, scope: EnvScope, cwd: str) -> list[LocalRoot]:
    """A list source: each path lands at the bucket root under its basename."""
    if not items:
        raise SpecError(
            "the source list is empty. To fix: list at least one local path, or drop source: "
            "for an empty bucket.",
            where,
        )
    roots: list[LocalRoot] = []
    by_base: dict[str, str] = {}
    for i, item in enumerate(items):
        here = f"{where}[{i}]"
        if not isinstance(item, str):
            raise SpecError(
                f"expected a local path, got {describe(item)}. To fix: quote the path.", here
            )
        text = scope.substitute(item, here)
        if uri_scheme(text) is not None:
            raise SpecError(
                f"{text!r}: a source list holds local paths only. To fix: mount the bucket "
                "in its own file_mounts entry (source: <uri>).",
                here,
            )
        path = local_path(text, here, cwd)
        base = posixpath.basename(path)
        if base in by_base:
            raise SpecError(
                f"{text!r} and {by_base[base]!r} would both land at {base!r} in the bucket. "
                "To fix: rename one, or list their parent directory instead.",
                here,
            )
        by_base[base] = text
        roots.append(LocalRoot(path, base, here))
    return roots


def _stores(
    entry: RawFileMountStorage | RawStorageEntry, where: str, scope: EnvScope
) -> tuple[str, ...] | None:
    """`store` (a string or list) or the 2022 `force_stores` list, canonical and de-duplicated."""
    if entry.store is not None and entry.force_stores is not None:
        raise SpecError(
            "store and force_stores say the same thing. To fix: keep one (store: [s3, gcs]).",
            f"{where}.force_stores",
        )
    key = "store" if entry.store is not None else "force_stores"
    raw = entry.store if entry.store is not None else entry.force_stores
    if raw is None:
        return None
    items: list[tuple[str, object]]
    if isinstance(raw, str):
        items = [(f"{where}.{key}", raw)]
    elif isinstance(raw, list):
        items = [(f"{where}.{key}[{i}]", v) for i, v in enumerate(raw)]
    else:
        raise SpecError(
            f"expected a store name or a list of them, got {describe(raw)}. To fix: e.g. "
            f"{key}: s3 or {key}: [s3, gcs].",
            f"{where}.{key}",
        )
    stores: list[str] = []
    for here, value in items:
        if not isinstance(value, str):
            raise SpecError(
                f"expected a store name, got {describe(value)}. To fix: use one of local, s3, "
                "gcs, azure, r2.",
                here,
            )
        try:
            store = canonical_store_type(scope.substitute(value, here))
        except SpecError as exc:
            raise SpecError(exc.message, here) from None
        if store not in stores:
            stores.append(store)
    return tuple(stores) or None


def _sync(raw: object, where: str) -> SyncPolicy | None:
    if raw is None:
        return None
    choices = ", ".join(p.value for p in SyncPolicy)
    if isinstance(raw, str) and raw.strip().lower() in {p.value for p in SyncPolicy}:
        return SyncPolicy(raw.strip().lower())
    shown = repr(raw) if isinstance(raw, str) else describe(raw)
    raise SpecError(
        f"sync {shown} is not a sync policy. To fix: use one of {choices} "
        "(additive keeps objects that exist only in the bucket; mirror deletes them).",
        where,
    )


def _mode(raw: object, where: str) -> MountMode:
    if raw is None:
        return MountMode.MOUNT
    if isinstance(raw, str) and raw.strip().upper() in {m.value for m in MountMode}:
        return MountMode(raw.strip().upper())
    note = ""
    if isinstance(raw, str) and raw.strip().upper() == "RCLONE":
        note = " (Hangar's MOUNT and MOUNT_CACHED modes already use rclone)"
    shown = repr(raw) if isinstance(raw, str) else describe(raw)
    raise SpecError(
        f"mode {shown} is not supported{note}. To fix: use one of {_MODES} (any case).",
        where,
    )


def _attach_options(
    config: RawStorageConfig | None, mode: MountMode, where: str
) -> tuple[bool, MountCachedConfig | None]:
    """(read_only, cached options) from a storage's `config`, checked against its mode."""
    if config is None:
        return False, None
    read_only = config.mount.read_only if config.mount is not None else None
    ro_where = f"{where}.config.mount.read_only"
    cached = None
    if config.mount_cached is not None:
        if mode is not MountMode.MOUNT_CACHED:
            raise SpecError(
                f"config.mount_cached applies only to mode MOUNT_CACHED (this mount is "
                f"{mode.value}). To fix: set mode: MOUNT_CACHED, or remove config.mount_cached.",
                f"{where}.config.mount_cached",
            )
        cached = _cached(config.mount_cached, f"{where}.config.mount_cached")
        if cached.read_only is not None:
            if read_only is not None and read_only != cached.read_only:
                raise SpecError(
                    "config.mount.read_only and config.mount_cached.read_only disagree. "
                    "To fix: keep one of them.",
                    f"{where}.config.mount_cached.read_only",
                )
            read_only, ro_where = cached.read_only, f"{where}.config.mount_cached.read_only"
    if read_only and mode is MountMode.COPY:
        raise SpecError(
            "read_only applies to MOUNT and MOUNT_CACHED; a COPY is a local copy the task may "
            "change freely. To fix: remove read_only, or use mode: MOUNT.",
            ro_where,
        )
    return bool(read_only), cached


def _cached(raw: RawMountCachedOptions, where: str) -> MountCachedConfig:
    def size(key: str) -> str | None:
        value = getattr(raw, key)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return str(value)
        if isinstance(value, str) and _SIZE.match(value.strip()):
            return value.strip()
        raise SpecError(
            f"{_bool_note(value)}expected an rclone size such as 64M, 512K or 1G (a number "
            f"with an optional unit B, K, M, G, T, P), got {describe(value)}. To fix: write "
            f"e.g. {key}: 64M.",
            f"{where}.{key}",
        )

    def duration(key: str) -> str | None:
        value = getattr(raw, key)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return str(value)
        if isinstance(value, str) and _DURATION.match(value.strip()):
            return value.strip()
        raise SpecError(
            f"{_bool_note(value)}expected an rclone duration such as 5s, 10m, 1h or 1h30m "
            f"(units ms, s, m, h, d, w, M, y; a bare number is seconds), got "
            f"{describe(value)}. To fix: write e.g. {key}: 1h.",
            f"{where}.{key}",
        )

    kind = raw.type.strip().upper() if raw.type is not None else None
    if kind is not None and kind not in _CACHE_TYPES:
        raise SpecError(
            f"type {raw.type!r} is not a cache profile. To fix: use one of "
            f"{', '.join(_CACHE_TYPES)}.",
            f"{where}.type",
        )
    return MountCachedConfig(
        transfers=raw.transfers,
        buffer_size=size("buffer_size"),
        vfs_cache_max_size=size("vfs_cache_max_size"),
        vfs_cache_max_age=duration("vfs_cache_max_age"),
        vfs_read_ahead=size("vfs_read_ahead"),
        vfs_read_chunk_size=size("vfs_read_chunk_size"),
        vfs_read_chunk_streams=raw.vfs_read_chunk_streams,
        vfs_write_back=duration("vfs_write_back"),
        read_only=raw.read_only,
        type=kind,
    )


def _bool_note(value: object) -> str:
    if isinstance(value, bool):
        return "YAML reads off/on/yes/no as booleans, so quote the value ('off'). "
    return ""


def _parse_uri(text: str, where: str) -> ParsedUri | None:
    """parse_uri with the YAML location added to its errors."""
    try:
        return parse_uri(text)
    except SpecError as exc:
        raise SpecError(exc.message, where) from None
