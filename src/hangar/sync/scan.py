"""Walk local sources into a flat list of files to upload, applying ignore rules and the
symlink policy.

Contract of `scan_local`:

- A directory root is walked iteratively with ``os.scandir`` (one ``lstat`` per regular file);
  keys are ``root.prefix`` + the path relative to the root, with "/" separators. A file root is
  one file whose key is ``root.prefix`` (its basename when the prefix is empty).
- Ignore rules, per directory root: ``.skyignore`` at the root (gitignore syntax) when present;
  otherwise, inside a git work tree, git's own rules (asked of git itself, once per root).
  ``.skyignore`` itself is uploaded. A ``.git`` directory or file is never uploaded, at any depth.
  An ignored directory is pruned whole (gitignore semantics: nothing under it can be re-included).
- Symlinks: a link whose target resolves inside the (resolved) root is followed: a file link
  uploads the target's content under the link's key, a directory link is walked under the link's
  name, except when the target is a directory on the current path (a loop, e.g.
  ``circle-link -> ..``). Links resolving outside the root and dangling links are skipped and
  reported in one aggregated warning per root and kind. Sockets, FIFOs and devices are skipped.
- Nothing is opened here: unreadable files fail at apply time, per file. An unreadable
  directory is a SpecError (skipping it would make its files look deleted).
- A re-scan with a large manifest (`known`, 20,000 files or more) on Linux with two cores walks
  in two processes: the parent walks breadth-first until 8 directories wait, then forks a
  child for every other one. The child sends back what it found (pickled, through a pipe) or
  its SpecError; a child that dies without reporting has its share walked by the parent.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import stat
import subprocess
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, NamedTuple

from hangar.config import usable_cpus
from hangar.errors import SpecError
from hangar.models import LocalRoot

if TYPE_CHECKING:
    from pathspec import GitIgnoreSpec

SKYIGNORE = ".skyignore"
_WARN_NAMES = 5  # how many paths a warning names before "..."


class LocalFile(NamedTuple):
    """One local file as scanned. `path` is what to open (a symlink's resolved target).

    A NamedTuple rather than a dataclass: a scan makes one per file, and creating a tuple costs
    a third of a frozen dataclass (it shows on 100,000-file trees)."""

    key: str
    path: str
    size: int
    mtime_ns: int
    dev: int
    ino: int


@dataclass
class ScanResult:
    """Files sorted by key; `ignored` counts paths skipped by ignore rules (a pruned directory
    counts once); `warnings` are one-line messages for the user (already aggregated)."""

    files: list[LocalFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ignored: int = 0
    total_bytes: int = 0
    # Keys of files left out of `files` because they match `known` (see `scan_local`).
    unchanged: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Every file found: listed in `files` or known unchanged."""
        return len(self.files) + len(self.unchanged)


class _Ignore:
    """Ignore rules for one directory root: exact git-reported paths or a gitignore spec."""

    def __init__(self, paths: frozenset[str] = frozenset(), spec: GitIgnoreSpec | None = None):
        self.paths = paths
        self.spec = spec

    def __bool__(self) -> bool:
        return bool(self.paths) or self.spec is not None

    def ignored(self, rel: str, is_dir: bool) -> bool:
        rel_d = rel + "/" if is_dir else rel
        if rel in self.paths or rel_d in self.paths:
            return True
        return self.spec is not None and bool(self.spec.match_file(rel_d))


def _git_ignored(root: str) -> tuple[frozenset[str], str | None]:
    """Paths (relative to `root`; directories end with "/") that git ignores, plus a warning
    when git exists but could not answer for a reason other than "not a repository"."""
    argv = [
        "git", "-C", root, "ls-files", "-z", "--others", "--ignored", "--exclude-standard",
        "--directory",
    ]  # fmt: skip
    try:
        proc = subprocess.run(argv, capture_output=True, check=False)
    except OSError:  # git is not installed
        return frozenset(), None
    if proc.returncode != 0:
        err = os.fsdecode(proc.stderr).strip()
        if "not a git repository" in err:
            return frozenset(), None
        first = err.splitlines()[0] if err else f"exit status {proc.returncode}"
        return frozenset(), f"could not read git ignore rules for {root} ({first}); none applied"
    out = proc.stdout.split(b"\0")
    return frozenset(os.fsdecode(p) for p in out if p), None


def _load_ignore(root: str, where: str) -> tuple[_Ignore, str | None]:
    skyignore = os.path.join(root, SKYIGNORE)
    try:
        with open(skyignore, encoding="utf-8", errors="surrogateescape") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        paths, warning = _git_ignored(root)
        return _Ignore(paths=paths), warning
    except OSError as exc:
        raise SpecError(
            f"cannot read {skyignore}: {exc.strerror or exc}. "
            "To fix: make it readable, or remove it.",
            where=where,
        ) from exc
    from pathspec import GitIgnoreSpec  # only a source with a .skyignore pays its import

    return _Ignore(spec=GitIgnoreSpec.from_lines(lines)), None


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep) or root == os.sep


