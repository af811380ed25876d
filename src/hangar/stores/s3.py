"""Amazon S3 and S3-compatible stores (SeaweedFS, MinIO, Ceph, Cloudflare R2).

Data plane: obstore (see `_obstore`). Control plane (bucket exists / create / delete): boto3,
with its "standard" retry mode (503 SlowDown, 429, connection errors, with backoff); on an
S3-compatible server (an endpoint is set) the bucket check is one LIST through obstore and
creation one PUT presigned by obstore, boto3 answering only when that PUT gets no clear answer.

Listing: S3's ListObjectsV2 returns no user metadata, so `capabilities.listing_has_meta` is
False. `list()` still gives an MD5 for every object Hangar wrote: a single-part object's ETag
is its MD5; for a multipart object (ETag "<hex>-<parts>", only files above part_size) list()
reads the recorded checksum and mtime with one HEAD each. Callers that need the source mtime of
a small object use `head()`.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import obstore
import obstore.store
from botocore.exceptions import BotoCoreError, ClientError
from obstore.exceptions import BaseError as ObstoreError

from hangar.errors import AccessDenied, BucketExists, BucketNotFound, HangarError, StoreError
from hangar.stores._common import control_retries, md5_from_etag, scrub
from hangar.stores._obstore import ObstoreDataPlane
from hangar.stores.base import Capabilities, ObjectInfo, RcloneRemote
from hangar.stores.settings import AwsKeys, S3Settings, resolve_r2, resolve_s3

# Lenient on purpose: legacy buckets (us-east-1) may have uppercase letters and underscores.
# The rules for *creating* a bucket are hangar.stores.naming's.
_BUCKET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{1,253}[A-Za-z0-9]$")
_RCLONE = "RCLONE_CONFIG_HANGAR_"


def _error_code(exc: ClientError) -> tuple[str, int]:
    err = exc.response.get("Error", {})
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    return str(err.get("Code", status)), status


class S3Store(ObstoreDataPlane):
    """An S3 bucket (plus optional key prefix). Options (all optional, see `resolve_s3` for
    where each comes from otherwise): endpoint, region, profile, access_key_id,
    secret_access_key, session_token, anonymous; part_size, max_concurrency (parts in flight
    per file), max_retries, retry_timeout (seconds)."""

    scheme = "s3"
    capabilities = Capabilities(
        listing_has_meta=False, native_mount=False, anonymous_read=True, unfinished_uploads=True
    )

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        anonymous: bool | None = None,
        part_size: int | None = None,
        max_concurrency: int | None = None,
        max_retries: int | None = None,
        retry_timeout: float | None = None,
    ) -> None:
        if not _BUCKET_NAME.match(bucket):
            raise StoreError(
                f"invalid {self.scheme} bucket name {bucket!r}: letters, digits, '.', '-' and "
                "'_', starting and ending with a letter or digit"
            )
        super().__init__(
            bucket,
            prefix,
            part_size=part_size,
            max_concurrency=max_concurrency,
            max_retries=max_retries,
            retry_timeout=retry_timeout,
        )
        self._options: dict[str, Any] = {
            "endpoint": endpoint,
            "region": region,
            "profile": profile,
            "anonymous": anonymous,
        }
        self._explicit_keys = (access_key_id, secret_access_key, session_token)
        self._settings: S3Settings | None = None
        self._static_keys: tuple[AwsKeys | None] | None = None  # set once, when not temporary
        self._boto: Any = None
        self._created = False  # this object created the bucket: it holds no unfinished upload

    # -- settings and clients ----------------------------------------------------------------
    def _resolve(self) -> S3Settings:
        key, secret, token = self._explicit_keys
        return resolve_s3(
            **self._options, access_key_id=key, secret_access_key=secret, session_token=token
        )

    @property
    def settings(self) -> S3Settings:
        """Resolved on first use (reads the environment, config file and ~/.aws)."""
        with self._lock:
            if self._settings is None:
                self._settings = self._resolve()
            return self._settings

    def _secrets(self) -> builtins.list[str]:
        values = [v for v in self._explicit_keys[1:] if v]
        keys = self._settings.keys() if self._settings is not None else None
        if keys is not None:
            values += [keys.secret_access_key, keys.session_token or ""]
        return values

    def _client_key(self) -> AwsKeys | None:
        if self._static_keys is not None:
            return self._static_keys[0]
        settings = self.settings
        keys = settings.keys()
        if not settings.refreshable:
            self._static_keys = (keys,)
        return keys

    def _build_obstore(self, client_key: Any, retry: dict[str, Any]) -> Any:
        settings = self.settings
        config: dict[str, Any] = {
            "region": self._bucket_region(settings),
            "virtual_hosted_style_request": False,
            # Every PUT (and part) carries x-amz-checksum-sha256: the server refuses a body
            # damaged on the way (BadDigest) instead of storing it.
            "checksum_algorithm": "SHA256",
        }
        if settings.endpoint:
            # Both keys: obstore lets AWS_ENDPOINT_URL_S3 from the environment override a plain
            # "endpoint" (and the option may differ from the environment).
            config["endpoint"] = config["aws_endpoint_url_s3"] = settings.endpoint
        keys: AwsKeys | None = client_key
        if keys is None:
            config["skip_signature"] = True
        else:
            config["access_key_id"] = keys.access_key_id
            config["secret_access_key"] = keys.secret_access_key
            # Always set: obstore would otherwise pick up AWS_SESSION_TOKEN from the environment.
            config["session_token"] = keys.session_token or ""
        return obstore.store.S3Store(
            self.bucket,
            config=config,  # type: ignore[arg-type]
            client_options=self.client_options(settings.endpoint),  # type: ignore[arg-type]
            retry_config=retry,  # type: ignore[arg-type]
        )

    def _bucket_region(self, settings: S3Settings) -> str:
        """On AWS, the region the bucket is in (requests signed for another one fail)."""
        if settings.endpoint or settings.store_type != "s3":
            return settings.region
        try:
            headers = self.boto().head_bucket(Bucket=self.bucket)["ResponseMetadata"]
        except ClientError as exc:
            headers = exc.response.get("ResponseMetadata", {})
        except BotoCoreError:
            return settings.region
        region = headers.get("HTTPHeaders", {}).get("x-amz-bucket-region")
        return str(region or settings.region)

    def boto(self) -> Any:
        """The boto3 S3 client (control plane), created once."""
        with self._lock:
            if self._boto is None:
                # Imported here: boto3 takes ~0.3 s to import, and a re-sync that finds nothing
                # to do against an S3-compatible server never needs it.
                import boto3
                from botocore import UNSIGNED
                from botocore.config import Config

                settings = self.settings
                config = Config(
                    retries={
                        "mode": "standard",
                        "max_attempts": control_retries(self.max_retries) + 1,
                    },
                    connect_timeout=5,
                    read_timeout=self.read_timeout,
                    s3={"addressing_style": "path"} if settings.endpoint else {},
                    signature_version=UNSIGNED if settings.anonymous else None,
                    user_agent_extra="hangar",
                )
                session = settings.session or boto3.session.Session()
                self._boto = session.client(
                    "s3", endpoint_url=settings.endpoint, region_name=settings.region, config=config
                )
            return self._boto

    def _md5_from_etag(self, etag: str | None) -> str | None:
        return md5_from_etag(etag)

    def _boto_error(self, exc: Exception, action: str) -> HangarError:
        if isinstance(exc, ClientError):
            code, status = _error_code(exc)
            cause = f"{code}" if str(code) == str(status) else f"{status} {code}"
            if code in ("NoSuchBucket", "404") or status == 404:
                return BucketNotFound(f"bucket {self.bucket_url} does not exist")
            if status in (401, 403):
                return AccessDenied(
                    f"{action} {self.bucket_url}: access denied ({cause}). The bucket may be "
                    "private to someone else, or these credentials are not valid for it.\n"
                    "To fix: check your credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, ...), or "
                    "use a bucket you own."
                )
            message = scrub(exc.response.get("Error", {}).get("Message", ""), self._secrets())
            tries = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
            after = f" after {tries} retries" if tries else ""
            return StoreError(f"{action} {self.bucket_url} failed{after}: {cause} {message}")
        return StoreError(
            f"{action} {self.bucket_url} failed after retries: {scrub(str(exc), self._secrets())}"
        )

    # -- control plane -----------------------------------------------------------------------
    def bucket_exists(self) -> bool:
        """True when the bucket exists. Raises AccessDenied on 403 (private to someone else).

        On an S3-compatible server (an endpoint is set) this is one LIST of at most one key
        through the data plane, so boto3 is not loaded; on AWS it is HeadBucket (which also
        tells a bucket in another region)."""
        if self.settings.endpoint:
            return self._bucket_listable()
        try:
            self.boto().head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code, status = _error_code(exc)
            if status == 404 or code in ("NoSuchBucket", "404", "NotFound"):
                return False
            if status == 301:  # exists, in another region
                return True
            raise self._boto_error(exc, "check") from None
        except BotoCoreError as exc:
            raise self._boto_error(exc, "check") from None
        return True

    def _bucket_listable(self) -> bool:
        try:
            next(
                iter(obstore.list(self._control(), prefix=self.prefix or None, chunk_size=1)), None
            )
        except (ObstoreError, OSError) as exc:
            err = self._translate(exc, "check")
            if isinstance(err, BucketNotFound):
                return False
            if isinstance(err, AccessDenied):
                raise AccessDenied(
                    f"check {self.bucket_url}: access denied. The bucket may be private to "
                    "someone else, or these credentials are not valid for it.\n"
                    "To fix: check your credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, ...), or "
                    "use a bucket you own."
                ) from None
            raise err from None
        return True

    def create_bucket(self, region: str | None = None) -> None:
        """Create the bucket in `region` (default: the settings' region). Raises BucketExists
        when the name is taken, by you or by anyone else."""
        settings = self.settings
        region = region or settings.region
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if settings.store_type == "s3" and region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        if settings.endpoint and not settings.anonymous and self._create_presigned(kwargs):
            self._created = True
            return
        try:
            self.boto().create_bucket(**kwargs)
            self._created = True
        except ClientError as exc:
            code, status = _error_code(exc)
            if code == "BucketAlreadyOwnedByYou":
                raise BucketExists(
                    f"bucket {self.bucket_url} already exists (it is yours, but Hangar did not "
                    "create it for this storage)."
                ) from None
            if code == "BucketAlreadyExists" or status == 409:
                raise BucketExists(
                    f"bucket name {self.bucket!r} is taken by another account."
                ) from None
            if status == 403:
                raise AccessDenied(
                    f"creating bucket {self.bucket_url} was refused (403 {code}): the name may "
                    "belong to a bucket private to someone else, or these credentials may not "
                    "create buckets.\nTo fix: choose another name, or check your credentials."
                ) from None
            raise self._boto_error(exc, "create") from None
        except BotoCoreError as exc:
            raise self._boto_error(exc, "create") from None

    def _create_presigned(self, kwargs: dict[str, Any]) -> bool:
        """CreateBucket on an S3-compatible server as one request signed by the data plane's
        client (a presigned PUT of the bucket), so a first upload does not load boto3 (~0.5 s
        of a 2-core machine's time). True when created; raises BucketExists or AccessDenied
        on the server's clear answers; False on anything else, so that boto3 tries (with its
        retries) and reports."""
        import urllib.error
        import urllib.request

        config = kwargs.get("CreateBucketConfiguration")
        body = (
            "<CreateBucketConfiguration><LocationConstraint>"
            f"{config['LocationConstraint']}</LocationConstraint></CreateBucketConfiguration>"
        ).encode() if config else b""  # fmt: skip
        try:
            url = obstore.sign(self._control(), "PUT", "", timedelta(minutes=5))
            request = urllib.request.Request(url, data=body, method="PUT")
            with urllib.request.urlopen(request, timeout=min(self.read_timeout, 30.0)):
                return True
        except urllib.error.HTTPError as exc:
            code = re.search(r"<Code>([^<]+)</Code>", exc.read(4096).decode("utf-8", "replace"))
            answer = code.group(1) if code else ""
            if answer == "BucketAlreadyOwnedByYou":
                raise BucketExists(
                    f"bucket {self.bucket_url} already exists (it is yours, but Hangar did not "
                    "create it for this storage)."
                ) from None
            if answer == "BucketAlreadyExists":
                taken = f"bucket name {self.bucket!r} is taken by another account."
                raise BucketExists(taken) from None
            return False
        except (ObstoreError, OSError, ValueError):
            return False

    def abort_unfinished_uploads(self) -> int:
        """Abort the multipart uploads left unfinished under this store's prefix (by a process
        that was killed, say); their parts are invisible but billed. Returns how many.

        Call it only while holding the storage's lock, on a bucket Hangar owns: an upload in
        progress in another process would be aborted too (and would then fail, not corrupt).
        """
        if self._created:
            return 0  # created by this process, which finishes or aborts its own uploads
        client = self.boto()
        aborted = 0
        try:
            pages = client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted += 1
        except (ClientError, BotoCoreError) as exc:
            raise self._boto_error(exc, "abort unfinished uploads in") from None
        return aborted

    def delete_bucket(self) -> None:
        """Delete every object (whole bucket, whatever the prefix), abort unfinished multipart
        uploads, then delete the bucket. Raises BucketNotFound."""
        client = self.boto()
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
                objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if objects:
                    client.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}
                    )
            try:
                uploads = client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
            except ClientError:
                uploads = []
            for upload in uploads:
                client.abort_multipart_upload(
                    Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
            client.delete_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise self._boto_error(exc, "delete") from None

    # -- listing -----------------------------------------------------------------------------
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects under the store prefix + `prefix`; md5 from the ETag (single-part) or the
        recorded metadata (multipart, one HEAD each); mtime_ns only for multipart objects."""
        cut = len(self.prefix)
        pending: list[ObjectInfo] = []
        with ThreadPoolExecutor(max_workers=8) as pool:
            for meta in self._list_raw(self.prefix + prefix):
                info = self._info(meta["path"][cut:], meta, None)
                if info.md5 is None and info.etag and "-" in info.etag:
                    pending.append(info)
                    continue
                yield info
            # Multipart objects are few (each is larger than part_size).
            yield from pool.map(self._with_recorded_meta, pending)

    def _with_recorded_meta(self, info: ObjectInfo) -> ObjectInfo:
        try:
            return self.head(info.key)
        except HangarError:
            return info

    def mount_remote(self) -> RcloneRemote:
        """rclone "s3" backend; keys only in secret_env (RCLONE_CONFIG_HANGAR_*)."""
        settings = self.settings
        config = {"provider": settings.provider, "region": settings.region, "env_auth": "false"}
        if settings.endpoint:
            config["endpoint"] = settings.endpoint
        secret_env: dict[str, str] = {}
        keys = settings.keys()
        if keys is not None:
            secret_env[_RCLONE + "ACCESS_KEY_ID"] = keys.access_key_id
            secret_env[_RCLONE + "SECRET_ACCESS_KEY"] = keys.secret_access_key
            if keys.session_token:
                secret_env[_RCLONE + "SESSION_TOKEN"] = keys.session_token
        path = f"{self.bucket}/{self.prefix.rstrip('/')}" if self.prefix else self.bucket
        return RcloneRemote(backend="s3", path=path, config=config, secret_env=secret_env)


