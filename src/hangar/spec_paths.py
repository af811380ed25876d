"""Path rules for task YAMLs: mount paths (where data appears) and local sources (what is read).

Pure string work: nothing is checked on disk here (a later preflight checks existence and
file-vs-directory). ``~`` means the user's home (``$HOME``); ``~user`` forms are refused, since
resolving them reads the password database.
"""

from __future__ import annotations

import os
import posixpath

from hangar.errors import SpecError

# Mounting over one of these (exactly) would hide or break the system.
SYSTEM_DIRS = frozenset(
    {
        "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
        "/proc", "/root", "/run", "/sbin", "/sys", "/tmp", "/usr", "/var",
    }
)  # fmt: skip
# Kernel filesystems: nothing may be mounted or copied anywhere below them.
VIRTUAL_DIRS = ("/proc", "/sys", "/dev")


def home_dir() -> str:
    """The user's home directory (``$HOME`` when set), normalised."""
    return posixpath.normpath(os.path.expanduser("~"))


def expand_home(value: str, where: str) -> str:
    """`value` with a leading ``~`` or ``~/`` replaced by the home directory."""
    if value == "~":
        return home_dir()
    if value.startswith("~/"):
        return home_dir() + value[1:]
    if value.startswith("~"):
        raise SpecError(
            f"{value!r}: only ~ (your own home) is expanded, not ~user. "
            "To fix: write the absolute path.",
            where,
        )
    return value


def no_trailing_slash(value: str, where: str, what: str) -> None:
    """SpecError when `value` (a source or mount path) ends in ``/`` (``/`` itself excepted)."""
    if len(value) > 1 and value.endswith("/"):
        raise SpecError(
            f"{what} {value!r} ends with '/'. To fix: drop the slash: {value.rstrip('/')!r}.",
            where,
        )


def mount_path(raw: str, where: str) -> str:
    """The absolute, normalised path a mount or copy lands at, or SpecError.

    Mount paths are absolute (or start with ``~``), do not end in ``/``, contain no ``.``/``..``
    or doubled slashes, and are not ``/``, a top-level system directory, anything under
    /proc, /sys or /dev, nor exactly the home directory.
    """
    if not raw:
        raise SpecError("the mount path is empty. To fix: write an absolute path.", where)
    no_trailing_slash(raw, where, "mount path")
    path = expand_home(raw, where)
    if not path.startswith("/"):
        raise SpecError(
            f"mount path {raw!r} is relative. To fix: make it absolute (e.g. "
            f"'/{raw.lstrip('./')}') or start it with ~/ for your home directory.",
            where,
        )
    norm = posixpath.normpath(path)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    if norm != path:
        raise SpecError(
            f"mount path {raw!r} is not in plain form. To fix: write it as {norm!r}.", where
        )
    if path == "/":
        raise SpecError("cannot mount over '/'. To fix: choose a directory such as /data.", where)
    if path in SYSTEM_DIRS or any(path.startswith(d + "/") for d in VIRTUAL_DIRS):
        raise SpecError(
            f"mount path {path!r} is a system directory. To fix: choose another path, e.g. "
            f"'/data{path}' or '~/{path.strip('/')}'.",
            where,
        )
    if path == home_dir():
        raise SpecError(
            f"mount path {raw!r} is your home directory itself. To fix: mount under it, "
            "e.g. ~/data.",
            where,
        )
    return path


def local_path(raw: str, where: str, cwd: str) -> str:
    """A local source as an absolute, normalised path: ``~`` expanded, relative paths taken
    against `cwd` (SkyPilot resolves them against the directory it is launched from, not the
    YAML's). SpecError for an empty path or a trailing ``/``."""
    if not raw:
        raise SpecError("the source path is empty. To fix: write a local path.", where)
    no_trailing_slash(raw, where, "source")
    path = expand_home(raw, where)
    return posixpath.normpath(posixpath.join(cwd, path))


def is_below(child: str, parent: str) -> bool:
    """`child` is strictly inside `parent` (both absolute and normalised)."""
    return child.startswith(parent.rstrip("/") + "/")
