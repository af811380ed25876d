"""Secrets: credentials never appear in output, logs, the catalog, error messages or any
process's command line; $HANGAR_HOME is private (0700) and its databases and logs are 0600."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from backends import Backend
from conftest import unique_bucket
from servers import azurite, seaweedfs
from trust_helpers import seeded_tree, wait_for

SECRETS = {"s3": seaweedfs.SECRET_KEY, "azure": azurite.KEY}


@pytest.fixture(params=["s3", "azure"])
def keyed(request: pytest.FixtureRequest) -> Backend:
    """The stores whose test servers check a secret key."""
    b: Backend = request.getfixturevalue(f"{request.param}_backend")
    return b


def _all_cmdlines() -> dict[int, str]:
    out: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "cmdline").read_bytes()
            except OSError:
                continue  # the process ended meanwhile
            out[int(entry.name)] = raw.replace(b"\0", b" ").decode(errors="replace")
    return out


def _files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def test_credentials_appear_nowhere_during_and_after_a_launch(
    keyed: Backend, tmp_path: Path, hangar_home: Path
) -> None:
    secret = SECRETS[keyed.store_type]
    src = tmp_path / "src"
    seeded_tree(src, 5, seed=1)
    name = unique_bucket("sec")
    ready, go = tmp_path / "ready", tmp_path / "go"
    task = tmp_path / "t.yaml"
    task.write_text(
        f"file_mounts:\n  {tmp_path}/data:\n    name: {name}\n    source: {src}\n"
        f"    store: {keyed.store_type}\n    mode: COPY\n"
        f"run: touch {ready}; for i in $(seq 600); do [ -e {go} ] && exit 0; sleep 0.05; done\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "hangar.cli", "launch", str(task)],
        env={**os.environ, **keyed.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_for(ready.exists, timeout=120, what="the task to start")
        leaks = {pid: cmd for pid, cmd in _all_cmdlines().items() if secret in cmd}
    finally:
        go.touch()
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert leaks == {}  # no process (hangar, its task, anything) has the key on its command line
    assert secret not in out and secret not in err
    for path in _files_under(hangar_home):  # catalog, logs, caches, locks
        assert secret.encode() not in path.read_bytes(), path


def test_wrong_credentials_error_does_not_show_them(keyed: Backend, tmp_path: Path) -> None:
    src = tmp_path / "src"
    seeded_tree(src, 2, seed=2)
    wrong = "WRONG-secret-value-0123456789abcdef"
    env = {**os.environ, **keyed.env}
    if keyed.store_type == "s3":
        env["AWS_SECRET_ACCESS_KEY"] = wrong
    else:
        env["AZURE_STORAGE_CONNECTION_STRING"] = env["AZURE_STORAGE_CONNECTION_STRING"].replace(
            azurite.KEY, "V1JPTkctc2VjcmV0LXZhbHVlLTAxMjM0NTY3ODlhYmNkZWY="
        )
        wrong = "V1JPTkctc2VjcmV0LXZhbHVlLTAxMjM0NTY3ODlhYmNkZWY="
    env.update(HANGAR_MAX_RETRIES="1", HANGAR_RETRY_TIMEOUT="2")
    result = subprocess.run(
        [sys.executable, "-m", "hangar.cli", "storage", "upload", str(src), "-n",
         unique_bucket("wrong"), "-s", keyed.store_type],
        env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "access denied" in result.stderr.lower() or "error:" in result.stderr
    assert wrong not in result.stderr and wrong not in result.stdout
    assert SECRETS[keyed.store_type] not in result.stderr


def test_hangar_home_is_private(s3_backend: Backend, tmp_path: Path, hangar_home: Path) -> None:
    """After a launch with a cloud store: $HANGAR_HOME and every directory in it are 0700, and
    every file Hangar wrote there (catalog, caches, locks, logs) is 0600."""
    src = tmp_path / "src"
    seeded_tree(src, 3, seed=3)
    task = tmp_path / "t.yaml"
    task.write_text(
        f"file_mounts:\n  {tmp_path}/data:\n    name: {unique_bucket('perm')}\n"
        f"    source: {src}\n    store: s3\n    mode: COPY\nrun: echo hello; echo oops >&2\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "hangar.cli", "launch", str(task)],
        env={**os.environ, **s3_backend.env},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(hangar_home.stat().st_mode) == 0o700
    wrong = {}
    for path in [hangar_home, *hangar_home.rglob("*")]:
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        expected = 0o700 if path.is_dir() else 0o600
        if mode != expected:
            wrong[str(path.relative_to(hangar_home))] = oct(mode)
    assert wrong == {}
    assert any(p.suffix == ".log" for p in hangar_home.rglob("*")), "no task log was written"
