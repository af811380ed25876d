"""Google Cloud Storage, through the official google-cloud-storage client (control plane, and
every transfer the standard library's client below does not complete: its retries, errors and
proxies are the library's).

Why not obstore here: fake-gcs-server, the GCS server the tests run against, rejects obstore's
uploads, and an upload path the tests cannot exercise is not shipped. Files above `part_size`
go up as resumable uploads in part_size chunks (memory: one chunk per file); smaller ones in one
request. Every call retries 429, 5xx and connection errors with exponential backoff for up to
`retry_timeout` seconds (google-api-core's Retry); the final failure becomes a StoreError naming
the object and the cause. GCS listings return user metadata, so `listing_has_meta` is True.

Downloads above PARALLEL_MIN come in parallel ranges of the object's generation, mostly read by
the standard library's client from the media URL with the credentials' bearer token (the
library reads 8 KiB at a time: ~3.3 client CPU-s per GiB, against ~0.7 this way; see
stores/_ranges.py and stores/_direct.py), and are checked against GCS's CRC32C of the object.
A smaller object whose listing entry the caller passes is one GET by that client (~1 ms of CPU
against the library's ~3 per request), checked against the listed MD5; a file of one request
goes up as one multipart POST by it, with the MD5 GCS checks. Anything unexpected hands the
object to the library.

The client is not shared between threads: each thread gets its own (credentials are shared),
so a store may be used from a thread pool.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials
from google.auth.exceptions import GoogleAuthError
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY
from google.resumable_media.common import DataCorruption

from hangar.errors import (
    AccessDenied,
    BucketExists,
    BucketNotFound,
    ChecksumMismatch,
    HangarError,
    ObjectNotFound,
    StoreError,
)
from hangar.stores import _ranges
from hangar.stores._common import (
    DEFAULT_RETRY_TIMEOUT,
    ProgressReader,
    ProgressWriter,
    atomic_download,
    check_key,
    check_part_size,
    join_checksums,
    norm_prefix,
    parse_int,
    parse_md5,
    preallocate,
    scrub,
    set_mtime,
    short_cause,
    transfer_option,
)
from hangar.stores.base import (
    META_CHECKSUM,
    META_MTIME,
    Capabilities,
    FileMeta,
    ObjectInfo,
    Progress,
    RcloneRemote,
)
from hangar.stores.settings import GcsSettings, resolve_gcs
from hangar.stores.uri import format_url

if TYPE_CHECKING:
    from hangar.stores._direct import RangeReader

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._\-]{1,220}[a-z0-9]$")
_CHUNK_UNIT = 256 * 1024  # resumable upload chunks are multiples of 256 KiB
_TIMEOUT = (5.0, 120.0)  # (connect, read) seconds per request
_REFUSED = {401, 403, 404, 405}  # answers that turn a store's direct uploads off


def _b64_md5_hex(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return base64.b64decode(value).hex()
    except ValueError:
        return None


def _crc32c_of(value: str | None) -> int | None:
    """GCS's CRC32C of an object (base64 of 4 big-endian bytes) as an int; None if absent."""
    try:
        raw = base64.b64decode(value or "", validate=True)
    except ValueError:
        return None
    return int.from_bytes(raw, "big") if len(raw) == 4 else None


# CRC-32C of ranges combined into the object's (zlib's crc32_combine, for the Castagnoli
# polynomial, reflected): crc(A + B) = crc(A) * x^(8 len(B)) + crc(B), modulo the polynomial.
_CRC32C_POLY = 0x82F63B78


def _multmodp(a: int, b: int) -> int:
    """a * b modulo the CRC-32C polynomial (bit 31 is x^0); `a` is never 0 here."""
    m, p = 1 << 31, 0
    while True:
        if a & m:
            p ^= b
            if a & (m - 1) == 0:
                return p
        m >>= 1
        b = (b >> 1) ^ _CRC32C_POLY if b & 1 else b >> 1


_X2N = [1 << 30]  # x^(2^k) modulo the polynomial, k = 0..31
for _ in range(31):
    _X2N.append(_multmodp(_X2N[-1], _X2N[-1]))


def _crc32c_combine(crc1: int, crc2: int, len2: int) -> int:
    """The CRC-32C of A + B from crc1 = CRC-32C(A), crc2 = CRC-32C(B) and len2 = len(B)."""
    p, k = 1 << 31, 3  # x^0; x^(8 len2) = the product of x^(2^k) for the bits of len2 << 3
    while len2:
        if len2 & 1:
            p = _multmodp(_X2N[k & 31], p)
        len2 >>= 1
        k += 1
    return _multmodp(p, crc1) ^ crc2


