"""The raw shapes of task-YAML mappings (pydantic), and their errors as `SpecError`.
(The flat `storage:` entry is checked by hand, without pydantic: `hangar.spec_messages`.)

These models check keys and types only: unknown keys, a string where a mapping belongs, a
boolean written as ``yes``. Meaning (paths, stores, merging) lives in `hangar.spec_storage`.
Fields that take several shapes (``source``, ``store``) are typed ``object`` here and checked by
hand, so that every message names one YAML path and one fix.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hangar.errors import SpecError
from hangar.spec_messages import (
    check_mapping,
    describe,
    join_where,
    not_a_bool,
    not_a_string,
    unknown_key_message,
)


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


class RawStorageMount(_Raw):
    """One entry of the original dialect's top-level ``storage_mounts:``."""

    storage: str
    mount_path: str
    mode: object = None
    config: RawStorageConfig | None = None


M = TypeVar("M", bound=BaseModel)


def validate_raw(model: type[M], value: object, where: str) -> M:
    """`value` validated as `model`, or SpecError naming the first problem's YAML path."""
    value = check_mapping(value, list(model.model_fields), where)
    try:
        return model.model_validate(dict(value))
    except ValidationError as exc:
        raise _convert(model, exc, where) from None


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
        return SpecError(not_a_bool(value), here)
    if kind == "string_type":
        return SpecError(not_a_string(value), here)
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
