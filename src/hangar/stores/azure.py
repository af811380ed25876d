"""Azure Blob Storage: one container (plus optional prefix) in one storage account.

Data plane: obstore (see `_obstore`). Control plane and listing: azure-storage-blob, whose
List Blobs returns user metadata, so `capabilities.listing_has_meta` is True. Azure metadata
names must be C# identifiers, so FileMeta is stored as ``hangar_mtime_ns`` / ``hangar_md5`` (or
``hangar_crc32``).
The container's region is the storage account's: `create_bucket(region)` ignores `region`.

URLs: ``az://container/prefix`` (account from settings) or
``https://<account>.blob.core.windows.net/container/prefix`` (the registry passes `account`).
"""

from __future__ import annotations

import builtins
import re
import time
from collections.abc import Iterator
from typing import Any

import obstore.store
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobServiceClient, ContainerClient, ExponentialRetry

from hangar.errors import AccessDenied, BucketExists, BucketNotFound, HangarError, StoreError
from hangar.stores._common import (
    control_retries,
    parse_crc32,
    parse_int,
    parse_md5,
    scrub,
    short_cause,
)
from hangar.stores._obstore import ObstoreDataPlane
from hangar.stores.base import Capabilities, ObjectInfo, RcloneRemote
from hangar.stores.settings import AzureSettings, resolve_azure

_CONTAINER_NAME = re.compile(r"^(\$root|\$web|\$logs|[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9])$")
_SCOPE = "https://storage.azure.com/.default"
_RCLONE = "RCLONE_CONFIG_HANGAR_"


