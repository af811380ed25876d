"""Hangar: Sky Storage for compute tasks.

Public API (imported lazily so the CLI starts fast)::

    import hangar
    task = hangar.Task.from_yaml("task.yaml")
    hangar.launch(task)
    hangar.Storage(name="my-data", source="~/data").upload()
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Storage": "hangar.api",
    "download": "hangar.api",
    "launch": "hangar.api",
    "Task": "hangar.models",
    "StorageSpec": "hangar.models",
    "MountSpec": "hangar.models",
    "MountMode": "hangar.models",
    "HangarError": "hangar.errors",
    "SpecError": "hangar.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hangar' has no attribute {name!r}")
