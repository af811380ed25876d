"""Backend views (tests/backends.py's protocol) over the session's local servers.

`open()` goes through Hangar's registry with no options, so the store is configured exactly as
a user's environment would configure it (the fixtures put `env` into os.environ). Everything
else reads and writes with the cloud's own client, never with Hangar's code.
"""

from __future__ import annotations

from typing import Any

from hangar.stores import open_store
from hangar.stores.base import Store
from servers.azurite import AzuriteServer
from servers.fakegcs import FakeGcsServer
from servers.seaweedfs import ACCESS_KEY, REGION, SECRET_KEY, SeaweedServer

# Variables from the developer's own setup that would change how a store resolves, per store
# type (a test may use several backends at once: each clears only its own cloud's).
CLEARED_ENV = {
    "s3": ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
           "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "R2_ACCOUNT_ID"),
    "gcs": ("STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT"),
    "azure": ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY",
              "AZURE_STORAGE_SAS_TOKEN"),
}  # fmt: skip


class S3Backend:
    store_type = "s3"

    def __init__(self, server: SeaweedServer) -> None:
        self.server = server
        self.endpoint = server.endpoint
        self.env: dict[str, str] = {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL_S3": server.endpoint,
            "AWS_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "HANGAR_DEFAULT_STORE": "s3",
        }
        self.client: Any = server.client()

    def open(self, bucket: str, prefix: str = "", **options: Any) -> Store:
        return open_store("s3", bucket, prefix, **options)

    def objects(self, bucket: str) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                body = self.client.get_object(Bucket=bucket, Key=obj["Key"])["Body"]
                out[obj["Key"]] = body.read()
        return out

    def bucket_exists(self, bucket: str) -> bool:
        try:
            self.client.head_bucket(Bucket=bucket)
        except self.client.exceptions.ClientError as exc:
            if exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
                return False
            raise
        return True

    def create_foreign_bucket(self, bucket: str, objects: dict[str, bytes]) -> None:
        self.client.create_bucket(Bucket=bucket)
        for key, data in objects.items():
            self.client.put_object(Bucket=bucket, Key=key, Body=data)

    def delete_foreign_bucket(self, bucket: str) -> None:
        if not self.bucket_exists(bucket):
            return
        for key in self.objects(bucket):
            self.client.delete_object(Bucket=bucket, Key=key)
        self.client.delete_bucket(Bucket=bucket)


class GcsBackend:
    store_type = "gcs"

    def __init__(self, server: FakeGcsServer) -> None:
        self.server = server
        self.endpoint = server.endpoint
        self.env: dict[str, str] = {
            "STORAGE_EMULATOR_HOST": server.endpoint,
            "HANGAR_DEFAULT_STORE": "gcs",
        }
        self.client = server.client()

    def open(self, bucket: str, prefix: str = "", **options: Any) -> Store:
        return open_store("gcs", bucket, prefix, **options)

    def objects(self, bucket: str) -> dict[str, bytes]:
        return {b.name: b.download_as_bytes() for b in self.client.list_blobs(bucket)}

    def bucket_exists(self, bucket: str) -> bool:
        return bool(self.client.bucket(bucket).exists())

    def create_foreign_bucket(self, bucket: str, objects: dict[str, bytes]) -> None:
        b = self.client.create_bucket(bucket)
        for key, data in objects.items():
            b.blob(key).upload_from_string(data)

    def delete_foreign_bucket(self, bucket: str) -> None:
        b = self.client.bucket(bucket)
        if not b.exists():
            return
        for blob in self.client.list_blobs(bucket):
            blob.delete()
        b.delete()


class AzureBackend:
    store_type = "azure"

    def __init__(self, server: AzuriteServer) -> None:
        self.server = server
        self.endpoint = server.endpoint
        self.env: dict[str, str] = {
            "AZURE_STORAGE_CONNECTION_STRING": server.connection_string,
            "HANGAR_DEFAULT_STORE": "azure",
        }
        self.client = server.client()

    def open(self, bucket: str, prefix: str = "", **options: Any) -> Store:
        return open_store("azure", bucket, prefix, **options)

    def objects(self, bucket: str) -> dict[str, bytes]:
        container = self.client.get_container_client(bucket)
        return {b.name: container.download_blob(b.name).readall() for b in container.list_blobs()}

    def bucket_exists(self, bucket: str) -> bool:
        return bool(self.client.get_container_client(bucket).exists())

    def create_foreign_bucket(self, bucket: str, objects: dict[str, bytes]) -> None:
        container = self.client.create_container(bucket)
        for key, data in objects.items():
            container.upload_blob(key, data)

    def delete_foreign_bucket(self, bucket: str) -> None:
        container = self.client.get_container_client(bucket)
        if container.exists():
            container.delete_container()