class AzureStore(ObstoreDataPlane):
    """An Azure Blob container. Options (all optional, see `resolve_azure`): account, endpoint,
    account_key, sas_token, connection_string, anonymous; part_size, max_concurrency,
    max_retries, retry_timeout (seconds)."""

    scheme = "azure"
    capabilities = Capabilities(listing_has_meta=True, native_mount=False, anonymous_read=True)
    meta_mtime = "hangar_mtime_ns"
    meta_md5 = "hangar_md5"
    meta_crc32 = "hangar_crc32"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        account: str | None = None,
        endpoint: str | None = None,
        account_key: str | None = None,
        sas_token: str | None = None,
        connection_string: str | None = None,
        anonymous: bool | None = None,
        part_size: int | None = None,
        max_concurrency: int | None = None,
        max_retries: int | None = None,
        retry_timeout: float | None = None,
    ) -> None:
        if not _CONTAINER_NAME.match(bucket):
            raise StoreError(
                f"invalid Azure container name {bucket!r}: 3-63 characters of lowercase "
                "letters, digits and single hyphens, starting and ending with a letter or digit"
            )
        super().__init__(
            bucket,
            prefix,
            part_size=part_size,
            max_concurrency=max_concurrency,
            max_retries=max_retries,
            retry_timeout=retry_timeout,
        )
        self._account, self._endpoint, self._anonymous = account, endpoint, anonymous
        self._explicit_secrets = (account_key, sas_token, connection_string)
        self._settings: AzureSettings | None = None
        self._container: ContainerClient | None = None
        self._token: Any = None  # the current bearer token (auth "token")

    # -- settings and clients ----------------------------------------------------------------
    @property
    def settings(self) -> AzureSettings:
        """Resolved on first use (environment, config file, DefaultAzureCredential)."""
        with self._lock:
            if self._settings is None:
                key, sas, conn = self._explicit_secrets
                self._settings = resolve_azure(
                    account=self._account,
                    endpoint=self._endpoint,
                    anonymous=self._anonymous,
                    account_key=key,
                    sas_token=sas,
                    connection_string=conn,
                )
            return self._settings

    def _secrets(self) -> builtins.list[str]:
        values = [v for v in self._explicit_secrets if v]
        if self._settings is not None:
            values += self._settings.secrets()
        if self._token is not None:
            values.append(self._token.token)
        return values

    def _client_key(self) -> Any:
        settings = self.settings
        if settings.auth != "token":
            return settings.auth
        # Bearer tokens expire (about an hour): take a new one five minutes before.
        if self._token is None or self._token.expires_on - time.time() < 300:
            try:
                self._token = settings.token_credential.get_token(_SCOPE)
            except AzureError as exc:
                raise AccessDenied(
                    f"{self.bucket_url}: could not get an Azure token "
                    f"({short_cause(scrub(str(exc)))}).\nTo fix: az login, or set "
                    "AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_KEY."
                ) from None
        return self._token.token

    def _build_obstore(self, client_key: Any, retry: dict[str, Any]) -> Any:
        settings = self.settings
        config: dict[str, Any] = {"account_name": settings.account, "endpoint": settings.endpoint}
        if settings.auth == "key":
            config["account_key"] = settings.account_key
        elif settings.auth == "sas":
            config["sas_key"] = settings.sas_token
        elif settings.auth == "token":
            config["token"] = client_key
        else:
            config["skip_signature"] = True
        return obstore.store.AzureStore(
            self.bucket,
            config=config,  # type: ignore[arg-type]
            client_options=self.client_options(settings.endpoint),  # type: ignore[arg-type]
            retry_config=retry,  # type: ignore[arg-type]
        )

    def container(self) -> ContainerClient:
        """The azure-storage-blob client for this container (control plane), created once."""
        with self._lock:
            if self._container is None:
                settings = self.settings
                credential: Any = None
                if settings.auth == "key":
                    credential = {
                        "account_name": settings.account,
                        "account_key": settings.account_key,
                    }
                elif settings.auth == "sas":
                    credential = settings.sas_token
                elif settings.auth == "token":
                    credential = settings.token_credential
                service = BlobServiceClient(
                    account_url=settings.endpoint,
                    credential=credential,
                    # The SDK's default waits 15 s before the first retry.
                    retry_policy=ExponentialRetry(
                        initial_backoff=1,
                        increment_base=2,
                        retry_total=control_retries(self.max_retries),
                        random_jitter_range=1,
                    ),
                    connection_timeout=5,
                    read_timeout=self.read_timeout,
                )
                self._container = service.get_container_client(self.bucket)
            return self._container

    def _azure_error(self, exc: Exception, action: str) -> HangarError:
        text = scrub(str(exc), self._secrets())
        code = getattr(exc, "error_code", None)
        code = getattr(code, "value", code)
        status = getattr(exc, "status_code", None)
        if isinstance(exc, ResourceNotFoundError) or code == "ContainerNotFound":
            return BucketNotFound(f"container {self.bucket_url} does not exist")
        if status in (401, 403):
            return AccessDenied(
                f"{action} {self.bucket_url}: access denied ({status} {code}). The container may "
                "be private to someone else, or these credentials are not valid for it.\n"
                "To fix: check AZURE_STORAGE_CONNECTION_STRING / AZURE_STORAGE_KEY or your "
                "Azure login, or use a container you own."
            )
        cause = f"{status} {code}" if status else short_cause(text)
        return StoreError(f"{action} {self.bucket_url} failed: {cause}")

    def _stored_md5(self, full: str, size: int, e_tag: str | None) -> str | None:
        """For a blob put in one request, the Content-MD5 Azure computed of what it stored (one
        HEAD: obstore does not hand back the PUT's response headers)."""
        if size > self.part_size:
            return None
        try:
            props = self.container().get_blob_client(full).get_blob_properties()
        except AzureError as exc:
            raise self._azure_error(exc, "check upload of") from None
        md5 = props.content_settings.content_md5
        return bytes(md5).hex() if md5 else None

    # -- control plane -----------------------------------------------------------------------
    def bucket_exists(self) -> bool:
        """True when the container exists. Raises AccessDenied on 403."""
        try:
            self.container().get_container_properties()
        except ResourceNotFoundError:
            return False
        except AzureError as exc:
            raise self._azure_error(exc, "check") from None
        return True

    def create_bucket(self, region: str | None = None) -> None:
        """Create the container (in the account's region). Raises BucketExists when taken."""
        try:
            self.container().create_container()
        except ResourceExistsError:
            raise BucketExists(f"container {self.bucket_url} already exists.") from None
        except AzureError as exc:
            raise self._azure_error(exc, "create") from None

    def delete_bucket(self) -> None:
        """Delete the container; Azure deletes its blobs with it. Raises BucketNotFound."""
        try:
            self.container().delete_container()
        except AzureError as exc:
            raise self._azure_error(exc, "delete") from None

    # -- listing -----------------------------------------------------------------------------
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects under the store prefix + `prefix`, with the recorded mtime, MD5 (or the
        service's Content-MD5 for blobs Hangar did not write) and CRC-32. Raises
        BucketNotFound."""
        cut = len(self.prefix)
        try:
            blobs = self.container().list_blobs(
                name_starts_with=self.prefix + prefix or None,
                include=["metadata"],
                results_per_page=5000,
            )
            for blob in blobs:
                meta = blob.metadata or {}
                content_md5 = blob.content_settings.content_md5
                yield ObjectInfo(
                    key=blob.name[cut:],
                    size=int(blob.size),
                    mtime_ns=parse_int(meta.get(self.meta_mtime)),
                    md5=parse_md5(meta.get(self.meta_md5))
                    or (bytes(content_md5).hex() if content_md5 else None),
                    etag=blob.etag,
                    crc32=parse_crc32(meta.get(self.meta_crc32)),
                )
        except (AzureError, HttpResponseError) as exc:
            raise self._azure_error(exc, "list") from None

    def mount_remote(self) -> RcloneRemote:
        """rclone "azureblob" backend; the key or SAS only in secret_env."""
        settings = self.settings
        config = {"account": settings.account}
        default_endpoint = f"https://{settings.account}.blob.core.windows.net"
        if settings.endpoint != default_endpoint:
            config["endpoint"] = settings.endpoint
        secret_env: dict[str, str] = {}
        if settings.auth == "key" and settings.account_key:
            secret_env[_RCLONE + "KEY"] = settings.account_key
        elif settings.auth == "sas" and settings.sas_token:
            sas_url = f"{settings.endpoint}/{self.bucket}?{settings.sas_token}"
            secret_env[_RCLONE + "SAS_URL"] = sas_url
        elif settings.auth == "token":
            config["env_auth"] = "true"
        path = f"{self.bucket}/{self.prefix.rstrip('/')}" if self.prefix else self.bucket
        return RcloneRemote(backend="azureblob", path=path, config=config, secret_env=secret_env)
