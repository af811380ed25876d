"""Bucket URIs and store-type spellings. Pure functions: no I/O, no SDK imports."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hangar.errors import SpecError

STORE_TYPES = ("local", "s3", "gcs", "azure", "r2")

# Accepted spellings (lower-cased) -> canonical store type.
_ALIASES = {
    "local": "local",
    "s3": "s3",
    "aws": "s3",
    "gcs": "gcs",
    "gs": "gcs",
    "gcp": "gcs",
    "azure": "azure",
    "azure_blob": "azure",
    "az": "azure",
    "r2": "r2",
}

# Stores SkyPilot knows that Hangar does not (yet): refused with a clear message.
UNSUPPORTED_STORES = ("oci", "ibm", "cos", "nebius", "vastdata", "coreweave", "volumes")

_AZURE_HTTPS = re.compile(
    r"^https://(?P<account>[a-z0-9]+)\.blob\.core\.windows\.net/(?P<rest>.*)$"
)


def canonical_store_type(value: str) -> str:
    """`value` in any case/spelling -> one of STORE_TYPES. Raises SpecError otherwise."""
    key = str(value).strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    if key in UNSUPPORTED_STORES:
        raise SpecError(
            f"store {value!r} is not supported by Hangar yet. "
            f"Supported stores: {', '.join(STORE_TYPES)}. To fix: choose one of those."
        )
    raise SpecError(
        f"unknown store {value!r}. Supported stores: {', '.join(STORE_TYPES)} (any case). "
        "To fix: use one of those."
    )


@dataclass(frozen=True)
class ParsedUri:
    store_type: str
    bucket: str
    prefix: str  # "" or ending with "/"... unless it names a single object (no trailing "/")
    account: str | None = None

    @property
    def url(self) -> str:
        return format_url(self.store_type, self.bucket, self.prefix, account=self.account)


_SCHEMES = {
    "s3": "s3",
    "gs": "gcs",
    "az": "azure",
    "r2": "r2",
    "local": "local",
}
_OTHER_SCHEMES = ("oci", "cos", "nebius", "vastdata", "cw")


def uri_scheme(value: str) -> str | None:
    """The `scheme` of a real ``scheme://`` prefix, else None (``cos`` or ``https`` alone are
    plain names)."""
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", value)
    return m.group(1).lower() if m else None


def is_bucket_uri(value: str) -> bool:
    scheme = uri_scheme(value)
    return scheme is not None and (
        scheme in _SCHEMES or scheme in _OTHER_SCHEMES or scheme in ("https", "http")
    )


def parse_uri(value: str) -> ParsedUri | None:
    """Parse a bucket URI. None when `value` has no ``scheme://`` prefix (a local path).

    Raises SpecError for a scheme Hangar does not support, or a malformed URI.
    """
    scheme = uri_scheme(value)
    if scheme is None:
        return None
    rest = value.split("://", 1)[1]
    if scheme in ("https", "http"):
        m = _AZURE_HTTPS.match(value)
        if not m:
            raise SpecError(
                f"{value!r}: the only https:// sources Hangar understands are Azure Blob URLs "
                "(https://<account>.blob.core.windows.net/<container>[/prefix]). To fix: use "
                "such a URL, or download the file and use its local path."
            )
        account = m.group("account")
        rest = m.group("rest")
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise SpecError(
                f"{value!r}: no container named after the account. To fix: append "
                "/<container> to the URL."
            )
        return ParsedUri("azure", bucket, prefix, account)
    if scheme in _OTHER_SCHEMES:
        raise SpecError(
            f"{value!r}: {scheme}:// buckets are not supported by Hangar yet. "
            "Supported: s3://, gs://, az://, r2://, local://, "
            "https://<account>.blob.core.windows.net/. To fix: copy the data to a bucket in a "
            "supported store, or use a local path."
        )
    if scheme not in _SCHEMES:
        raise SpecError(
            f"{value!r}: unknown URI scheme {scheme!r}. To fix: use s3://, gs://, az://, r2:// "
            "or local://, or a local path (no scheme)."
        )
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise SpecError(f"{value!r}: the URI names no bucket. To fix: write scheme://bucket.")
    return ParsedUri(_SCHEMES[scheme], bucket, prefix)


_URL_SCHEME = {"s3": "s3", "gcs": "gs", "azure": "az", "r2": "r2", "local": "local"}


def format_url(
    store_type: str, bucket: str, prefix: str = "", *, account: str | None = None
) -> str:
    """The canonical URL of `bucket` (and `prefix`) in `store_type`; `parse_uri` reads it back.

    An Azure container in a named storage account is written as its https URL, so the account
    survives the round trip (``az://`` names no account).
    """
    if store_type == "azure" and account:
        url = f"https://{account}.blob.core.windows.net/{bucket}"
    else:
        url = f"{_URL_SCHEME[store_type]}://{bucket}"
    return f"{url}/{prefix}" if prefix else url