class R2Store(S3Store):
    """A Cloudflare R2 bucket: S3 at ``https://<account_id>.r2.cloudflarestorage.com``.
    Options: account_id, endpoint, profile, access_key_id, secret_access_key, session_token,
    anonymous, and the transfer options of S3Store (see `resolve_r2`)."""

    scheme = "r2"
    capabilities = Capabilities(
        listing_has_meta=False, native_mount=False, anonymous_read=False, unfinished_uploads=True
    )

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        account_id: str | None = None,
        endpoint: str | None = None,
        profile: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        anonymous: bool | None = None,
        part_size: int | None = None,
        max_concurrency: int | None = None,
        max_retries: int | None = None,
        retry_timeout: float | None = None,
    ) -> None:
        super().__init__(
            bucket,
            prefix,
            endpoint=endpoint,
            profile=profile,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            session_token=session_token,
            anonymous=anonymous,
            part_size=part_size,
            max_concurrency=max_concurrency,
            max_retries=max_retries,
            retry_timeout=retry_timeout,
        )
        self._account_id = account_id

    def _resolve(self) -> S3Settings:
        key, secret, token = self._explicit_keys
        return resolve_r2(
            account_id=self._account_id,
            endpoint=self._options["endpoint"],
            profile=self._options["profile"],
            access_key_id=key,
            secret_access_key=secret,
            session_token=token,
            anonymous=self._options["anonymous"],
        )
