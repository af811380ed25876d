"""MOUNT and MOUNT_CACHED on real FUSE mounts (rclone), against the local store.

`fuse_mount` is exercised directly (the local store is otherwise attached with a symlink), then
through `hangar storage mount/unmount` and `hangar launch` as subprocesses.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import hangar, make_tree, write_yaml
from mount_helpers import (
    Notes,
    assert_clean,
    cli_argv,
    hangar_cli,
    mounted,
    needs_fuse,
    no_leftover_mounts,
    rclone_pids,
    wait_for,
)

from hangar.errors import MountError
from hangar.models import MountCachedConfig, MountMode, MountSpec
from hangar.node import _rclone
from hangar.node._rc import RcClient
from hangar.node.mount import fuse_mount, is_mount_point, rclone_flags, resolve_cached
from hangar.stores.base import RcloneRemote
from hangar.stores.local import LocalStore

SECRET = "s3cr3t-Value-that-must-not-leak"

pytestmark = pytest.mark.usefixtures(no_leftover_mounts.__name__)


def _flag(flags: list[str], name: str) -> str | None:
    return flags[flags.index(name) + 1] if name in flags else None


# -- flags and environment (no FUSE needed) -------------------------------------------------------


def test_mount_streams_reads_and_uploads_on_close() -> None:
    flags = rclone_flags(MountMode.MOUNT, read_only=False, cached=None)
    assert _flag(flags, "--vfs-cache-mode") == "writes"
    assert _flag(flags, "--vfs-write-back") == "0s"
    assert "--read-only" not in flags and "--allow-non-empty" not in flags
    ro = rclone_flags(MountMode.MOUNT, read_only=True, cached=None)
    assert _flag(ro, "--vfs-cache-mode") == "off" and "--read-only" in ro
    # MOUNT reads are not MD5-hashed by rclone (it could compare only single-part objects, and
    # only at close); MOUNT_CACHED keeps rclone's check of what it serves from its cache.
    assert "--no-checksum" in flags and "--no-checksum" in ro
    # File times come from the listing: no request per file stat'ed (counted in
    # test_mount_cloud.py::test_mount_stat_and_read_cost_the_listing_and_one_get_per_file).
    assert "--use-server-modtime" in flags and "--use-server-modtime" in ro
    cached = rclone_flags(MountMode.MOUNT_CACHED, read_only=False, cached=None)
    assert "--no-checksum" not in cached


def test_mount_cached_defaults_presets_and_overrides() -> None:
    flags = rclone_flags(MountMode.MOUNT_CACHED, read_only=False, cached=None)
    assert _flag(flags, "--vfs-cache-mode") == "full"
    assert _flag(flags, "--vfs-cache-max-size") == "10G"
    assert _flag(flags, "--vfs-write-back") == "1s"
    assert _flag(flags, "--transfers") == "1"

    preset = MountCachedConfig(type="MODEL_CHECKPOINT_RO")
    flags = rclone_flags(MountMode.MOUNT_CACHED, read_only=False, cached=preset)
    assert _flag(flags, "--vfs-read-chunk-streams") == "16"
    assert _flag(flags, "--vfs-read-chunk-size") == "32M"
    assert "--read-only" in flags

    explicit = MountCachedConfig(
        type="DATASET_RW",
        transfers=3,
        buffer_size="64MB",
        vfs_cache_max_size="-1",
        vfs_cache_max_age="2h",
        vfs_read_ahead="128Mi",
        vfs_read_chunk_size="4M",
        vfs_write_back="10s",
    )
    flags = rclone_flags(MountMode.MOUNT_CACHED, read_only=False, cached=explicit)
    assert _flag(flags, "--transfers") == "3"  # explicit beats the preset's 16
    assert _flag(flags, "--vfs-read-chunk-streams") == "0"  # from the preset
    assert _flag(flags, "--vfs-read-chunk-size") == "4M"
    assert _flag(flags, "--buffer-size") == "64M"  # rclone refuses "64MB"
    assert _flag(flags, "--vfs-cache-max-size") == "off"
    assert _flag(flags, "--vfs-cache-max-age") == "2h"
    assert _flag(flags, "--vfs-read-ahead") == "128Mi"
    assert _flag(flags, "--vfs-write-back") == "10s"
    assert "--read-only" not in flags
    # An explicit read_only: false beats a read-only preset.
    writable = resolve_cached(MountCachedConfig(type="DATASET_RO", read_only=False))
    assert writable.read_only is False


def test_remote_is_defined_by_environment_under_a_unique_name() -> None:
    remote = RcloneRemote(
        backend="s3",
        path="bkt/pre",
        config={"provider": "Other", "endpoint": "http://127.0.0.1:1"},
        secret_env={
            "secret_access_key": SECRET,
            "RCLONE_CONFIG_REMOTE_ACCESS_KEY_ID": "AKID",
            "AWS_PROFILE": "dev",
        },
    )
    env = _rclone.remote_env("hangarabc123", remote)
    assert env == {
        "RCLONE_CONFIG_HANGARABC123_TYPE": "s3",
        "RCLONE_CONFIG_HANGARABC123_PROVIDER": "Other",
        "RCLONE_CONFIG_HANGARABC123_ENDPOINT": "http://127.0.0.1:1",
        "RCLONE_CONFIG_HANGARABC123_SECRET_ACCESS_KEY": SECRET,
        "RCLONE_CONFIG_HANGARABC123_ACCESS_KEY_ID": "AKID",
        "AWS_PROFILE": "dev",
    }


def test_without_fuse_the_error_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hangar_home: Path
) -> None:
    monkeypatch.setattr(_rclone, "FUSE_DEVICE", str(tmp_path / "no-such-device"))
    _refused(tmp_path, "nofuse", r"apt-get install fuse3")


def _refused(tmp_path: Path, bucket: str, match: str) -> Path:
    """Mounting a fresh local bucket fails with `match`, leaving the mount point empty."""
    store = LocalStore(bucket)
    store.create_bucket()
    target = tmp_path / "mnt"
    target.mkdir()
    spec = MountSpec(str(target), bucket, MountMode.MOUNT, "x")
    with pytest.raises(MountError, match=match), fuse_mount(store, spec, progress=Notes()):
        pass
    assert list(target.iterdir()) == []
    return target


def test_without_rclone_the_error_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hangar_home: Path
) -> None:
    monkeypatch.setenv("HANGAR_RCLONE", str(tmp_path / "no-rclone"))
    store = LocalStore("norclone")
    store.create_bucket()
    spec = MountSpec(str(tmp_path), "norclone", MountMode.MOUNT, "x")
    with (
        pytest.raises(MountError, match=r"pip install 'hangar\[mount\]'"),
        fuse_mount(store, spec, progress=Notes()),
    ):
        pass


def test_mounts_use_mount2_unless_told_or_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hangar_home: Path
) -> None:
    rclone = _rclone.find_rclone()
    monkeypatch.delenv("HANGAR_RCLONE_MOUNT", raising=False)
    assert _rclone.mount_command(rclone) == "mount2"  # the bundled rclone has it
    assert _rclone.mount_command(str(_rclone_without_mount2(tmp_path))) == "mount"
    monkeypatch.setenv("HANGAR_RCLONE_MOUNT", "mount")
    assert _rclone.mount_command(rclone) == "mount"
    # A wrong value is refused before anything is made: no log, no cache, nothing mounted.
    monkeypatch.setenv("HANGAR_RCLONE_MOUNT", "fuse3")
    target = _refused(tmp_path, "badcmd", r"HANGAR_RCLONE_MOUNT=fuse3 .* To fix: set it to mount2")
    assert not (hangar_home / "logs" / "mounts").exists() or not any(
        (hangar_home / "logs" / "mounts").iterdir()
    )
    assert_clean(hangar_home, target)


def _rclone_without_mount2(tmp_path: Path) -> Path:
    """An rclone as a build without `mount2` behaves: the real binary for everything else."""
    fake = tmp_path / "old-rclone" / "rclone"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = mount2 ]; then\n'
        '  echo \'Error: unknown command "mount2" for "rclone"\' >&2; exit 1\n'
        "fi\n"
        f'exec {_rclone.find_rclone()} "$@"\n'
    )
    fake.chmod(0o755)
    return fake


# -- fuse_mount on real mounts ---------------------------------------------------------------------


class SecretLocalStore(LocalStore):
    """A local store whose remote carries a credential (as the cloud stores' do)."""

    backend = "local"

    def mount_remote(self) -> RcloneRemote:
        remote = super().mount_remote()
        return RcloneRemote(
            self.backend, remote.path, config={"description": "x"}, secret_env={"token": SECRET}
        )


def _bucket(name: str, files: dict[str, bytes]) -> LocalStore:
    store = LocalStore(name)
    store.create_bucket()
    make_tree(store.bucket_path, dict(files))
    return store


@needs_fuse
def test_read_only_mount_reads_source_bytes_and_refuses_writes(
    tmp_path: Path, hangar_home: Path
) -> None:
    files = {"a.bin": os.urandom(3 * 1024 * 1024 + 17), "d/e/f.txt": b"nested", "empty": b""}
    store = _bucket("ro", files)
    target = tmp_path / "mnt"
    target.mkdir()
    spec = MountSpec(str(target), "ro", MountMode.MOUNT, "x", read_only=True)
    with fuse_mount(store, spec, progress=Notes()):
        assert mounted(target)
        for rel, data in files.items():
            assert (target / rel).read_bytes() == data
        for attempt in (
            lambda: (target / "new.txt").write_bytes(b"x"),
            lambda: (target / "a.bin").open("r+b"),
            lambda: (target / "newdir").mkdir(),
            lambda: (target / "empty").unlink(),
        ):
            with pytest.raises(OSError) as info:
                attempt()
            assert info.value.errno == errno.EROFS
    assert_clean(hangar_home, target)
    assert store.bucket_path.joinpath("a.bin").read_bytes() == files["a.bin"]


@needs_fuse
def test_mount_writes_reach_the_bucket_on_close(tmp_path: Path, hangar_home: Path) -> None:
    store = _bucket("rw", {"old.txt": b"0123456789"})
    target = tmp_path / "mnt"
    target.mkdir()
    payload = os.urandom(1024 * 1024)
    with fuse_mount(store, MountSpec(str(target), "rw", MountMode.MOUNT, "x"), progress=Notes()):
        (target / "out" / "deep").mkdir(parents=True)
        (target / "out/deep/new.bin").write_bytes(payload)
        with open(target / "old.txt", "r+b") as fh:  # O_RDWR + seek: needs the write cache
            fh.seek(3)
            fh.write(b"abc")
        with open(target / "old.txt", "ab") as fh:
            fh.write(b"!")
        # Close-to-open: the object is in the bucket while the mount is still up.
        new_obj = store.bucket_path / "out/deep/new.bin"
        wait_for(lambda: new_obj.exists() and new_obj.read_bytes() == payload, what="upload")
    assert (store.bucket_path / "old.txt").read_bytes() == b"012abc6789!"
    assert_clean(hangar_home, target)


@needs_fuse
@pytest.mark.parametrize("why", ["chosen", "no-mount2"])
def test_classic_rclone_mount_reads_and_writes(
    why: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hangar_home: Path
) -> None:
    """`rclone mount` (bazil FUSE) still serves MOUNT when HANGAR_RCLONE_MOUNT asks for it or
    the rclone binary has no `mount2`; the rest of this file runs on `mount2`."""
    if why == "chosen":
        monkeypatch.setenv("HANGAR_RCLONE_MOUNT", "mount")
    else:
        monkeypatch.delenv("HANGAR_RCLONE_MOUNT", raising=False)
        monkeypatch.setenv("HANGAR_RCLONE", str(_rclone_without_mount2(tmp_path)))
    data = os.urandom(2 * 1024 * 1024 + 5)
    store = _bucket("classic", {"in.bin": data})
    target = tmp_path / "mnt"
    target.mkdir()
    spec = MountSpec(str(target), "classic", MountMode.MOUNT, "x")
    with fuse_mount(store, spec, progress=Notes()):
        [pid] = rclone_pids(hangar_home)
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert argv[1] == b"mount"
        assert (target / "in.bin").read_bytes() == data
        (target / "out.bin").write_bytes(data[::-1])
    assert (store.bucket_path / "out.bin").read_bytes() == data[::-1]
    assert_clean(hangar_home, target)


@needs_fuse
def test_mount_cached_writes_are_all_in_the_bucket_when_the_block_ends(
    tmp_path: Path, hangar_home: Path
) -> None:
    store = _bucket("cached", {"in.txt": b"input"})
    target = tmp_path / "mnt"
    target.mkdir()
    written = {f"ckpt/shard-{i}.bin": os.urandom(200_000 + i) for i in range(5)}
    # A one-hour write-back: only the wait before unmounting can get these into the bucket.
    spec = MountSpec(
        str(target), "cached", MountMode.MOUNT_CACHED, "x",
        cached=MountCachedConfig(vfs_write_back="1h", type="MODEL_CHECKPOINT_RW"),
    )  # fmt: skip
    notes = Notes()
    with fuse_mount(store, spec, progress=notes):
        assert (target / "in.txt").read_bytes() == b"input"
        for rel, data in written.items():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            (target / rel).write_bytes(data)
        (target / "ckpt/DONE").write_text("ok")
    for rel, data in written.items():
        assert (store.bucket_path / rel).read_bytes() == data
    assert (store.bucket_path / "ckpt/DONE").read_text() == "ok"
    assert any("waiting for" in n and "to reach local://cached" in n for n in notes.notes)
    assert_clean(hangar_home, target)


@needs_fuse
@pytest.mark.parametrize("error", [RuntimeError("task failed"), KeyboardInterrupt()])
def test_block_raising_still_unmounts_and_keeps_writes(
    tmp_path: Path, hangar_home: Path, error: BaseException
) -> None:
    store = _bucket("crash", {})
    target = tmp_path / "mnt"
    target.mkdir()
    spec = MountSpec(str(target), "crash", MountMode.MOUNT_CACHED, "x")
    with pytest.raises(type(error)), fuse_mount(store, spec, progress=Notes()):
        (target / "partial.txt").write_text("written before the crash")
        raise error
    assert (store.bucket_path / "partial.txt").read_text() == "written before the crash"
    assert_clean(hangar_home, target)


@needs_fuse
def test_rclone_killed_mid_task_unmounts_and_uploads_what_its_cache_holds(
    tmp_path: Path, hangar_home: Path
) -> None:
    store = _bucket("killed", {})
    target = tmp_path / "mnt"
    target.mkdir()
    spec = MountSpec(
        str(target), "killed", MountMode.MOUNT_CACHED, "x",
        cached=MountCachedConfig(vfs_write_back="1h"),
    )  # fmt: skip
    notes = Notes()
    with fuse_mount(store, spec, progress=notes):
        (target / "kept.bin").write_bytes(b"k" * 100_000)
        record = json.loads((hangar_home / "mounts.json").read_text())["mounts"][str(target)]
        rc = RcClient(
            os.path.join(record["run_dir"], "rc.sock"), record["rc_user"], record["rc_pass"]
        )
        # Once rclone has queued the closed file (its cache records it as not uploaded yet)...
        wait_for(lambda: rc.call("vfs/stats")["diskCache"]["uploadsQueued"] == 1, what="queue")
        os.kill(record["pid"], signal.SIGKILL)  # ... it dies before uploading it.
        wait_for(lambda: rclone_pids(hangar_home) == [], what="rclone to die")
    assert (store.bucket_path / "kept.bin").read_bytes() == b"k" * 100_000
    assert any("left in the cache" in n for n in notes.notes)
    assert_clean(hangar_home, target)


@needs_fuse
def test_cache_state_lost_with_rclone_keeps_the_data_and_says_where(
    tmp_path: Path, hangar_home: Path
) -> None:
    store = _bucket("unknown", {})
    target = tmp_path / "mnt"
    target.mkdir()
    spec = MountSpec(
        str(target), "unknown", MountMode.MOUNT_CACHED, "x",
        cached=MountCachedConfig(vfs_write_back="1h"),
    )  # fmt: skip
    with (
        pytest.raises(MountError, match="kept in") as info,
        fuse_mount(store, spec, progress=Notes()),
    ):
        (target / "lost.bin").write_bytes(b"L" * 5000)
        record = json.loads((hangar_home / "mounts.json").read_text())["mounts"][str(target)]
        rc = RcClient(
            os.path.join(record["run_dir"], "rc.sock"), record["rc_user"], record["rc_pass"]
        )
        wait_for(lambda: rc.call("vfs/stats")["diskCache"]["uploadsQueued"] == 1, what="queue")
        os.kill(record["pid"], signal.SIGKILL)
        wait_for(lambda: rclone_pids(hangar_home) == [], what="rclone to die")
        # As if rclone had been killed while rewriting the file's metadata.
        [meta] = [p for p in Path(record["cache_dir"], "vfsMeta").rglob("lost.bin")]
        meta.write_bytes(b"")
    assert "lost.bin" in str(info.value)
    [data] = list(Path(record["cache_dir"], "vfs").rglob("lost.bin"))
    assert data.read_bytes() == b"L" * 5000
    assert not mounted(target) and rclone_pids(hangar_home) == []


@needs_fuse
def test_credentials_reach_rclone_through_its_environment_only(
    tmp_path: Path, hangar_home: Path
) -> None:
    store = SecretLocalStore("secret")
    store.create_bucket()
    target = tmp_path / "mnt"
    target.mkdir()
    with fuse_mount(
        store, MountSpec(str(target), "secret", MountMode.MOUNT, "x"), progress=Notes()
    ):
        [pid] = rclone_pids(hangar_home)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert SECRET.encode() not in cmdline
        assert any(e.endswith(b"_TOKEN=" + SECRET.encode()) for e in environ)
        registry = hangar_home / "mounts.json"
        assert SECRET not in registry.read_text()
        assert stat.S_IMODE(registry.stat().st_mode) == 0o600
        [log] = (hangar_home / "logs" / "mounts").iterdir()
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert_clean(hangar_home, target)


@needs_fuse
def test_rclone_failing_to_start_gives_argv_and_log_tail(tmp_path: Path, hangar_home: Path) -> None:
    class Broken(SecretLocalStore):
        backend = "no-such-backend"

    store = Broken("broken")
    store.create_bucket()
    target = tmp_path / "mnt"
    target.mkdir()
    spec = MountSpec(str(target), "broken", MountMode.MOUNT, "x")
    with pytest.raises(MountError) as info, fuse_mount(store, spec, progress=Notes()):
        pass
    err = info.value
    assert "rclone exited with status" in str(err)
    assert "no-such-backend" in err.log_tail
    assert err.argv[1] == "mount2" and str(target) in err.argv
    assert SECRET not in str(err) and SECRET not in " ".join(err.argv)
    assert_clean(hangar_home, target)


@needs_fuse
def test_two_mounts_of_one_bucket_at_once(tmp_path: Path, hangar_home: Path) -> None:
    store = _bucket("twice", {"shared.txt": b"same bytes"})
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    ro = MountSpec(str(first), "twice", MountMode.MOUNT, "x", read_only=True)
    rw = MountSpec(str(second), "twice", MountMode.MOUNT_CACHED, "y")
    with fuse_mount(store, ro, progress=Notes()), fuse_mount(store, rw, progress=Notes()):
        assert len(rclone_pids(hangar_home)) == 2
        assert (first / "shared.txt").read_bytes() == (second / "shared.txt").read_bytes()
        (second / "from-b.txt").write_text("b")
    assert (store.bucket_path / "from-b.txt").read_text() == "b"
    assert_clean(hangar_home, first, second)


# -- hangar storage mount / unmount ----------------------------------------------------------------


@needs_fuse
def test_cli_mount_detaches_and_unmount_stops_it(tmp_path: Path, hangar_home: Path) -> None:
    store = _bucket("clibkt", {"x/data.txt": b"cli data"})
    target = tmp_path / "new" / "mnt"  # parents created, and removed again by unmount
    result = hangar_cli("storage", "mount", "local://clibkt", str(target), "--mode", "MOUNT_CACHED")
    assert result.returncode == 0, result.stderr
    assert "hangar storage unmount" in result.stderr
    assert mounted(target)
    [pid] = rclone_pids(hangar_home)  # outlived the command that started it
    assert (target / "x/data.txt").read_bytes() == b"cli data"
    (target / "x/more.txt").write_text("written interactively")

    result = hangar_cli("storage", "unmount", str(target))
    assert result.returncode == 0, result.stderr
    assert (store.bucket_path / "x/more.txt").read_text() == "written interactively"
    assert not (tmp_path / "new").exists()
    assert_clean(hangar_home, target)
    assert not Path(f"/proc/{pid}/cmdline").exists() or rclone_pids(hangar_home) == []


@needs_fuse
def test_cli_mount_by_storage_name_read_only(tmp_path: Path, hangar_home: Path) -> None:
    src = make_tree(tmp_path / "src", {"f.txt": "from a storage"})
    up = hangar("storage", "upload", str(src), "--name", "named-store")
    assert up.returncode == 0, up.stderr
    target = tmp_path / "mnt"
    result = hangar_cli("storage", "mount", "named-store", str(target), "--read-only")
    assert result.returncode == 0, result.stderr
    try:
        assert (target / "f.txt").read_text() == "from a storage"
        with pytest.raises(OSError) as info:
            (target / "g.txt").write_text("no")
        assert info.value.errno == errno.EROFS
    finally:
        result = hangar_cli("storage", "unmount", str(target))
    assert result.returncode == 0, result.stderr
    assert_clean(hangar_home, target)


@needs_fuse
def test_cli_unmount_cleans_up_a_dead_mount_and_uploads_its_leftovers(
    tmp_path: Path, hangar_home: Path
) -> None:
    store = _bucket("dead", {})
    target = tmp_path / "dead"
    args = ["storage", "mount", "local://dead", str(target), "--mode", "MOUNT_CACHED"]
    assert hangar_cli(*args).returncode == 0
    (target / "late.txt").write_text("not uploaded when rclone died")
    record = json.loads((hangar_home / "mounts.json").read_text())["mounts"][str(target)]
    rc = RcClient(os.path.join(record["run_dir"], "rc.sock"), record["rc_user"], record["rc_pass"])
    wait_for(lambda: rc.call("vfs/stats")["diskCache"]["uploadsQueued"] == 1, what="queue")
    os.kill(record["pid"], signal.SIGKILL)
    try:
        wait_for(lambda: rclone_pids(hangar_home) == [], what="rclone to die")
        assert is_mount_point(str(target))  # dead: the kernel lists it, stat fails
        with pytest.raises(OSError) as info:
            os.stat(target)
        # The kernel answers ENOTCONN once the FUSE connection is gone, EIO while it goes.
        assert info.value.errno in (errno.ENOTCONN, errno.ECONNABORTED, errno.EIO)
        again = hangar_cli("storage", "mount", "local://dead", str(target))
        assert again.returncode == 2 and "already a mount point" in again.stderr
    finally:
        result = hangar_cli("storage", "unmount", str(target))
    assert result.returncode == 0, result.stderr
    assert (store.bucket_path / "late.txt").read_text() == "not uploaded when rclone died"
    assert not target.exists()
    assert_clean(hangar_home, target)


@needs_fuse
def test_cli_refuses_a_non_empty_directory_and_an_unmounted_path(tmp_path: Path) -> None:
    _bucket("refuse", {})
    busy = make_tree(tmp_path / "busy", {"mine.txt": "keep me"})
    result = hangar_cli("storage", "mount", "local://refuse", str(busy))
    assert result.returncode == 2
    assert "not empty" in result.stderr
    assert (busy / "mine.txt").read_text() == "keep me"
    result = hangar_cli("storage", "unmount", str(busy))
    assert result.returncode == 1
    assert "is not mounted" in result.stderr


@needs_fuse
def test_cli_foreground_mount_unmounts_on_sigterm(tmp_path: Path, hangar_home: Path) -> None:
    _bucket("fg", {"a.txt": b"a"})
    target = tmp_path / "fg"
    proc = subprocess.Popen(
        cli_argv("storage", "mount", "local://fg", str(target), "--foreground"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: mounted(target) and len(rclone_pids(hangar_home)) == 1, what="mount")
        assert (target / "a.txt").read_bytes() == b"a"
        held = hangar_cli("storage", "unmount", str(target))  # held by a live process
        assert held.returncode == 1 and "held by a running Hangar process" in held.stderr
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert not target.exists()
    assert_clean(hangar_home, target)


# -- hangar launch ---------------------------------------------------------------------------------


def _ro_task(tmp_path: Path, src: Path, run: str) -> Path:
    return write_yaml(
        tmp_path / "task.yaml",
        f"""
file_mounts:
  {tmp_path}/data:
    name: launch-ro
    source: {src}
    mode: MOUNT
    config:
      mount:
        read_only: true
run: |
{chr(10).join("  " + line for line in run.strip().splitlines())}
""",
    )


@needs_fuse
def test_launch_read_only_mount_reads_and_refuses_writes(tmp_path: Path, hangar_home: Path) -> None:
    data = os.urandom(512 * 1024)
    src = make_tree(tmp_path / "src", {"blob.bin": data, "sub/t.txt": "text"})
    out = tmp_path / "out"
    task = _ro_task(
        tmp_path,
        src,
        f"""
mkdir -p {out}
cp -r {tmp_path}/data/. {out}/
touch {tmp_path}/data/new.txt 2> {out}.err
echo $? > {out}.rc
""",
    )
    result = hangar("launch", str(task))
    assert result.returncode == 0, result.stderr
    assert (out / "blob.bin").read_bytes() == data
    assert (out / "sub/t.txt").read_text() == "text"
    assert (tmp_path / "out.rc").read_text().strip() != "0"
    assert "Read-only file system" in (tmp_path / "out.err").read_text()
    assert not (tmp_path / "data").exists()
    assert_clean(hangar_home)


@needs_fuse
def test_launch_read_only_preset_is_read_only(tmp_path: Path, hangar_home: Path) -> None:
    src = make_tree(tmp_path / "src", {"weights.bin": b"w" * 1000})
    task = write_yaml(
        tmp_path / "task.yaml",
        f"""
file_mounts:
  {tmp_path}/ckpt:
    name: preset-ro
    source: {src}
    mode: MOUNT_CACHED
    config:
      mount_cached:
        type: MODEL_CHECKPOINT_RO
run: |
  cmp {tmp_path}/ckpt/weights.bin {src}/weights.bin
  touch {tmp_path}/ckpt/new 2> {tmp_path}/err && exit 20
  exit 0
""",
    )
    result = hangar("launch", str(task))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Read-only file system" in (tmp_path / "err").read_text()
    assert sorted(p.name for p in (hangar_home / "buckets/preset-ro").iterdir()) == ["weights.bin"]
    assert_clean(hangar_home)


@needs_fuse
@pytest.mark.parametrize("run", ["exit 3", "kill -9 $$"])
def test_launch_crashing_task_still_unmounts(tmp_path: Path, hangar_home: Path, run: str) -> None:
    src = make_tree(tmp_path / "src", {"a.txt": "a"})
    task = _ro_task(tmp_path, src, f"cat {tmp_path}/data/a.txt\n{run}")
    result = hangar("launch", str(task))
    assert result.returncode == 3 if run == "exit 3" else result.returncode != 0
    assert result.stdout.startswith("a")
    assert not (tmp_path / "data").exists()
    assert_clean(hangar_home)


@needs_fuse
def test_launch_interrupted_with_ctrl_c_unmounts(tmp_path: Path, hangar_home: Path) -> None:
    src = make_tree(tmp_path / "src", {"a.txt": "a"})
    marker = tmp_path / "running"
    task = _ro_task(tmp_path, src, f"touch {marker}\nsleep 60")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hangar.cli", "launch", str(task)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(marker.exists, timeout=60, what="the task to start")
        assert mounted(tmp_path / "data")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert not (tmp_path / "data").exists()
    assert_clean(hangar_home)


def test_launch_copy_of_a_prefix(tmp_path: Path, hangar_home: Path) -> None:
    _bucket("copysrc", {"pre/a.txt": b"A", "pre/deep/b.txt": b"B", "other/c.txt": b"C"})
    out = tmp_path / "seen"
    task = write_yaml(
        tmp_path / "task.yaml",
        f"""
file_mounts:
  {tmp_path}/copy: local://copysrc/pre
run: cp -r {tmp_path}/copy {out}
""",
    )
    result = hangar("launch", str(task))
    assert result.returncode == 0, result.stderr
    seen = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert seen == {"a.txt": b"A", "deep/b.txt": b"B"}
    assert not (tmp_path / "copy").exists()