class _Corrupt(Exception):
    """The bytes of a download do not have the object's CRC32C."""


class _NotAsListed(Exception):
    """The object downloaded is not the one listed (another MD5, or none)."""


class _Sink:
    """A file-like `write` for the library's download that hands each chunk on."""

    def __init__(self, write: Any) -> None:
        self._write = write

    def write(self, chunk: bytes) -> int:
        self._write(chunk)
        return len(chunk)


class GcsStore:
    """A GCS bucket (plus optional prefix). Options (all optional, see `resolve_gcs`):
    endpoint, project, region, anonymous, credentials (a google.auth Credentials); part_size,
    retry_timeout (seconds)."""

    scheme = "gcs"
    capabilities = Capabilities(listing_has_meta=True, native_mount=False, anonymous_read=True)

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        project: str | None = None,
        region: str | None = None,
        anonymous: bool | None = None,
        credentials: Any = None,
        part_size: int | None = None,
        max_concurrency: int | None = None,
        max_retries: int | None = None,
        retry_timeout: float | None = None,
    ) -> None:
        if not _BUCKET_NAME.match(bucket) or ".." in bucket:
            raise StoreError(
                f"invalid GCS bucket name {bucket!r}: lowercase letters, digits, '-', '_' and "
                "'.', starting and ending with a letter or digit"
            )
        self.bucket = bucket
        self.prefix = norm_prefix(prefix)
        size = check_part_size(part_size)
        self.part_size = max(_CHUNK_UNIT, size - size % _CHUNK_UNIT)
        # max_concurrency / max_retries: accepted for a uniform interface; GCS resumable
        # uploads send one chunk at a time and retries are bounded by time.
        self.retry_timeout = transfer_option(
            retry_timeout or None, "HANGAR_RETRY_TIMEOUT", DEFAULT_RETRY_TIMEOUT
        )
        self._timeout = (_TIMEOUT[0], transfer_option(None, "HANGAR_READ_TIMEOUT", _TIMEOUT[1]))
        self._retry: Retry = DEFAULT_RETRY.with_timeout(self.retry_timeout)
        self._options: dict[str, Any] = {
            "endpoint": endpoint,
            "project": project,
            "region": region,
            "anonymous": anonymous,
            "credentials": credentials,
        }
        self._settings: GcsSettings | None = None
        self._lock = threading.Lock()
        self._local = threading.local()
        self._small: list[RangeReader | None] = []  # see _get_direct: made once, if usable
        self._auth_lock = threading.Lock()
        self._token_transport: Any = None  # google-auth's, for refreshing a token

    # -- settings and clients ----------------------------------------------------------------
    @property
    def url(self) -> str:
        return format_url("gcs", self.bucket, self.prefix.rstrip("/"))

    @property
    def bucket_url(self) -> str:
        return format_url("gcs", self.bucket)

    @property
    def settings(self) -> GcsSettings:
        """Resolved on first use (environment, config file, application default credentials)."""
        with self._lock:
            if self._settings is None:
                self._settings = resolve_gcs(**self._options)
            return self._settings

    def client(self) -> storage.Client:
        """This thread's google-cloud-storage client."""
        client: storage.Client | None = getattr(self._local, "client", None)
        if client is None:
            settings = self.settings
            client = storage.Client(
                project=settings.project,
                credentials=settings.credentials or AnonymousCredentials(),  # type: ignore[no-untyped-call]
                client_options={"api_endpoint": settings.endpoint} if settings.endpoint else None,
            )
            self._local.client = client
        return client

    def _bucket(self) -> storage.Bucket:
        return self.client().bucket(self.bucket)

    def _error(self, exc: Exception, action: str, key: str | None = None) -> HangarError:
        target = f"{self.url}/{key}" if key else self.url
        text = scrub(str(exc))
        if isinstance(exc, gexc.NotFound):
            if key is None or action in ("upload", "list"):
                return BucketNotFound(f"bucket {self.bucket_url} does not exist")
            return ObjectNotFound(f"{target} does not exist")
        if isinstance(exc, gexc.Forbidden | gexc.Unauthorized):
            return AccessDenied(
                f"{action} {target}: access denied ({short_cause(text)}). The bucket may be "
                "private to someone else, or these credentials are not valid for it.\nTo fix: "
                "check your Google credentials (gcloud auth application-default login, "
                "GOOGLE_APPLICATION_CREDENTIALS), or use a bucket you own."
            )
        return StoreError(f"{action} {target} failed: {short_cause(text)}")

    # -- control plane -----------------------------------------------------------------------
    def bucket_exists(self) -> bool:
        """True when the bucket exists. Raises AccessDenied on 403 (private to someone else)."""
        try:
            self._bucket().reload(retry=self._retry, timeout=self._timeout)
        except gexc.NotFound:
            return False
        except (gexc.GoogleAPIError, GoogleAuthError, OSError) as exc:
            raise self._error(exc, "check") from None
        return True

    def create_bucket(self, region: str | None = None) -> None:
        """Create the bucket in `region` (default: settings' region, else GCS's default).
        Raises BucketExists when the name is taken (409)."""
        settings = self.settings
        try:
            self.client().create_bucket(
                self.bucket,
                location=region or settings.region,
                project=settings.project,
                retry=self._retry,
                timeout=self._timeout,
            )
        except gexc.Conflict:
            raise BucketExists(f"bucket {self.bucket_url} already exists.") from None
        except ValueError as exc:  # no project to create it in
            raise StoreError(
                f"create {self.bucket_url}: {exc}.\nTo fix: export GOOGLE_CLOUD_PROJECT=<id> or "
                "set stores.gcs.project in $HANGAR_HOME/config.yaml."
            ) from None
        except (gexc.GoogleAPIError, GoogleAuthError, OSError) as exc:
            raise self._error(exc, "create") from None

    def delete_bucket(self) -> None:
        """Delete every object (whole bucket, whatever the prefix), then the bucket. Raises
        BucketNotFound."""
        try:
            names = [b.name for b in self.client().list_blobs(self.bucket, retry=self._retry)]
            self._delete_names(names)
            self._bucket().delete(retry=self._retry, timeout=self._timeout)
        except (gexc.GoogleAPIError, GoogleAuthError, OSError) as exc:
            raise self._error(exc, "delete") from None

    # -- objects -----------------------------------------------------------------------------
    def _info(self, blob: Any, key: str) -> ObjectInfo:
        meta = blob.metadata or {}
        return ObjectInfo(
            key=key,
            size=int(blob.size or 0),
            mtime_ns=parse_int(meta.get(META_MTIME)),
            md5=parse_md5(meta.get(META_CHECKSUM)) or _b64_md5_hex(blob.md5_hash),
            etag=blob.etag,
        )

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects under the store prefix + `prefix`, with the recorded mtime and md5 (GCS's own
        MD5 for objects Hangar did not write). Raises BucketNotFound."""
        cut = len(self.prefix)
        try:
            for blob in self.client().list_blobs(
                self.bucket,
                prefix=self.prefix + prefix or None,
                page_size=1000,
                retry=self._retry,
                timeout=self._timeout,
            ):
                yield self._info(blob, blob.name[cut:])
        except (gexc.GoogleAPIError, GoogleAuthError, OSError) as exc:
            raise self._error(exc, "list") from None

    def head(self, key: str) -> ObjectInfo:
        """One object's size and recorded metadata. Raises ObjectNotFound."""
        try:
            blob = self._bucket().get_blob(
                self.prefix + check_key(key), retry=self._retry, timeout=self._timeout
            )
        except (gexc.GoogleAPIError, GoogleAuthError, OSError) as exc:
            raise self._error(exc, "read", key) from None
        if blob is None:
            raise ObjectNotFound(f"{self.url}/{key} does not exist")
        return self._info(blob, key)

    def put_file(self, path: Path, key: str, *, meta: FileMeta, progress: Progress) -> ObjectInfo:
        """Upload `path` (one request up to part_size, resumable chunks above) with `meta` as
        object metadata. Raises BucketNotFound, AccessDenied, StoreError. A file of one request
        goes by the standard library's client first (`_put_direct`), by the library if that
        did not store it.

        The library checks every upload with a CRC32C of the bytes it sends (the server checks
        a one-request upload; the library compares a resumable one's with what the server
        stored). The MD5 recorded in the metadata is computed before sending a file that goes
        in one request; a larger file whose MD5 is not known is not read for it beforehand (a
        serial 0.6 GB/s pass): once the CRC32C check passed, the MD5 GCS computed of what it
        stored is recorded instead (one metadata PATCH)."""
        full = self.prefix + check_key(key)
        size = os.stat(path).st_size
        in_parts = size > self.part_size
        md5: str | None
        if not in_parts:  # read once: for its MD5, and to send it without the library
            with open(path, "rb") as fh:
                data = fh.read()
            md5 = meta.md5 or hashlib.md5(data, usedforsecurity=False).hexdigest()
            metadata = {META_MTIME: str(meta.mtime_ns), META_CHECKSUM: md5}
            sent = self._put_direct(full, key, data, md5, metadata, meta.mtime_ns)
            del data
            if sent is not None:
                progress(sent.size)
                return sent
        else:
            md5 = meta.md5
            metadata = {META_MTIME: str(meta.mtime_ns)}
            if md5 is not None:
                metadata[META_CHECKSUM] = md5
        for attempt in (1, 2):
            blob = self._bucket().blob(full, chunk_size=self.part_size if in_parts else None)
            blob.metadata = metadata
            with open(path, "rb") as raw:
                try:
                    blob.upload_from_file(
                        ProgressReader(raw, progress),
                        size=size,
                        content_type="application/octet-stream",
                        checksum="crc32c",
                        retry=self._retry,
                        timeout=self._timeout,
                    )
                except DataCorruption:
                    # The library's CRC32C of what it sent is not the one the server reports
                    # for what it stored (seen when a chunk is resent after a fault): the
                    # object may exist with other bytes. Remove it, and send the file again.
                    stored = self._drop_if_not(full, md5)
                    if stored is not None and stored == md5:
                        break  # what it stored is what we sent after all
                except (gexc.GoogleAPIError, GoogleAuthError, OSError) as exc:
                    raise self._error(exc, "upload", key) from None
                else:
                    # GCS answers with the MD5 of what it stored: it must be what we sent.
                    stored = _b64_md5_hex(blob.md5_hash)
                    if stored is None or md5 is None or stored == md5:
                        break
                    with contextlib.suppress(gexc.GoogleAPIError, GoogleAuthError, OSError):
                        blob.delete(if_generation_match=blob.generation, timeout=self._timeout)
            if attempt == 2:
                got = f"MD5 {stored}" if stored else "a different CRC32C"
                raise StoreError(
                    f"upload {self.url}/{key}: the server stored different bytes than were sent "
                    f"({got} instead of {f'MD5 {md5}' if md5 else 'what was sent'}); the "
                    "object was removed. To fix: run the sync again; if this persists, look "
                    "for a faulty proxy or disk between here and the store."
                )
        if md5 is None and stored is not None:  # record it, as for any other upload
            md5 = stored
            blob.metadata = {**metadata, META_CHECKSUM: md5}
            try:
                blob.patch(
                    if_generation_match=blob.generation, retry=self._retry, timeout=self._timeout
                )
            except (gexc.GoogleAPIError, GoogleAuthError, OSError) as exc:
                raise self._error(exc, "upload", key) from None
        return ObjectInfo(key=key, size=size, mtime_ns=meta.mtime_ns, md5=md5, etag=blob.etag)

    def _drop_if_not(self, full: str, md5: str | None) -> str | None:
        """Delete the object at `full` unless its stored MD5 is `md5` (None: not known, so
        delete it); returns the MD5 it had (None: there was none)."""
        try:
            blob = self._bucket().get_blob(full, retry=self._retry, timeout=self._timeout)
            if blob is None:
                return None
            stored = _b64_md5_hex(blob.md5_hash)
            if stored != md5:
                blob.delete(if_generation_match=blob.generation, timeout=self._timeout)
            return stored
        except (gexc.GoogleAPIError, GoogleAuthError, OSError):
            return None

    def get_file(
        self,
        key: str,
        path: Path,
        *,
        progress: Progress,
        size: int | None = None,
        listed: ObjectInfo | None = None,
    ) -> None:
        """Download `key` (bytes as stored, checksum-verified) into a temporary file beside
        `path`, then rename it into place with the recorded source mtime. An object whose
        stored MD5 is not the one recorded at upload is refused. Objects above PARALLEL_MIN
        come in parallel ranges (`_get_ranged`), the others in one request through the
        library, which checks GCS's MD5 or CRC32C of them. Given the `listed` entry of a
        small object with an MD5, that request is the only one: the MD5 the answer carries
        must be the listed one, else the object changed (or is damaged in the bucket) and it
        is fetched again after its metadata, as without a listing. Raises ObjectNotFound,
        ChecksumMismatch, StoreError."""
        full = self.prefix + check_key(key)
        if self._get_as_listed(full, key, path, progress, listed):
            return
        try:
            blob = self._bucket().get_blob(full, retry=self._retry, timeout=self._timeout)
        except (gexc.GoogleAPIError, GoogleAuthError, OSError) as exc:
            raise self._error(exc, "download", key) from None
        if blob is None:
            raise ObjectNotFound(f"{self.url}/{key} does not exist")
        recorded = parse_md5((blob.metadata or {}).get(META_CHECKSUM))
        stored = _b64_md5_hex(blob.md5_hash)
        if recorded and stored and recorded != stored:  # the download itself checks `stored`
            raise ChecksumMismatch(
                f"download {self.url}/{key}: the object's content (MD5 {stored}) is not what was "
                f"uploaded (MD5 {recorded}); nothing was written to {path}. To fix: run `hangar "
                "storage verify`; re-upload the object."
            )
        if int(blob.size or 0) > _ranges.PARALLEL_MIN and _ranges.RANGED_FILES.acquire(
            blocking=False
        ):
            try:
                self._get_ranged(blob, key, path, progress)
            finally:
                _ranges.RANGED_FILES.release()
        else:
            self._get_whole(blob, key, path, progress)
        set_mtime(path, parse_int((blob.metadata or {}).get(META_MTIME)))

    def _get_as_listed(
        self, full: str, key: str, path: Path, progress: Progress, listed: ObjectInfo | None
    ) -> bool:
        """A small object with a listed MD5 in one request, over the standard library's client,
        else the library's: True when `path` is in place with the listed bytes (and mtime)."""
        if listed is None or not listed.md5 or listed.size > _ranges.PARALLEL_MIN:
            return False
        if self._get_direct(full, path, progress, listed) or self._get_whole(
            self._bucket().blob(full), key, path, progress, listed.md5
        ):
            set_mtime(path, listed.mtime_ns)
            return True
        return False

    def _get_whole(
        self, blob: Any, key: str, path: Path, progress: Progress, md5: str | None = None
    ) -> bool:
        """One GET of the whole object (of `blob`'s generation, when known) into `path`,
        through the library, which checks the bytes against the checksum GCS sends with them;
        damaged bytes are fetched once more. With `md5`, the answer must carry that MD5:
        False when it does not (nothing is left at `path`)."""
        for attempt in (1, 2):
            try:
                with atomic_download(path) as out:
                    blob.download_to_file(
                        ProgressWriter(out, progress),
                        raw_download=True,
                        if_generation_match=blob.generation,
                        retry=self._retry,
                        timeout=self._timeout,
                    )
                    if md5 is not None and _b64_md5_hex(blob.md5_hash) != md5:
                        raise _NotAsListed  # leaving the block by an exception removes the file
                return True
            except _NotAsListed:
                return False
            except DataCorruption:
                if attempt == 2:
                    raise ChecksumMismatch(
                        f"download {self.url}/{key}: the bytes received twice did not match the "
                        f"checksum GCS sent with them; nothing was written to {path}. To fix: "
                        "run the download again; if this persists, look for a faulty proxy or "
                        "disk between here and GCS."
                    ) from None
            except (gexc.GoogleAPIError, GoogleAuthError, OSError) as exc:
                raise self._error(exc, "download", key) from None
        return False

    def _get_ranged(self, blob: Any, key: str, path: Path, progress: Progress) -> None:
        """A large object in parallel ranges of its generation (stores/_ranges.py), each read
        by the standard library's client from the media URL where it can (stores/_direct.py),
        else by the library from the byte reached; checked against GCS's CRC32C of the object
        (per range, combined), fetched once more on a mismatch."""
        expected = _crc32c_of(blob.crc32c)
        for attempt in (1, 2):
            try:
                actual = self._ranged_once(
                    blob.name, int(blob.size), blob.generation, path, progress, expected
                )
            except (gexc.NotFound, gexc.PreconditionFailed):
                raise StoreError(
                    f"download {self.url}/{key}: the object was replaced or deleted while it "
                    f"was being downloaded; nothing was written to {path}. To fix: run the "
                    "download again."
                ) from None
            except (gexc.GoogleAPIError, GoogleAuthError, OSError) as exc:
                raise self._error(exc, "download", key) from None
            if actual is None:
                return
            if attempt == 2:
                raise ChecksumMismatch(
                    f"download {self.url}/{key}: the bytes received have CRC32C {actual:08x}, "
                    f"not the {expected:08x} GCS has for the object; nothing was written to "
                    f"{path}. To fix: run the download again; if this persists, look for a "
                    "faulty proxy or disk between here and GCS."
                )

    def _ranged_once(
        self,
        full: str,
        size: int,
        generation: int,
        path: Path,
        progress: Progress,
        expected: int | None,
    ) -> int | None:
        """One try of `_get_ranged`: None when `path` is in place, else the CRC32C the bytes
        had (not `expected`; nothing is left at `path`)."""
        direct = self._range_reader(full, generation)

        def fetch(start: int, end: int, write: _ranges.Write) -> None:
            pos = direct.fetch(start, end, write) if direct is not None else start
            if pos < end:
                self._bucket().blob(full, generation=generation).download_to_file(
                    _Sink(write),
                    start=pos,
                    end=end - 1,
                    raw_download=True,
                    checksum=None,  # a range has none to check: the whole file is checked
                    if_generation_match=generation,
                    retry=self._retry,
                    timeout=self._timeout,
                )

        try:
            with atomic_download(path) as out:
                preallocate(out.fileno(), size, str(path))
                crcs = _ranges.fetch_ranges(
                    out.fileno(), size, fetch, progress,
                    checksum="crc32c", where=f"{self.bucket_url}/{full}",
                )  # fmt: skip
                actual = join_checksums(crcs, _ranges.RANGE_SIZE, size, _crc32c_combine)
                if expected is not None and actual != expected:
                    raise _Corrupt(actual)  # leaving the block by an exception removes the file
        except _Corrupt:
            return actual
        finally:
            if direct is not None:
                direct.close()
        return None

    def _range_reader(self, full: str, generation: int) -> RangeReader | None:
        """The standard library's client for a large download's ranges, on the JSON API's media
        URL of this generation."""
        return self._direct_reader(self._media_url(full, generation))

    def _api_url(self, path: str) -> str:
        """`path` under the JSON API's endpoint (the emulator's, else Google's)."""
        base = (self.settings.endpoint or "https://storage.googleapis.com").rstrip("/")
        return f"{base}/{path}"

    def _media_url(self, full: str, generation: int | None = None) -> str:
        bucket, name = quote(self.bucket, safe=""), quote(full, safe="")
        url = self._api_url(f"download/storage/v1/b/{bucket}/o/{name}?alt=media")
        return url + (f"&generation={generation}" if generation else "")

    def _direct_reader(self, url: str) -> RangeReader | None:
        """The standard library's client (stores/_direct.py) on `url`, or on the URL each call
        names, with the headers GCS needs; None where a proxy is configured (the library
        honours it)."""
        from hangar.stores._direct import RangeReader, proxy_configured  # http.client, ssl

        if proxy_configured():
            return None

        def headers() -> dict[str, str]:
            """The bytes as stored, as the library's raw download asks (an object stored
            gzip-encoded is otherwise decompressed, whole, ignoring the range), and the
            credentials' header."""
            return {"Accept-Encoding": "gzip", **self._auth_headers()}

        return RangeReader(lambda: url, None, self._timeout[1], headers)

    def _auth_headers(self) -> dict[str, str]:
        """The credentials' header for a request made outside the library: a bearer token,
        refreshed by google-auth when it is about to end; none when anonymous."""
        from google.auth.transport.requests import Request

        headers: dict[str, str] = {}
        credentials = self.settings.credentials
        if credentials is not None:
            with self._auth_lock:
                if self._token_transport is None:  # one, not a requests.Session per request
                    self._token_transport = Request()
                credentials.before_request(
                    self._token_transport, "GET", self._media_url(""), headers
                )
        return headers

    def _shared_reader(self) -> RangeReader | None:
        """The store-wide client of small downloads and uploads (stores/_direct.py: one kept
        connection per thread), made once; None where it is not used."""
        if not self._small:
            made = self._direct_reader(self._media_url(""))  # (takes self._lock itself)
            with self._lock:
                if not self._small:
                    self._small.append(made)
                elif made is not None:
                    made.close()
        return self._small[0]

    def _put_direct(
        self, full: str, key: str, data: bytes, md5: str, metadata: dict[str, str], mtime_ns: int
    ) -> ObjectInfo | None:
        """`data` as one JSON API multipart upload by the standard library's client (the
        library costs ~5 ms of CPU per small file here, this ~1 ms), GCS checking it against
        `md5` (sent as the object's md5Hash) and answering with the MD5 of what it stored:
        the object's info when that is `md5`; None otherwise, and the library then sends it
        (over whatever this left). No answer, or one that refuses the request itself (401,
        403, 404, 405), turns this path off for the rest of the store's transfers."""
        reader = self._shared_reader()
        if reader is None or reader.refused:
            return None
        resource = {
            "name": full,
            "metadata": metadata,
            "md5Hash": base64.b64encode(bytes.fromhex(md5)).decode(),
            "contentType": "application/octet-stream",
        }
        boundary = f"hangar-{os.urandom(16).hex()}"
        head = (
            f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
            f"{json.dumps(resource)}\r\n--{boundary}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        body = b"".join((head.encode(), data, f"\r\n--{boundary}--\r\n".encode()))
        url = self._api_url(
            f"upload/storage/v1/b/{quote(self.bucket, safe='')}/o?uploadType=multipart"
        )
        try:
            headers = {"Content-Type": f"multipart/related; boundary={boundary}"}
            headers.update(self._auth_headers())
        except Exception:  # no token: the library will say why
            return None
        answer = reader.post(url, body, headers)
        if answer is None:
            return None
        status, raw = answer
        if status != 200:
            # Credentials, the bucket or the method refused: the library says why, and does
            # the rest. Another answer (a damaged body refused, 429, 5xx): this file only.
            reader.refused = reader.refused or status in _REFUSED
            return None
        try:
            stored = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(stored, dict) or _b64_md5_hex(stored.get("md5Hash")) != md5:
            return None
        return ObjectInfo(
            key=key, size=len(data), mtime_ns=mtime_ns, md5=md5, etag=stored.get("etag")
        )

    def _get_direct(self, full: str, path: Path, progress: Progress, listed: ObjectInfo) -> bool:
        """A small object as listed, in one GET by the standard library's client over this
        store's kept connections (google-cloud-storage costs ~3 ms of CPU per request here,
        this ~1 ms), its MD5 computed on the way: True when `path` is in place with the listed
        bytes; False when anything else came (nothing is left at `path`), after which the
        library does it. A request refused before its first byte (a proxy, an object gone, a
        token refused) turns this path off for the rest of this store's downloads."""
        reader = self._shared_reader()
        if reader is None or reader.refused or listed.size == 0:  # an empty range is refused
            return False
        digest = hashlib.md5(usedforsecurity=False)

        def write(chunk: memoryview) -> None:
            out.write(chunk)
            digest.update(chunk)
            progress(len(chunk))

        try:
            with atomic_download(path) as out:
                got = reader.fetch(0, listed.size, write, url=self._media_url(full))
                if got != listed.size or digest.hexdigest() != listed.md5:
                    raise _NotAsListed  # leaving the block by an exception removes the file
        except _NotAsListed:
            return False
        return True

    def delete(self, keys: Iterable[str]) -> None:
        """Delete objects (eight requests in flight); missing keys are fine."""
        self._delete_names([self.prefix + check_key(k) for k in keys])

    def _delete_names(self, names: Sequence[str]) -> None:
        if not names:
            return

        def one(name: str) -> None:
            try:
                self._bucket().delete_blob(name, retry=self._retry, timeout=self._timeout)
            except gexc.NotFound:
                pass
            except (gexc.GoogleAPIError, GoogleAuthError, OSError) as exc:
                raise self._error(exc, "delete", name[len(self.prefix) :]) from None

        with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
            for _ in pool.map(one, names):
                pass

    def mount_remote(self) -> RcloneRemote:
        """rclone "google cloud storage" backend: anonymous for an emulator or public access,
        else env_auth (application default credentials); no secrets involved."""
        settings = self.settings
        config = {"bucket_policy_only": "true"}
        if settings.endpoint:
            config["endpoint"] = f"{settings.endpoint}/storage/v1/"
        if settings.anonymous:
            config["anonymous"] = "true"
        else:
            config["env_auth"] = "true"
        if settings.project:
            config["project_number"] = settings.project
        path = f"{self.bucket}/{self.prefix.rstrip('/')}" if self.prefix else self.bucket
        return RcloneRemote(backend="google cloud storage", path=path, config=config)
