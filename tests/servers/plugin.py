"""Session fixtures that start the real local servers, and the per-test backend views.

Each server starts the first time a test asks for it (so a run that needs none starts none), on
free loopback ports with a fresh data directory under pytest's tmp dir (logs stay there), and is
stopped by PID at the end of the session. A server whose package is missing FAILS the tests that
need it with the install command: CI must install them, never silently skip them.

`s3_backend`, `gcs_backend`, `azure_backend` also put the backend's `env` into os.environ (and
clear the developer's own cloud variables), so `open_store(type, bucket)` with no options reaches
the server exactly as a user's environment would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


def _start(name: str, factory: Callable[[], T]) -> T:
    try:
        return factory()
    except Exception as exc:  # missing package, or the server did not come up
        pytest.fail(f"could not start the {name} test server:\n{exc}", pytrace=False)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from servers.seaweedfs import start_seaweedfs

    base: Path = tmp_path_factory.mktemp("seaweedfs")
    server = _start("SeaweedFS (S3)", lambda: start_seaweedfs(base))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from servers.fakegcs import start_fake_gcs

    base: Path = tmp_path_factory.mktemp("fakegcs")
    server = _start("fake-gcs-server (GCS)", lambda: start_fake_gcs(base))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def azure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from servers.azurite import start_azurite

    base: Path = tmp_path_factory.mktemp("azurite")
    server = _start("Azurite (Azure Blob)", lambda: start_azurite(base))
    yield server
    server.stop()


def _use_env(monkeypatch: pytest.MonkeyPatch, store_type: str, env: dict[str, str]) -> None:
    from servers.cloud_backends import CLEARED_ENV

    for name in CLEARED_ENV[store_type]:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def s3_backend(s3_server: Any, monkeypatch: pytest.MonkeyPatch, hangar_home: Path) -> Any:
    from servers.cloud_backends import S3Backend

    backend = S3Backend(s3_server)
    _use_env(monkeypatch, backend.store_type, backend.env)
    return backend


@pytest.fixture
def gcs_backend(gcs_server: Any, monkeypatch: pytest.MonkeyPatch, hangar_home: Path) -> Any:
    from servers.cloud_backends import GcsBackend

    backend = GcsBackend(gcs_server)
    _use_env(monkeypatch, backend.store_type, backend.env)
    return backend


@pytest.fixture
def azure_backend(azure_server: Any, monkeypatch: pytest.MonkeyPatch, hangar_home: Path) -> Any:
    from servers.cloud_backends import AzureBackend

    backend = AzureBackend(azure_server)
    _use_env(monkeypatch, backend.store_type, backend.env)
    return backend
