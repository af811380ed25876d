"""The embedded local store: each bucket is a directory under ``$HANGAR_HOME/buckets/``.

It needs no credentials and no server, so everything works on a fresh machine. Objects are plain
files (so a MOUNT is a symlink to the bucket directory, no FUSE needed). Writes go to a
temporary file under ``<root>/.tmp`` and are renamed into place, so a reader never sees a partial
object. The source mtime is kept as the file's mtime; the content checksum in an extended
attribute that also pins the size and mtime it was computed for, so a file changed in place
(through a mount) never keeps a stale checksum. The checksum is the MD5, except for a file
larger than CRC_ONLY_ABOVE whose MD5 is not known: like a file the cloud stores send in parts,
it records its CRC-32 (read in parallel slices at ~10 GB/s per core, where an MD5 is a serial
0.5-0.6 GB/s pass before the copy).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from hangar.errors import BucketExists, BucketNotFound, ObjectNotFound, StoreError
from hangar.stores._common import DEFAULT_PART_SIZE, file_crc32, file_md5, parse_crc32
from hangar.stores.base import Capabilities, FileMeta, ObjectInfo, Progress, RcloneRemote
from hangar.stores.uri import format_url

# "<hex digest>:<size>:<mtime_ns>", one or the other. The CRC-32 has an attribute of its own:
# a Hangar that knows only the MD5 one then sees no checksum rather than one it cannot parse.
_XATTR = "user.hangar.md5"
_XATTR_CRC32 = "user.hangar.crc32"
CRC_ONLY_ABOVE = DEFAULT_PART_SIZE  # as the cloud stores' multipart threshold
_CHUNK = 64 * 1024 * 1024


def _check_key(key: str) -> str:
    parts = key.split("/")
    if (
        not key
        or key.startswith("/")
        or "\x00" in key
        or any(p in ("", ".", "..") for p in parts[:-1])
        or parts[-1] in (".", "..")
    ):
        raise StoreError(f"refusing unsafe object key {key!r} (empty, absolute, '..' or NUL)")
    return key


def _copy_stream(src: Path, dst_fd: int, progress: Progress) -> None:
    with open(src, "rb") as fin:
        in_fd = fin.fileno()
        while True:
            try:
                n = os.copy_file_range(in_fd, dst_fd, _CHUNK)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                n = -1
            if n == -1:  # fall back to a plain buffered copy
                while chunk := fin.read(8 * 1024 * 1024):
                    os.write(dst_fd, chunk)
                    progress(len(chunk))
                return
            if n == 0:
                return
            progress(n)


class LocalStore:
    """A bucket that is a directory. `root` defaults to ``$HANGAR_HOME/buckets``."""

    scheme = "local"
    capabilities = Capabilities(listing_has_meta=True, native_mount=True, anonymous_read=True)

    def __init__(self, bucket: str, prefix: str = "", *, root: str | Path | None = None) -> None:
        if not bucket or "/" in bucket or bucket.startswith("."):
            raise StoreError(f"invalid local bucket name {bucket!r}")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._root = Path(root) if root is not None else None

    # -- paths -------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        if self._root is None:
            from hangar.config import buckets_dir

            self._root = buckets_dir()
        return self._root

    @property
    def bucket_path(self) -> Path:
        return self.root / self.bucket

    def local_path(self) -> Path:
        """The directory holding the store's objects (bucket + prefix)."""
        return self.bucket_path / self.prefix if self.prefix else self.bucket_path

    def _obj(self, key: str) -> Path:
        return self.bucket_path / (self.prefix + _check_key(key))

    def _tmpdir(self) -> Path:
        tmp = self.root / ".tmp"
        tmp.mkdir(mode=0o700, exist_ok=True)
        return tmp

    @property
    def url(self) -> str:
        return format_url("local", self.bucket, self.prefix.rstrip("/"))

    # -- bucket --------------------------------------------------------------------------------
    def bucket_exists(self) -> bool:
        return self.bucket_path.is_dir()

    def create_bucket(self, region: str | None = None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.bucket_path.mkdir()
        except FileExistsError as exc:
            raise BucketExists(f"local bucket {self.bucket!r} already exists") from exc

    def delete_bucket(self) -> None:
        if not self.bucket_exists():
            raise BucketNotFound(f"local bucket {self.bucket!r} does not exist")
        shutil.rmtree(self.bucket_path)

    # -- objects -------------------------------------------------------------------------------
    @staticmethod
    def _recorded(path: Path, attribute: str, st: os.stat_result) -> str | None:
        """The digest in `attribute` when it was recorded for this size and mtime."""
        with contextlib.suppress(OSError, ValueError):
            digest, size, mtime = os.getxattr(path, attribute).decode().split(":")
            if int(size) == st.st_size and int(mtime) == st.st_mtime_ns:
                return digest
        return None

    def _info(self, key: str, path: Path, st: os.stat_result) -> ObjectInfo:
        md5 = self._recorded(path, _XATTR, st)
        crc = None if md5 else parse_crc32(self._recorded(path, _XATTR_CRC32, st))
        return ObjectInfo(key=key, size=st.st_size, mtime_ns=st.st_mtime_ns, md5=md5, crc32=crc)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not self.bucket_exists():
            raise BucketNotFound(f"local bucket {self.bucket!r} does not exist")
        base = self.local_path()
        if not base.is_dir():
            return
        # Walk only the directory part of `prefix`, then filter by the full prefix.
        start = base / prefix.rsplit("/", 1)[0] if "/" in prefix else base
        yield from self._walk(base, start, prefix)

    def _walk(self, base: Path, directory: Path, prefix: str) -> Iterator[ObjectInfo]:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(base, Path(entry.path), prefix)
            elif entry.is_file(follow_symlinks=False):
                key = os.path.relpath(entry.path, base).replace(os.sep, "/")
                if key.startswith(prefix):
                    yield self._info(key, Path(entry.path), entry.stat(follow_symlinks=False))

    def head(self, key: str) -> ObjectInfo:
        path = self._obj(key)
        try:
            st = path.stat()
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"{self.url}/{key} does not exist") from exc
        if not path.is_file():
            raise ObjectNotFound(f"{self.url}/{key} is not an object")
        return self._info(key, path, st)

    def put_file(self, path: Path, key: str, *, meta: FileMeta, progress: Progress) -> ObjectInfo:
        dest = self._obj(key)
        md5, crc = meta.md5, None
        if md5 is None:
            if os.stat(path).st_size > CRC_ONLY_ABOVE:
                crc = file_crc32(path)
            else:
                md5 = file_md5(path)
        attribute, digest = (_XATTR, md5) if md5 else (_XATTR_CRC32, crc)
        if not self.bucket_exists():
            raise BucketNotFound(f"local bucket {self.bucket!r} does not exist")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise StoreError(f"{self.url}/{key}: a parent of this key is an object") from exc
        fd, tmp = tempfile.mkstemp(dir=self._tmpdir(), prefix="put-")
        try:
            try:
                _copy_stream(path, fd, progress)
            finally:
                os.close(fd)
            os.chmod(tmp, 0o644)
            os.utime(tmp, ns=(meta.mtime_ns, meta.mtime_ns))
            size = os.stat(tmp).st_size
            with contextlib.suppress(OSError):
                os.setxattr(tmp, attribute, f"{digest}:{size}:{meta.mtime_ns}".encode())
            if dest.is_dir():
                raise StoreError(f"{self.url}/{key}: a directory of objects has this name")
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return ObjectInfo(key=key, size=size, mtime_ns=meta.mtime_ns, md5=md5, crc32=crc)

    def get_file(
        self,
        key: str,
        path: Path,
        *,
        progress: Progress,
        size: int | None = None,
        listed: ObjectInfo | None = None,
    ) -> None:
        src = self._obj(key)
        if not src.is_file():
            raise ObjectNotFound(f"{self.url}/{key} does not exist")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.hangar-")
        try:
            try:
                _copy_stream(src, fd, progress)
            finally:
                os.close(fd)
            os.chmod(tmp, 0o644)
            st = src.stat()
            os.utime(tmp, ns=(st.st_mtime_ns, st.st_mtime_ns))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            path = self._obj(key)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            # Drop directories the deletion left empty, up to (not including) the bucket.
            parent = path.parent
            while parent != self.bucket_path and self.bucket_path in parent.parents:
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent

    def mount_remote(self) -> RcloneRemote:
        return RcloneRemote(backend="local", path=str(self.local_path()))
