"""MOUNT, MOUNT_CACHED and COPY through `hangar launch`, for every store (local, S3, GCS, Azure).

Each task runs as a user runs it (a `hangar` subprocess with the backend's environment); what
reached the bucket is read back with the cloud's own client (`backend.objects`).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import pytest
from backends import Backend
from helpers import hangar, make_tree, write_yaml
from mount_helpers import assert_clean, needs_fuse, no_leftover_mounts
from servers.faultproxy import FaultProxy
from trust_helpers import proxied_env

pytestmark = [needs_fuse, pytest.mark.usefixtures(no_leftover_mounts.__name__)]

_SCHEME = {"local": "local", "s3": "s3", "gcs": "gs", "azure": "az"}

# Run inside the task: the command line of every rclone Hangar started, from its registry.
_DUMP = """
import json, os, sys
mounts = json.load(open(os.path.join(os.environ["HANGAR_HOME"], "mounts.json")))["mounts"]
out = {}
for path, record in mounts.items():
    with open(f"/proc/{record['pid']}/cmdline", "rb") as fh:
        out[path] = fh.read().decode("utf-8", "replace").split("\\0")
json.dump(out, sys.stdout)
"""


def _name(tag: str) -> str:
    return f"hgm-{tag}-{uuid.uuid4().hex[:10]}"


def _secrets(backend: Backend) -> list[str]:
    """Credential values from the backend's environment (the Azure key inside its string)."""
    values = []
    for key, value in backend.env.items():
        if "CONNECTION_STRING" in key:
            values += [p.split("=", 1)[1] for p in value.split(";") if p.startswith("AccountKey=")]
        elif "SECRET" in key or key.endswith("_KEY") or key.endswith("KEY_ID"):
            values.append(value)
    return values


def _indent(script: str) -> str:
    return "\n".join("  " + line for line in script.strip().splitlines())


