"""Shared fixtures: an isolated $HANGAR_HOME per test, and one `backend` per store type.

Cloud backends (s3, gcs, azure) come from `servers/plugin.py`, which starts real local servers
(SeaweedFS, fake-gcs-server, Azurite) once per session.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from backends import Backend, LocalBackend

pytest_plugins = ["servers.plugin"]

STORE_TYPES = ["local", "s3", "gcs", "azure"]
CLOUD_TYPES = ["s3", "gcs", "azure"]


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C is part of what the suite tests (in this process and in the `hangar` processes it
    starts). A non-interactive shell starts a background job (`cmd &`) with SIGINT ignored,
    which Python then keeps, and which children inherit across exec; a caught signal is reset
    to the default at exec instead. So the suite catches SIGINT as Python normally does."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def hangar_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own HANGAR_HOME (catalog, logs, local buckets)."""
    home = tmp_path / "hangar-home"
    monkeypatch.setenv("HANGAR_HOME", str(home))
    monkeypatch.delenv("HANGAR_DEFAULT_STORE", raising=False)
    yield home


def unique_bucket(prefix: str = "hgt") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def local_backend(hangar_home: Path) -> Backend:
    return LocalBackend(hangar_home)


@pytest.fixture(params=STORE_TYPES)
def backend(request: pytest.FixtureRequest) -> Backend:
    """The same test, run against every store type."""
    b: Backend = request.getfixturevalue(f"{request.param}_backend")
    return b


@pytest.fixture(params=CLOUD_TYPES)
def cloud(request: pytest.FixtureRequest) -> Backend:
    """The same test, run against every cloud store (each on its local server)."""
    b: Backend = request.getfixturevalue(f"{request.param}_backend")
    return b


@pytest.fixture
def env_for(backend: Backend) -> dict[str, str]:
    """Environment for a `hangar` subprocess that should use `backend`."""
    env = dict(os.environ)
    env.update(backend.env)
    return env
