"""Every bad input tried, in one table: task YAMLs and CLI arguments that must be refused with
a clear message, exit status 2 (invalid spec or usage) or 1 (runtime), and no change at all:
the catalog, $HANGAR_HOME/buckets and the test's sandbox are compared before and after.

The CLI runs in-process (click's CliRunner) for speed; a few cases also run as a real
subprocess. Cases with `{T}` have it replaced by the sandbox directory, which holds a source
tree `src/` (one file), a non-empty directory `full/`, a file `afile` and a symlink `link` (to
`full/`). $HOME is a directory of its own.
"""

# ruff: noqa: E501 - one case per line reads best as a table

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from trust_helpers import snapshot

from hangar.cli import app


@dataclass(frozen=True)
class Case:
    id: str
    yaml: str | None  # task file content (None: `args` alone)
    code: int
    fragment: str
    args: tuple[str, ...] = ("launch", "{TASK}")
    raw: bytes | None = None  # task file bytes, when not text


def _storage(extra: str, path: str = "{T}/mnt") -> str:
    return f"file_mounts:\n  {path}:\n    name: hostile-ok\n    source: {{T}}/src\n{extra}"


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)

CASES: list[Case] = [
    # -- the file itself ---------------------------------------------------------------------
    Case("alias-bomb", BOMB + "run: echo hi\n", 2, "alias"),
    Case("oversized", None, 2, "larger than", raw=b"run: echo hi\n" + b"#" * (1 << 20) + b"\n"),
    Case("not-utf8", None, 2, "not UTF-8", raw=b"run: echo \xff\xfe\n"),
    Case("empty-file", "", 2, "empty task file"),
    Case("only-comment", "# nothing\n", 2, "empty task file"),
    Case("top-level-list", "- run: echo\n", 2, "top level must be a mapping"),
    Case("top-level-scalar", "just words\n", 2, "top level must be a mapping"),
    Case("two-documents", "run: a\n---\nrun: b\n", 2, "document"),
    Case("duplicate-key", "run: a\nrun: b\n", 2, "duplicate"),
    Case("bad-yaml-syntax", "run: [unclosed\n", 2, "YAML"),
    Case("tab-indent", "file_mounts:\n\t/x: /y\n", 2, "YAML"),
    Case("python-tag", "run: !!python/object/apply:os.system ['echo pwned']\n", 2, "YAML"),
    Case("missing-file", None, 2, "not found", args=("launch", "{T}/nope.yaml")),
    Case("directory-as-task", None, 2, "cannot read", args=("launch", "{T}/full")),
    # -- top-level keys ----------------------------------------------------------------------
    Case("unknown-key", "runn: echo hi\n", 2, "unknown key 'runn'"),
    Case("refused-volumes", "volumes: {a: b}\nrun: echo\n", 2, "volumes"),
    Case("refused-service", "service: {a: b}\nrun: echo\n", 2, "service"),
    Case("refused-config", "config: {a: b}\nrun: echo\n", 2, "config"),
    Case("run-is-list", "run: [a, b]\n", 2, "run"),
    Case("setup-is-int", "setup: 3\nrun: echo\n", 2, "setup"),
    Case("name-is-list", "name: [a]\nrun: echo\n", 2, "name"),
    Case("num-nodes-zero", "num_nodes: 0\nrun: echo\n", 2, "num_nodes"),
    Case("num-nodes-negative", "num_nodes: -3\nrun: echo\n", 2, "num_nodes"),
    Case("num-nodes-text", "num_nodes: two\nrun: echo\n", 2, "num_nodes"),
    Case("num-nodes-bool", "num_nodes: true\nrun: echo\n", 2, "num_nodes"),
    Case("workdir-missing", "workdir: {T}/nowhere\nrun: echo\n", 2, "not a directory"),
    # -- envs and secrets --------------------------------------------------------------------
    Case("envs-list", "envs: [A, B]\nrun: echo\n", 2, "envs"),
    Case("envs-bad-name", "envs: {1BAD: x}\nrun: echo\n", 2, "1BAD"),
    Case("envs-name-with-space", "envs: {'A B': x}\nrun: echo\n", 2, "A B"),
    Case("envs-name-injection", "envs: {'A;rm -rf /': x}\nrun: echo\n", 2, "rm -rf"),
    Case("envs-value-mapping", "envs: {A: {b: c}}\nrun: echo\n", 2, "envs.A"),
    Case("envs-value-nul", 'envs: {A: "x\\0y"}\nrun: echo\n', 2, "NUL"),
    Case("cli-env-value-nul", "run: echo\n", 2, "NUL", args=("launch", "{TASK}", "--env", "A=x\0y")),
    Case("secrets-list", "secrets: [A]\nrun: echo\n", 2, "secrets"),
    Case("cli-env-no-equals", "run: echo\n", 2, "KEY=VALUE", args=("launch", "{TASK}", "--env", "NOEQ")),
    Case("cli-env-empty-key", "run: echo\n", 2, "KEY=VALUE", args=("launch", "{TASK}", "--env", "=v")),
    # -- mount paths -------------------------------------------------------------------------
    Case("mount-root", _storage("", "/"), 2, "cannot mount over '/'"),
    Case("mount-etc", _storage("", "/etc"), 2, "system directory"),
    Case("mount-usr", _storage("", "/usr"), 2, "system directory"),
    Case("mount-tmp", _storage("", "/tmp"), 2, "system directory"),
    Case("mount-under-proc", _storage("", "/proc/self/x"), 2, "system directory"),
    Case("mount-under-sys", _storage("", "/sys/x"), 2, "system directory"),
    Case("mount-under-dev", _storage("", "/dev/shm/x"), 2, "system directory"),
    Case("mount-home", _storage("", "'~'"), 2, "home directory itself"),
    Case("mount-null", _storage("", "~"), 2, "mount paths must be strings"),
    Case("mount-home-env", _storage("", "{HOME}"), 2, "home directory itself"),
    Case("mount-other-user-home", _storage("", "~root/x"), 2, "~user"),
    Case("mount-relative", _storage("", "data"), 2, "relative"),
    Case("mount-dotdot", _storage("", "{T}/a/../../etc"), 2, "plain form"),
    Case("mount-dot", _storage("", "{T}/./mnt"), 2, "plain form"),
    Case("mount-double-slash", _storage("", "{T}//mnt"), 2, "plain form"),
    Case("mount-trailing-slash", _storage("", "{T}/mnt/"), 2, "ends with '/'"),
    Case("mount-is-source", _storage("", "{T}/src"), 2, "overlaps the local source"),
    Case("mount-inside-source", _storage("", "{T}/src/inner"), 2, "overlaps the local source"),
    Case("mount-above-source", _storage("", "{T}"), 2, "overlaps the local source"),
    Case("mount-nonempty-dir", _storage("", "{T}/full"), 2, "not empty"),
    Case("mount-is-file", _storage("", "{T}/afile"), 2, "not a directory"),
    Case("mount-is-symlink", _storage("", "{T}/link"), 2, "symbolic link"),
    Case(
        "mount-nested-in-mount",
        "file_mounts:\n  {T}/m1: s3://bucket-one\n  {T}/m1/m2: s3://bucket-two\n",
        2,
        "m1",
    ),
    Case("copy-to-root", "file_mounts:\n  /: {T}/src\n", 2, "cannot mount over '/'"),
    # -- storage entries ---------------------------------------------------------------------
    Case("source-missing", _storage(""), 2, "does not exist", args=("launch", "{TASK}")),
    Case("source-empty", "file_mounts:\n  {T}/mnt:\n    name: hostile-ok\n    source: ''\n", 2, "empty"),
    Case("source-trailing-slash", "file_mounts:\n  {T}/mnt:\n    name: hostile-ok\n    source: {T}/src/\n", 2, "ends with '/'"),
    Case("source-single-file", "file_mounts:\n  {T}/mnt:\n    name: hostile-ok\n    source: {T}/afile\n", 2, "single file"),
    Case("source-other-home", "file_mounts:\n  {T}/mnt:\n    name: hostile-ok\n    source: ~root/x\n", 2, "~user"),
    Case("mode-typo", _storage("    mode: COPYY\n"), 2, "mode"),
    Case("mode-int", _storage("    mode: 3\n"), 2, "mode"),
    Case("store-unknown", _storage("    store: s4\n"), 2, "s4"),
    Case("store-list-of-int", _storage("    store: [1]\n"), 2, "store"),
    Case("persistent-text", _storage("    persistent: maybe\n"), 2, "persistent"),
    Case("sync-typo", _storage("    sync: mirrorr\n"), 2, "sync"),
    Case("entry-unknown-key", _storage("    sorce: x\n"), 2, "sorce"),
    Case("name-uppercase", "file_mounts:\n  {T}/mnt:\n    name: Bad_Name\n    source: {T}/src\n", 2, "name"),
    Case("name-too-long", "file_mounts:\n  {T}/mnt:\n    name: " + "a" * 70 + "\n    source: {T}/src\n", 2, "name"),
    Case("name-dotdot", "file_mounts:\n  {T}/mnt:\n    name: a..b\n    source: {T}/src\n", 2, "name"),
    Case("name-slash", "file_mounts:\n  {T}/mnt:\n    name: a/b\n    source: {T}/src\n", 2, "name"),
    Case("name-ip-address", "file_mounts:\n  {T}/mnt:\n    name: 192.168.1.1\n    source: {T}/src\n", 2, "name"),
    Case("file-mounts-list", "file_mounts: [a, b]\n", 2, "file_mounts"),
    Case("file-mounts-int-value", "file_mounts:\n  {T}/mnt: 3\n", 2, "file_mounts"),
    Case("bucket-uri-empty-bucket", "file_mounts:\n  {T}/mnt: s3://\n", 2, "s3://"),
    Case("cache-size-garbage", _storage("    mode: MOUNT_CACHED\n    config:\n      mount_cached:\n        vfs_cache_max_size: 12Q\n"), 2, "12Q"),
    Case("storage-mounts-unknown", "storage_mounts:\n  - storage: ghost\n    mount_path: {T}/mnt\n", 2, "ghost"),
    Case("storage-not-list", "storage: 3\nrun: echo\n", 2, "storage"),
    Case("multi-node", "num_nodes: 2\nrun: echo\n", 2, "num_nodes"),
    # -- other commands ----------------------------------------------------------------------
    Case("delete-nothing", None, 2, "name at least one storage", args=("storage", "delete")),
    Case("delete-names-and-all", None, 2, "either names or --all", args=("storage", "delete", "x", "--all")),
    Case("delete-unknown", None, 1, "no storage matches", args=("storage", "delete", "ghost", "-y")),
    Case("verify-unknown", None, 1, "no storage named", args=("storage", "verify", "ghost")),
    Case("download-unknown", None, 1, "no storage named", args=("storage", "download", "ghost", "{T}/dl")),
    Case("upload-missing-source", None, 2, "does not exist", args=("storage", "upload", "{T}/nowhere", "-n", "hostile-ok")),
    Case("upload-bad-name", None, 2, "name", args=("storage", "upload", "{T}/src", "-n", "Bad_Name")),
    Case("upload-bad-store", None, 2, "ftp", args=("storage", "upload", "{T}/src", "-n", "hostile-ok", "-s", "ftp")),
    Case("upload-file-as-dir", None, 2, "single file", args=("storage", "upload", "{T}/afile", "-n", "hostile-ok")),
]  # fmt: skip


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # not /root, which is a system directory anyway
    box = tmp_path / "box"
    (box / "src").mkdir(parents=True)
    (box / "src" / "data.txt").write_text("data")
    (box / "full").mkdir()
    (box / "full" / "keep.txt").write_text("keep")
    (box / "afile").write_text("a file")
    (box / "link").symlink_to(box / "full")
    return box


