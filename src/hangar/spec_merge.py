"""Whole-task storage rules: one `StorageSpec` per name, mount paths that do not clash, and
bucket names each store accepts.

Storage identity is the name (for a bucket-URI source, the URI's bucket). Several declarations
of one name merge when they agree: a place that leaves `store`, `persistent` or `sync` unsaid
agrees with any value; different local sources are united. A bucket URI naming the bucket of a
declared storage (``name: data, source: ~/d, store: s3`` and ``/m: s3://data``) is a mount of that
storage, as in SkyPilot's examples, not a second storage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from hangar.config import default_store
from hangar.errors import SpecError
from hangar.models import LocalRoot, StorageSpec, SyncPolicy
from hangar.spec_paths import is_below
from hangar.spec_storage import Decl
from hangar.stores.naming import validate_bucket_name

T = TypeVar("T")


def build_storages(decls: Sequence[Decl]) -> tuple[StorageSpec, ...]:
    """Fold the declarations into storages, in order of first declaration; check bucket names."""
    groups: dict[str, list[Decl]] = {}
    for decl in decls:
        groups.setdefault(decl.name, []).append(decl)
    storages = tuple(_merge(name, group) for name, group in groups.items())
    for spec in storages:
        if spec.is_external:
            continue  # an existing bucket: its name is whatever the cloud accepted back then
        for store in spec.stores or (default_store(),):  # where an unnamed store goes
            try:
                validate_bucket_name(store, spec.name)
            except SpecError as exc:
                raise SpecError(exc.message, f"{spec.where}.name") from None
    return storages


def _merge(name: str, group: list[Decl]) -> StorageSpec:
    owned = [d for d in group if d.kind != "uri"]
    refs = [d for d in group if d.kind == "uri"]
    persistent = _agree(name, group, "persistent", lambda d: d.persistent)
    if not owned:
        first = refs[0]
        assert first.uri is not None
        for other in refs[1:]:
            if other.uri != first.uri:
                raise SpecError(
                    f"two different buckets are named {name!r}: {first.display!r} at "
                    f"{first.where} and {other.display!r} here. Hangar identifies a storage by "
                    "its bucket name. To fix: mount one of them only, or copy one bucket's data "
                    "into a bucket with another name.",
                    other.where,
                )
        return StorageSpec(
            name=name,
            where=first.where,
            bucket_uri=first.uri.url,
            stores=(first.uri.store_type,),
            persistent=True if persistent is None else persistent,
            source_display=_display(refs),
        )
    stores = _agree(name, owned, "store", lambda d: d.stores)
    sync = _agree(name, owned, "sync", lambda d: d.sync)
    for ref in refs:
        assert ref.uri is not None
        if ref.uri.account is not None or (stores is not None and ref.uri.store_type not in stores):
            declared = ", ".join(stores) if stores else "the default store"
            raise SpecError(
                f"{ref.display!r} names the bucket of storage {name!r}, which {owned[0].where} "
                f"keeps in {declared}. To fix: refer to it with the same store, or give one of "
                "them another name.",
                ref.where,
            )
    if stores is None and refs:
        stores = tuple(dict.fromkeys(r.uri.store_type for r in refs if r.uri is not None))
    return StorageSpec(
        name=name,
        where=owned[0].where,
        local_roots=_union_roots(name, owned),
        stores=stores or (),
        persistent=True if persistent is None else persistent,
        sync=sync or SyncPolicy.ADDITIVE,
        source_display=_display(owned),
    )


def _agree(name: str, decls: list[Decl], key: str, get: Callable[[Decl], T | None]) -> T | None:
    """The value the declarations give for `key` (None if none does); SpecError if two differ.

    Store lists agree when they hold the same stores in any order.
    """
    first: Decl | None = None
    for decl in decls:
        value = get(decl)
        if value is None:
            continue
        if first is None:
            first = decl
            continue
        base = get(first)
        same = (
            set(value) == set(base)
            if isinstance(value, tuple) and isinstance(base, tuple)
            else value == base
        )
        if not same:
            key = decl.store_key if key == "store" else key
            raise SpecError(
                f"storage {name!r} is declared with different {key} values: {first.where} says "
                f"{_show(base)}, this place says {_show(value)}. To fix: make them agree, or "
                f"drop {key} from one of them.",
                f"{decl.where}.{key}",
            )
    return get(first) if first is not None else None


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _union_roots(name: str, decls: list[Decl]) -> tuple[LocalRoot, ...]:
    roots: dict[tuple[str, str], LocalRoot] = {}
    by_prefix: dict[str, LocalRoot] = {}
    for decl in decls:
        for root in decl.roots:
            if (root.path, root.prefix) in roots:
                continue
            clash = by_prefix.get(root.prefix) if root.prefix else None
            if clash is not None:
                raise SpecError(
                    f"{root.path!r} and {clash.path!r} ({clash.where}) would both land at "
                    f"{root.prefix!r} in storage {name!r}. To fix: rename one, or upload them "
                    "to different storages.",
                    root.where,
                )
            roots[(root.path, root.prefix)] = root
            by_prefix[root.prefix] = root
    return tuple(roots.values())


def _display(decls: list[Decl]) -> str:
    return ", ".join(dict.fromkeys(d.display for d in decls if d.display))


def check_mount_paths(places: Sequence[tuple[str, str]]) -> None:
    """SpecError when two of the (path, where) mounts/copies, in YAML order, use one path or
    nest; the error names the later one."""
    for i, (path, where) in enumerate(places):
        for other, other_where in places[:i]:
            if path == other:
                raise SpecError(
                    f"{other_where} and this entry both use {path!r}. To fix: give each "
                    "mount its own path.",
                    where,
                )
            if is_below(path, other) or is_below(other, path):
                inner, outer = (path, other) if is_below(path, other) else (other, path)
                raise SpecError(
                    f"{path!r} and {other!r} ({other_where}) nest: {inner!r} lies inside "
                    f"{outer!r}, so one would hide or capture the other. To fix: use separate "
                    "paths, e.g. side by side.",
                    where,
                )
