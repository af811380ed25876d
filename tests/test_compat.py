"""Compatibility corpus: real SkyPilot task YAMLs, each parsed or refused with a clear message.

The corpus lives outside the repository, in ``<repo root>/../shared/compat/skypilot-yamls`` (or
``<repo root>/shared/...`` where a checkout carries it); these tests skip when it is missing.
Files with Jinja markup (the ``.j2`` templates and a few test YAMLs) are rendered first, with
plausible values and with variations of their flags. `CASES` states the expected outcome per
file and variation, so any change in what Hangar accepts shows up as a failing row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import pytest

from hangar.errors import SpecError
from hangar.models import MountMode, SyncPolicy, Task
from hangar.spec import check_single_node, load_task

REPO = Path(__file__).resolve().parents[1]
CANDIDATES = [
    REPO.parent / "shared" / "compat" / "skypilot-yamls",
    REPO / "shared" / "compat" / "skypilot-yamls",
]
CORPUS = next((p for p in CANDIDATES if p.is_dir()), None)

RENDER = {
    "storage_name": "sky-test-storage-4f2a",
    "empty_storage_name": "sky-test-empty-4f2a",
    "bucket_name": "sky-test-bucket-4f2a",
    "rclone_profile_name": "sky-rclone-profile",
}


@dataclass(frozen=True)
class Case:
    """One file under one set of template variables and ``--env`` overrides.

    Exactly one of `shape` (storages, mounts, copies when it parses) or `refused` (a fragment of
    the SpecError message; `where` is then the error's YAML path) is set.
    """

    file: str
    variant: str = "default"
    render: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    shape: tuple[int, int, int] | None = None
    refused: str | None = None
    where: str | None = None
    check: Callable[[Task], None] | None = None

    @property
    def id(self) -> str:
        return f"{self.file.removesuffix('.yaml').removesuffix('.yaml.j2')}[{self.variant}]"


def _historical_resnet(task: Task) -> None:
    (spec,) = task.storages
    assert spec.bucket_uri == "s3://imagenet-bucket" and spec.name == "imagenet-bucket"
    assert task.mounts[0].path == "/tmp/imagenet" and task.mounts[0].mode is MountMode.MOUNT
    assert len(task.warnings) == 3  # resources, inputs, outputs


def _historical_demo(task: Task) -> None:
    assert task.storage("sky-dataset").stores == ("s3",)
    assert not task.storage("sky-dataset").is_external  # s3://sky-dataset mounts that storage
    assert task.storage("cloud-tpu-test-datasets").bucket_uri == "gs://cloud-tpu-test-datasets"
    assert [m.storage for m in task.mounts if m.where.startswith("storage_mounts")] == [
        "sky-dataset-decl"
    ]


def _managed_job(task: Task) -> None:
    workdir = task.storage("sky-workdir-zhwu")
    assert workdir.persistent is False and workdir.local_roots[0].path.endswith("/examples")
    assert task.storage("sky-output-bucket").is_scratch
    assert task.storage("fah-public-data-covid19-cryptic-pockets").is_external
    assert task.mounts[0].mode is MountMode.COPY


def _storage_demo(task: Task) -> None:
    mybucket = task.storage("sky-dataset-mybucket")
    assert mybucket.stores == ("s3",)
    assert [m.mode for m in task.mounts if m.storage == "sky-dataset-mybucket"] == [
        MountMode.COPY,
        MountMode.MOUNT,
    ]
    multi = task.storage("sky-multisource-storage")
    assert [r.prefix for r in multi.local_roots] == ["myfile.txt", "datasets"]
    train = next(m for m in task.mounts if m.path == "/train-00001-of-01024")
    assert train.subpath == "fake_imagenet/train-00001-of-01024"


def _env_vars(task: Task) -> None:
    assert [s.name for s in task.storages] == [
        "skypilot-temp-gcs-test",
        "skypilot-temp-gcs-test-2",
        "my-secret-bkt-2",
    ]
    assert all(s.stores == ("gcs",) for s in task.storages)
    assert task.copies[0].path == "/checkpoint/13b"
    assert task.secrets == {"SECRETE_BUCKET_NAME": "my-secret-bkt"}


def _storage_mounting(task: Task) -> None:
    private = task.storage(RENDER["storage_name"])
    assert [r.prefix for r in private.local_roots] == ["", "tmp file", "tmp file2"]
    azure = task.storage("nyctlc")
    assert azure.bucket_uri == "https://azureopendatastorage.blob.core.windows.net/nyctlc"
    assert [m.path for m in task.mounts if m.storage == "nyctlc"] == [
        "/mount_public_azure",
        "/mount_public_azure_2",
    ]


def _gpt2(store: str) -> Callable[[Task], None]:
    def check(task: Task) -> None:
        (spec,) = task.storages
        assert spec.name == "my-gpt2-data" and spec.stores == (store,) and spec.is_scratch
        assert spec.sync is SyncPolicy.ADDITIVE

    return check


def _multi_node(task: Task) -> None:
    assert task.num_nodes == 2
    with pytest.raises(SpecError, match="Ray cluster"):
        check_single_node(task)


OCI = "store 'oci' is not supported by Hangar yet"
CASES: list[Case] = [
    Case("HISTORICAL-2021-12-22-095828e0c__prototype__examples__resnet_app_storage.yaml",
         shape=(1, 1, 0), check=_historical_resnet),
    Case("HISTORICAL-2022-03-30-b5e277e86__examples__storage_demo.yaml",
         shape=(3, 4, 1), check=_historical_demo),
    Case("examples__managed_job_with_storage.yaml", shape=(3, 3, 5), check=_managed_job),
    Case("examples__oci__dataset-upload-and-mount.yaml", refused=OCI,
         where="file_mounts./datasets-storage.store"),
    Case("examples__oci__oci-mounts.yaml", refused=OCI, where="file_mounts./mydir.store"),
    Case("examples__perf__storage_rawperf.yaml", shape=(1, 1, 0)),
    Case("examples__playground__symlink_playground.yaml", shape=(1, 2, 1)),
    Case("examples__resnet_app_storage.yaml", shape=(1, 1, 0)),
    Case("examples__storage__checkpointed_training.yaml", shape=(1, 1, 0)),
    Case("examples__storage__hostname_echo_demo.yaml", shape=(1, 1, 0), check=_multi_node),
    Case("examples__storage__pingpong.yaml", shape=(1, 1, 0), check=_multi_node),
    Case("examples__storage_demo.yaml", shape=(6, 7, 1), check=_storage_demo),
    Case("examples__training_network_storage_benchmarks__e2e_disk.yaml",
         refused="volumes (disks attached to cluster nodes) is a SkyPilot feature Hangar does "
         "not support yet", where="volumes"),
    Case("examples__using_file_mounts_with_env_vars.yaml",
         refused="secret SECRETE_BUCKET_NAME has no value", where="secrets.SECRETE_BUCKET_NAME"),
    Case("examples__using_file_mounts_with_env_vars.yaml", "secret-given",
         env={"SECRETE_BUCKET_NAME": "my-secret-bkt"}, shape=(3, 4, 1), check=_env_vars),
    Case("examples__using_file_mounts_with_env_vars.yaml", "bad-override",
         env={"SECRETE_BUCKET_NAME": "x", "MY_BUCKET": "goog-bucket"},
         refused="must not begin with 'goog'", where="file_mounts./mydir.name"),
    Case("llm__gpt-2__gpt2-data.yaml", refused="$BUCKET_NAME", where="file_mounts./cache.name"),
    Case("llm__gpt-2__gpt2-data.yaml", "bucket-given", env={"BUCKET_NAME": "my-gpt2-data"},
         shape=(1, 1, 0), check=_gpt2("s3")),
    Case("llm__gpt-2__gpt2-data.yaml", "gcs", shape=(1, 1, 0), check=_gpt2("gcs"),
         env={"BUCKET_NAME": "my-gpt2-data", "BUCKET_STORE": "gcs"}),
    Case("llm__gpt-2__gpt2-data.yaml", "r2", shape=(1, 1, 0), check=_gpt2("r2"),
         env={"BUCKET_NAME": "my-gpt2-data", "BUCKET_STORE": "r2"}),
    Case("llm__gpt-2__gpt2-data.yaml", "oci", env={"BUCKET_NAME": "b-1", "BUCKET_STORE": "oci"},
         refused=OCI, where="file_mounts./cache.store"),
    Case("tests__stress__mountedstorage__mount_stress.yaml", shape=(1, 1, 0)),
    Case("tests__test_yamls__test_concurrent_file_mounts.yaml", shape=(0, 0, 2)),
    Case("tests__test_yamls__test_ibm_cos_storage_mounting.yaml",
         refused="store 'ibm' is not supported by Hangar yet",
         where="file_mounts./mount_private_copy.store"),
    Case("tests__test_yamls__test_nebius_storage_mounting.yaml",
         refused="store 'nebius' is not supported by Hangar yet",
         where="file_mounts./mount_private_copy.store"),
    Case("tests__test_yamls__test_vastdata_storage_mounting.yaml",
         refused="store 'vastdata' is not supported by Hangar yet",
         where="file_mounts./mount_private_copy.store"),
    Case("tests__test_yamls__test_r2_storage_mounting.yaml", shape=(1, 4, 0)),
    *[
        Case("tests__test_yamls__test_rclone_mount.yaml", store, {"store_type": store},
             refused="mode 'RCLONE' is not supported",
             where="file_mounts./mount_private_rclone.mode")
        for store in ("s3", "gcs")
    ],
    *[
        Case("tests__test_yamls__test_storage_mount.yaml.j2", store, {"store": store},
             shape=(1, 1, 0))
        for store in ("s3", "gcs", "azure", "r2", "aws", "azure_blob", "local")
    ],
    *[
        Case("tests__test_yamls__test_storage_mount.yaml.j2", store, {"store": store},
             refused=f"store '{store}' is not supported by Hangar yet",
             where="file_mounts./test-mount.store")
        for store in ("oci", "ibm", "nebius", "vastdata")
    ],
    *[
        Case("tests__test_yamls__test_storage_mount_cached.yaml.j2", f"write={w},check={c}",
             {"write_files": w, "check_files": c}, shape=(1, 1, 0))
        for w in (True, False) for c in (True, False)
    ],
    Case("tests__test_yamls__test_storage_mounting.yaml.j2", shape=(5, 8, 0),
         check=_storage_mounting),
    *[
        Case("tests__test_yamls__test_storage_mounting.yaml.j2", f"store={s}",
             {"store_type": s, "include_mount_cached": True}, shape=(5, 9, 0))
        for s in ("s3", "gcs", "azure", "r2")
    ],
    Case("tests__test_yamls__test_storage_mounting.yaml.j2", "only-mount",
         {"only_mount": True}, shape=(5, 8, 0)),
    Case("tests__test_yamls__test_storage_mounting.yaml.j2", "no-public",
         {"include_s3_mount": False, "include_gcs_mount": False, "include_azure_mount": False},
         shape=(2, 4, 0)),
    Case("tests__test_yamls__test_storage_mounting.yaml.j2", "store=oci", {"store_type": "oci"},
         refused=OCI, where="file_mounts./mount_private_copy.store"),
]  # fmt: skip


@pytest.fixture
def corpus() -> Path:
    if CORPUS is None:
        pytest.skip(f"compat corpus not found (looked in {', '.join(map(str, CANDIDATES))})")
    return CORPUS


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "home").mkdir()
    (tmp_path / "work").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path / "work")


def render(text: str, variables: dict[str, Any]) -> str:
    """Render Jinja markup the way SkyPilot's tests do; undefined variables are errors."""
    if "{{" not in text and "{%" not in text:
        return text
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.from_string(text).render(**variables)


def load_case(corpus: Path, case: Case, tmp_path: Path) -> Task:
    text = render((corpus / case.file).read_text(), {**RENDER, **case.render})
    path = tmp_path / case.file.removesuffix(".j2")
    path.write_text(text)
    return load_task(str(path), case.env)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_compat(corpus: Path, case: Case, tmp_path: Path) -> None:
    assert (case.shape is None) != (case.refused is None), "a case parses or is refused"
    if case.refused is not None:
        with pytest.raises(SpecError) as info:
            load_case(corpus, case, tmp_path)
        assert case.refused in info.value.message, info.value
        assert info.value.where == case.where, info.value
        assert info.value.exit_code == 2
        return
    task = load_case(corpus, case, tmp_path)
    assert (len(task.storages), len(task.mounts), len(task.copies)) == case.shape
    if case.check is not None:
        case.check(task)


def test_every_corpus_file_has_a_case(corpus: Path) -> None:
    files = {p.name for p in corpus.iterdir() if p.is_file()}
    covered = {c.file for c in CASES}
    assert files - covered == set(), "add the new corpus files to CASES"
    assert covered - files == set(), "CASES names files the corpus does not have"


def test_case_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


def test_every_template_variable_is_supplied(corpus: Path) -> None:
    """Rendering with only the defaults works (StrictUndefined would name a missing one)."""
    for path in sorted(corpus.iterdir()):
        render(path.read_text(), {**RENDER, "store": "s3", "store_type": "s3"})