def _fill(text: str, box: Path, task: Path) -> str:
    return (
        text.replace("{T}", str(box))
        .replace("{TASK}", str(task))
        .replace("{HOME}", os.path.expanduser("~"))
    )


def _tree(box: Path) -> list[str]:
    return sorted(str(p.relative_to(box)) for p in box.rglob("*"))


def _prepare(case: Case, box: Path, tmp_path: Path) -> list[str]:
    task = tmp_path / "task.yaml"
    if case.raw is not None:
        task.write_bytes(case.raw)
    elif case.yaml is not None:
        text = _fill(case.yaml, box, task)
        if case.id == "source-missing":
            text = text.replace(f"{box}/src", f"{box}/missing")
        task.write_text(text)
    return [_fill(a, box, task) for a in case.args]


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_and_changes_nothing(
    case: Case, sandbox: Path, tmp_path: Path, hangar_home: Path
) -> None:
    args = _prepare(case, sandbox, tmp_path)
    before, tree = snapshot(hangar_home), _tree(sandbox)
    started = time.monotonic()
    result = CliRunner().invoke(app, args)
    elapsed = time.monotonic() - started
    output = result.output
    assert result.exit_code == case.code, output
    assert case.fragment in output, output
    assert "Traceback" not in output
    assert elapsed < 5, f"took {elapsed:.1f}s"  # refused quickly (alias bombs included)
    assert snapshot(hangar_home) == before
    assert _tree(sandbox) == tree


