"""`hangar launch` and `hangar storage` end to end, as a user runs them (subprocess)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, hangar, make_tree, storage_ls, write_yaml


def _bucket(home: Path, name: str) -> Path:
    return home / "buckets" / name


def _inodes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_ino for p in root.rglob("*") if p.is_file()}


def test_quickstart_runs_and_second_launch_sends_nothing(hangar_home: Path) -> None:
    first = hangar("launch", "examples/quickstart.yaml")
    assert first.returncode == 0, first.stderr
    assert "trained on 120 points: y = 3.0" in first.stdout
    assert "sent 3 file(s)" in first.stderr
    bucket = _bucket(hangar_home, "hangar-quickstart-data")
    before = _inodes(bucket)
    assert sorted(before) == ["shard-0.csv", "shard-1.csv", "shard-2.csv"]

    second = hangar("launch", "examples/quickstart.yaml")
    assert second.returncode == 0, second.stderr
    assert "sent 0 file(s)" in second.stderr
    assert _inodes(bucket) == before  # no object was rewritten
    assert not Path("/tmp/hangar-quickstart/data").exists()  # mount undone, parents removed
    [record] = storage_ls()
    assert record["name"] == "hangar-quickstart-data"
    assert record["status"] == "READY"
    assert record["objects"] == 3
    assert record["stores"][0]["created"] is True


def test_changed_file_is_the_only_one_sent(tmp_path: Path, hangar_home: Path) -> None:
    src = make_tree(tmp_path / "src", {"a.txt": "a", "b.txt": "b", "sub/c.txt": "c"})
    task = write_yaml(
        tmp_path / "t.yaml",
        f"""
file_mounts:
  {tmp_path}/mnt:
    name: changed-files
    source: {src}
run: cat {tmp_path}/mnt/sub/c.txt
""",
    )
    assert hangar("launch", str(task)).returncode == 0
    (src / "sub/c.txt").write_text("c2 changed")
    result = hangar("launch", str(task))
    assert result.returncode == 0, result.stderr
    assert "sent 1 file(s)" in result.stderr
    assert result.stdout.strip() == "c2 changed"


def test_task_writes_through_mount_land_in_bucket(tmp_path: Path, hangar_home: Path) -> None:
    task = write_yaml(
        tmp_path / "t.yaml",
        f"""
name: writer
file_mounts:
  {tmp_path}/out:
    name: scratch-out
    mode: MOUNT
run: |
  echo "rank $HANGAR_NODE_RANK of $HANGAR_NUM_NODES" > {tmp_path}/out/result.txt
""",
    )
    result = hangar("launch", str(task))
    assert result.returncode == 0, result.stderr
    assert (_bucket(hangar_home, "scratch-out") / "result.txt").read_text() == "rank 0 of 1\n"
    # And it is there for the next run.
    reader = write_yaml(
        tmp_path / "r.yaml",
        f"""
file_mounts:
  {tmp_path}/in:
    name: scratch-out
run: cat {tmp_path}/in/result.txt
""",
    )
    again = hangar("launch", str(reader))
    assert again.returncode == 0, again.stderr
    assert again.stdout == "rank 0 of 1\n"


def test_non_persistent_storage_leaves_no_bucket_and_no_record(
    tmp_path: Path, hangar_home: Path
) -> None:
    src = make_tree(tmp_path / "src", {"x.txt": "x"})
    task = write_yaml(
        tmp_path / "t.yaml",
        f"""
file_mounts:
  {tmp_path}/m:
    name: ephemeral-data
    source: {src}
    persistent: false
    mode: COPY
run: cat {tmp_path}/m/x.txt; exit 3
""",
    )
    result = hangar("launch", str(task))
    assert result.returncode == 3  # the task's own code
    assert result.stdout == "x"
    assert not _bucket(hangar_home, "ephemeral-data").exists()
    assert storage_ls() == []
    assert not (tmp_path / "m").exists()


def test_delete_forgets_a_bucket_hangar_did_not_create(tmp_path: Path, hangar_home: Path) -> None:
    foreign = make_tree(_bucket(hangar_home, "users-own"), {"keep/me.txt": "precious"})
    task = write_yaml(
        tmp_path / "t.yaml",
        f"""
storage:
  name: users-own
  source: local://users-own
storage_mounts:
  - storage: users-own
    mount_path: {tmp_path}/m
