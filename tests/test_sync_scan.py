"""scan_local on real trees: keys, roots and prefixes, ignore rules (.skyignore, real git), the
symlink policy and special files."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from hangar.errors import SpecError
from hangar.models import LocalRoot
from hangar.sync import scan
from hangar.sync.scan import Known, ScanResult, scan_local


def write(path: Path, data: str | bytes = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def keys(roots: list[LocalRoot]) -> list[str]:
    return [f.key for f in scan_local(roots).files]


def droot(path: Path, prefix: str = "") -> LocalRoot:
    return LocalRoot(str(path), prefix, "file_mounts./data.source")


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


# -- roots, keys, prefixes ------------------------------------------------------------------


def test_directory_root_keys_sizes_and_identity(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "a.txt", "hello")
    write(src / "sub" / "deep" / "b.bin", b"\0" * 1000)
    write(src / "sub" / "c.txt", "")
    res = scan_local([droot(src)])
    assert [f.key for f in res.files] == ["a.txt", "sub/c.txt", "sub/deep/b.bin"]
    by_key = {f.key: f for f in res.files}
    st = os.stat(src / "sub" / "deep" / "b.bin")
    b = by_key["sub/deep/b.bin"]
    assert (b.size, b.mtime_ns, b.dev, b.ino) == (1000, st.st_mtime_ns, st.st_dev, st.st_ino)
    assert Path(b.path).read_bytes() == b"\0" * 1000
    assert res.total_bytes == 1005
    assert res.warnings == []
    assert res.ignored == 0


def test_empty_directory_root_gives_no_files(tmp_path: Path) -> None:
    (tmp_path / "empty" / "nested").mkdir(parents=True)
    assert scan_local([droot(tmp_path / "empty")]).files == []


def test_file_root_uses_prefix_as_key_or_basename(tmp_path: Path) -> None:
    f = write(tmp_path / "model.pt", "weights")
    assert keys([LocalRoot(str(f), "model.pt", "w")]) == ["model.pt"]
    assert keys([LocalRoot(str(f), "", "w")]) == ["model.pt"]


def test_list_roots_with_prefixes_share_one_key_space(tmp_path: Path) -> None:
    write(tmp_path / "data" / "x.csv")
    write(tmp_path / "data" / "sub" / "y.csv")
    f = write(tmp_path / "config.yaml")
    roots = [
        LocalRoot(str(tmp_path / "data"), "data/", "file_mounts./d.source[0]"),
        LocalRoot(str(f), "config.yaml", "file_mounts./d.source[1]"),
    ]
    assert keys(roots) == ["config.yaml", "data/sub/y.csv", "data/x.csv"]


def test_missing_root_is_a_spec_error_with_where_and_fix(tmp_path: Path) -> None:
    where = "file_mounts./data.source"
    with pytest.raises(SpecError) as err:
        scan_local([LocalRoot(str(tmp_path / "nope"), "", where)])
    assert err.value.where == where
    assert "does not exist" in str(err.value)
    assert str(tmp_path / "nope") in str(err.value)
    assert "To fix" in str(err.value)


def test_two_roots_same_key_different_files_names_both(tmp_path: Path) -> None:
    a = write(tmp_path / "one" / "f.txt", "1")
    b = write(tmp_path / "two" / "f.txt", "2")
    roots = [LocalRoot(str(a), "f.txt", "s[0]"), LocalRoot(str(b), "f.txt", "s[1]")]
    with pytest.raises(SpecError) as err:
        scan_local(roots)
    assert str(a) in str(err.value) and str(b) in str(err.value)
    assert "'f.txt'" in str(err.value)
    assert err.value.where == "s[1]"


def test_overlapping_roots_reaching_the_same_file_are_not_a_clash(tmp_path: Path) -> None:
    f = write(tmp_path / "d" / "x.txt")
    roots = [droot(tmp_path / "d", "d/"), LocalRoot(str(f), "d/x.txt", "s[1]")]
    assert keys(roots) == ["d/x.txt"]


def test_file_key_that_is_also_a_directory_of_another_root(tmp_path: Path) -> None:
    f = write(tmp_path / "data", "a file named data")
    write(tmp_path / "dir" / "x.txt")
    roots = [LocalRoot(str(f), "data", "s[0]"), droot(tmp_path / "dir", "data/")]
    with pytest.raises(SpecError, match="both a file"):
        scan_local(roots)


# -- ignore rules ---------------------------------------------------------------------------


def test_skyignore_gitignore_syntax_with_negation(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / ".skyignore", "*.log\n!keep.log\nbuild/\n/top-only.txt\n# comment\n")
    for name in ["a.py", "x.log", "keep.log", "build/out.o", "sub/build/o2.o", "sub/y.log"]:
        write(src / name)
    write(src / "top-only.txt")
    write(src / "sub" / "top-only.txt")
    res = scan_local([droot(src)])
    assert [f.key for f in res.files] == [".skyignore", "a.py", "keep.log", "sub/top-only.txt"]
    # x.log, top-only.txt, build/, sub/build/, sub/y.log
    assert res.ignored == 5


@needs_git
def test_git_rules_root_and_nested_gitignore_with_negation(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    write(repo / ".gitignore", "*.log\n__pycache__/\nsecrets.env\n")
    write(repo / "pkg" / ".gitignore", "!keep.log\n*.tmp\n")
    for name in [
        "main.py",
        "debug.log",
        "secrets.env",
        "__pycache__/m.pyc",
        "pkg/mod.py",
        "pkg/keep.log",
        "pkg/other.log",
        "pkg/scratch.tmp",
        "pkg/__pycache__/n.pyc",
    ]:
        write(repo / name)
    git("add", "main.py", cwd=repo)  # tracked or not, both count
    assert keys([droot(repo)]) == [
        ".gitignore",
        "main.py",
        "pkg/.gitignore",
        "pkg/keep.log",
        "pkg/mod.py",
    ]


@needs_git
def test_git_rules_apply_when_root_is_a_subdirectory_of_the_work_tree(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    write(repo / ".gitignore", "*.ckpt\n")
    write(repo / "train" / "run.py")
    write(repo / "train" / "model.ckpt")
    assert keys([droot(repo / "train")]) == ["run.py"]


@needs_git
def test_skyignore_takes_precedence_over_gitignore(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    write(repo / ".gitignore", "*.log\n")
    write(repo / ".skyignore", "*.tmp\n")
    write(repo / "a.log")
    write(repo / "b.tmp")
    assert keys([droot(repo)]) == [".gitignore", ".skyignore", "a.log"]


@needs_git
def test_git_directory_is_never_uploaded_at_any_depth(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    write(repo / "code.py")
    git("add", "code.py", cwd=repo)
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x", cwd=repo)
    write(repo / "vendor" / "lib" / ".git", "gitdir: ../../.git/modules/lib\n")  # submodule file
    write(repo / "vendor" / "lib" / "lib.py")
    write(repo / "other" / ".git" / "HEAD", "ref: refs/heads/main\n")  # a nested repo's dir
    found = keys([droot(repo)])
    assert not [k for k in found if ".git/" in k or k.endswith(".git") or k.startswith(".git")]
    assert "code.py" in found and "vendor/lib/lib.py" in found


def test_git_directory_skipped_even_outside_a_git_work_tree(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / ".git" / "config")
    write(src / "a.txt")
    assert keys([droot(src)]) == ["a.txt"]


# -- symlinks and special files -------------------------------------------------------------


def test_symlinked_file_inside_root_uploads_target_content(tmp_path: Path) -> None:
    src = tmp_path / "src"
    target = write(src / "real" / "data.txt", "payload")
    (src / "alias.txt").symlink_to("real/data.txt")
    res = scan_local([droot(src)])
    by_key = {f.key: f for f in res.files}
    assert set(by_key) == {"alias.txt", "real/data.txt"}
    assert Path(by_key["alias.txt"].path).read_text() == "payload"
    assert by_key["alias.txt"].size == target.stat().st_size
    assert res.warnings == []


def test_symlinked_dir_inside_root_is_followed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "data" / "a.txt")
    write(src / "data" / "sub" / "b.txt")
    (src / "link").symlink_to("data", target_is_directory=True)
    assert keys([droot(src)]) == ["data/a.txt", "data/sub/b.txt", "link/a.txt", "link/sub/b.txt"]


def test_link_to_an_ancestor_is_skipped_not_looped(tmp_path: Path) -> None:
    # SkyPilot's test tree has exactly this: a 'circle-link -> ..' inside the source.
    src = tmp_path / "src"
    write(src / "a.txt")
    write(src / "sub" / "b.txt")
    (src / "sub" / "circle-link").symlink_to("..", target_is_directory=True)
    (src / "self").symlink_to(".", target_is_directory=True)
    res = scan_local([droot(src)])
    assert [f.key for f in res.files] == ["a.txt", "sub/b.txt"]
    assert len(res.warnings) == 1
    assert "2 symlinks" in res.warnings[0] and "circle-link" in res.warnings[0]


def test_mutual_dir_links_terminate(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "a" / "x.txt")
    write(src / "b" / "y.txt")
    (src / "a" / "to-b").symlink_to("../b", target_is_directory=True)
    (src / "b" / "to-a").symlink_to("../a", target_is_directory=True)
    found = keys([droot(src)])
    assert found == ["a/to-b/y.txt", "a/x.txt", "b/to-a/x.txt", "b/y.txt"]


def test_links_outside_root_skipped_with_one_aggregated_warning(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside / "secret.txt", "do not upload")
    src = tmp_path / "src"
    write(src / "ok.txt")
    (src / "file-out").symlink_to(outside / "secret.txt")
    (src / "dir-out").symlink_to(outside, target_is_directory=True)
    (src / "sub").mkdir()
    (src / "sub" / "up-and-out").symlink_to("../../outside/secret.txt")
    res = scan_local([droot(src)])
    assert [f.key for f in res.files] == ["ok.txt"]
    assert len(res.warnings) == 1
    warning = res.warnings[0]
    assert "skipped 3 symlinks pointing outside" in warning
    for name in ("file-out", "dir-out", "sub/up-and-out"):
        assert name in warning


def test_dangling_symlinks_are_skipped_and_reported(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "ok.txt")
    (src / "broken").symlink_to("does-not-exist")
    res = scan_local([droot(src)])
    assert [f.key for f in res.files] == ["ok.txt"]
    assert len(res.warnings) == 1 and "broken" in res.warnings[0]


def test_root_that_is_a_symlink_uploads_the_folder_contents(tmp_path: Path) -> None:
    write(tmp_path / "real" / "a.txt")
    (tmp_path / "real" / "inner").symlink_to("a.txt")  # inside the *resolved* root
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    res = scan_local([droot(tmp_path / "alias")])
    assert [f.key for f in res.files] == ["a.txt", "inner"]
    assert res.warnings == []


def test_sockets_and_fifos_are_skipped(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "a.txt")
    os.mkfifo(src / "fifo")
    sock_path = src / "s.sock"
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(sock_path))
        assert keys([droot(src)]) == ["a.txt"]
    finally:
        sock.close()


def test_many_files_all_found(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for d in range(10):
        (src / f"d{d}").mkdir(parents=True)
        for i in range(200):
            (src / f"d{d}" / f"f{i}").write_bytes(b"")
    res = scan_local([droot(src, "p/")])
    assert len(res.files) == 2000
    assert len({f.key for f in res.files}) == 2000
    assert all(f.key.startswith("p/d") for f in res.files)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any directory")
def test_unreadable_directory_is_an_error_not_a_silent_skip(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "locked" / "a.txt")
    (src / "locked").chmod(0)
    try:
        with pytest.raises(SpecError, match="cannot read directory"):
            scan_local([droot(src)])
    finally:
        (src / "locked").chmod(0o755)


# -- a large re-scan walks in two processes -------------------------------------------------------


def _tree_for_split(src: Path) -> None:
    for d in range(12):
        for f in range(4):
            write(src / f"d{d:02d}" / f"f{f}.txt", f"{d}-{f}")
        write(src / f"d{d:02d}" / "deeper" / "g.bin", b"\1" * d)
        write(src / f"d{d:02d}" / "skip.log", "ignored")
    write(src / ".skyignore", "*.log\n")
    write(src / "top.txt", "top")
    outside = write(src.parent / "outside.txt", "out")
    (src / "d03" / "link-out").symlink_to(outside)
    (src / "d04" / "dangling").symlink_to(src / "nowhere")
    (src / "d05" / "link-in").symlink_to(src / "top.txt")
    (src / "d06" / "loop").symlink_to(src / "d06")


def _known(src: Path) -> Known:
    return {
        f.key: (f.key, f.size, f.mtime_ns, None, f.dev, f.ino)
        for f in scan_local([droot(src)]).files
    }


def _summary(res: ScanResult) -> tuple[object, ...]:
    return (res.files, sorted(res.unchanged), res.ignored, res.total_bytes, sorted(res.warnings))


@pytest.fixture
def split_tree(tmp_path: Path) -> tuple[Path, Known]:
    """The tree of `_tree_for_split` and its manifest rows, as a re-scan would get them."""
    src = tmp_path / "src"
    _tree_for_split(src)
    return src, _known(src)


@pytest.fixture
def forks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Split every re-scan with a manifest (however small) and count the children started."""
    started: list[int] = []
    real_fork = os.fork

    def counting_fork() -> int:
        pid = real_fork()
        if pid:
            started.append(pid)
        return pid

    monkeypatch.setattr(scan, "_SPLIT_MIN_KNOWN", 1)
    monkeypatch.setattr(scan, "usable_cpus", lambda: 2)
    monkeypatch.setattr(scan.os, "fork", counting_fork)
    return started


