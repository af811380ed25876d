"""Test-side view of a store type: open Hangar stores, and check buckets with the cloud's own
client (never with Hangar's code), so the tests cannot agree with a bug in Hangar."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Protocol

from hangar.stores import open_store
from hangar.stores.base import Store


class Backend(Protocol):
    store_type: str
    env: dict[str, str]  # environment a hangar subprocess needs to reach the server

    def open(self, bucket: str, prefix: str = "") -> Store: ...

    def objects(self, bucket: str) -> dict[str, bytes]:
        """Every object in `bucket`, read with the cloud's own client."""
        ...

    def bucket_exists(self, bucket: str) -> bool: ...

    def create_foreign_bucket(self, bucket: str, objects: dict[str, bytes]) -> None:
        """Create a bucket with the cloud's own client (one Hangar did not create)."""
        ...

    def delete_foreign_bucket(self, bucket: str) -> None: ...


class LocalBackend:
    store_type = "local"

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env: dict[str, str] = {"HANGAR_DEFAULT_STORE": "local"}

    @property
    def root(self) -> Path:
        return self.home / "buckets"

    def open(self, bucket: str, prefix: str = "") -> Store:
        return open_store("local", bucket, prefix)

    def objects(self, bucket: str) -> dict[str, bytes]:
        base = self.root / bucket
        return {
            p.relative_to(base).as_posix(): p.read_bytes()
            for p in sorted(base.rglob("*"))
            if p.is_file()
        }

    def bucket_exists(self, bucket: str) -> bool:
        return (self.root / bucket).is_dir()

    def create_foreign_bucket(self, bucket: str, objects: dict[str, bytes]) -> None:
        for key, data in objects.items():
            path = self.root / bucket / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (self.root / bucket).mkdir(parents=True, exist_ok=True)

    def delete_foreign_bucket(self, bucket: str) -> None:
        shutil.rmtree(self.root / bucket, ignore_errors=True)
