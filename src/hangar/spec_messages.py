"""Pydantic-free pieces of the task-YAML checks: how values are described in messages, and the
flat original-dialect `storage:` entry, checked by hand.

A `storage:` entry has six keys and only two typed ones (`name`, `persistent`; the others take
several shapes and are checked in `hangar.spec_storage`), so it needs no schema library; and it
is the only mapping that `hangar storage upload` and `hangar.Storage(...)` declare, so those
load no pydantic (~0.17 s of every `storage upload`, half of a no-change re-sync of 10,000
files). Its messages are the ones `hangar.spec_schema` gives for the pydantic-checked mappings.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

from hangar.errors import SpecError


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


def not_a_string(value: object) -> str:
    """The message for a value where a string belongs (a pydantic shape's or the hand check's)."""
    return f"expected a string, got {describe(value)}. To fix: quote the value."


def not_a_bool(value: object) -> str:
    """The message for a value where true or false belongs."""
    return f"expected true or false, got {describe(value)}. To fix: write true or false."


def check_mapping(value: object, keys: Sequence[str], where: str) -> Mapping[str, object]:
    """`value` as a mapping with string keys, or SpecError saying which `keys` it takes."""
    if not isinstance(value, Mapping):
        raise SpecError(
            f"expected a mapping (key: value pairs), got {describe(value)}. "
            f"To fix: write a mapping with the keys {', '.join(keys)}.",
            where=where,
        )
    bad_keys = [k for k in value if not isinstance(k, str)]
    if bad_keys:
        raise SpecError(
            f"keys must be strings, got {describe(bad_keys[0])}. To fix: write a key name.",
            where=where,
        )
    return value


@dataclass(frozen=True)
class RawStorageEntry:
    """One entry of the original dialect's top-level ``storage:``."""

    name: str | None = None
    source: object = None
    store: object = None
    force_stores: object = None
    persistent: bool | None = None
    sync: object = None

    @classmethod
    def check(cls, value: object, where: str) -> RawStorageEntry:
        """`value` as an entry, or SpecError naming the first problem's YAML path: an unknown
        key first (it usually explains the rest), then `name`, then `persistent`."""
        keys = [f.name for f in fields(cls)]
        entry = check_mapping(value, keys, where)
        for key in entry:
            if key not in keys:
                raise SpecError(unknown_key_message(key, keys), join_where(where, [key]))
        name, persistent = entry.get("name"), entry.get("persistent")
        if name is not None and type(name) is not str:
            raise SpecError(not_a_string(name), join_where(where, ["name"]))
        if persistent is not None and type(persistent) is not bool:
            raise SpecError(not_a_bool(persistent), join_where(where, ["persistent"]))
        return cls(**entry)  # type: ignore[arg-type]
