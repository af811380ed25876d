"""The Store contract every backend implements, and the small value types it trades in.

A Store is one bucket (optionally narrowed to a key prefix) in one object store. Constructors
parse and validate only; network or disk work happens in the named methods. Stores never print
and hold no policy: whether a bucket may be created, reused or deleted is decided by
`hangar.storage`. Every method translates its backend's errors into `hangar.errors` at the
boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

# Object metadata keys (S3 and GCS use them as is; Azure needs C#-style identifiers, so its
# store spells them with underscores: hangar_mtime_ns, hangar_md5, hangar_crc32).
META_MTIME = "hangar-mtime-ns"
META_CHECKSUM = "hangar-md5"
# What S3 and Azure objects record besides the MD5 (or, for a multipart upload of a file whose
# MD5 is not known yet, instead of it), and what downloads check, at a fifteenth of an MD5's
# cost: CRC-32 (zlib's polynomial), 8 hex digits.
META_CRC32 = "hangar-crc32"
# How a CRC-32 is spelled where one string holds either checksum (ObjectInfo.checksum, the
# re-sync manifest): "crc32:" + 8 hex digits; an MD5 is its 32 hex digits alone.
CRC32_TAG = "crc32:"

# Called with the number of bytes just transferred (a delta, not a running total).
Progress = Callable[[int], None]


def no_progress(_: int) -> None:
    """A Progress that ignores updates."""


@dataclass(frozen=True)
class Capabilities:
    """What a store can do cheaply; callers branch on these, never on isinstance."""

    # Listing returns the source mtime and checksum recorded at upload time.
    listing_has_meta: bool = True
    # The store can be mounted without FUSE (the local store: a symlink to a directory).
    native_mount: bool = False
    # Anonymous (credential-less) reads are possible for public buckets.
    anonymous_read: bool = False
    # Unfinished multipart uploads linger (and cost) until aborted: the store has
    # `abort_unfinished_uploads() -> int`, which `hangar.storage` calls before each upload.
    unfinished_uploads: bool = False


@dataclass(frozen=True)
class FileMeta:
    """What Hangar records about the source file in the object's metadata."""

    mtime_ns: int
    # Hex MD5 of the file's content; None when not known yet: put_file then records the
    # checksum it can compute cheapest (see Store.put_file) and returns it in ObjectInfo.
    md5: str | None


@dataclass(frozen=True)
class ObjectInfo:
    """One object as listed: its key relative to the store's prefix, and what we know of it."""

    key: str
    size: int
    mtime_ns: int | None = None  # source mtime recorded by Hangar, if any
    md5: str | None = None  # content MD5 recorded by Hangar (or a single-part ETag), if any
    etag: str | None = None
    crc32: str | None = None  # content CRC-32 recorded by Hangar (8 hex digits), if any

    @property
    def checksum(self) -> str | None:
        """The content checksum to compare a local file with: the MD5 when known, else the
        CRC-32 spelled "crc32:<hex>" (see CRC32_TAG), else None."""
        if self.md5:
            return self.md5
        return CRC32_TAG + self.crc32 if self.crc32 else None

    @classmethod
    def with_checksum(
        cls, key: str, size: int, mtime_ns: int | None, checksum: str | None
    ) -> ObjectInfo:
        """The object a manifest row describes: `checksum` as `ObjectInfo.checksum` spells it."""
        if checksum and checksum.startswith(CRC32_TAG):
            return cls(key, size, mtime_ns, crc32=checksum[len(CRC32_TAG) :])
        return cls(key, size, mtime_ns, checksum or None)


@dataclass(frozen=True)
class RcloneRemote:
    """How the FUSE layer reaches a store: an rclone backend config plus a remote path.

    `config` holds non-secret options; `secret_env` holds credentials, passed to rclone only
    through its environment (RCLONE_CONFIG_<NAME>_<OPTION>), never on its command line.
    """

    backend: str
    path: str
    config: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Store(Protocol):
    """One bucket (plus optional key prefix) in one object store."""

    scheme: str  # "local", "s3", "gcs", "azure", "r2"
    bucket: str
    prefix: str  # "" or "some/prefix/" (always ends with "/" when set)
    capabilities: Capabilities

    @property
    def url(self) -> str:
        """Canonical URL, e.g. ``s3://bkt/prefix``."""
        ...

    def bucket_exists(self) -> bool:
        """True when the bucket exists and is visible. Raises AccessDenied on 403."""
        ...

    def create_bucket(self, region: str | None = None) -> None:
        """Create the bucket. Raises BucketExists when the name is taken (by anyone)."""
        ...

    def delete_bucket(self) -> None:
        """Delete every object and then the bucket. Callers: hangar.storage only."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under the store prefix + `prefix`, keys relative to the store prefix.

        Raises BucketNotFound when the bucket does not exist.
        """
        ...

    def head(self, key: str) -> ObjectInfo:
        """One object's info. Raises ObjectNotFound."""
        ...

    def put_file(self, path: Path, key: str, *, meta: FileMeta, progress: Progress) -> ObjectInfo:
        """Upload a local file to `key`, atomically: readers see the old object or the new one.

        Records `meta` in the object's metadata. Streams (memory does not grow with file size).
        Returns the object's info with a checksum of the content sent (`ObjectInfo.checksum`
        is not None): the MD5 (`meta.md5`, else computed), except for a large file (sent in
        parts; the local store: above its CRC_ONLY_ABOVE) whose MD5 was not known, which is
        not read for an MD5 (serial, 0.6 GB/s here: it would cap a large upload, and its CPU
        slowed it): the obstore and local stores record a CRC-32 instead, GCS the MD5 its
        server computed once the client's CRC32C check of the upload passed.
        """
        ...

    def get_file(
        self,
        key: str,
        path: Path,
        *,
        progress: Progress,
        size: int | None = None,
        listed: ObjectInfo | None = None,
    ) -> None:
        """Download `key` to `path` (parent directories must exist), writing a temporary file
        beside it and renaming it into place. `size` is the object's size as listed, when the
        caller knows it: a store may plan the transfer from it (the obstore stores fetch a
        large object in ranges from the first request); a stale one costs only speed.
        `listed` is the whole listing entry, when the caller has it: GCS then skips asking for
        the object's metadata (its checksum is compared with the download's instead). A stale
        one costs only speed too. Raises ObjectNotFound."""
        ...

    def delete(self, keys: Iterable[str]) -> None:
        """Delete objects (batched where the store can). Missing keys are not an error."""
        ...

    def mount_remote(self) -> RcloneRemote:
        """How rclone reaches this store (for MOUNT / MOUNT_CACHED through FUSE)."""
        ...
