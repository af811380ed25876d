"""`hangar launch` end to end on every store, checked with each cloud's own client."""

from __future__ import annotations

import os
from pathlib import Path

from backends import Backend
from conftest import unique_bucket
from helpers import hangar, make_tree, storage_ls, write_yaml


def _env(backend: Backend) -> dict[str, str]:
    env = dict(os.environ)
    env.update(backend.env)
    return env


def test_launch_upload_relaunch_delete(backend: Backend, tmp_path: Path) -> None:
    files: dict[str, bytes | str] = {
        "train/a.csv": "x,y\n1,2\n",
        "train/b.bin": os.urandom(300_000),
        "README.md": "data",
    }
    src = make_tree(tmp_path / "src", files)
    name = unique_bucket("e2e")
    task = write_yaml(
        tmp_path / "t.yaml",
        f"""
file_mounts:
  {tmp_path}/data:
    name: {name}
    source: {src}
    store: {backend.store_type}
    mode: COPY
run: cat {tmp_path}/data/train/a.csv
""",
    )
    env = _env(backend)
    first = hangar("launch", str(task), env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "x,y\n1,2\n"
    assert "sent 3 file(s)" in first.stderr
    expected = {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}
    assert backend.objects(name) == expected

    second = hangar("launch", str(task), env=env)
    assert second.returncode == 0, second.stderr
    assert "sent 0 file(s)" in second.stderr

    [record] = storage_ls(env)
    assert record["status"] == "READY" and record["stores"][0]["created"] is True
    deleted = hangar("storage", "delete", name, "-y", env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert not backend.bucket_exists(name)
    assert storage_ls(env) == []


def test_foreign_bucket_survives_delete(backend: Backend, tmp_path: Path) -> None:
    name = unique_bucket("theirs")
    backend.create_foreign_bucket(name, {"keep/me.txt": b"precious", "b.txt": b"b"})
    try:
        uri = backend.open(name).url
        task = write_yaml(
            tmp_path / "t.yaml",
            f"""
file_mounts:
  {tmp_path}/in: {uri}/keep
run: cat {tmp_path}/in/me.txt
""",
        )
        env = _env(backend)
        result = hangar("launch", str(task), env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "precious"
        deleted = hangar("storage", "delete", name, "-y", env=env)
        assert deleted.returncode == 0, deleted.stderr
        assert "not created by Hangar" in deleted.stderr
        assert backend.objects(name) == {"keep/me.txt": b"precious", "b.txt": b"b"}
    finally:
        backend.delete_foreign_bucket(name)


def test_existing_bucket_is_never_adopted(backend: Backend, tmp_path: Path) -> None:
    name = unique_bucket("taken")
    backend.create_foreign_bucket(name, {"x": b"1"})
    try:
        src = make_tree(tmp_path / "src", {"mine.txt": "y"})
        task = write_yaml(
            tmp_path / "t.yaml",
            f"""
file_mounts:
  {tmp_path}/m:
    name: {name}
    source: {src}
    store: {backend.store_type}
    mode: COPY
run: "true"
""",
        )
        result = hangar("launch", str(task), env=_env(backend))
        assert result.returncode == 1
        assert "already exists" in result.stderr
        assert backend.objects(name) == {"x": b"1"}
    finally:
        backend.delete_foreign_bucket(name)


def test_several_stores_are_kept_identical(
    s3_backend: Backend, gcs_backend: Backend, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", {"a.txt": "a", "d/b.txt": "b"})
    name = unique_bucket("multi")
    env = {**_env(s3_backend), **gcs_backend.env}

    def task(stores: str) -> Path:
        return write_yaml(
            tmp_path / "t.yaml",
            f"""
storage:
  name: {name}
  source: {src}
  force_stores: [{stores}]
storage_mounts:
  - storage: {name}
    mount_path: {tmp_path}/m
    mode: COPY
run: cat {tmp_path}/m/a.txt
""",
        )

    first = hangar("launch", str(task("s3")), env=env)
    assert first.returncode == 0, first.stderr
    (src / "a.txt").write_text("a2")
    second = hangar("launch", str(task("s3, gcs")), env=env)
    assert second.returncode == 0, second.stderr
    assert second.stdout == "a2"  # the first listed store is the one attached
    want = {"a.txt": b"a2", "d/b.txt": b"b"}
    assert s3_backend.objects(name) == want
    assert gcs_backend.objects(name) == want
    [record] = storage_ls(env)
    assert [(s["store"], s["status"]) for s in record["stores"]] == [
        ("s3", "READY"),
        ("gcs", "READY"),
    ]
    assert hangar("storage", "delete", name, "-y", env=env).returncode == 0
    assert not s3_backend.bucket_exists(name) and not gcs_backend.bucket_exists(name)