def test_mount_modes_through_launch(
    backend: Backend, env_for: dict[str, str], tmp_path: Path, hangar_home: Path
) -> None:
    blob = os.urandom(1536 * 1024 + 7)
    src = make_tree(tmp_path / "src", {"blob.bin": blob, "sub/t.txt": "text"})
    data, scratch = _name("data"), _name("ckpt")
    m, out = tmp_path / "m", tmp_path / "out"
    out.mkdir()
    dump = tmp_path / "dump.py"
    dump.write_text(_DUMP)
    run = f"""
set -e
cmp {m}/rw/blob.bin {src}/blob.bin
cmp {m}/ro/blob.bin {src}/blob.bin
cp {m}/ro/sub/t.txt {out}/t.txt
mkdir -p {m}/rw/written
printf 'through the mount' > {m}/rw/written/new.txt
if touch {m}/ro/refused 2> {out}/ro.err; then exit 20; fi
for i in 1 2 3; do
  head -c 300000 /dev/urandom > {m}/cached/ckpt-$i.bin
  cp {m}/cached/ckpt-$i.bin {out}/ckpt-$i.bin
done
{sys.executable} {dump} > {out}/cmdlines.json
"""
    task = write_yaml(
        tmp_path / "task.yaml",
        f"""
storage:
  - name: {data}
    source: {src}
  - name: {scratch}
storage_mounts:
  - storage: {data}
    mount_path: {m}/rw
    mode: MOUNT
  - storage: {data}
    mount_path: {m}/ro
    mode: MOUNT
    config:
      mount:
        read_only: true
  - storage: {scratch}
    mount_path: {m}/cached
    mode: MOUNT_CACHED
    config:
      mount_cached:
        vfs_write_back: 1h
        type: MODEL_CHECKPOINT_RW
run: |
{_indent(run)}
""",
    )
    result = hangar("launch", str(task), env=env_for, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr

    assert backend.objects(data)["written/new.txt"] == b"through the mount"
    written = backend.objects(scratch)
    for i in (1, 2, 3):  # all in the bucket when launch returned, despite a 1h write-back
        assert written[f"ckpt-{i}.bin"] == (out / f"ckpt-{i}.bin").read_bytes()
    assert (out / "t.txt").read_text() == "text"
    assert "Read-only file system" in (out / "ro.err").read_text()

    cmdlines = json.loads((out / "cmdlines.json").read_text())
    fuse_paths = (
        {f"{m}/ro"}
        if backend.store_type == "local"
        else {f"{m}/{d}" for d in ("rw", "ro", "cached")}
    )
    assert set(cmdlines) == fuse_paths
    for argv in cmdlines.values():
        assert os.path.basename(argv[0]) == "rclone" and argv[1] == "mount2"
        for secret in _secrets(backend):
            assert secret not in " ".join(argv)
    assert not m.exists()
    assert_clean(hangar_home)


def test_copy_of_a_prefix(
    backend: Backend, env_for: dict[str, str], tmp_path: Path, hangar_home: Path
) -> None:
    bucket = _name("copy")
    backend.create_foreign_bucket(
        bucket, {"pre/a.txt": b"A", "pre/deep/b.txt": b"B", "prefix-not/c.txt": b"C"}
    )
    try:
        out = tmp_path / "seen"
        task = write_yaml(
            tmp_path / "task.yaml",
            f"""
file_mounts:
  {tmp_path}/copy: {_SCHEME[backend.store_type]}://{bucket}/pre
run: cp -r {tmp_path}/copy {out}
""",
        )
        result = hangar("launch", str(task), env=env_for, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        seen = {
            p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()
        }
        assert seen == {"a.txt": b"A", "deep/b.txt": b"B"}
        assert not (tmp_path / "copy").exists()
        assert len(backend.objects(bucket)) == 3  # the bucket is the user's: untouched
    finally:
        backend.delete_foreign_bucket(bucket)


@pytest.mark.parametrize("crash", ["exit 3", "kill -9 $$"])
def test_crashing_task_keeps_its_writes_and_unmounts(
    backend: Backend, env_for: dict[str, str], tmp_path: Path, hangar_home: Path, crash: str
) -> None:
    scratch = _name("crash")
    m = tmp_path / "m"
    task = write_yaml(
        tmp_path / "task.yaml",
        f"""
file_mounts:
  {m}/cached:
    name: {scratch}
    mode: MOUNT_CACHED
    config:
      mount_cached:
        vfs_write_back: 1h
  {m}/plain:
    name: {scratch}
    mode: MOUNT
run: |
  printf 'before the crash' > {m}/cached/last-words.txt
  printf 'streamed' > {m}/plain/streamed.txt
  {crash}
""",
    )
    result = hangar("launch", str(task), env=env_for, timeout=300)
    if crash == "exit 3":
        assert result.returncode == 3, result.stdout + result.stderr
    else:
        assert result.returncode != 0
    objects = backend.objects(scratch)
    assert objects["last-words.txt"] == b"before the crash"
    assert objects["streamed.txt"] == b"streamed"
    assert not m.exists()
    assert_clean(hangar_home)


def test_mount_stat_and_read_cost_the_listing_and_one_get_per_file(
    s3_backend: Backend, tmp_path: Path, hangar_home: Path
) -> None:
    """`ls -l` and reading every file of a MOUNT (writable and read-only) cost the listing and
    one GET per file, counted at a proxy in front of the S3 server: no HEAD per file (S3
    listings carry no metadata, so a mount that reads metadata pays a request per stat)."""
    n = 30
    files = {f"d/f{i:03d}.bin": os.urandom(1000 + i) for i in range(n)}
    src = make_tree(tmp_path / "src", files)
    name = _name("stat")
    env = {**os.environ, **s3_backend.env}
    up = hangar("storage", "upload", str(src), "--name", name, env=env, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    with FaultProxy(s3_backend.endpoint) as proxy:
        penv = {**env, **proxied_env(s3_backend, proxy.url)}
        for read_only in (False, True):
            point = tmp_path / f"mnt-{'ro' if read_only else 'rw'}"
            point.mkdir()
            extra = ["--read-only"] if read_only else []
            mounted = hangar("storage", "mount", name, str(point), *extra, env=penv)
            assert mounted.returncode == 0, mounted.stdout + mounted.stderr
            heads, gets = proxy.count("HEAD"), proxy.count("GET", f"/{name}/d/")
            try:
                sizes = {p.name: p.stat().st_size for p in (point / "d").iterdir()}
                assert sizes == {k[2:]: len(v) for k, v in files.items()}
                for rel, data in files.items():
                    assert (point / rel).read_bytes() == data
                heads, gets = proxy.count("HEAD") - heads, proxy.count("GET", f"/{name}/d/") - gets
            finally:
                done = hangar("storage", "unmount", str(point), env=penv)
                assert done.returncode == 0, done.stdout + done.stderr
            assert (heads, gets) == (0, n), proxy.summary()
    assert_clean(hangar_home)