def _aggregate(what: str, names: Sequence[str], root: str) -> str:
    shown = ", ".join(names[:_WARN_NAMES]) + (" ..." if len(names) > _WARN_NAMES else "")
    plural = "symlink" if len(names) == 1 else "symlinks"
    return f"skipped {len(names)} {plural} {what} {root}: {shown}"


class _FdCloser:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


# What `known` maps a key to: (key, size, mtime_ns, checksum, dev, ino), a manifest row.
Known = Mapping[str, tuple[str, int, int | None, str | None, int | None, int | None]]
# A directory still to walk: (real path, key-relative prefix ending with "/" or "", real dirs
# on the path from the root, for loop detection).
_Dir = tuple[str, str, tuple[str, ...]]

# A re-sync of a tree this large (files in the trusted manifest) walks it in two processes:
# a no-change re-sync of 100,000 files is mostly this walk (one stat per file, about half of
# it the kernel's), and both halves run at once on two cores.
_SPLIT_MIN_KNOWN = 20_000
_SPLIT_MIN_DIRS = 8  # walk breadth-first until this many directories wait, then split them


@dataclass
class _Found:
    """What walking (part of) one directory root found; a child process sends its own back."""

    files: list[LocalFile] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)  # keys matching `known`
    same_bytes: int = 0  # their sizes
    ignored: int = 0
    outside: list[str] = field(default_factory=list)  # symlinks, by kind
    dangling: list[str] = field(default_factory=list)
    loops: list[str] = field(default_factory=list)

    def merge(self, other: _Found) -> None:
        self.files += other.files
        self.unchanged += other.unchanged
        self.same_bytes += other.same_bytes
        self.ignored += other.ignored
        self.outside += other.outside
        self.dangling += other.dangling
        self.loops += other.loops


class _Walker:
    """Walks directories of one root into `found`; two processes can each walk some of the
    root's directories, one merging what the other found."""

    def __init__(
        self, root: LocalRoot, real_root: str, ignore: _Ignore | None, known: Known | None
    ) -> None:
        self.root = root
        self.real_root = real_root
        self.is_ignored = ignore.ignored if ignore else None
        self.known_get = known.get if known else None
        self.prefix = (
            root.prefix if not root.prefix or root.prefix.endswith("/") else root.prefix + "/"
        )
        self.found = _Found()

    def walk(self, stack: list[_Dir], limit: int = 0) -> None:
        """Walk the directories on `stack` (and all below them). With `limit`, stop once that
        many directories wait on `stack`, taking them in breadth-first order meanwhile."""
        root, real_root = self.root, self.real_root
        found = self.found
        append = found.files.append
        same = found.unchanged.append
        is_ignored, known_get, prefix = self.is_ignored, self.known_get, self.prefix
        same_bytes = 0
        while stack and not (limit and len(stack) >= limit):
            directory, rel_dir, chain = stack.pop(0 if limit else -1)
            try:
                # Scanning a directory fd makes entry.stat() an fstatat() relative to it: a
                # quarter cheaper than an lstat of the full path, most of a scan's time.
                fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                continue  # removed while we walked
            except OSError as exc:
                # Skipping it would make its files look deleted (a mirror sync delete them).
                raise SpecError(
                    f"cannot read directory {directory} in source {root.path}: "
                    f"{exc.strerror or exc}. To fix: make it readable, or exclude it in "
                    f"{os.path.join(real_root, SKYIGNORE)}.",
                    where=root.where,
                ) from exc
            base = directory + os.sep if directory != os.sep else directory
            key_dir = prefix + rel_dir
            try:
                entries = os.scandir(fd)
            except BaseException:
                os.close(fd)
                raise
            with entries, _FdCloser(fd):  # entry.stat() needs fd open until the loop ends
                for entry in entries:
                    name = entry.name
                    if name == ".git":
                        continue
                    try:
                        # Regular files first, with as little work as possible: most are.
                        if entry.is_file(follow_symlinks=False):
                            if is_ignored is not None and is_ignored(rel_dir + name, False):
                                found.ignored += 1
                                continue
                            st = entry.stat(follow_symlinks=False)
                            key = key_dir + name
                            if known_get is not None:
                                row = known_get(key)
                                if (
                                    row is not None
                                    and row[2] == st.st_mtime_ns
                                    and row[1] == st.st_size
                                    and row[5] == st.st_ino
                                    and row[4] == st.st_dev
                                ):
                                    same(key)
                                    same_bytes += row[1]
                                    continue
                            append(
                                LocalFile(
                                    key,
                                    base + name,
                                    st.st_size,
                                    st.st_mtime_ns,
                                    st.st_dev,
                                    st.st_ino,
                                )
                            )
                            continue
                        rel = rel_dir + name
                        path = base + name
                        is_dir = entry.is_dir(follow_symlinks=False)
                        if is_ignored is not None and is_ignored(rel, is_dir):
                            found.ignored += 1
                            continue
                        if is_dir:
                            stack.append((path, rel + "/", (*chain, path)))
                            continue
                        if not entry.is_symlink():
                            continue  # socket, FIFO, device
                    except FileNotFoundError:
                        continue  # removed while we walked
                    self._symlink(rel, path, chain, stack)
        found.same_bytes += same_bytes

    def _symlink(self, rel: str, path: str, chain: tuple[str, ...], stack: list[_Dir]) -> None:
        """Follow a symlink only when it resolves inside the root."""
        target = os.path.realpath(path)
        try:
            st = os.stat(target)
        except OSError:
            self.found.dangling.append(rel)
            return
        if not _inside(target, self.real_root):
            self.found.outside.append(rel)
        elif stat.S_ISREG(st.st_mode):
            self.found.files.append(
                LocalFile(
                    self.prefix + rel, target, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino
                )
            )
        elif stat.S_ISDIR(st.st_mode):
            if any(c == target or c.startswith(target + os.sep) for c in chain):
                self.found.loops.append(rel)
            else:
                stack.append((target, rel + "/", (*chain, target)))


