"""The obstore data plane shared by the S3 (and R2) and Azure stores.

Only obstore's synchronous API is used, from whatever thread calls the store: its async API has
aborted the interpreter at exit (see the environment notes), the sync one has not. One obstore
client per store, built lazily under a lock and rebuilt when the credentials change (temporary
credentials refreshed by the cloud's own chain), so a store may be shared by a thread pool.

Uploads up to `part_size` go in one PUT (the file is read once into memory, at most part_size);
larger ones are multipart, `max_concurrency` parts in flight, so memory stays near
part_size * max_concurrency whatever the file size. Downloads stream into a temporary file beside
the target, renamed into place when complete. obstore retries 5xx, 429 and connection errors
with exponential backoff (`max_retries`, `retry_timeout`); the final failure becomes a
`StoreError` naming the object and the cause.
"""

from __future__ import annotations

import builtins
import os
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import obstore
from obstore.exceptions import BaseError as ObstoreError
from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

from hangar.errors import (
    AccessDenied,
    BucketNotFound,
    HangarError,
    ObjectNotFound,
    StoreError,
)
from hangar.stores._common import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_PART_CONCURRENCY,
    DEFAULT_RETRY_TIMEOUT,
    DOWNLOAD_CHUNK,
    ProgressReader,
    atomic_download,
    check_key,
    check_part_size,
    norm_prefix,
    parse_int,
    parse_md5,
    scrub,
    set_mtime,
    short_cause,
)
from hangar.stores.base import (
    META_CHECKSUM,
    META_MTIME,
    FileMeta,
    ObjectInfo,
    Progress,
)
from hangar.stores.uri import format_url

_DELETE_BATCH = 1000
_BUCKET_MISSING = ("NoSuchBucket", "ContainerNotFound")