run: cat {tmp_path}/m/keep/me.txt
""",
    )
    result = hangar("launch", str(task))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "precious"
    [record] = storage_ls()
    assert record["stores"][0]["created"] is False
    deleted = hangar("storage", "delete", "users-own", "-y")
    assert deleted.returncode == 0, deleted.stderr
    assert "not created by Hangar" in deleted.stderr
    assert (foreign / "keep/me.txt").read_text() == "precious"
    assert storage_ls() == []


def test_existing_bucket_is_not_adopted(tmp_path: Path, hangar_home: Path) -> None:
    make_tree(_bucket(hangar_home, "taken-name"), {"theirs.txt": "x"})
    src = make_tree(tmp_path / "src", {"mine.txt": "y"})
    task = write_yaml(
        tmp_path / "t.yaml",
        f"""
file_mounts:
  {tmp_path}/m:
    name: taken-name
    source: {src}
run: "true"
""",
    )
    result = hangar("launch", str(task))
    assert result.returncode == 1
    assert "already exists" in result.stderr and "source: local://taken-name" in result.stderr
    assert sorted(os.listdir(_bucket(hangar_home, "taken-name"))) == ["theirs.txt"]
    assert storage_ls() == []


def test_storage_delete_removes_created_bucket_and_asks(tmp_path: Path, hangar_home: Path) -> None:
    src = make_tree(tmp_path / "src", {"f": "1"})
    for name in ("proj-a", "proj-b", "other"):
        up = hangar("storage", "upload", str(src), "--name", name)
        assert up.returncode == 0, up.stderr
    no_tty = hangar("storage", "delete", "proj-*")
    assert no_tty.returncode == 2 and "-y" in no_tty.stderr
    assert len(storage_ls()) == 3
    result = hangar("storage", "delete", "proj-*", "-y")
    assert result.returncode == 0, result.stderr
    assert [r["name"] for r in storage_ls()] == ["other"]
    assert not _bucket(hangar_home, "proj-a").exists()
    assert _bucket(hangar_home, "other").exists()
    missing = hangar("storage", "delete", "nope", "-y")
    assert missing.returncode == 1 and "no storage matches" in missing.stderr
    assert hangar("storage", "delete", "--all", "-y").returncode == 0
    assert storage_ls() == []


def test_storage_ls_table_and_json(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a": "12345", "b/c": "678"})
    assert hangar("storage", "upload", str(src), "--name", "ls-demo").returncode == 0
    table = hangar("storage", "ls")
    assert table.returncode == 0
    header = table.stdout.splitlines()[0].split()
    assert header == ["NAME", "UPDATED", "STORES", "SOURCE", "SIZE", "STATUS"]
    assert "ls-demo" in table.stdout and "local://ls-demo" in table.stdout
    assert "READY" in table.stdout
    [record] = json.loads(hangar("storage", "ls", "--json").stdout)
    assert record["objects"] == 2 and record["bytes"] == 8
    assert record["source"] == str(src)


# Runs the real CLI in this interpreter, then says which heavy modules it loaded (`app`, not
# `main`: main leaves with os._exit when it can, before anything could be printed here).
_LOADED = """
import sys
from hangar.cli import app
sys.argv = ["hangar", *sys.argv[1:]]
try:
    app()
except SystemExit as exc:
    code = exc.code
