"""Concurrency: launches of the same storage are serialised (and say so), launches of different
storages run in parallel, and the catalog survives many processes writing at once."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from conftest import unique_bucket
from servers.faultproxy import FaultProxy
from trust_helpers import is_object_write, md5s, proxied_env, seeded_tree, sizes, wait_for


def _launch(task: Path, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    with open(log, "w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "hangar.cli", "launch", str(task)],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
        )


def _task(path: Path, name: str, src: Path, mount: Path, store: str = "s3") -> Path:
    path.write_text(
        f"file_mounts:\n  {mount}:\n    name: {name}\n    source: {src}\n    store: {store}\n"
        f"    mode: COPY\nrun: ls {mount} | wc -l\n"
    )
    return path


def test_same_storage_launches_are_serialised(s3_backend: Any, tmp_path: Path) -> None:
    """B starts while A is uploading the same storage: B says it is waiting, starts only after
    A is done, and so finds nothing left to send."""
    src = tmp_path / "src"
    files = seeded_tree(src, 60, seed=1)
    name = unique_bucket("same")
    with FaultProxy(s3_backend.endpoint) as proxy:
        proxy.delay(120, is_object_write)  # A's upload is held mid-way until B is waiting
        env = proxied_env(s3_backend, proxy.url)
        a = _launch(_task(tmp_path / "a.yaml", name, src, tmp_path / "ma"), env, tmp_path / "a.log")
        wait_for(lambda: proxy.count("PUT", f"/{name}/") >= 1, timeout=60, what="A uploading")
        b = _launch(_task(tmp_path / "b.yaml", name, src, tmp_path / "mb"), env, tmp_path / "b.log")
        b_log = tmp_path / "b.log"
        wait_for(lambda: "waiting for" in b_log.read_text(), timeout=60, what="B to wait")
        assert a.poll() is None  # A still holds the storage: B really waited for it
        proxy.clear()  # the held requests fail once and are retried: A completes
        a_out, _ = a.communicate(timeout=120)
        b_out, _ = b.communicate(timeout=120)
    a_err, b_err = (tmp_path / "a.log").read_text(), b_log.read_text()
    assert a.returncode == 0 and b.returncode == 0, (a_err, b_err)
    assert f"waiting for {name}" in b_err
    assert "sent 60 file(s)" in a_err and "sent 0 file(s)" in b_err
    assert a_out.strip() == b_out.strip() == "7"
    assert md5s(s3_backend.objects(name)) == md5s(files)


def test_different_storages_upload_in_parallel(s3_backend: Any, tmp_path: Path) -> None:
    """Two launches of two storages: both uploads are in progress at the same moment (the
    proxy holds their first writes until it has seen writes from both)."""
    names = [unique_bucket("par"), unique_bucket("par")]
    sources = [tmp_path / "s0", tmp_path / "s1"]
    for i, src in enumerate(sources):
        seeded_tree(src, 60, seed=10 + i)
    with FaultProxy(s3_backend.endpoint) as proxy:
        proxy.delay(120, is_object_write)
        env = proxied_env(s3_backend, proxy.url)
        procs = [
            _launch(
                _task(tmp_path / f"t{i}.yaml", n, s, tmp_path / f"m{i}"), env, tmp_path / f"{i}.log"
            )
            for i, (n, s) in enumerate(zip(names, sources, strict=True))
        ]

        def both_in_progress() -> bool:
            return all(proxy.count("PUT", f"/{n}/") >= 1 for n in names)

        wait_for(both_in_progress, timeout=60, what="both uploads in progress at once")
        assert all(p.poll() is None for p in procs)
        assert [sizes(s3_backend, n) for n in names] == [{}, {}]  # neither has finished one
        proxy.clear()
        for p in procs:
            p.communicate(timeout=120)
    assert [p.returncode for p in procs] == [0, 0]


_HAMMER = textwrap.dedent(
    """
    import sys
    from hangar.catalog import Catalog, Status
    worker = int(sys.argv[1])
    for i in range(40):
        with Catalog() as cat:
            name = f"s{worker}-{i % 5}"
            cat.upsert_storage(name, source="/src", persistent=True, mode="COPY",
                               sync="additive", command="hammer")
            cat.set_store(name, "s3", url=f"s3://{name}", status=Status.INIT, created=True,
                          position=0)
            cat.set_status(name, "s3", Status.READY)
            cat.set_stats(name, objects=i, nbytes=i * 10)
            assert cat.get(name) is not None
            cat.list()
            if i % 7 == 6:
                cat.forget(name)
    """
)


def test_catalog_survives_many_concurrent_writers(hangar_home: Path) -> None:
    """Ten processes each make 40 rounds of catalog writes at once: none fails (WAL + busy
    timeout), the database passes SQLite's integrity check, and every row is consistent."""
    procs = [
        subprocess.Popen([sys.executable, "-c", _HAMMER, str(w)], stderr=subprocess.PIPE, text=True)
        for w in range(10)
    ]
    errors = [p.communicate(timeout=180)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 10, errors
    db = sqlite3.connect(hangar_home / "catalog.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        names = {r[0] for r in db.execute("SELECT name FROM storages")}
        stores = db.execute("SELECT name, status FROM storage_stores").fetchall()
    finally:
        db.close()
    # Rounds 35..39 of each worker wrote every name last, and none of those rounds forgot it.
    assert names == {f"s{w}-{k}" for w in range(10) for k in range(5)}
    assert sorted(stores) == sorted((n, "READY") for n in names)
