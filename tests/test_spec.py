"""Task spec: YAML -> validated frozen Task, both dialects, every rule and every error message.

Runs with HOME and the working directory in a temporary folder, so ``~`` and relative paths
never depend on the real machine. Nothing here touches the network or needs a store.
"""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from hangar.errors import SpecError
from hangar.models import (
    FileCopy,
    LocalRoot,
    MountCachedConfig,
    MountMode,
    MountSpec,
    StorageSpec,
    SyncPolicy,
    Task,
)
from hangar.spec import MAX_TASK_BYTES, TOP_LEVEL_KEYS, check_single_node, load_task, parse_task
from hangar.stores.naming import validate_bucket_name
from hangar.stores.uri import format_url, parse_uri


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME = <tmp>/home, cwd = <tmp>/work."""
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    return home


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    return tmp_path / "work"


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Task:
    path = tmp_path / "task.yaml"
    path.write_text(textwrap.dedent(text))
    return load_task(str(path), env or {})


def load_error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> SpecError:
    with pytest.raises(SpecError) as info:
        load(tmp_path, text, env)
    assert info.value.exit_code == 2
    return info.value


def parse_error(data: dict[str, Any], env: dict[str, str] | None = None) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_task(data, env or {})
    return info.value


# --- loading the file -----------------------------------------------------------------------


def test_minimal_task(tmp_path: Path) -> None:
    task = load(tmp_path, "run: echo hi\n")
    assert task.run == "echo hi"
    assert task.setup is None and task.name is None and task.workdir is None
    assert task.num_nodes == 1
    assert task.envs == {} and task.secrets == {}
    assert task.storages == () and task.mounts == () and task.copies == ()
    assert task.warnings == ()
    assert task.source_path == str(tmp_path / "task.yaml")


def test_task_from_yaml_uses_load_task(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("envs: {A: x}\nrun: echo $A\n")
    task = Task.from_yaml(str(path), {"A": "y"})
    assert task.envs == {"A": "y"}
    assert Task.from_yaml(str(path)).envs == {"A": "x"}


def test_parse_task_has_no_source_path() -> None:
    task = parse_task({"run": "true"}, {})
    assert task.source_path is None
    assert parse_task({"run": "true"}, {}, source_path="/x.yaml").source_path == "/x.yaml"


def test_task_is_frozen(tmp_path: Path) -> None:
    task = load(tmp_path, "run: x\n")
    with pytest.raises(AttributeError):
        task.run = "y"  # type: ignore[misc]


@pytest.mark.parametrize(
    "text",
    ["", "\n\n", "# only a comment\n", "---\n", "~\n", "null\n"],
    ids=["empty", "blank", "comment", "doc-marker", "tilde", "null"],
)
def test_empty_task_file(tmp_path: Path, text: str) -> None:
    err = load_error(tmp_path, text)
    assert "empty task file" in str(err)
    assert err.where == str(tmp_path / "task.yaml")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("- run: x\n", "got a list"), ("just a string\n", "got a string"), ("42\n", "a number")],
)
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, fragment: str) -> None:
    err = load_error(tmp_path, text)
    assert "top level must be a mapping" in str(err)
    assert fragment in str(err)


def test_parse_task_refuses_non_mapping() -> None:
    with pytest.raises(SpecError, match="mapping"):
        parse_task(["run"], {})  # type: ignore[arg-type]


def test_file_too_big(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("run: |\n" + ("  echo " + "x" * 90 + "\n") * (MAX_TASK_BYTES // 90))
    assert path.stat().st_size > MAX_TASK_BYTES
    with pytest.raises(SpecError, match="larger than 1024 KiB") as info:
        load_task(str(path), {})
    assert info.value.where == str(path)


def test_file_just_under_the_limit_loads(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    body = "run: |\n" + ("  echo " + "x" * 90 + "\n") * ((MAX_TASK_BYTES - 100) // 98)
    path.write_text(body)
    assert path.stat().st_size <= MAX_TASK_BYTES
    assert load_task(str(path), {}).run is not None


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    lines.append("run: *a9")
    err = load_error(tmp_path, "\n".join(lines) + "\n")
    assert "aliases expand" in str(err)


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    err = load_error(tmp_path, "envs: &a {A: *a}\n")
    assert "refers to itself" in str(err)


def test_small_anchors_and_merge_keys_work(tmp_path: Path) -> None:
    task = load(
        tmp_path,
        """
        file_mounts:
          /a: &base
            name: bucket-aaa
            mode: COPY
          /b:
            <<: *base
            name: bucket-bbb
            mode: MOUNT
        """,
    )
    assert [(m.storage, m.mode) for m in task.mounts] == [
        ("bucket-aaa", MountMode.COPY),
        ("bucket-bbb", MountMode.MOUNT),
    ]


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    err = load_error(tmp_path, "run: a\nsetup: b\nrun: c\n")
    assert "duplicate key 'run'" in str(err)
    assert "first on line 1" in str(err)
    assert err.where == f"{tmp_path / 'task.yaml'}:3"


def test_duplicate_mount_paths_in_yaml_are_refused(tmp_path: Path) -> None:
    err = load_error(tmp_path, "file_mounts:\n  /data: ~/a\n  /data: ~/b\n")
    assert "duplicate key '/data'" in str(err)


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    err = load_error(tmp_path, "run: echo\nfile_mounts:\n  /a: [unclosed\n")
    assert "not valid YAML" in str(err)
    assert err.where is not None and err.where.startswith(str(tmp_path / "task.yaml") + ":")


def test_several_documents_are_refused(tmp_path: Path) -> None:
    err = load_error(tmp_path, "run: a\n---\nrun: b\n")
    assert "not valid YAML" in str(err)


def test_utf8_bom_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "task.yaml"
    path.write_bytes("\ufeffrun: echo hé\n".encode())
    assert load_task(str(path), {}).run == "echo hé"


def test_control_characters_are_refused(tmp_path: Path) -> None:
    err = load_error(tmp_path, "run: a\x00b\n")
    assert "not valid YAML" in str(err)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "task.yaml"
    path.write_bytes(b"run: \xff\xfe\n")
    with pytest.raises(SpecError, match="UTF-8"):
        load_task(str(path), {})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not found") as info:
        load_task(str(tmp_path / "nope.yaml"), {})
    assert info.value.where == str(tmp_path / "nope.yaml")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_task(str(tmp_path), {})


def test_yaml_non_string_top_level_key(tmp_path: Path) -> None:
    err = load_error(tmp_path, "1: x\nrun: y\n")
    assert "task keys must be strings" in str(err)


# --- task keys ------------------------------------------------------------------------------


def test_all_plain_task_keys(tmp_path: Path, home: Path, cwd: Path) -> None:
    task = load(
        tmp_path,
        """
        name: my-task
        workdir: ./proj
        envs: {A: a, N: 3, F: 1.5, B: true, Z: null}
        secrets: {TOKEN: s3cr3t}
        setup: pip install x
        run: |
          echo $A
          echo ${TOKEN}
        num_nodes: 1
        """,
    )
    assert task.name == "my-task"
    assert task.workdir == str(cwd / "proj")
    assert task.envs == {"A": "a", "N": "3", "F": "1.5", "B": "True"}
    assert task.secrets == {"TOKEN": "s3cr3t"}
    assert task.setup == "pip install x"
    assert task.run == "echo $A\necho ${TOKEN}\n"  # never substituted


def test_workdir_tilde_and_absolute(tmp_path: Path, home: Path) -> None:
    assert load(tmp_path, "workdir: ~/code\n").workdir == str(home / "code")
    assert load(tmp_path, "workdir: ~/code/\n").workdir == str(home / "code")
    assert load(tmp_path, "workdir: /opt/x/../y\n").workdir == "/opt/y"
    assert load(tmp_path, "workdir: .\n").workdir == os.getcwd()


def test_workdir_substitution(tmp_path: Path, home: Path) -> None:
    task = load(tmp_path, "envs: {P: proj}\nworkdir: ~/$P\n")
    assert task.workdir == str(home / "proj")
    task = load(tmp_path, "envs: {P: proj}\nworkdir: ~/${P}-x\n", {"P": "other"})
    assert task.workdir == str(home / "other-x")


def test_resources_give_exactly_one_warning(tmp_path: Path) -> None:
    task = load(
        tmp_path,
        """
        resources:
          cloud: aws
          instance_type: p3.2xlarge
          accelerators: V100:8
          use_spot: true
        run: x
        """,
    )
    assert task.warnings == ("resources: ignored (Hangar runs tasks on this machine)",)
    assert task.resources == {
        "cloud": "aws",
        "instance_type": "p3.2xlarge",
        "accelerators": "V100:8",
        "use_spot": True,
    }


def test_inputs_outputs_are_ignored_with_a_warning(tmp_path: Path) -> None:
    task = load(tmp_path, "inputs: {gs://b/x: 70}\noutputs: {d: 0.1}\nrun: x\n")
    assert len(task.warnings) == 2
    assert task.warnings[0].startswith("inputs: ignored")
    assert task.warnings[1].startswith("outputs: ignored")


def test_empty_resources_give_no_warning(tmp_path: Path) -> None:
    assert load(tmp_path, "resources: {}\nrun: x\n").warnings == ()
    assert load(tmp_path, "resources:\nrun: x\n").resources is None


def test_top_level_key_table() -> None:
    actions = {k: r.action for k, r in TOP_LEVEL_KEYS.items()}
    assert actions["resources"] == "ignore"
    assert actions["inputs"] == actions["outputs"] == "ignore"
    for key in ("volumes", "service", "config", "event_callback"):
        assert actions[key] == "refuse"
        assert "not support" in TOP_LEVEL_KEYS[key].note


def test_num_nodes_above_one_parses_but_launcher_refuses(tmp_path: Path) -> None:
    task = load(tmp_path, "num_nodes: 2\nrun: x\n")
    assert task.num_nodes == 2
    with pytest.raises(SpecError, match="need a Ray cluster") as info:
        check_single_node(task)
    assert info.value.where == "num_nodes"
    assert "set num_nodes: 1" in str(info.value)
    check_single_node(load(tmp_path, "num_nodes: 1\nrun: x\n"))
    check_single_node(load(tmp_path, "run: x\n"))


# --- env vars -------------------------------------------------------------------------------


def test_env_substitution_everywhere_it_applies(tmp_path: Path, home: Path) -> None:
    task = load(
        tmp_path,
        """
        envs:
          BUCKET: my-data
          STORE: gcs
          DIR: datasets
          SIZE: 13b
        file_mounts:
          /ckpt/${SIZE}: ~/$DIR
          /data-$SIZE:
            name: ${BUCKET}-$SIZE
            source: [~/$DIR, "~/${DIR}2"]
            store: $STORE
          /remote: gs://${BUCKET}/$DIR
        run: echo $BUCKET ${STORE}
        """,
    )
    assert task.copies == (
        FileCopy("/ckpt/13b", str(home / "datasets"), "file_mounts./ckpt/${SIZE}"),
    )
    spec = task.storage("my-data-13b")
    assert spec.stores == ("gcs",)
    assert [r.path for r in spec.local_roots] == [str(home / "datasets"), str(home / "datasets2")]
    assert task.mounts[0].path == "/data-13b"
    assert task.storage("my-data").bucket_uri == "gs://my-data"
    assert task.mounts[1].subpath == "datasets"
    assert task.run == "echo $BUCKET ${STORE}"


def test_env_overrides_take_precedence_and_may_add(tmp_path: Path) -> None:
    task = load(
        tmp_path,
        """
        envs: {BUCKET: from-yaml, KEEP: k}
        secrets: {TOKEN: yaml-secret}
        file_mounts:
          /a:
            name: $BUCKET
          /b:
            name: $NEW
        """,
        {"BUCKET": "from-cli", "NEW": "added-bucket", "TOKEN": "cli-secret"},
    )
    assert [s.name for s in task.storages] == ["from-cli", "added-bucket"]
    assert task.envs == {"BUCKET": "from-cli", "KEEP": "k", "NEW": "added-bucket"}
    assert task.secrets == {"TOKEN": "cli-secret"}


def test_secret_values_substitute_too(tmp_path: Path) -> None:
    task = load(
        tmp_path,
        "secrets: {B: null}\nfile_mounts:\n  /m:\n    name: $B-2\n",
        {"B": "hidden"},
    )
    assert task.storages[0].name == "hidden-2"
    assert task.secrets == {"B": "hidden"}
    assert "B" not in task.envs


def test_null_env_is_left_out_when_unused(tmp_path: Path) -> None:
    task = load(tmp_path, "envs: {HF_TOKEN: null, A: x}\nrun: x\n")
    assert task.envs == {"A": "x"}


def test_null_env_used_in_a_name_is_an_error(tmp_path: Path) -> None:
    err = load_error(
        tmp_path, "envs: {BUCKET_NAME: null}\nfile_mounts:\n  /c:\n    name: $BUCKET_NAME\n"
    )
    assert err.where == "file_mounts./c.name"
    assert "$BUCKET_NAME" in str(err)
    assert "envs.BUCKET_NAME is null" in str(err)
    assert "--env BUCKET_NAME=<value>" in str(err)


def test_undefined_variable_names_place_and_fix(tmp_path: Path) -> None:
    err = load_error(tmp_path, "file_mounts:\n  /d:\n    source: ~/$MISSING\n    name: bkt-x\n")
    assert err.where == "file_mounts./d.source"
    assert "$MISSING" in str(err) and "not defined in envs or secrets" in str(err)
    assert "--env MISSING=" in str(err)


def test_shell_environment_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROM_SHELL", "x")
    err = load_error(tmp_path, "file_mounts:\n  /d: ~/$FROM_SHELL\n")
    assert "not the shell's environment" in str(err)


def test_lone_dollar_is_kept(tmp_path: Path, cwd: Path) -> None:
    task = load(tmp_path, "file_mounts:\n  /d: ./a$/b$1\n")
    assert task.copies[0].source == str(cwd / "a$" / "b$1")


def test_env_override_name_is_checked() -> None:
    err = parse_error({"run": "x"}, {"1BAD": "v"})
    assert err.where == "--env"
    assert "not a valid variable name" in str(err)


# --- the current dialect: plain file_mounts ---------------------------------------------------


def test_plain_local_file_mounts(tmp_path: Path, home: Path, cwd: Path) -> None:
    task = load(
        tmp_path,
        """
        file_mounts:
          /tmp/workdir: ~/tmp-workdir
          ~/tmpfile: ~/tmpfile
          ~/a/b/c/tmpfile: ./rel/file
          /abs: /opt/data
        """,
    )
    assert task.copies == (
        FileCopy("/tmp/workdir", str(home / "tmp-workdir"), "file_mounts./tmp/workdir"),
        FileCopy(str(home / "tmpfile"), str(home / "tmpfile"), "file_mounts.~/tmpfile"),
        FileCopy(str(home / "a/b/c/tmpfile"), str(cwd / "rel/file"), "file_mounts.~/a/b/c/tmpfile"),
        FileCopy("/abs", "/opt/data", "file_mounts./abs"),
    )
    assert task.storages == () and task.mounts == ()


def test_plain_bucket_uri_is_a_copy_mount(tmp_path: Path) -> None:
    task = load(
        tmp_path,
        """
        file_mounts:
          /train: gs://cloud-tpu-test-datasets/fake_imagenet/train-00001-of-01024
          /whole: s3://enriched-topical-chat
        """,
    )
    gcs, s3 = task.storages
    assert gcs == StorageSpec(
        name="cloud-tpu-test-datasets",
        where="file_mounts./train",
        bucket_uri="gs://cloud-tpu-test-datasets",
        stores=("gcs",),
        source_display="gs://cloud-tpu-test-datasets/fake_imagenet/train-00001-of-01024",
    )
    assert gcs.is_external and not gcs.is_scratch
    assert task.mounts[0] == MountSpec(
        "/train",
        "cloud-tpu-test-datasets",
        MountMode.COPY,
        "file_mounts./train",
        subpath="fake_imagenet/train-00001-of-01024",
    )
    assert s3.bucket_uri == "s3://enriched-topical-chat"
    assert task.mounts[1].subpath == "" and task.mounts[1].mode is MountMode.COPY


def test_same_bucket_different_prefixes_is_one_storage(tmp_path: Path) -> None:
    task = load(
        tmp_path,
        """
        file_mounts:
          /a: s3://shared-bkt/one
          /b: s3://shared-bkt/two/file.bin
          /c:
            source: s3://shared-bkt
            mode: MOUNT
          /d: s3://shared-bkt/one
        """,
    )
    (spec,) = task.storages
    assert spec.bucket_uri == "s3://shared-bkt" == format_url("s3", "shared-bkt")
    assert spec.name == "shared-bkt" and spec.stores == ("s3",)
    assert [(m.path, m.subpath, m.mode.value) for m in task.mounts] == [
        ("/a", "one", "COPY"),
        ("/b", "two/file.bin", "COPY"),
        ("/c", "", "MOUNT"),
        ("/d", "one", "COPY"),
    ]


def test_azure_https_url_keeps_the_account(tmp_path: Path) -> None:
    task = load(
        tmp_path,
        """
        file_mounts:
          /a:
            source: https://azureopendatastorage.blob.core.windows.net/nyctlc
            mode: MOUNT
          /b:
            source: https://azureopendatastorage.blob.core.windows.net/nyctlc/green
            mode: MOUNT
        """,
    )
    (spec,) = task.storages
    assert spec.name == "nyctlc" and spec.stores == ("azure",)
    assert spec.bucket_uri == "https://azureopendatastorage.blob.core.windows.net/nyctlc"
    parsed = parse_uri(spec.bucket_uri)
    assert parsed is not None and parsed.account == "azureopendatastorage"
    assert [m.subpath for m in task.mounts] == ["", "green"]


# --- the current dialect: storage mappings ----------------------------------------------------


def test_storage_mapping_defaults(tmp_path: Path, home: Path) -> None:
    task = load(tmp_path, "file_mounts:\n  /data:\n    name: my-bkt\n    source: ~/d\n")
    assert task.storages == (
        StorageSpec(
            name="my-bkt",
            where="file_mounts./data",
            local_roots=(LocalRoot(str(home / "d"), "", "file_mounts./data.source"),),
            source_display=str(home / "d"),
        ),
    )
    spec = task.storages[0]
    assert spec.persistent is True and spec.sync is SyncPolicy.ADDITIVE and spec.stores == ()
    assert not spec.is_scratch and not spec.is_external
    assert task.mounts == (MountSpec("/data", "my-bkt", MountMode.MOUNT, "file_mounts./data"),)


def test_scratch_bucket(tmp_path: Path) -> None:
    task = load(tmp_path, "file_mounts:\n  /out:\n    name: out-bkt\n    mode: MOUNT\n")
    (spec,) = task.storages
    assert spec.is_scratch and spec.source_display == "" and spec.local_roots == ()


@pytest.mark.parametrize(
    ("written", "mode"),
    [
        ("MOUNT", MountMode.MOUNT),
        ("mount", MountMode.MOUNT),
        ("Copy", MountMode.COPY),
        ("COPY", MountMode.COPY),
        ("mount_cached", MountMode.MOUNT_CACHED),
        ("MOUNT_CACHED", MountMode.MOUNT_CACHED),
    ],
)
def test_mode_any_case(tmp_path: Path, written: str, mode: MountMode) -> None:
    task = load(tmp_path, f"file_mounts:\n  /m:\n    name: bkt-m\n    mode: {written}\n")
    assert task.mounts[0].mode is mode


@pytest.mark.parametrize(
    ("written", "stores"),
    [
        ("s3", ("s3",)),
        ("S3", ("s3",)),
        ("aws", ("s3",)),
        ("gcs", ("gcs",)),
        ("GCS", ("gcs",)),
        ("azure", ("azure",)),
        ("azure_blob", ("azure",)),
        ("r2", ("r2",)),
        ("local", ("local",)),
        ("[s3, gcs]", ("s3", "gcs")),
        ("[s3, aws, S3]", ("s3",)),
        ("[]", ()),
    ],
)
def test_store_spellings(tmp_path: Path, written: str, stores: tuple[str, ...]) -> None:
    task = load(tmp_path, f"file_mounts:\n  /m:\n    name: bkt-m\n    store: {written}\n")
    assert task.storages[0].stores == stores


def test_force_stores_inline_2022_form(tmp_path: Path) -> None:
    task = load(
        tmp_path,
        """
        file_mounts:
          /datasets-storage:
            name: sky-dataset
            source: ~/datasets
            force_stores: [s3, gcs]
            persistent: True
        """,
    )
    assert task.storages[0].stores == ("s3", "gcs")


def test_persistent_and_sync(tmp_path: Path) -> None:
    task = load(
        tmp_path,
        """
        file_mounts:
          /a:
            name: bkt-a
            source: ~/a
            persistent: false
            sync: MIRROR
          /b:
            name: bkt-b
            source: ~/b
            sync: additive
        """,
    )
    a, b = task.storages
    assert a.persistent is False and a.sync is SyncPolicy.MIRROR
    assert b.persistent is True and b.sync is SyncPolicy.ADDITIVE


def test_list_source_roots(tmp_path: Path, home: Path, cwd: Path) -> None:
    task = load(
        tmp_path,
        """
        file_mounts:
          /multi:
            name: multi-bkt
            source: [~/mydir/myfile.txt, ~/datasets, ./rel/dir, '~/tmp-workdir/tmp file']
        """,
    )
    (spec,) = task.storages
    w = "file_mounts./multi.source"
    assert spec.local_roots == (
        LocalRoot(str(home / "mydir/myfile.txt"), "myfile.txt", f"{w}[0]"),
        LocalRoot(str(home / "datasets"), "datasets", f"{w}[1]"),
        LocalRoot(str(cwd / "rel/dir"), "dir", f"{w}[2]"),
        LocalRoot(str(home / "tmp-workdir/tmp file"), "tmp file", f"{w}[3]"),
    )
    assert spec.source_display == ", ".join(r.path for r in spec.local_roots)


def test_config_mount_read_only(tmp_path: Path) -> None:
    task = load(
        tmp_path,
        """
        file_mounts:
          /ro:
            name: bkt-ro
            config:
              mount:
                read_only: true
          /rw:
            name: bkt-rw
            mode: COPY
            config:
              mount:
                read_only: false
        """,
    )
    assert task.mounts[0].read_only is True
    assert task.mounts[1].read_only is False


def test_config_mount_cached_full(tmp_path: Path) -> None:
    task = load(
        tmp_path,
        """
        file_mounts:
          /ckpt:
            name: ckpt-bkt
            mode: MOUNT_CACHED
            config:
              mount_cached:
                transfers: 8
                buffer_size: 64M
                vfs_cache_max_size: 10G
                vfs_cache_max_age: 1h30m
                vfs_read_ahead: 128Mi
                vfs_read_chunk_size: 1048576
                vfs_read_chunk_streams: 0
                vfs_write_back: 5s
                read_only: true
                type: model_checkpoint_ro
        """,
    )
    mount = task.mounts[0]
    assert mount.cached == MountCachedConfig(
        transfers=8,
        buffer_size="64M",
        vfs_cache_max_size="10G",
        vfs_cache_max_age="1h30m",
        vfs_read_ahead="128Mi",
        vfs_read_chunk_size="1048576",
        vfs_read_chunk_streams=0,
        vfs_write_back="5s",
        read_only=True,
        type="MODEL_CHECKPOINT_RO",
    )
    assert mount.read_only is True


@pytest.mark.parametrize("size", ["64M", "1G", "512k", "off", "10Gi", "1.5G", "100", "2TiB"])
def test_rclone_sizes_accepted(tmp_path: Path, size: str) -> None:
    task = load(
        tmp_path,
        f"file_mounts:\n  /c:\n    name: bkt-c\n    mode: MOUNT_CACHED\n"
        f"    config:\n      mount_cached:\n        buffer_size: '{size}'\n",
    )
    assert task.mounts[0].cached is not None
    assert task.mounts[0].cached.buffer_size == size


@pytest.mark.parametrize("duration", ["5s", "1h", "10m", "1h30m", "100ms", "2d", "1w", "30", "off"])
def test_rclone_durations_accepted(tmp_path: Path, duration: str) -> None:
    task = load(
        tmp_path,
        f"file_mounts:\n  /c:\n    name: bkt-c\n    mode: MOUNT_CACHED\n"
        f"    config:\n      mount_cached:\n        vfs_cache_max_age: '{duration}'\n",
    )
    assert task.mounts[0].cached is not None
    assert task.mounts[0].cached.vfs_cache_max_age == duration


@pytest.mark.parametrize(
    "kind", ["MODEL_CHECKPOINT_RO", "MODEL_CHECKPOINT_RW", "DATASET_RO", "dataset_rw"]
)
def test_mount_cached_types(tmp_path: Path, kind: str) -> None:
    task = load(
        tmp_path,
        f"file_mounts:\n  /c:\n    name: bkt-c\n    mode: MOUNT_CACHED\n"
        f"    config:\n      mount_cached:\n        type: {kind}\n",
    )
    assert task.mounts[0].cached is not None
    assert task.mounts[0].cached.type == kind.upper()


# --- storage identity ---------------------------------------------------------------------------


def test_same_name_copy_and_mount_is_one_storage(tmp_path: Path, home: Path) -> None:
    task = load(
        tmp_path,
        """
        file_mounts:
          /datasets-storage:
            name: sky-dataset-mybucket
            source: ~/datasets
            store: s3
            persistent: True
            mode: COPY
          /dataset-storage-mount:
            name: sky-dataset-mybucket
            source: ~/datasets
            mode: MOUNT
        """,
    )
    (spec,) = task.storages
    assert spec.stores == ("s3",)
    assert spec.local_roots == (
        LocalRoot(str(home / "datasets"), "", "file_mounts./datasets-storage.source"),
    )
    assert [(m.path, m.mode) for m in task.mounts] == [
        ("/datasets-storage", MountMode.COPY),
        ("/dataset-storage-mount", MountMode.MOUNT),
    ]


def test_different_local_sources_are_united(tmp_path: Path, home: Path) -> None:
    task = load(
        tmp_path,
        """
        file_mounts:
          /mount_private_copy:
            name: sky-test
            source: ~/tmp-workdir
            mode: COPY
          /mount_private_copy_lof:
            name: sky-test
            source: ['~/tmp-workdir/tmp file', '~/tmp-workdir/tmp file2']
            mode: COPY
          /mount_private_mount:
            name: sky-test
            source: ~/tmp-workdir
          /mount_scratch_view:
            name: sky-test
        """,
    )
    (spec,) = task.storages
    assert [(r.path, r.prefix) for r in spec.local_roots] == [
        (str(home / "tmp-workdir"), ""),
        (str(home / "tmp-workdir/tmp file"), "tmp file"),
        (str(home / "tmp-workdir/tmp file2"), "tmp file2"),
    ]
    assert len(task.mounts) == 4
    assert spec.where == "file_mounts./mount_private_copy"


def test_bucket_uri_of_a_declared_storage_mounts_that_storage(tmp_path: Path) -> None:
    task = load(
        tmp_path,
        """
        file_mounts:
          /datasets-storage:
            name: mluo-data
            source: ~/temp1
            store: s3
          /datasets-s3: s3://mluo-data
          /sub: s3://mluo-data/part
        """,
    )
    (spec,) = task.storages
    assert not spec.is_external and spec.local_roots and spec.stores == ("s3",)
    assert [(m.storage, m.mode, m.subpath) for m in task.mounts] == [
        ("mluo-data", MountMode.MOUNT, ""),
        ("mluo-data", MountMode.COPY, ""),
        ("mluo-data", MountMode.COPY, "part"),
    ]


def test_bucket_uri_pins_an_unspecified_store(tmp_path: Path) -> None:
    task = load(
        tmp_path, "file_mounts:\n  /a:\n    name: pin-me\n  /b: gs://pin-me\n  /c: s3://pin-me\n"
    )
    assert task.storages[0].stores == ("gcs", "s3")
    assert task.storages[0].is_scratch


def test_store_order_does_not_matter_for_agreement(tmp_path: Path) -> None:
    task = load(
        tmp_path,
        "file_mounts:\n  /a:\n    name: two-st\n    store: [s3, gcs]\n"
        "  /b:\n    name: two-st\n    store: [gcs, s3]\n",
    )
    assert task.storages[0].stores == ("s3", "gcs")


def test_identical_roots_are_deduplicated(tmp_path: Path) -> None:
    task = load(
        tmp_path,
        "file_mounts:\n  /a:\n    name: dup-r\n    source: [~/x, ~/y]\n"
        "  /b:\n    name: dup-r\n    source: [~/y]\n",
    )
    assert [r.prefix for r in task.storages[0].local_roots] == ["x", "y"]


# --- the original dialect -----------------------------------------------------------------------


def test_original_dialect_bucket_source(tmp_path: Path) -> None:
    task = load(
        tmp_path,
        """
        storage:
          - name: imagenet-bucket
            source: s3://imagenet-bucket
            force_stores: [s3]
            persistent: True
        storage_mounts:
          - storage: imagenet-bucket
            mount_path: /tmp/imagenet
        """,
    )
    (spec,) = task.storages
    assert spec == StorageSpec(
        name="imagenet-bucket",
        where="storage[0]",
        bucket_uri="s3://imagenet-bucket",
        stores=("s3",),
        source_display="s3://imagenet-bucket",
    )
    assert task.mounts == (
        MountSpec("/tmp/imagenet", "imagenet-bucket", MountMode.MOUNT, "storage_mounts[0]"),
    )


def test_original_dialect_single_mappings_and_options(tmp_path: Path, home: Path) -> None:
    task = load(
        tmp_path,
        """
        storage:
          name: decl-data
          source: ~/datasets
          persistent: false
          sync: mirror
        storage_mounts:
          storage: decl-data
          mount_path: ~/mnt
          mode: copy
        """,
    )
    (spec,) = task.storages
    assert spec.where == "storage" and spec.persistent is False and spec.sync is SyncPolicy.MIRROR
    assert spec.local_roots == (LocalRoot(str(home / "datasets"), "", "storage.source"),)
    assert task.mounts == (
        MountSpec(str(home / "mnt"), "decl-data", MountMode.COPY, "storage_mounts"),
    )


def test_original_dialect_storage_without_mount(tmp_path: Path) -> None:
    task = load(tmp_path, "storage:\n  - name: upload-only\n    source: ~/d\n")
    assert [s.name for s in task.storages] == ["upload-only"] and task.mounts == ()


def test_original_dialect_uri_without_name_and_with_prefix(tmp_path: Path) -> None:
    task = load(
        tmp_path,
        """
        storage:
          - source: gs://some-bucket/sub/dir
          - name: scratch-one
        storage_mounts:
          - {storage: some-bucket, mount_path: /a}
          - {storage: some-bucket, mount_path: /b, mode: COPY}
          - {storage: scratch-one, mount_path: /c, mode: MOUNT}
        """,
    )
    ext, scratch = task.storages
    assert ext.bucket_uri == "gs://some-bucket" and ext.name == "some-bucket"
    assert scratch.is_scratch
    assert [(m.path, m.subpath, m.mode.value) for m in task.mounts] == [
        ("/a", "sub/dir", "MOUNT"),
        ("/b", "sub/dir", "COPY"),
        ("/c", "", "MOUNT"),
    ]


def test_both_dialects_in_one_file(tmp_path: Path) -> None:
    task = load(
        tmp_path,
        """
        file_mounts:
          /datasets: ~/datasets
          /datasets-storage:
            name: sky-dataset
            source: ~/datasets
            force_stores: [s3]
          /datasets-s3: s3://sky-dataset
        storage:
          - name: sky-dataset-decl
            source: ~/datasets
        storage_mounts:
          - storage: sky-dataset-decl
            mount_path: /datasets-decl
          - storage: sky-dataset
            mount_path: /again
        """,
    )
    assert [s.name for s in task.storages] == ["sky-dataset-decl", "sky-dataset"]
    assert [m.path for m in task.mounts] == [
        "/datasets-storage",
        "/datasets-s3",
        "/datasets-decl",
        "/again",
    ]


def test_original_dialect_with_env(tmp_path: Path) -> None:
    task = load(
        tmp_path,
        "envs: {N: env-bkt, P: /mnt/x}\nstorage: [{name: $N}]\n"
        "storage_mounts: [{storage: $N, mount_path: $P}]\n",
    )
    assert task.mounts[0].path == "/mnt/x" and task.mounts[0].storage == "env-bkt"


# --- mount paths ------------------------------------------------------------------------------


def test_tilde_mount_path_and_same_path_spelled_twice(tmp_path: Path, home: Path) -> None:
    task = load(tmp_path, "file_mounts:\n  ~/data: ~/src\n")
    assert task.copies[0].path == str(home / "data")
    err = load_error(
        tmp_path, f"file_mounts:\n  ~/data: ~/src\n  {home}/data:\n    name: other-bkt\n"
    )
    assert "both use" in str(err)
    assert err.where == f"file_mounts.{home}/data"


def test_mount_paths_under_home_are_fine(tmp_path: Path, home: Path) -> None:
    task = load(tmp_path, "file_mounts:\n  ~/.ssh/id_rsa.pub: ~/.ssh/id_rsa.pub\n")
    assert task.copies[0].path == str(home / ".ssh/id_rsa.pub")


def test_home_itself_is_refused(tmp_path: Path, home: Path) -> None:
    err = load_error(tmp_path, f"file_mounts:\n  {home}: ~/x\n")
    assert "home directory itself" in str(err)


@pytest.mark.parametrize("path", ["/datasets", "/datasets-s3", "/data/a", "/data/b", "/datab"])
def test_sibling_paths_do_not_nest(tmp_path: Path, path: str) -> None:
    load(
        tmp_path,
        f"file_mounts:\n  /data/a: ~/x\n  /data/b: ~/y\n  /datasets: ~/z\n  /datab: ~/w\n"
        f"  /other{path}: ~/v\n",
    )


# --- the table of bad inputs ----------------------------------------------------------------------

FM = "file_mounts:\n  /data:\n"

BAD: list[tuple[str, str, str, str]] = [
    # (id, yaml, where, fragment of the message)
    ("unknown-top", "fiel_mounts: {}\n", "fiel_mounts", "Did you mean 'file_mounts'?"),
    ("unknown-top-far", "frobnicate: 1\n", "frobnicate", "unknown key 'frobnicate'"),
    ("storages-typo", "storages: []\n", "storages", "Did you mean 'storage'?"),
    ("volumes", "volumes:\n  /mnt/data: pvc\n", "volumes", "does not support yet"),
    ("service", "service: {replicas: 2}\n", "service", "does not support yet"),
    ("config", "config: {jobs: {}}\n", "config", "does not support yet"),
    ("event-callback", "event_callback: echo done\n", "event_callback", "does not support yet"),
    ("run-bool", "run: true\n", "run", "YAML boolean"),
    ("run-bool-fix", "run: yes\n", "run", "run: 'true'"),
    ("setup-list", "setup: [a, b]\n", "setup", "one block"),
    ("run-number", "run: 5\n", "run", "quote it"),
    ("name-list", "name: [x]\n", "name", "expected a string"),
    ("num-nodes-zero", "num_nodes: 0\n", "num_nodes", ">= 1"),
    ("num-nodes-str", "num_nodes: '2'\n", "num_nodes", "whole number"),
    ("num-nodes-bool", "num_nodes: true\n", "num_nodes", "whole number"),
    ("num-nodes-float", "num_nodes: 1.5\n", "num_nodes", "whole number"),
    ("envs-list", "envs: [A]\n", "envs", "mapping of NAME: value"),
    ("envs-bad-name", "envs: {1BAD: x}\n", "envs.1BAD", "not a valid variable name"),
    ("envs-list-value", "envs: {A: [1]}\n", "envs.A", "quote the value"),
    ("secret-null", "secrets: {S: null}\n", "secrets.S", "--env S=<value>"),
    ("env-and-secret", "envs: {A: x}\nsecrets: {A: y}\n", "secrets.A", "both envs and secrets"),
    ("workdir-number", "workdir: 5\n", "workdir", "directory path"),
    ("workdir-git", "workdir: {url: 'https://x/y.git'}\n", "workdir", "git workdir"),
    ("workdir-home-var", "workdir: $HOME/p\n", "workdir", "write ~ instead"),
    ("workdir-empty", "workdir: ''\n", "workdir", "empty"),
    ("resources-list", "resources: [a]\n", "resources", "expected a mapping"),
    ("fm-list", "file_mounts: [a]\n", "file_mounts", "mapping of mount path"),
    ("fm-number", "file_mounts:\n  /data: 5\n", "file_mounts./data", "storage mapping"),
    ("fm-null", "file_mounts:\n  /data:\n", "file_mounts./data", "storage mapping"),
    ("fm-int-key", "file_mounts:\n  1: ~/x\n", "file_mounts", "mount paths must be strings"),
    ("mode-typo", FM + "    name: bkt-a\n    mdoe: COPY\n", "file_mounts./data.mdoe",
     "unknown key 'mdoe'. Did you mean 'mode'?"),
    ("name-typo", FM + "    nmae: bkt-a\n", "file_mounts./data.nmae", "Did you mean 'name'?"),
    ("far-key", FM + "    name: bkt-a\n    zzz: 1\n", "file_mounts./data.zzz", "Allowed keys:"),
    ("persistent-str", FM + "    name: bkt-a\n    persistent: 'yes'\n",
     "file_mounts./data.persistent", "expected true or false"),
    ("name-number", FM + "    name: 123\n", "file_mounts./data.name", "quote the value"),
    ("name-empty", FM + "    name: ''\n", "file_mounts./data.name", "name is empty"),
    ("mode-rclone", FM + "    name: bkt-a\n    mode: RCLONE\n", "file_mounts./data.mode",
     "MOUNT, COPY, MOUNT_CACHED"),
    ("mode-number", FM + "    name: bkt-a\n    mode: 3\n", "file_mounts./data.mode",
     "not supported"),
    ("no-name-no-source", FM + "    mode: MOUNT\n", "file_mounts./data", "add name: or source:"),
    ("local-no-name", FM + "    source: ~/d\n", "file_mounts./data", "needs a name"),
    ("uri-with-name", FM + "    name: bkt\n    source: s3://bkt\n", "file_mounts./data.name",
     "takes no name"),
    ("source-slash", FM + "    name: bkt-a\n    source: ~/d/\n", "file_mounts./data.source",
     "drop the slash: '~/d'"),
    ("uri-slash", FM + "    source: s3://bkt/dir/\n", "file_mounts./data.source",
     "drop the slash"),
    ("plain-slash", "file_mounts:\n  /data: ~/d/\n", "file_mounts./data", "drop the slash"),
    ("list-uri", FM + "    name: bkt-a\n    source: [~/a, s3://b]\n",
     "file_mounts./data.source[1]", "local paths only"),
    ("list-only-uris", FM + "    name: bkt-a\n    source: [s3://a, gs://b]\n",
     "file_mounts./data.source[0]", "local paths only"),
    ("list-clash", FM + "    name: bkt-a\n    source: [~/a/x, ~/b/x]\n",
     "file_mounts./data.source[1]", "both land at 'x'"),
    ("list-empty", FM + "    name: bkt-a\n    source: []\n", "file_mounts./data.source",
     "list is empty"),
    ("list-number", FM + "    name: bkt-a\n    source: [3]\n", "file_mounts./data.source[0]",
     "expected a local path"),
    ("list-slash", FM + "    name: bkt-a\n    source: [~/a/]\n",
     "file_mounts./data.source[0]", "drop the slash"),
    ("source-number", FM + "    name: bkt-a\n    source: 3\n", "file_mounts./data.source",
     "list of paths"),
    ("source-empty", FM + "    name: bkt-a\n    source: ''\n", "file_mounts./data.source",
     "empty"),
    ("store-oci", FM + "    name: bkt-a\n    store: oci\n", "file_mounts./data.store",
     "not supported by Hangar yet"),
    ("store-list-ibm", FM + "    name: bkt-a\n    store: [s3, ibm]\n",
     "file_mounts./data.store[1]", "not supported by Hangar yet"),
    ("store-nebius", FM + "    name: bkt-a\n    store: nebius\n", "file_mounts./data.store",
     "not supported by Hangar yet"),
    ("store-vastdata", FM + "    name: bkt-a\n    store: vastdata\n", "file_mounts./data.store",
     "not supported by Hangar yet"),
    ("store-unknown", FM + "    name: bkt-a\n    store: dropbox\n", "file_mounts./data.store",
     "unknown store"),
    ("store-number", FM + "    name: bkt-a\n    store: 5\n", "file_mounts./data.store",
     "store name"),
    ("store-mapping", FM + "    name: bkt-a\n    store: {a: 1}\n", "file_mounts./data.store",
     "list of them"),
    ("store-vs-uri", FM + "    source: gs://bkt-a\n    store: s3\n", "file_mounts./data.store",
     "disagrees"),
    ("force-vs-uri", "storage: [{source: 's3://bkt-a', force_stores: [gcs]}]\n",
     "storage[0].force_stores", "drop force_stores"),
    ("force-disagree", "file_mounts:\n  /a:\n    name: bkt-a\n    store: s3\n"
     "  /b:\n    name: bkt-a\n    force_stores: [gcs]\n", "file_mounts./b.force_stores",
     "different force_stores values"),
    ("store-and-force", FM + "    name: bkt-a\n    store: s3\n    force_stores: [s3]\n",
     "file_mounts./data.force_stores", "keep one"),
    ("sync-bad", FM + "    name: bkt-a\n    source: ~/a\n    sync: sometimes\n",
     "file_mounts./data.sync", "additive, mirror"),
    ("sync-uri", FM + "    source: s3://bkt-a\n    sync: mirror\n", "file_mounts./data.sync",
     "existing bucket"),
    ("uri-oci", FM + "    source: oci://bkt-a\n", "file_mounts./data.source",
     "not supported by Hangar yet"),
    ("uri-ftp", FM + "    source: ftp://bkt-a\n", "file_mounts./data.source",
     "unknown URI scheme"),
    ("uri-https", FM + "    source: https://example.com/x\n", "file_mounts./data.source",
     "Azure Blob URLs"),
    ("plain-nebius", "file_mounts:\n  /data: nebius://bkt\n", "file_mounts./data",
     "not supported by Hangar yet"),
    ("cached-with-mount", FM + "    name: bkt-a\n    config:\n      mount_cached:\n"
     "        transfers: 2\n", "file_mounts./data.config.mount_cached", "mode: MOUNT_CACHED"),
    ("ro-with-copy", FM + "    name: bkt-a\n    mode: COPY\n    config:\n      mount:\n"
     "        read_only: true\n", "file_mounts./data.config.mount.read_only",
     "applies to MOUNT and MOUNT_CACHED"),
    ("ro-not-bool", FM + "    name: bkt-a\n    config:\n      mount:\n        read_only: 1\n",
     "file_mounts./data.config.mount.read_only", "true or false"),
    ("config-unknown", FM + "    name: bkt-a\n    config:\n      mount_cahced: {}\n",
     "file_mounts./data.config.mount_cahced", "Did you mean 'mount_cached'?"),
    ("config-not-mapping", FM + "    name: bkt-a\n    config: 5\n",
     "file_mounts./data.config", "expected a mapping"),
    ("cached-transfers-0", FM + "    name: bkt-a\n    mode: MOUNT_CACHED\n    config:\n"
     "      mount_cached:\n        transfers: 0\n",
     "file_mounts./data.config.mount_cached.transfers", "> 0"),
    ("cached-transfers-str", FM + "    name: bkt-a\n    mode: MOUNT_CACHED\n    config:\n"
     "      mount_cached:\n        transfers: '8'\n",
     "file_mounts./data.config.mount_cached.transfers", "whole number"),
    ("cached-streams-neg", FM + "    name: bkt-a\n    mode: MOUNT_CACHED\n    config:\n"
     "      mount_cached:\n        vfs_read_chunk_streams: -1\n",
     "file_mounts./data.config.mount_cached.vfs_read_chunk_streams", ">= 0"),
    ("cached-size", FM + "    name: bkt-a\n    mode: MOUNT_CACHED\n    config:\n"
     "      mount_cached:\n        buffer_size: 64Q\n",
     "file_mounts./data.config.mount_cached.buffer_size", "rclone size"),
    ("cached-size-bool", FM + "    name: bkt-a\n    mode: MOUNT_CACHED\n    config:\n"
     "      mount_cached:\n        vfs_read_ahead: true\n",
     "file_mounts./data.config.mount_cached.vfs_read_ahead", "rclone size"),
    ("cached-duration", FM + "    name: bkt-a\n    mode: MOUNT_CACHED\n    config:\n"
     "      mount_cached:\n        vfs_cache_max_age: 1hour\n",
     "file_mounts./data.config.mount_cached.vfs_cache_max_age", "rclone duration"),
    ("cached-writeback", FM + "    name: bkt-a\n    mode: MOUNT_CACHED\n    config:\n"
     "      mount_cached:\n        vfs_write_back: 5 seconds\n",
     "file_mounts./data.config.mount_cached.vfs_write_back", "rclone duration"),
    ("cached-type", FM + "    name: bkt-a\n    mode: MOUNT_CACHED\n    config:\n"
     "      mount_cached:\n        type: FAST\n",
     "file_mounts./data.config.mount_cached.type", "MODEL_CHECKPOINT_RO"),
    ("cached-typo", FM + "    name: bkt-a\n    mode: MOUNT_CACHED\n    config:\n"
     "      mount_cached:\n        trasnfers: 4\n",
     "file_mounts./data.config.mount_cached.trasnfers", "Did you mean 'transfers'?"),
    ("ro-disagree", FM + "    name: bkt-a\n    mode: MOUNT_CACHED\n    config:\n"
     "      mount: {read_only: false}\n      mount_cached: {read_only: true}\n",
     "file_mounts./data.config.mount_cached.read_only", "disagree"),
    ("path-relative", "file_mounts:\n  data: ~/x\n", "file_mounts.data",
     "relative. To fix: make it absolute (e.g. '/data')"),
    ("path-dot-relative", "file_mounts:\n  ./data: ~/x\n", "file_mounts../data", "relative"),
    ("path-slash", "file_mounts:\n  /data/: ~/x\n", "file_mounts./data/",
     "drop the slash: '/data'"),
    ("path-root", "file_mounts:\n  /: ~/x\n", "file_mounts./", "cannot mount over '/'"),
    ("path-etc", "file_mounts:\n  /etc: ~/x\n", "file_mounts./etc", "system directory"),
    ("path-usr", "file_mounts:\n  /usr:\n    name: bkt-a\n", "file_mounts./usr",
     "system directory"),
    ("path-tmp", "file_mounts:\n  /tmp: ~/x\n", "file_mounts./tmp", "system directory"),
    ("path-proc-sub", "file_mounts:\n  /proc/x: ~/x\n", "file_mounts./proc/x",
     "system directory"),
    ("path-home", "file_mounts:\n  '~': ~/x\n", "file_mounts.~", "home directory itself"),
    ("path-dotdot", "file_mounts:\n  /a/../b: ~/x\n", "file_mounts./a/../b",
     "write it as '/b'"),
    ("path-double-slash", "file_mounts:\n  /a//b: ~/x\n", "file_mounts./a//b",
     "write it as '/a/b'"),
    ("path-tilde-user", "file_mounts:\n  ~bob/x: ~/x\n", "file_mounts.~bob/x", "not ~user"),
    ("source-tilde-user", "file_mounts:\n  /x: ~bob/x\n", "file_mounts./x", "not ~user"),
    ("same-path-env", "envs: {D: data}\nfile_mounts:\n  /data: ~/a\n  /$D: ~/b\n",
     "file_mounts./$D", "both use '/data'"),
    ("nested", "file_mounts:\n  /a: ~/x\n  /a/b:\n    name: bkt-a\n", "file_mounts./a/b",
     "'/a/b' lies inside '/a'"),
    ("nested-reverse", "file_mounts:\n  /a/b/c: ~/x\n  /a: s3://bkt\n", "file_mounts./a",
     "nest"),
    ("nested-orig", "file_mounts:\n  /mnt: ~/x\nstorage: [{name: bkt-a}]\n"
     "storage_mounts: [{storage: bkt-a, mount_path: /mnt/in}]\n",
     "storage_mounts[0]", "nest"),
    ("same-path-orig", "file_mounts:\n  /data: ~/d\nstorage: [{name: bkt-a}]\n"
     "storage_mounts: [{storage: bkt-a, mount_path: /data}]\n", "storage_mounts[0]",
     "both use '/data'"),
    ("undefined-in-key", "file_mounts:\n  /d/$X: ~/x\n", "file_mounts./d/$X",
     "--env X=<value>"),
    ("undefined-in-store", FM + "    name: bkt-a\n    store: ${ST}\n",
     "file_mounts./data.store", "$ST"),
    ("undefined-in-list", FM + "    name: bkt-a\n    source: [~/ok, ~/$NOPE]\n",
     "file_mounts./data.source[1]", "$NOPE"),
    ("null-env-name", "envs: {B: null}\n" + FM + "    name: $B\n", "file_mounts./data.name",
     "envs.B is null"),
    ("default-form", "file_mounts:\n  /d: ~/${X:-y}\n", "file_mounts./d",
     "only ${NAME} and $NAME"),
    ("unclosed", "file_mounts:\n  /d: ~/${X\n", "file_mounts./d", "unclosed '${'"),
    ("s3-upper", FM + "    name: My_Bucket\n    store: s3\n", "file_mounts./data.name",
     "not valid for the s3 store"),
    ("local-rules-default", FM + "    name: ab\n", "file_mounts./data.name",
     "not valid for the local store"),
    ("gcs-goog", FM + "    name: goog-data\n    store: gcs\n", "file_mounts./data.name",
     "must not begin with 'goog'"),
    ("gcs-google", FM + "    name: my-g00gle-data\n    store: gcs\n",
     "file_mounts./data.name", "close misspelling"),
    ("azure-hyphens", FM + "    name: a--b\n    store: azure\n", "file_mounts./data.name",
     "consecutive hyphens"),
    ("r2-dots", FM + "    name: a.b.c\n    store: r2\n", "file_mounts./data.name",
     "not valid for the r2 store"),
    ("every-store-checked", FM + "    name: my_bucket\n    store: [gcs, s3]\n",
     "file_mounts./data.name", "not valid for the s3 store"),
    ("name-env-checked", "envs: {B: Bad_Name}\n" + FM + "    name: $B\n",
     "file_mounts./data.name", "'Bad_Name'"),
    ("diff-stores", "file_mounts:\n  /a:\n    name: bkt-a\n    store: s3\n"
     "  /b:\n    name: bkt-a\n    store: gcs\n", "file_mounts./b.store",
     "file_mounts./a says [s3], this place says [gcs]"),
    ("diff-persistent", "file_mounts:\n  /a:\n    name: bkt-a\n    persistent: false\n"
     "  /b:\n    name: bkt-a\n    persistent: true\n", "file_mounts./b.persistent",
     "different persistent values"),
    ("diff-sync", "file_mounts:\n  /a:\n    name: bkt-a\n    sync: mirror\n"
     "  /b:\n    name: bkt-a\n    sync: additive\n", "file_mounts./b.sync",
     "different sync values"),
    ("two-buckets-one-name", "file_mounts:\n  /a: s3://same-name\n  /b: gs://same-name\n",
     "file_mounts./b", "two different buckets are named 'same-name'"),
    ("uri-vs-declared-store", "file_mounts:\n  /a:\n    name: bkt-a\n    store: gcs\n"
     "  /b: s3://bkt-a\n", "file_mounts./b", "keeps in gcs"),
    ("list-clash-across", "file_mounts:\n  /a:\n    name: bkt-a\n    source: [~/p/x]\n"
     "  /b:\n    name: bkt-a\n    source: [~/q/x]\n", "file_mounts./b.source[0]",
     "would both land at 'x'"),
    ("orig-name-not-bucket", "storage:\n  - name: imagenet\n    source: s3://imagenet-bucket\n",
     "storage[0].name", "set name: imagenet-bucket"),
    ("orig-duplicate", "storage:\n  - name: bkt-a\n  - name: bkt-a\n    source: ~/x\n",
     "storage[1].name", "declared twice: at storage[0]"),
    ("orig-undeclared", "storage:\n  - name: bkt-a\n  - name: bkt-b\nstorage_mounts:\n"
     "  - storage: bkt-c\n    mount_path: /m\n", "storage_mounts[0].storage",
     "'bkt-c' is not declared (declared storages: 'bkt-a', 'bkt-b')"),
    ("orig-undeclared-none", "storage_mounts:\n  - storage: data\n    mount_path: /m\n",
     "storage_mounts[0].storage", "declared storages: none"),
    ("orig-missing-path", "storage: [{name: bkt-a}]\nstorage_mounts: [{storage: bkt-a}]\n",
     "storage_mounts[0].mount_path", "missing required key 'mount_path'"),
    ("orig-storage-number", "storage: 5\n", "storage", "list of mappings"),
    ("orig-entry-string", "storage: [bkt-a]\n", "storage[0]", "expected a mapping"),
    ("orig-mount-string", "storage: [{name: bkt-a}]\nstorage_mounts: [bkt-a]\n",
     "storage_mounts[0]", "expected a mapping"),
    ("orig-unknown-key", "storage: [{name: bkt-a, mount_path: /x}]\n",
     "storage[0].mount_path", "unknown key 'mount_path'"),
    ("orig-mount-typo", "storage: [{name: bkt-a}]\nstorage_mounts: "
     "[{storage: bkt-a, mount_pth: /m}]\n", "storage_mounts[0].mount_pth",
     "Did you mean 'mount_path'?"),
    ("orig-mode", "storage: [{name: bkt-a}]\nstorage_mounts: "
     "[{storage: bkt-a, mount_path: /m, mode: rclone}]\n", "storage_mounts[0].mode",
     "MOUNT, COPY, MOUNT_CACHED"),
    ("orig-local-no-name", "storage: [{source: ~/x}]\n", "storage[0]", "needs a name"),
    ("orig-nothing", "storage: [{persistent: true}]\n", "storage[0]", "add name: or source:"),
    ("orig-relative-mount", "storage: [{name: bkt-a}]\nstorage_mounts: "
     "[{storage: bkt-a, mount_path: mnt}]\n", "storage_mounts[0].mount_path", "relative"),
    ("orig-bad-name", "storage: [{name: UPPER-bkt}]\n", "storage[0].name", "not valid"),
    ("orig-name-number", "storage: [{name: 42}]\n", "storage[0].name",
     "expected a string, got a number (42)"),
    ("orig-persistent-yes", "storage: [{name: bkt-a, persistent: 'yes'}]\n",
     "storage[0].persistent", "expected true or false, got a string ('yes')"),
    ("orig-entry-typo", "storage: [{name: bkt-a, sourse: ~/x}]\n", "storage[0].sourse",
     "Did you mean 'source'?"),
    ("orig-entry-int-key", "storage: [{name: bkt-a, 5: x}]\n", "storage[0]",
     "keys must be strings"),
]  # fmt: skip


@pytest.mark.parametrize(
    "value",
    [
        "bkt", None, 5, [], {3: "x"}, {"nmae": "a"}, {"name": 5}, {"name": True},
        {"persistent": "yes"}, {"persistent": 1}, {"name": 5, "persistent": "no"},
        {"name": 5, "extra": 1}, {"zzz": 1, "name": 5}, {"name": None, "persistent": None},
    ],
)  # fmt: skip
def test_hand_checked_storage_entry_says_what_pydantic_would(value: object) -> None:
    """The `storage:` entry is checked by hand (no pydantic for `storage upload`); it must
    refuse exactly what the same pydantic shape refuses, with the same message and place."""
    import dataclasses
    import typing

    from pydantic import create_model

    from hangar.spec_messages import RawStorageEntry
    from hangar.spec_schema import _Raw, validate_raw

    hints = typing.get_type_hints(RawStorageEntry)
    fields: dict[str, Any] = {
        f.name: (hints[f.name], f.default) for f in dataclasses.fields(RawStorageEntry)
    }
    Shape = create_model("Shape", __base__=_Raw, **fields)  # the same shape, as pydantic checks it

    def outcome(check: object) -> tuple[str, str] | dict[str, object]:
        try:
            got = check(value, "storage[0]")  # type: ignore[operator]
        except SpecError as exc:
            return (exc.where or "", exc.message)
        return {k: getattr(got, k) for k in Shape.model_fields}

    assert outcome(RawStorageEntry.check) == outcome(lambda v, w: validate_raw(Shape, v, w))


@pytest.mark.parametrize(("yaml_text", "where", "fragment"), [c[1:] for c in BAD],
                         ids=[c[0] for c in BAD])  # fmt: skip
def test_bad_input(tmp_path: Path, yaml_text: str, where: str, fragment: str) -> None:
    err = load_error(tmp_path, yaml_text)
    assert err.where == where, str(err)
    assert fragment in err.message, err.message
    assert str(err) == f"{where}: {err.message}"


def test_bad_input_table_is_large_and_unique() -> None:
    assert len(BAD) >= 60
    assert len({c[0] for c in BAD}) == len(BAD)


FIX_MARKERS = ("To fix", "Did you mean", "Allowed keys", "Known keys")


def test_every_table_message_states_a_fix(tmp_path: Path) -> None:
    lacking = []
    for case_id, text, _, _ in BAD:
        err = load_error(tmp_path, text)
        if not any(marker in err.message for marker in FIX_MARKERS):
            lacking.append((case_id, err.message))
    assert lacking == []


# --- parse_task with dicts (the Python API) -------------------------------------------------------


def test_parse_task_dict_api(home: Path) -> None:
    task = parse_task(
        {
            "name": "api",
            "envs": {"B": "api-bkt"},
            "file_mounts": {
                "/d": {"name": "$B", "source": ["~/a", "~/b"], "store": ["s3"], "mode": "copy"}
            },
            "run": "ls /d",
        },
        {},
    )
    assert task.storage("api-bkt").stores == ("s3",)
    assert task.mounts[0].mode is MountMode.COPY
    with pytest.raises(KeyError):
        task.storage("nope")


def test_parse_task_dict_errors() -> None:
    err = parse_error({"file_mounts": {"/d": {"name": "x-bkt", "mode": "rclone"}}})
    assert err.where == "file_mounts./d.mode"
    err = parse_error({"run": ["a"]})
    assert err.where == "run"
    err = parse_error({"storage_mounts": [{"storage": "x", "mount_path": "/m"}]})
    assert err.where == "storage_mounts[0].storage"


def test_spec_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_task({"nope": 1}, {})


# --- bucket naming ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("store", "name"),
    [
        ("s3", "abc"),
        ("s3", "my.bucket-1"),
        ("s3", "a" * 63),
        ("local", "sky-dataset"),
        ("aws", "imagenet-bucket"),
        ("r2", "r2-bucket-1"),
        ("gcs", "my_bucket.with-dots"),
        ("gcs", ".".join(["a" * 63] * 3)),
        ("gcs", "gcp-public-data-sentinel-2"),
        ("azure", "nyctlc"),
        ("azure_blob", "a-b-c"),
        ("s3", "cos"),
        ("s3", "https"),
    ],
)
def test_valid_bucket_names(store: str, name: str) -> None:
    validate_bucket_name(store, name)


@pytest.mark.parametrize(
    ("store", "name", "fragment"),
    [
        ("s3", "ab", "3-63 characters"),
        ("s3", "a" * 64, "3-63 characters"),
        ("s3", "My-Bucket", "found 'B', 'M'"),
        ("s3", "my_bucket", "found '_'"),
        ("s3", "-abc", "begin and end"),
        ("s3", "abc-", "begin and end"),
        ("s3", "a..b", "adjacent dots"),
        ("s3", "192.168.5.4", "IP address"),
        ("s3", "xn--abc", "prefix 'xn--'"),
        ("s3", "sthree-abc", "prefix 'sthree-'"),
        ("s3", "amzn-s3-demo-x", "prefix 'amzn-s3-demo-'"),
        ("s3", "abc-s3alias", "suffix '-s3alias'"),
        ("s3", "abc--ol-s3", "suffix '--ol-s3'"),
        ("s3", "abc.mrap", "suffix '.mrap'"),
        ("s3", "abc--x-s3", "suffix '--x-s3'"),
        ("s3", "abc--table-s3", "suffix '--table-s3'"),
        ("local", "UPPER", "local store"),
        ("r2", "a.b.c", "found '.'"),
        ("gcs", "ab", "3-63 characters"),
        ("gcs", "a" * 64, "3-63 characters"),
        ("gcs", "a." + "b" * 64, "at most 63"),
        ("gcs", ("a" * 60 + ".") * 4, "3-222 characters"),
        ("gcs", "Bucket", "found 'B'"),
        ("gcs", "_abc", "begin and end"),
        ("gcs", "10.0.0.1", "IP address"),
        ("gcs", "google-data", "begin with 'goog'"),
        ("gcs", "my-google-data", "google"),
        ("gcs", "my-g00gle-data", "google"),
        ("gcs", "my-googie-data", "google"),
        ("azure", "ab", "3-63 characters"),
        ("azure", "a_b_c", "found '_'"),
        ("azure", "a.b.c", "found '.'"),
        ("azure", "-abc", "begin"),
        ("azure", "a--bc", "consecutive hyphens"),
        ("azure", "abc-", "end with a hyphen"),
    ],
)
def test_invalid_bucket_names(store: str, name: str, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        validate_bucket_name(store, name)
    assert fragment in str(info.value)
    assert "To fix" in str(info.value)


def test_bucket_name_suggestion() -> None:
    with pytest.raises(SpecError, match=re.escape("e.g. 'my-bucket'")):
        validate_bucket_name("s3", "My_Bucket")
    with pytest.raises(SpecError, match=re.escape("e.g. 'a-b'")):
        validate_bucket_name("azure", "a--b")


def test_unsupported_store_in_naming() -> None:
    with pytest.raises(SpecError, match="not supported by Hangar yet"):
        validate_bucket_name("oci", "abc")


def test_external_bucket_names_are_not_checked(tmp_path: Path) -> None:
    """Existing buckets may predate today's rules (legacy S3 names with capitals)."""
    task = load(tmp_path, "file_mounts:\n  /legacy: s3://Legacy_Bucket/x\n")
    assert task.storages[0].name == "Legacy_Bucket"