@pytest.mark.parametrize(
    "case_id", ["alias-bomb", "mount-etc", "mount-is-source", "delete-unknown"]
)
def test_bad_input_as_a_real_process(
    case_id: str, sandbox: Path, tmp_path: Path, hangar_home: Path
) -> None:
    case = next(c for c in CASES if c.id == case_id)
    args = _prepare(case, sandbox, tmp_path)
    before = snapshot(hangar_home)
    result = subprocess.run(
        [sys.executable, "-m", "hangar.cli", *args],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == case.code, result.stderr
    assert case.fragment in result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert snapshot(hangar_home) == before


def test_envs_reach_commands_as_variables_never_as_text(tmp_path: Path) -> None:
    """An env value full of shell syntax arrives verbatim in the environment and is never
    executed: `run` refers to it as "$EVIL" and the marker file is never created."""
    marker = tmp_path / "pwned"
    evil = f"$(touch {marker}); `touch {marker}`; touch {marker} && echo '\"; exit 7"
    task = tmp_path / "t.yaml"
    task.write_text('envs:\n  EVIL: x\nrun: printf "%s" "$EVIL"\n')
    result = subprocess.run(
        [sys.executable, "-m", "hangar.cli", "launch", str(task), "--env", f"EVIL={evil}"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == evil
    assert not marker.exists()


HOSTILE_KEYS = [
    "../escape.txt",
    "a/../../escape2.txt",
    "/abs.txt",
    "nul\x00key.txt",
    "x" * 300 + ".txt",
    "ok.txt",
]


# S3 only: fake-gcs-server answers hostile names with errors the client retries for ~100 s,
# and Azurite's listing fails (500) once such a blob exists. The download rule is the same code
# for every store (hangar.sync.download), tested with each key in tests/test_sync_download.py.
@pytest.mark.parametrize("store_type", ["s3"])
def test_copy_of_a_bucket_with_hostile_keys_writes_nothing_outside(
    store_type: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A foreign bucket holds keys with '..', a leading '/', NUL and 300-byte names (those the
    server accepts): downloading it writes nothing outside the target (nothing at all when a
    key is unsafe), whether through `hangar storage download` or a COPY launch."""
    from conftest import unique_bucket

    backend = request.getfixturevalue(f"{store_type}_backend")
    bucket = unique_bucket("evil")
    backend.create_foreign_bucket(bucket, {})
    accepted = []
    for key in HOSTILE_KEYS:
        try:
            _put_raw(backend, bucket, key)
            accepted.append(key)
        except Exception:
            continue  # the server refuses this key: nothing to test
    stored = set(backend.objects(bucket))
    unsafe = sorted(k for k in stored if _unsafe(k))
    assert "ok.txt" in stored
    outer = tmp_path / "outer"
    target = outer / "inner" / "dest"
    target.mkdir(parents=True)
    uri = backend.open(bucket).url
    result = CliRunner().invoke(app, ["storage", "download", uri, str(target)])
    if unsafe:
        assert result.exit_code == 1, result.output
        assert "unsafe object key" in result.output
        assert list(target.iterdir()) == []  # nothing written, not even the safe keys
    else:  # the server normalised or refused every hostile key: a plain download
        assert result.exit_code == 0, result.output
        assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == sorted(stored)
    assert sorted(p.name for p in outer.iterdir()) == ["inner"]
    assert sorted(p.name for p in (outer / "inner").iterdir()) == ["dest"]
    print(f"{store_type} stored {len(stored)} of {len(HOSTILE_KEYS)} keys; unsafe: {unsafe!r}")


def _unsafe(key: str) -> bool:
    parts = key.split("/")
    return (
        key.startswith("/")
        or "\x00" in key
        or any(p in (".", "..") or len(p.encode()) > 255 for p in parts)
    )


def _put_raw(backend: object, bucket: str, key: str) -> None:
    store_type = getattr(backend, "store_type")  # noqa: B009
    client = getattr(backend, "client")  # noqa: B009
    if store_type == "s3":
        client.put_object(Bucket=bucket, Key=key, Body=b"evil")
    elif store_type == "gcs":
        client.bucket(bucket).blob(key).upload_from_string(b"evil")
    else:
        client.get_container_client(bucket).upload_blob(key, b"evil")


def test_symlinks_never_make_a_launch_read_outside_the_source(
    tmp_path: Path, local_backend: object
) -> None:
    """A source holding symlinks to a secret file and a directory outside it: the launch
    uploads neither the secret nor anything from the outside directory."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP-SECRET")
    src = tmp_path / "src"
    src.mkdir()
    (src / "data.txt").write_text("data")
    (src / "secret-link").symlink_to(outside / "secret.txt")
    (src / "dir-link").symlink_to(outside)
    (src / "parent-link").symlink_to(tmp_path)
    task = tmp_path / "t.yaml"
    task.write_text(
        f"file_mounts:\n  {tmp_path}/mnt:\n    name: links-ok\n    source: {src}\n"
        "    store: local\n    mode: COPY\nrun: echo done\n"
    )
    result = CliRunner().invoke(app, ["launch", str(task)])
    assert result.exit_code == 0, result.output
    objects = local_backend.objects("links-ok")  # type: ignore[attr-defined]
    assert all(b"TOP-SECRET" not in v for v in objects.values())
    assert not any("secret" in k or k.startswith(("dir-link/", "parent-link/")) for k in objects)
    assert objects.get("data.txt") == b"data"
