"""The raw shapes of task-YAML mappings (pydantic), and their errors as `SpecError`.

These models check keys and types only: unknown keys, a string where a mapping belongs, a
boolean written as ``yes``. Meaning (paths, stores, merging) lives in `hangar.spec_storage`.
Fields that take several shapes (``source``, ``store``) are typed ``object`` here and checked by
hand, so that every message names one YAML path and one fix.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hangar.errors import SpecError


class _Raw(BaseModel):
    # defer_build: a schema is built when first used, so a command that validates only a
    # `storage:` entry does not pay for the others at import.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)


class RawMountOptions(_Raw):
    """``config.mount``."""

    read_only: bool | None = None


class RawMountCachedOptions(_Raw):
    """``config.mount_cached``: rclone VFS-cache options; sizes/durations checked later."""

    transfers: int | None = Field(default=None, gt=0)
    buffer_size: object = None  # size: str, or a whole number of bytes
    vfs_cache_max_size: object = None
    vfs_cache_max_age: object = None  # duration: str
    vfs_read_ahead: object = None
    vfs_read_chunk_size: object = None
    vfs_read_chunk_streams: int | None = Field(default=None, ge=0)
    vfs_write_back: object = None
    read_only: bool | None = None
    type: str | None = None


class RawStorageConfig(_Raw):
    """A storage's ``config``."""

    mount: RawMountOptions | None = None
    mount_cached: RawMountCachedOptions | None = None


class RawFileMountStorage(_Raw):
    """A ``file_mounts`` value written as a mapping (current dialect, and the 2022 inline form)."""

    name: str | None = None
    source: object = None  # str | list[str]
    store: object = None  # str | list[str]
    force_stores: object = None  # list[str] (2022 inline form; same meaning as a store list)
    persistent: bool | None = None
    mode: object = None  # str, any case
    config: RawStorageConfig | None = None
    sync: object = None  # "additive" | "mirror"


class RawStorageEntry(_Raw):
    """One entry of the original dialect's top-level ``storage:``."""

    name: str | None = None
    source: object = None
    store: object = None
    force_stores: object = None
    persistent: bool | None = None
    sync: object = None


class RawStorageMount(_Raw):
    """One entry of the original dialect's top-level ``storage_mounts:``."""

    storage: str
    mount_path: str
    mode: object = None
    config: RawStorageConfig | None = None


M = TypeVar("M", bound=BaseModel)


def validate_raw(model: type[M], value: object, where: str) -> M:
    """`value` validated as `model`, or SpecError naming the first problem's YAML path."""
    if not isinstance(value, Mapping):
        raise SpecError(
            f"expected a mapping (key: value pairs), got {describe(value)}. "
            f"To fix: write a mapping with the keys {', '.join(model.model_fields)}.",
            where=where,
        )
    bad_keys = [k for k in value if not isinstance(k, str)]
    if bad_keys:
        raise SpecError(
            f"keys must be strings, got {describe(bad_keys[0])}. To fix: write a key name.",
            where=where,
        )
    try:
        return model.model_validate(dict(value))
    except ValidationError as exc:
        raise _convert(model, exc, where) from None


def did_you_mean(key: str, candidates: Sequence[str]) -> str:
    """`` Did you mean 'x'?`` for a close candidate, else ``""``."""
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def unknown_key_message(key: str, candidates: Sequence[str]) -> str:
    hint = did_you_mean(key, candidates)
    if not hint:
        hint = f" Allowed keys: {', '.join(candidates)}."
    return f"unknown key {key!r}.{hint}"


def describe(value: object) -> str:
    """A value for a message: its YAML kind and, when short, the value itself."""
    kinds = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    if value is None:
        return "null (nothing)"
    for typ, kind in kinds.items():
        if type(value) is typ:
            return f"{kind} ({value!r})" if len(repr(value)) <= 60 else kind
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def join_where(base: str, loc: Sequence[str | int]) -> str:
    out = base
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _convert(model: type[BaseModel], exc: ValidationError, where: str) -> SpecError:
    errors = exc.errors()
    # An unknown key usually explains the rest (a misspelt required key is also "missing").
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(err["loc"])
    here = join_where(where, loc)
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        return SpecError(unknown_key_message(str(loc[-1]), _fields_at(model, loc[:-1])), here)
    if kind == "missing":
        return SpecError(f"missing required key {loc[-1]!r}. To fix: add it.", here)
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return SpecError(
            f"expected a mapping (key: value pairs), got {describe(value)}. To fix: write "
            f"the keys it takes ({', '.join(_fields_at(model, loc))}) under it.",
            here,
        )
    if kind == "bool_type":
        return SpecError(
            f"expected true or false, got {describe(value)}. To fix: write true or false.", here
        )
    if kind == "string_type":
        return SpecError(
            f"expected a string, got {describe(value)}. To fix: quote the value.", here
        )
    if kind in ("int_type", "int_from_float"):
        return SpecError(
            f"expected a whole number, got {describe(value)}. To fix: write a number without "
            "quotes, e.g. 4.",
            here,
        )
    if kind in ("greater_than", "greater_than_equal"):
        ctx = err.get("ctx") or {}
        bound = ctx.get("gt", ctx.get("ge"))
        op = ">" if kind == "greater_than" else ">="
        return SpecError(
            f"must be a whole number {op} {bound}, got {value!r}. To fix: use a number "
            f"{op} {bound}.",
            here,
        )
    return SpecError(f"{err['msg']} (got {describe(value)}). To fix: correct the value.", here)


def _fields_at(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """Field names of the (nested) model found at `loc`; [] when it cannot be resolved."""
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None or not isinstance(part, str) or part not in current.model_fields:
            return []
        current = _model_in(current.model_fields[part].annotation)
    return list(current.model_fields) if current is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None