heavy = ("pydantic", "boto3", "pathspec", "rich", "filelock")
print(code, *[m for m in heavy if m in sys.modules], file=sys.stderr)
"""


def test_commands_without_a_spec_do_not_load_pydantic(tmp_path: Path) -> None:
    """Work counted, not time: `storage upload` (and its re-sync), `storage ls` and `storage
    download` (a COPY on its own) do not import pydantic (~0.17 s), which only the task YAML's
    nested mappings need (a `storage:` entry is checked by hand); nor does the CLI framework
    pull it in to parse options. Nor boto3, nor pathspec (only a source with a .skyignore needs
    it); without a terminal none loads rich (~40 ms; `ls` prints a table with it), and only
    upload, which takes the storage's lock, loads filelock (~20 ms)."""
    src = make_tree(tmp_path / "src", {"a": "12345", "b/c": "678"})
    for args, loaded in (
        (["storage", "upload", str(src), "--name", "light"], "0 filelock"),
        (["storage", "upload", str(src), "--name", "light"], "0 filelock"),  # the re-sync
        (["storage", "ls"], "0 rich"),
        (["storage", "download", "light", str(tmp_path / "dl")], "0"),
    ):
        out = subprocess.run(
            [sys.executable, "-c", _LOADED, *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )
        assert out.stderr.strip().splitlines()[-1] == loaded, (args, out.stderr)
    assert (tmp_path / "dl" / "b" / "c").read_text() == "678"


def test_a_terminal_gets_a_live_progress_bar(tmp_path: Path) -> None:
    """On a terminal, upload and download draw rich's bar (bytes, files, rate, ETA) on stderr;
    rich is imported only then, so this is the test that it still is."""
    import pty

    src = make_tree(tmp_path / "src", {"a": "12345", "b/c": "678"})
    for args in (
        ["storage", "upload", str(src), "--name", "tty"],
        ["storage", "download", "tty", str(tmp_path / "dl")],
    ):
        main, child = pty.openpty()
        proc = subprocess.Popen(
            [sys.executable, "-m", "hangar.cli", *args],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=child,
            env={**os.environ, "COLUMNS": "250"},  # a new pty has no size: room for every column
        )  # fmt: skip
        os.close(child)
        seen = b""
        while True:
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            seen += data
        os.close(main)
        assert proc.wait(timeout=120) == 0, seen
        text = seen.decode(errors="replace")
        assert "\x1b[" in text and "━" in text, text  # rich's bar, not plain lines
        assert "2/2 files" in text and "8/8 bytes" in text, text
    assert (tmp_path / "dl" / "b" / "c").read_text() == "678"


def test_env_and_node_variables_reach_commands(tmp_path: Path) -> None:
    task = write_yaml(
        tmp_path / "t.yaml",
        """
name: envs
envs:
  GREETING: hello
  TRICKY: "$(echo injected); rm -rf /nonexistent"
setup: echo "setup sees $GREETING"
run: |
  echo "$GREETING $WHO"
  echo "$TRICKY"
  echo "$HANGAR_NODE_RANK $HANGAR_NUM_NODES $SKYPILOT_NODE_RANK $SKYPILOT_NUM_NODES"
  echo "$HANGAR_NODE_IPS" | wc -l
  test "$HANGAR_TASK_ID" = "$SKYPILOT_TASK_ID" && echo same-task-id
""",
    )
    result = hangar("launch", str(task), "--env", "WHO=world")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "setup sees hello",
        "hello world",
        "$(echo injected); rm -rf /nonexistent",
        "0 1 0 1",
        "1",
        "same-task-id",
    ]


def test_failed_setup_skips_run_and_logs_are_kept(tmp_path: Path, hangar_home: Path) -> None:
    task = write_yaml(
        tmp_path / "t.yaml",
        """
name: failing
setup: echo preparing; exit 7
run: echo should-not-run
""",
    )
    result = hangar("launch", str(task))
    assert result.returncode == 7
    assert "should-not-run" not in result.stdout
    [task_dir] = list((hangar_home / "logs").iterdir())
    assert task_dir.name.startswith("failing-")
    assert (task_dir / "setup.log").read_text() == "preparing\n"
    assert not (task_dir / "run.log").exists()


def test_workdir_is_the_current_directory_of_commands(tmp_path: Path) -> None:
    work = make_tree(tmp_path / "work", {"marker.txt": "here"})
    task = write_yaml(tmp_path / "t.yaml", f"workdir: {work}\nrun: cat marker.txt\n")
    result = hangar("launch", str(task))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "here"


