"""Store registry: store type -> implementing class, imported lazily.

Adding a backend is one module plus one line in `_REGISTRY`. A missing optional dependency
surfaces as `StoreUnavailable` naming the pip extra to install.
"""

from __future__ import annotations

import importlib
from typing import Any

from hangar.errors import SpecError, StoreUnavailable
from hangar.stores.base import Store
from hangar.stores.uri import STORE_TYPES, canonical_store_type, parse_uri

__all__ = ["STORE_TYPES", "canonical_store_type", "open_store", "parse_uri", "store_from_uri"]

# store type -> ("module:Class", pip extra)
_REGISTRY: dict[str, tuple[str, str]] = {
    "local": ("hangar.stores.local:LocalStore", ""),
    "s3": ("hangar.stores.s3:S3Store", "s3"),
    "r2": ("hangar.stores.s3:R2Store", "r2"),
    "gcs": ("hangar.stores.gcs:GcsStore", "gcs"),
    "azure": ("hangar.stores.azure:AzureStore", "azure"),
}


def _store_class(store_type: str) -> Any:
    target, extra = _REGISTRY[store_type]
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"pip install 'hangar[{extra}]'" if extra else "pip install --force-reinstall hangar"
        raise StoreUnavailable(
            f"The {store_type} store needs a package that is not installed ({exc.name or exc}).\n"
            f"To fix: {hint}   (or 'hangar[all]' for every store)"
        ) from exc
    return getattr(module, cls_name)


def open_store(store_type: str, bucket: str, prefix: str = "", **options: Any) -> Store:
    """Build the Store for `bucket` in `store_type` (no I/O happens here)."""
    store_type = canonical_store_type(store_type)
    cls = _store_class(store_type)
    store: Store = cls(bucket, prefix, **options)
    return store


def store_from_uri(uri: str, **options: Any) -> Store:
    """Build the Store a bucket URI names, e.g. ``s3://bkt/prefix``."""
    parsed = parse_uri(uri)
    if parsed is None:
        raise SpecError(f"{uri!r} is not a bucket URI (expected s3://, gs://, az://, r2://, ...)")
    if parsed.account:
        options.setdefault("account", parsed.account)
    return open_store(parsed.store_type, parsed.bucket, parsed.prefix, **options)