class ObstoreDataPlane:
    """Object methods of the Store contract over obstore; subclasses add the control plane.

    Subclasses set `scheme`, and implement `_build_obstore()` (called under the lock) and
    `_client_key()` (a value that changes when the client must be rebuilt, e.g. new credentials).
    """

    scheme: str
    # Names under which FileMeta is stored as user metadata (Azure needs C# identifiers).
    meta_mtime: str = META_MTIME
    meta_md5: str = META_CHECKSUM

    def __init__(
        self,
        bucket: str,
        prefix: str,
        *,
        part_size: int | None,
        max_concurrency: int | None,
        max_retries: int | None,
        retry_timeout: float | None,
    ) -> None:
        self.bucket = bucket
        self.prefix = norm_prefix(prefix)
        self.part_size = check_part_size(part_size)
        self.max_concurrency = max(1, int(max_concurrency or DEFAULT_PART_CONCURRENCY))
        self.max_retries = DEFAULT_MAX_RETRIES if max_retries is None else max(0, max_retries)
        self.retry_timeout = float(retry_timeout or DEFAULT_RETRY_TIMEOUT)
        self._lock = threading.RLock()
        self._obs: Any = None
        self._obs_key: Any = None

    # -- to implement ----------------------------------------------------------------------------
    def _build_obstore(self, client_key: Any) -> Any:
        raise NotImplementedError

    def _client_key(self) -> Any:
        return None

    def _secrets(self) -> builtins.list[str]:
        """Secret values to mask in any message."""
        return []

    def _md5_from_etag(self, etag: str | None) -> str | None:
        return None

    # -- shared ----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return format_url(self.scheme, self.bucket, self.prefix.rstrip("/"))

    @property
    def bucket_url(self) -> str:
        return format_url(self.scheme, self.bucket)

    def _full(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _data(self) -> Any:
        with self._lock:
            key = self._client_key()
            if self._obs is None or key != self._obs_key:
                self._obs = self._build_obstore(key)
                self._obs_key = key
            return self._obs

    def retry_config(self) -> dict[str, Any]:
        return {
            "max_retries": self.max_retries,
            "retry_timeout": timedelta(seconds=self.retry_timeout),
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=15),
                "base": 2,
            },
        }

    @staticmethod
    def client_options(endpoint: str | None) -> dict[str, Any]:
        return {
            "allow_http": bool(endpoint and endpoint.startswith("http://")),
            "connect_timeout": "5s",
            # Whole-request limit: large enough for a big object's streamed GET; stalls are
            # caught by the read timeout instead.
            "timeout": "6h",
            "read_timeout": "60s",
            "user_agent": "hangar",
        }

    def _translate(self, exc: BaseException, action: str, key: str | None = None) -> HangarError:
        """obstore error -> Hangar error naming the object, the cause and the retries made."""
        text = scrub(str(exc), self._secrets())
        cause = short_cause(text)
        retries = re.search(r"after (\d+) retries", text) or re.search(r"\bretries: (\d+)", text)
        after = f" after {retries.group(1)} retries" if retries and retries.group(1) != "0" else ""
        target = f"{self.url}/{key}" if key else self.url
        if any(code in text for code in _BUCKET_MISSING):
            return BucketNotFound(f"bucket {self.bucket_url} does not exist ({action} {target})")
        if isinstance(exc, FileNotFoundError) or "404 Not Found" in text:
            return ObjectNotFound(f"{target} does not exist")
        if isinstance(exc, PermissionDeniedError | UnauthenticatedError) or re.search(
            r"\b40[13] (Forbidden|Unauthorized)", text
        ):
            return AccessDenied(
                f"{action} {target}: access denied ({cause}).\nTo fix: check that your "
                f"credentials are valid and allowed to {action} in {self.bucket_url}."
            )
        return StoreError(f"{action} {target} failed{after}: {cause}")

    # -- objects ---------------------------------------------------------------------------------
    def put_file(self, path: Path, key: str, *, meta: FileMeta, progress: Progress) -> ObjectInfo:
        """Upload `path` to `key` with `meta` recorded as user metadata (single PUT up to
        part_size, multipart above). Raises BucketNotFound, AccessDenied, StoreError."""
        full = self._full(key)
        attributes = {self.meta_mtime: str(meta.mtime_ns), self.meta_md5: meta.md5}
        size = os.stat(path).st_size
        with open(path, "rb") as raw:
            try:
                if size <= self.part_size:
                    data = raw.read()
                    result = obstore.put(
                        self._data(), full, data, attributes=attributes, use_multipart=False
                    )
                    progress(len(data))
                    size = len(data)
                else:
                    result = obstore.put(
                        self._data(),
                        full,
                        ProgressReader(raw, progress),  # type: ignore[arg-type]
                        attributes=attributes,
                        use_multipart=True,
                        chunk_size=self.part_size,
                        max_concurrency=self.max_concurrency,
                    )
            except (ObstoreError, OSError) as exc:
                raise self._translate(exc, "upload", key) from None
        return ObjectInfo(
            key=key, size=size, mtime_ns=meta.mtime_ns, md5=meta.md5, etag=result["e_tag"]
        )

    def get_file(self, key: str, path: Path, *, progress: Progress) -> None:
        """Stream `key` into a temporary file beside `path`, then rename it into place and give
        it the recorded source mtime. Raises ObjectNotFound, AccessDenied, StoreError."""
        full = self._full(key)
        try:
            result = obstore.get(self._data(), full)
        except (ObstoreError, FileNotFoundError) as exc:
            raise self._translate(exc, "download", key) from None
        mtime_ns = parse_int(result.attributes.get(self.meta_mtime))
        try:
            with atomic_download(path) as out:
                for chunk in result.stream(min_chunk_size=DOWNLOAD_CHUNK):
                    out.write(chunk)
                    progress(len(chunk))
        except ObstoreError as exc:
            raise self._translate(exc, "download", key) from None
        set_mtime(path, mtime_ns)

    def _info(self, key: str, meta: Any, attributes: dict[str, str] | None) -> ObjectInfo:
        attrs = attributes or {}
        etag = meta.get("e_tag")
        return ObjectInfo(
            key=key,
            size=int(meta["size"]),
            mtime_ns=parse_int(attrs.get(self.meta_mtime)),
            md5=parse_md5(attrs.get(self.meta_md5)) or self._md5_from_etag(etag),
            etag=etag,
        )

    def head(self, key: str) -> ObjectInfo:
        """One object's size, etag and recorded metadata. Raises ObjectNotFound."""
        try:
            result = obstore.get(self._data(), self._full(key), options={"head": True})
        except (ObstoreError, FileNotFoundError) as exc:
            raise self._translate(exc, "read", key) from None
        return self._info(key, result.meta, dict(result.attributes))

    def _list_raw(self, prefix: str) -> Iterator[Any]:
        """obstore listing of every object whose full key starts with `prefix` (string
        semantics, unlike obstore's path-segment prefixes)."""
        directory = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        try:
            for chunk in obstore.list(self._data(), prefix=directory or None, chunk_size=1000):
                for meta in chunk:
                    if meta["path"].startswith(prefix):
                        yield meta
        except (ObstoreError, FileNotFoundError) as exc:
            raise self._translate(exc, "list", prefix or None) from None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects under the store prefix + `prefix`, keys relative to the store prefix.
        Raises BucketNotFound."""
        cut = len(self.prefix)
        for meta in self._list_raw(self.prefix + prefix):
            yield self._info(meta["path"][cut:], meta, None)

    def delete(self, keys: Iterable[str]) -> None:
        """Delete objects in batches (bulk delete where the store has one); missing keys are
        fine."""
        batch: builtins.list[str] = []
        for key in keys:
            batch.append(self._full(key))
            if len(batch) >= _DELETE_BATCH:
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)

    def _delete_batch(self, paths: Sequence[str]) -> None:
        try:
            obstore.delete(self._data(), paths)
        except FileNotFoundError:
            # A bulk delete that reports a missing key: retry one by one, ignoring misses.
            for path in paths:
                try:
                    obstore.delete(self._data(), path)
                except FileNotFoundError:
                    continue
                except ObstoreError as exc:
                    raise self._translate(exc, "delete", path[len(self.prefix) :]) from None
        except ObstoreError as exc:
            raise self._translate(exc, "delete", paths[0][len(self.prefix) :]) from None
