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
from hangar.sync.scan import scan_local


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