def test_scheme_like_names_are_plain_names(tmp_path: Path, cwd: Path) -> None:
    task = load(
        tmp_path,
        "file_mounts:\n  /a:\n    name: cos\n    source: https\n  /b:\n    name: https\n",
    )
    assert [s.name for s in task.storages] == ["cos", "https"]
    assert task.storages[0].local_roots[0].path == str(cwd / "https")


def test_format_url_round_trip() -> None:
    assert format_url("gcs", "b", "p/q") == "gs://b/p/q"
    url = format_url("azure", "c", "x", account="acct")
    assert url == "https://acct.blob.core.windows.net/c/x"
    parsed = parse_uri(url)
    assert parsed is not None and parsed.url == url
    assert format_url("azure", "c") == "az://c"


def test_env_seconds_takes_positive_numbers_and_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One reader for every HANGAR_*_TIMEOUT: default when unset, the error class the caller
    gives (SpecError for Ray's, MountError for the mount's) for anything not positive."""
    from hangar.config import env_seconds
    from hangar.errors import MountError, SpecError

    monkeypatch.delenv("HANGAR_X_TIMEOUT", raising=False)
    assert env_seconds("HANGAR_X_TIMEOUT", 30.0) == 30.0
    monkeypatch.setenv("HANGAR_X_TIMEOUT", "2.5")
    assert env_seconds("HANGAR_X_TIMEOUT", 30.0) == 2.5
    for bad in ("soon", "0", "-3"):
        monkeypatch.setenv("HANGAR_X_TIMEOUT", bad)
        with pytest.raises(SpecError, match="HANGAR_X_TIMEOUT"):
            env_seconds("HANGAR_X_TIMEOUT", 30.0)
        with pytest.raises(MountError, match="positive number of seconds"):
            env_seconds("HANGAR_X_TIMEOUT", 30.0, MountError)


def test_a_storage_naming_no_store_is_checked_against_the_default_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A name S3 accepts but Azure refuses: it must fail before anything runs when Azure is
    # where the storage will go, and the message must name that store.
    text = FM + "    name: a--b\n"
    assert load(tmp_path, text) is not None
    monkeypatch.setenv("HANGAR_DEFAULT_STORE", "azure")
    err = load_error(tmp_path, text)
    assert err.where == "file_mounts./data.name"
    assert "not valid for the azure store" in err.message
    monkeypatch.setenv("HANGAR_DEFAULT_STORE", "s3")
    err = load_error(tmp_path, FM + "    name: ab\n")
    assert "not valid for the s3 store" in err.message