def test_dry_run_touches_nothing(tmp_path: Path, hangar_home: Path) -> None:
    src = make_tree(tmp_path / "src", {"a.txt": "a", "b.bin": b"\0" * 100})
    task = write_yaml(
        tmp_path / "t.yaml",
        f"""
file_mounts:
  {tmp_path}/m:
    name: dry-data
    source: {src}
  {tmp_path}/s:
    name: dry-scratch
run: "true"
""",
    )
    result = hangar("launch", str(task), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "create bucket local://dry-data" in result.stdout
    assert "upload 2 file(s)" in result.stdout
    assert "a.txt" in result.stdout
    assert not (hangar_home / "buckets" / "dry-data").exists()
    assert not (hangar_home / "buckets" / "dry-scratch").exists()
    assert storage_ls() == []
    assert not (tmp_path / "m").exists()


def test_non_empty_mount_path_is_refused_and_untouched(tmp_path: Path, hangar_home: Path) -> None:
    target = make_tree(tmp_path / "busy", {"user-file.txt": "mine"})
    task = write_yaml(
        tmp_path / "t.yaml",
        f"""
file_mounts:
  {target}:
    name: busy-target
run: "true"
""",
    )
    for extra in ([], ["--dry-run"]):
        result = hangar("launch", str(task), *extra)
        assert result.returncode == 2, result.stderr
        assert "not empty" in result.stderr and f"file_mounts.{target}" in result.stderr
    assert (target / "user-file.txt").read_text() == "mine"
    assert not (hangar_home / "buckets" / "busy-target").exists()
    assert storage_ls() == []


def test_invalid_task_exits_2_without_traceback(tmp_path: Path) -> None:
    task = write_yaml(tmp_path / "t.yaml", "run: true\n")
    result = hangar("launch", str(task))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "quot" in result.stderr  # suggests quoting the boolean


def test_missing_source_exits_2(tmp_path: Path, hangar_home: Path) -> None:
    task = write_yaml(
        tmp_path / "t.yaml",
        f"""
file_mounts:
  {tmp_path}/m:
    name: missing-src
    source: {tmp_path}/does-not-exist
run: "true"
""",
    )
    result = hangar("launch", str(task))
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert storage_ls() == []


def test_single_file_source_must_be_a_list(tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("1")
    task = write_yaml(
        tmp_path / "t.yaml",
        f"""
file_mounts:
  {tmp_path}/m:
    name: single-file
    source: {tmp_path}/one.txt
run: "true"
""",
    )
    result = hangar("launch", str(task))
    assert result.returncode == 2
    assert "must be written as a list" in result.stderr


def test_copy_list_source_and_plain_file_mounts(tmp_path: Path, hangar_home: Path) -> None:
    make_tree(tmp_path, {"notes.txt": "n", "dir/inner.txt": "i", "plain/p.txt": "p"})
    task = write_yaml(
        tmp_path / "t.yaml",
        f"""
file_mounts:
  {tmp_path}/c:
    name: list-src
    source: [{tmp_path}/notes.txt, {tmp_path}/dir]
    mode: COPY
  {tmp_path}/copied: {tmp_path}/plain
  {tmp_path}/one.txt: {tmp_path}/notes.txt
run: |
  cd {tmp_path}
  find c copied one.txt -type f | sort
""",
    )
    result = hangar("launch", str(task))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["c/dir/inner.txt", "c/notes.txt", "copied/p.txt", "one.txt"]
    objects = sorted(p.name for p in _bucket(hangar_home, "list-src").rglob("*") if p.is_file())
    assert objects == ["inner.txt", "notes.txt"]
    assert not (tmp_path / "c").exists() and not (tmp_path / "copied").exists()


def test_ctrl_c_stops_task_and_undoes_mounts(tmp_path: Path, hangar_home: Path) -> None:
    mnt = tmp_path / "deep" / "mnt"
    task = write_yaml(
        tmp_path / "t.yaml",
        f"""
file_mounts:
  {mnt}:
    name: interrupted
run: |
  touch {mnt}/started
  sleep 60
""",
    )
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hangar.cli", "launch", str(task)],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    marker = _bucket(hangar_home, "interrupted") / "started"
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "task never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert not mnt.exists() and not mnt.parent.exists()
    assert marker.exists()  # what the task wrote before Ctrl-C stays in the bucket


@pytest.mark.parametrize("example", ["mount.yaml", "copy.yaml", "list_source.yaml", "scratch.yaml"])
def test_examples_run(example: str, hangar_home: Path) -> None:
    result = hangar("launch", f"examples/{example}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_upload_mirror_and_download(tmp_path: Path, hangar_home: Path) -> None:
    src = make_tree(tmp_path / "src", {"keep.txt": "k", "gone.txt": "g", "d/x.bin": b"\1\2"})
    assert hangar("storage", "upload", str(src), "--name", "mirror-me").returncode == 0
    (src / "gone.txt").unlink()
    additive = hangar("storage", "upload", str(src), "--name", "mirror-me")
    assert additive.returncode == 0, additive.stderr
    assert (hangar_home / "buckets/mirror-me/gone.txt").exists()  # additive keeps it
    dry = hangar("storage", "upload", str(src), "--name", "mirror-me", "--mirror", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert (hangar_home / "buckets/mirror-me/gone.txt").exists()
    mirrored = hangar("storage", "upload", str(src), "--name", "mirror-me", "--mirror")
    assert mirrored.returncode == 0, mirrored.stderr
    assert not (hangar_home / "buckets/mirror-me/gone.txt").exists()

    out = tmp_path / "out"
    got = hangar("storage", "download", "mirror-me", str(out))
    assert got.returncode == 0, got.stderr
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "d/x.bin",
        "keep.txt",
    ]
    assert (out / "d/x.bin").read_bytes() == b"\1\2"
    again = hangar("storage", "download", "mirror-me", str(out))
    assert "0 file(s) downloaded, 2 already up to date" in again.stderr
    prefix = hangar("storage", "download", "local://mirror-me/d", str(tmp_path / "pre"))
    assert prefix.returncode == 0, prefix.stderr
    assert (tmp_path / "pre/x.bin").read_bytes() == b"\1\2"


def test_python_api_launch(
    tmp_path: Path, hangar_home: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import hangar as hg

    src = make_tree(tmp_path / "src", {"a.txt": "from the api"})
    st = hg.Storage(name="api-data", source=str(src), stores=["local"], persistent=True)
    st.upload()
    task_file = write_yaml(
        tmp_path / "t.yaml",
        f"""
storage_mounts:
  - storage: api-data
    mount_path: {tmp_path}/m
storage:
  - name: api-data
    source: {src}
run: cat {tmp_path}/m/a.txt
""",
    )
    task = hg.Task.from_yaml(str(task_file))
    assert hg.launch(task) == 0
    assert "from the api" in capfd.readouterr().out
    st.delete()
    assert not (hangar_home / "buckets/api-data").exists()


def test_verify_finds_missing_extra_and_corrupt(tmp_path: Path, hangar_home: Path) -> None:
    src = make_tree(tmp_path / "src", {"a.txt": "alpha", "b.txt": "beta", "c/d.txt": "delta"})
    assert hangar("storage", "upload", str(src), "--name", "verify-me").returncode == 0
    clean = hangar("storage", "verify", "verify-me")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "3 object(s) checked" in clean.stdout and "OK" in clean.stdout

    bucket = hangar_home / "buckets" / "verify-me"
    (bucket / "a.txt").write_text("alphX")  # same size, different bytes
    (bucket / "c/d.txt").unlink()
    (bucket / "stray.txt").write_text("?")
    bad = hangar("storage", "verify", "verify-me")
    assert bad.returncode == 1
    assert "corrupt: a.txt" in bad.stdout
    assert "missing: c/d.txt" in bad.stdout
    assert "extra:   stray.txt" in bad.stdout
    assert (bucket / "stray.txt").exists()  # verify only reports


@pytest.mark.parametrize(("mode", "kept"), [("COPY", True), ("MOUNT", False)])
def test_writable_mount_drops_the_resync_manifest(
    tmp_path: Path, hangar_home: Path, mode: str, kept: bool
) -> None:
    """A task that may write through a mount changes the bucket behind the manifest, so the
    next re-sync must list the bucket instead of trusting it."""
    from hangar.catalog import Catalog

    src = make_tree(tmp_path / "src", {"a.txt": "a"})
    assert hangar("storage", "upload", str(src), "--name", "manifested").returncode == 0
    with Catalog() as cat:
        assert cat.manifest("local://manifested") is not None
    task = write_yaml(
        tmp_path / "t.yaml",
        f"""
file_mounts:
  {tmp_path}/m:
    name: manifested
    source: {src}
    mode: {mode}
run: "true"
""",
    )
    result = hangar("launch", str(task))
    assert result.returncode == 0, result.stderr
    with Catalog() as cat:
        assert (cat.manifest("local://manifested") is not None) is kept


_EXIT = """
import atexit, sys, threading
atexit.register(lambda: print("teardown ran", file=sys.stderr))
if sys.argv[1] == "with-thread":
    threading.Thread(target=threading.Event().wait, args=(0.5,)).start()
sys.argv = ["hangar", *sys.argv[2:]]
from hangar.cli import main
main()
"""


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["storage", "ls", "--json"], 0),
        (["storage", "download", "ghost", "{tmp}/dl"], 1),
        (["storage", "upload", "{tmp}/missing", "--name", "x"], 2),
        (["storage", "nosuchcommand"], 2),
    ],
)
def test_the_cli_exits_with_its_status_and_skips_teardown_only_when_safe(
    tmp_path: Path, args: list[str], code: int
) -> None:
    """`main` leaves with os._exit (no interpreter teardown, ~0.1 s after a large re-sync)
    keeping the exit status and every byte of output; with another thread still running it
    exits normally, so the thread is joined and exit handlers run."""
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    for mode, teardown in (("alone", False), ("with-thread", True)):
        out = subprocess.run(
            [sys.executable, "-c", _EXIT, mode, *argv],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )
        assert out.returncode == code, (mode, out.stderr)
        assert ("teardown ran" in out.stderr) is teardown, (mode, out.stderr)
        if args[:2] == ["storage", "ls"]:
            assert json.loads(out.stdout) == []  # complete output, flushed before leaving
