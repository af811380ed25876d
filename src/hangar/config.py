"""Where Hangar keeps its state, and the user's settings.

`$HANGAR_HOME` (default ``~/.hangar``) holds the catalog, logs, the local store's buckets and
caches; it is created with mode 0700. `$HANGAR_HOME/config.yaml` holds per-store settings.

Precedence, in one place (`resolve`): CLI flag > task YAML > environment > config file > default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hangar.errors import SpecError

DEFAULT_STORE = "local"


def hangar_home() -> Path:
    """The state directory, created (0700) if missing."""
    raw = os.environ.get("HANGAR_HOME") or "~/.hangar"
    home = Path(raw).expanduser().absolute()
    if not home.is_dir():
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(home, 0o700)
    return home


def _subdir(name: str) -> Path:
    path = hangar_home() / name
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def buckets_dir() -> Path:
    """Root of the embedded local store: one directory per bucket."""
    return _subdir("buckets")


def logs_dir() -> Path:
    return _subdir("logs")


def cache_dir() -> Path:
    return _subdir("cache")


def catalog_path() -> Path:
    return hangar_home() / "catalog.db"


@dataclass(frozen=True)
class UserConfig:
    """The parsed `$HANGAR_HOME/config.yaml`."""

    default_store: str | None
    stores: dict[str, dict[str, Any]]


def load_user_config() -> UserConfig:
    """Read `$HANGAR_HOME/config.yaml` (absent file = empty config).

    Layout::

        default_store: s3
        stores:
          s3: {endpoint: http://127.0.0.1:8333, region: us-east-1, profile: dev}
          gcs: {endpoint: ..., project: ...}
          azure: {account: myaccount, endpoint: ...}
    """
    path = hangar_home() / "config.yaml"
    if not path.exists():
        return UserConfig(None, {})
    import yaml  # only when there is a file to read

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML ({exc}). To fix: correct or remove it.") from exc
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping at the top level.")
    unknown = set(data) - {"default_store", "stores"}
    if unknown:
        raise SpecError(
            f"{path}: unknown key(s) {', '.join(sorted(unknown))}; allowed: default_store, stores."
        )
    stores = data.get("stores") or {}
    if not isinstance(stores, dict) or not all(isinstance(v, dict) for v in stores.values()):
        raise SpecError(f"{path}: 'stores' must map a store type to a mapping of settings.")
    default = data.get("default_store")
    settings = {str(k).lower(): v for k, v in stores.items()}
    return UserConfig(str(default) if default else None, settings)


def default_store() -> str:
    """The store used when a storage names none: HANGAR_DEFAULT_STORE > config file > local."""
    from hangar.stores.uri import canonical_store_type

    value = os.environ.get("HANGAR_DEFAULT_STORE") or load_user_config().default_store
    return canonical_store_type(value) if value else DEFAULT_STORE


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: a container or `taskset` may allow
    fewer than the machine has), at least 1."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def env_seconds(name: str, default: float, error: type[Exception] = SpecError) -> float:
    """A positive number of seconds from the environment variable `name`, else `default`;
    anything else raises `error` naming the variable and an example."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise error(f"{name}={raw!r} is not a positive number of seconds. To fix: e.g. {name}=60")
    return value


def resolve(*candidates: Any, default: Any = None) -> Any:
    """First candidate that is not None, in precedence order (flag, YAML, env, config file)."""
    for value in candidates:
        if value is not None:
            return value
    return default