def _walk_in_child(walker: _Walker, stack: list[_Dir]) -> tuple[int, int] | None:
    """Fork a child that walks `stack` and writes `walker.found` (or its error) to a pipe.
    Returns (pid, read fd), or None when no child could be started."""
    try:
        read_fd, write_fd = os.pipe()
    except OSError:
        return None
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a process with threads (the transfer library's).
        # The child runs only this module's walk, pickle and os.write, takes no lock another
        # thread could hold, and leaves with os._exit: none of what that warning is about.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            pid = os.fork()
        except OSError:
            os.close(read_fd)
            os.close(write_fd)
            return None
    if pid:
        os.close(write_fd)
        return pid, read_fd
    code = 1
    try:  # the child: never returns into the caller
        os.close(read_fd)
        try:
            walker.walk(stack)
            payload = pickle.dumps(("ok", walker.found), pickle.HIGHEST_PROTOCOL)
        except SpecError as exc:
            payload = pickle.dumps(("spec", exc.message, exc.where), pickle.HIGHEST_PROTOCOL)
        view = memoryview(payload)
        while view:
            view = view[os.write(write_fd, view) :]
        code = 0
    finally:
        os._exit(code)


def _child_result(pid: int, read_fd: int) -> _Found | None:
    """The child's findings (its SpecError re-raised here), or None if it produced none."""
    chunks = []
    try:
        with os.fdopen(read_fd, "rb") as pipe:
            while chunk := pipe.read(1 << 20):
                chunks.append(chunk)
    finally:
        _, status = os.waitpid(pid, 0)
    if status != 0 or not chunks:
        return None
    result = pickle.loads(b"".join(chunks))
    if result[0] == "spec":
        raise SpecError(result[1], result[2])
    found: _Found = result[1]
    return found


def _walk(
    root: LocalRoot,
    real_root: str,
    out: list[LocalFile],
    res: ScanResult,
    known: Known | None = None,
) -> None:
    """Walk one directory root into `out` (files matching `known`: into res.unchanged)."""
    ignore, warning = _load_ignore(real_root, root.where)
    if warning:
        res.warnings.append(warning)
    walker = _Walker(root, real_root, ignore, known)
    stack: list[_Dir] = [(real_root, "", (real_root,))]
    if known is not None and len(known) >= _SPLIT_MIN_KNOWN and _can_split():
        walker.walk(stack, limit=_SPLIT_MIN_DIRS)
        theirs, stack = stack[1::2], stack[0::2]
        child = _walk_in_child(_Walker(root, real_root, ignore, known), theirs) if theirs else None
        if child is None:
            stack += theirs
        try:
            walker.walk(stack)
        except BaseException:
            if child is not None:  # leave no child behind
                with contextlib.suppress(OSError):
                    os.kill(child[0], signal.SIGKILL)
                os.close(child[1])
                os.waitpid(child[0], 0)
            raise
        if child is not None:
            theirs_found = _child_result(*child)
            if theirs_found is None:  # the child died (killed, out of memory): walk its share
                walker.walk(theirs)
            else:
                walker.found.merge(theirs_found)
    else:
        walker.walk(stack)
    found = walker.found
    out += found.files
    res.unchanged += found.unchanged
    res.ignored += found.ignored
    res.total_bytes += found.same_bytes
    if found.outside:
        res.warnings.append(_aggregate("pointing outside", found.outside, real_root))
    if found.dangling:
        res.warnings.append(_aggregate("with missing targets in", found.dangling, real_root))
    if found.loops:
        res.warnings.append(
            _aggregate("looping back to a parent directory in", found.loops, real_root)
        )


def _can_split() -> bool:
    """Two cores, and Linux: fork() in a process with threads is safe there for what the child
    does (macOS's system libraries are not fork-safe that way)."""
    return sys.platform.startswith("linux") and usable_cpus() >= 2


def dir_prefixes(keys: Iterable[str]) -> set[str]:
    """Every "directory" implied by `keys` ("a/b/c" implies "a" and "a/b")."""
    parents = {k.rpartition("/")[0] for k in keys}
    parents.discard("")
    result: set[str] = set()
    for p in parents:
        while p and p not in result:
            result.add(p)
            p = p.rpartition("/")[0]
    return result


def scan_local(roots: Sequence[LocalRoot], *, known: Known | None = None) -> ScanResult:
    """Scan `roots` into one key space. Raises SpecError (with the root's `where`) when a root
    does not exist, is neither file nor directory, or when two roots put different files at the
    same key (or a file where another root has a directory).

    `known` (a trusted upload manifest, one directory root only): a regular file whose row has
    the same size, mtime_ns (recorded), device and inode is not listed in `files` but counted
    in `unchanged` (its key): a no-change re-sync of 100,000 files then builds no record per
    file. Every file is still stat'ed."""
    res = ScanResult()
    files: list[LocalFile] = []
    owner: dict[str, tuple[LocalRoot, int]] = {}  # key -> root and index in `files`
    for root in roots:
        real = os.path.realpath(root.path)
        try:
            st = os.stat(real)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError | NotADirectoryError):
                raise SpecError(
                    f"source {root.path} does not exist. "
                    "To fix: create it, or correct the path in the task YAML.",
                    where=root.where,
                ) from exc
            raise SpecError(
                f"cannot read source {root.path}: {exc.strerror or exc}. To fix: check its "
                "permissions.",
                where=root.where,
            ) from exc
        start = len(files)
        if stat.S_ISDIR(st.st_mode):
            _walk(root, real, files, res, known if len(roots) == 1 else None)
        elif stat.S_ISREG(st.st_mode):
            key = root.prefix or os.path.basename(real)
            files.append(LocalFile(key, real, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino))
        else:
            raise SpecError(
                f"source {root.path} is neither a regular file nor a directory. "
                "To fix: point the source at a file or directory.",
                where=root.where,
            )
        if len(roots) > 1:
            _check_clashes(root, files, start, owner)
    if len(roots) > 1:
        _check_file_dir_clashes(files, owner)
    files.sort(key=attrgetter("key"))
    res.files = files
    res.total_bytes += sum(map(attrgetter("size"), files))
    return res