def test_a_large_rescan_split_over_two_processes_finds_what_one_process_finds(
    split_tree: tuple[Path, Known], forks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    src, known = split_tree
    write(src / "d01" / "f0.txt", "changed, and longer")  # changed
    write(src / "d09" / "new.txt", "new")  # new
    (src / "d10" / "f3.txt").unlink()  # gone
    split = scan_local([droot(src)], known=known)
    assert len(forks) == 1  # one child walked half of the directories
    monkeypatch.setattr(scan, "_SPLIT_MIN_KNOWN", 10**9)
    single = scan_local([droot(src)], known=known)
    assert len(forks) == 1
    assert _summary(split) == _summary(single)
    # A followed symlink is always listed (compared later), like a changed or new file.
    assert [f.key for f in split.files] == ["d01/f0.txt", "d05/link-in", "d09/new.txt"]
    assert "d10/f3.txt" not in split.unchanged and len(split.unchanged) == 12 * 5 + 2 - 2
    assert split.ignored == 12 and len(split.warnings) == 3


def test_a_walk_child_that_dies_has_its_share_walked_by_the_parent(
    split_tree: tuple[Path, Known], forks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    src, known = split_tree
    write(src / "d11" / "f2.txt", "changed in the child's share")
    expected = _summary(scan_local([droot(src)], known=known))
    forks.clear()
    parent = os.getpid()
    real_dumps = scan.pickle.dumps

    def dying_dumps(obj: object, protocol: int | None = None) -> bytes:
        if os.getpid() != parent:
            os._exit(9)  # the child is killed before it reports (out of memory, a signal)
        return real_dumps(obj, protocol)

    monkeypatch.setattr(scan.pickle, "dumps", dying_dumps)
    assert _summary(scan_local([droot(src)], known=known)) == expected
    assert len(forks) == 1
    with pytest.raises(ChildProcessError):
        os.waitpid(forks[0], os.WNOHANG)  # reaped: no zombie left


def test_an_unreadable_directory_in_the_childs_share_is_the_same_error(
    split_tree: tuple[Path, Known], forks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A path the kernel refuses (longer than PATH_MAX: refused even to root) in the child's
    share fails the scan with the parent's usual SpecError, and leaves no process behind."""
    src, known = split_tree
    # The root's directories wait in listing order; the child takes every other one from the
    # second (checked below against what it was given).
    dirs = [e.name for e in os.scandir(src) if e.is_dir(follow_symlinks=False)]
    target = dirs[1]
    shares: list[list[str]] = []
    real_walk_in_child = scan._walk_in_child

    def recording(walker: object, stack: list[tuple[str, str, tuple[str, ...]]]) -> object:
        shares.append([os.path.basename(d) for d, _, _ in stack])
        return real_walk_in_child(walker, stack)  # type: ignore[arg-type]

    monkeypatch.setattr(scan, "_walk_in_child", recording)
    fd = os.open(src / target, os.O_RDONLY)
    try:
        for _ in range(20):  # 20 x 250 characters: over PATH_MAX (4096)
            os.mkdir("n" * 250, dir_fd=fd)
            child = os.open("n" * 250, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)
    with pytest.raises(SpecError) as info:
        scan_local([droot(src)], known=known)
    assert "cannot read directory" in info.value.message and "To fix" in info.value.message
    assert info.value.where == "file_mounts./data.source"
    assert len(forks) == 1 and target in shares[0]  # the child met the long path
    with pytest.raises(ChildProcessError):
        os.waitpid(forks[0], os.WNOHANG)
