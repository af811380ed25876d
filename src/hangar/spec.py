"""Task YAML -> a validated, frozen `hangar.models.Task`. Both dialects; no I/O beyond reading
the YAML file; no SDK imports.

Dialects:
- current: `file_mounts` maps a mount path to a local path (copied in), a bucket URI (downloaded)
  or a storage mapping (name, source, store, persistent, mode, config, sync);
- original (2021-22): top-level `storage:` declares storages by name and `storage_mounts:`
  attaches them (`{storage, mount_path}`); the 2022 inline `force_stores` is accepted too.

Every error is a `SpecError` whose `where` is the YAML path (``file_mounts./data.mode``) and whose
message says how to fix it. The pieces live in `spec_schema` (shapes), `spec_env` (variables),
`spec_paths` (path rules), `spec_storage` (entries) and `spec_merge` (whole-task rules).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from hangar.errors import SpecError
from hangar.models import Task
from hangar.spec_env import EnvScope, build_env_scope
from hangar.spec_merge import build_storages, check_mount_paths
from hangar.spec_messages import describe, did_you_mean
from hangar.spec_paths import local_path
from hangar.spec_storage import (
    Collected,
    read_file_mounts,
    read_storage,
    read_storage_mounts,
)

__all__ = ["MAX_TASK_BYTES", "TOP_LEVEL_KEYS", "check_single_node", "load_task", "parse_task"]

MAX_TASK_BYTES = 1 << 20


@dataclass(frozen=True)
class KeyRule:
    """What Hangar does with a top-level key: use it, ignore it (one warning), or refuse it."""

    action: Literal["use", "ignore", "refuse"]
    note: str = ""


_SKYPILOT_ONLY = "is a SkyPilot feature Hangar does not support yet. To fix: remove it"
TOP_LEVEL_KEYS: dict[str, KeyRule] = {
    "name": KeyRule("use"),
    "workdir": KeyRule("use"),
    "envs": KeyRule("use"),
    "secrets": KeyRule("use"),
    "setup": KeyRule("use"),
    "run": KeyRule("use"),
    "num_nodes": KeyRule("use"),
    "file_mounts": KeyRule("use"),
    "storage": KeyRule("use"),
    "storage_mounts": KeyRule("use"),
    "resources": KeyRule("ignore", "ignored (Hangar runs tasks on this machine)"),
    "inputs": KeyRule("ignore", "ignored (a SkyPilot placement hint; Hangar runs tasks here)"),
    "outputs": KeyRule("ignore", "ignored (a SkyPilot placement hint; Hangar runs tasks here)"),
    "volumes": KeyRule(
        "refuse", f"(disks attached to cluster nodes) {_SKYPILOT_ONLY}, or keep the data "
        "in a bucket under file_mounts."
    ),
    "service": KeyRule("refuse", f"(SkyServe) {_SKYPILOT_ONLY}; Hangar runs batch tasks."),
    "config": KeyRule(
        "refuse", f"(per-task SkyPilot settings) {_SKYPILOT_ONLY}; Hangar's settings live "
        "in $HANGAR_HOME/config.yaml."
    ),
    "event_callback": KeyRule(
        "refuse", f"{_SKYPILOT_ONLY}, or call your hook at the end of run."
    ),
    "pool": KeyRule("refuse", f"(worker pools) {_SKYPILOT_ONLY}."),
}  # fmt: skip


def load_task(path: str, env: Mapping[str, str]) -> Task:
    """Read and validate the task YAML at `path`; `env` holds ``--env`` overrides.

    Refuses, as SpecError with `where` = the file (and line): a missing or unreadable file, a
    file over 1 MiB, text that is not UTF-8 or not YAML, several YAML documents, duplicate keys,
    aliases that expand too far or recursively, an empty file, a top level that is not a mapping.
    """
    where = os.fspath(path)
    try:
        with open(where, "rb") as fh:
            if os.fstat(fh.fileno()).st_size > MAX_TASK_BYTES:
                raise _too_big(where)
            raw = fh.read(MAX_TASK_BYTES + 1)
    except FileNotFoundError:
        raise SpecError("task file not found. To fix: check the path.", where) from None
    except OSError as exc:
        raise SpecError(
            f"cannot read the task file: {exc.strerror or exc}. To fix: pass a readable YAML file.",
            where,
        ) from None
    if len(raw) > MAX_TASK_BYTES:
        raise _too_big(where)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"not UTF-8 text (byte {exc.start}). To fix: save the task file as UTF-8.", where
        ) from None
    from hangar.spec_yaml import load_yaml  # PyYAML only where a YAML file is read

    data = load_yaml(text, where)
    if data is None:
        raise SpecError(
            "empty task file. To fix: write at least a run: command (or file_mounts:).", where
        )
    if not isinstance(data, Mapping):
        raise SpecError(
            f"the top level must be a mapping of task keys (name, run, file_mounts, ...), got "
            f"{describe(data)}. To fix: write one key per line, e.g. run: echo hi.",
            where,
        )
    return parse_task(dict(data), env, source_path=os.path.abspath(where))


def parse_task(
    data: Mapping[str, Any], env: Mapping[str, str], *, source_path: str | None = None
) -> Task:
    """Validate a task already loaded from YAML (or built in Python); `env` = ``--env`` overrides.

    Relative local paths are resolved against the current working directory, ``~`` against
    ``$HOME``; nothing is checked on disk. `num_nodes` must be a positive integer but may exceed
    1 here: the launcher calls `check_single_node`.
    """
    if not isinstance(data, Mapping):
        raise SpecError(
            f"a task must be a mapping of task keys, got {describe(data)}. To fix: pass a "
            "dict such as {'run': 'echo hi'}."
        )
    warnings = _check_top_level(data)
    name = _optional_str(data.get("name"), "name")
    setup = _command(data.get("setup"), "setup")
    run = _command(data.get("run"), "run")
    num_nodes = _num_nodes(data.get("num_nodes"))
    resources = data.get("resources")
    if resources is not None and not isinstance(resources, Mapping):
        raise SpecError(
            f"expected a mapping, got {describe(resources)}. (Hangar ignores resources.) "
            "To fix: remove it.",
            "resources",
        )
    scope = build_env_scope(data.get("envs"), data.get("secrets"), env)
    cwd = os.getcwd()
    workdir = data.get("workdir")
    if workdir is not None:
        workdir = _workdir(workdir, scope, cwd)
    collected = Collected()
    read_storage(data.get("storage"), scope, cwd, collected)
    read_file_mounts(data.get("file_mounts"), scope, cwd, collected)
    read_storage_mounts(data.get("storage_mounts"), scope, collected)
    storages = build_storages(collected.decls)
    check_mount_paths(collected.places)
    return Task(
        name=name,
        workdir=workdir,
        envs=scope.envs,
        secrets=scope.secrets,
        setup=setup,
        run=run,
        num_nodes=num_nodes,
        resources=dict(resources) if resources is not None else None,
        storages=storages,
        mounts=tuple(collected.mounts),
        copies=tuple(collected.copies),
        warnings=tuple(warnings),
        source_path=source_path,
    )


def check_single_node(task: Task, cluster: str | None = None) -> None:
    """SpecError unless `task` runs on one node, or a Ray cluster (`cluster`, an address) is
    given for its `num_nodes`. Reads nothing: the caller resolves `--cluster` / RAY_ADDRESS."""
    if task.num_nodes != 1 and not cluster:
        raise SpecError(
            f"num_nodes is {task.num_nodes}: multi-node tasks need a Ray cluster, and none was "
            "given. To fix: 1. pass its address, `hangar launch --cluster HEAD_IP:6379 ...`; "
            "or 2. set RAY_ADDRESS=HEAD_IP:6379; or 3. set num_nodes: 1 to run here",
            "num_nodes",
        )


def _check_top_level(data: Mapping[Any, Any]) -> list[str]:
    """Unknown and refused keys -> SpecError; ignored keys -> one warning each."""
    warnings: list[str] = []
    usable = [k for k, rule in TOP_LEVEL_KEYS.items() if rule.action != "refuse"]
    for key, value in data.items():
        if not isinstance(key, str):
            raise SpecError(
                f"task keys must be strings, got {describe(key)}. To fix: use a known key "
                "(name, run, file_mounts, ...).",
                str(key),
            )
        rule = TOP_LEVEL_KEYS.get(key)
        if rule is None:
            hint = did_you_mean(key, usable) or f" Known keys: {', '.join(usable)}."
            raise SpecError(f"unknown key {key!r}.{hint}", key)
        if rule.action == "refuse" and value not in (None, {}, []):
            raise SpecError(f"{key} {rule.note}", key)
        if rule.action == "ignore" and value not in (None, {}, []):
            warnings.append(f"{key}: {rule.note}")
    return warnings


def _workdir(value: object, scope: EnvScope, cwd: str) -> str:
    if isinstance(value, Mapping):
        raise SpecError(
            "a git workdir (url, ref) is not supported by Hangar yet. To fix: clone the "
            "repository and give its local directory.",
            "workdir",
        )
    if not isinstance(value, str):
        raise SpecError(
            f"expected a directory path, got {describe(value)}. To fix: e.g. workdir: ~/project.",
            "workdir",
        )
    text = scope.substitute(value, "workdir")
    if not text:
        raise SpecError("workdir is empty. To fix: give a directory, or remove it.", "workdir")
    return local_path(text.rstrip("/") or "/", "workdir", cwd)


def _optional_str(value: object, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise SpecError(f"expected a string, got {describe(value)}. To fix: quote it.", where)


def _command(value: object, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        word = str(value).lower()
        raise SpecError(
            f"{word} is a YAML boolean, not a command. To fix: quote it, e.g. {where}: '{word}'.",
            where,
        )
    if isinstance(value, list):
        raise SpecError(
            "expected a string (a shell script), got a list. To fix: write the commands as one "
            f"block:\n  {where}: |\n    first command\n    second command",
            where,
        )
    raise SpecError(
        f"expected a string (a shell script), got {describe(value)}. To fix: quote it.", where
    )


def _num_nodes(value: object) -> int:
    if value is None:
        return 1
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise SpecError(
        f"expected a whole number >= 1, got {describe(value)}. To fix: num_nodes: 1.", "num_nodes"
    )


def _too_big(where: str) -> SpecError:
    return SpecError(
        f"the task file is larger than {MAX_TASK_BYTES // 1024} KiB; task files are small. "
        "To fix: keep data in file_mounts sources, not in the YAML.",
        where,
    )