def _check_clashes(
    root: LocalRoot, files: list[LocalFile], start: int, owner: dict[str, tuple[LocalRoot, int]]
) -> None:
    """Record the keys of `files[start:]` (from `root`); a key already taken by another file
    is an error, the same file reached twice (overlapping roots) is dropped."""
    kept: list[LocalFile] = []
    for f in files[start:]:
        prev = owner.get(f.key)
        if prev is None:
            owner[f.key] = (root, start + len(kept))
            kept.append(f)
            continue
        other = files[prev[1]]
        if (other.dev, other.ino) == (f.dev, f.ino):
            continue
        raise SpecError(
            f"two sources produce the same object key {f.key!r}: {other.path} "
            f"(from {prev[0].path}) and {f.path} (from {root.path}). "
            "To fix: rename one of them, or drop one source.",
            where=root.where,
        )
    files[start:] = kept


def _check_file_dir_clashes(
    files: list[LocalFile], owner: dict[str, tuple[LocalRoot, int]]
) -> None:
    for d in sorted(dir_prefixes(owner) & owner.keys()):
        root, index = owner[d]
        raise SpecError(
            f"object key {d!r} is both a file ({files[index].path}) and a directory of other "
            "sources' files. To fix: rename the file or the directory.",
            where=root.where,
        )
