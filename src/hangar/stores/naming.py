"""Bucket naming rules per store, checked before anything runs. Pure: no I/O.

`validate_bucket_name(store_type, name)` raises `SpecError` (without a `where`; the caller knows
the YAML location) whose message names the store, the broken rule and, where one can be derived,
a valid name to use instead. Rules follow each cloud's documentation for *creating* a bucket:

- S3 (and the embedded local store, which uses S3's rules so names move between the two):
  3-63 characters of lowercase letters, digits, dots and hyphens; begins and ends with a letter
  or digit; no two adjacent dots; not an IP address; no reserved prefix or suffix.
- R2: S3's rules, and no dots (Cloudflare allows only letters, digits and hyphens).
- GCS: 3-63 characters (up to 222 when dotted, each dot-separated part at most 63) of lowercase
  letters, digits, dashes, underscores and dots; begins and ends with a letter or digit; not an
  IP address; does not begin with "goog" nor contain "google" or a close misspelling.
- Azure containers: 3-63 characters of lowercase letters, digits and hyphens; begins with a
  letter or digit; no two consecutive hyphens; does not end with a hyphen.
"""

from __future__ import annotations

import re

from hangar.errors import SpecError
from hangar.stores.uri import canonical_store_type

_S3_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_S3_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
_IP_ADDRESS = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_GOOGLE_LIKE = re.compile(r"g[o0][o0]g[l1i]e")

_ALLOWED = {
    "s3": (re.compile(r"^[a-z0-9.-]+$"), "lowercase letters, digits, dots (.) and hyphens (-)"),
    "r2": (re.compile(r"^[a-z0-9-]+$"), "lowercase letters, digits and hyphens (-)"),
    "gcs": (
        re.compile(r"^[a-z0-9._-]+$"),
        "lowercase letters, digits, dashes (-), underscores (_) and dots (.)",
    ),
    "azure": (re.compile(r"^[a-z0-9-]+$"), "lowercase letters, digits and hyphens (-)"),
}


def validate_bucket_name(store_type: str, name: str) -> None:
    """Raise SpecError unless `name` is a valid bucket (container) name for `store_type`.

    `store_type` may be any accepted spelling (``aws``, ``azure_blob``...); the local store uses
    the S3 rules. Nothing is looked up: a valid name may still be taken by someone else.
    """
    store = canonical_store_type(store_type)
    rules = "s3" if store == "local" else store
    problem = _problem(rules, name)
    if problem is None:
        return
    label = "container name" if rules == "azure" else "bucket name"
    fix = "To fix: choose another name"
    suggestion = _suggest(rules, name)
    if suggestion is not None:
        fix += f", e.g. {suggestion!r}"
    raise SpecError(f"{label} {name!r} is not valid for the {store} store: {problem}. {fix}.")


def _problem(rules: str, name: str) -> str | None:
    """The first rule `name` breaks under `rules` ("s3", "r2", "gcs", "azure"), else None."""
    pattern, allowed = _ALLOWED[rules]
    max_len = 222 if rules == "gcs" and "." in name else 63
    if not 3 <= len(name) <= max_len:
        return f"it must be 3-{max_len} characters long (it has {len(name)})"
    if not pattern.match(name):
        bad = sorted({c for c in name if not pattern.match(c)})
        shown = ", ".join(repr(c) for c in bad)
        return f"it may contain only {allowed} (found {shown})"
    if not (name[0].isalnum() and (rules == "azure" or name[-1].isalnum())):
        return "it must begin and end with a letter or a digit"
    if rules == "azure":
        if "--" in name:
            return "it must not contain two consecutive hyphens"
        if name.endswith("-"):
            return "it must not end with a hyphen"
        return None
    if ".." in name:
        return "it must not contain two adjacent dots"
    if _IP_ADDRESS.match(name):
        return "it must not look like an IP address"
    if rules in ("s3", "r2"):
        for prefix in _S3_RESERVED_PREFIXES:
            if name.startswith(prefix):
                return f"the prefix {prefix!r} is reserved"
        for suffix in _S3_RESERVED_SUFFIXES:
            if name.endswith(suffix):
                return f"the suffix {suffix!r} is reserved"
        return None
    # GCS
    if "." in name and any(len(part) > 63 for part in name.split(".")):
        return "each dot-separated part must be at most 63 characters long"
    if name.startswith("goog"):
        return "it must not begin with 'goog'"
    if _GOOGLE_LIKE.search(name):
        return "it must not contain 'google' or a close misspelling of it"
    return None


def _suggest(rules: str, name: str) -> str | None:
    """A nearby valid name (lowercased, invalid characters turned into hyphens), if any."""
    pattern, _ = _ALLOWED[rules]
    out = "".join(c if pattern.match(c) else "-" for c in name.lower())
    out = re.sub(r"-{2,}", "-", out)
    out = re.sub(r"\.{2,}", ".", out)
    out = _GOOGLE_LIKE.sub("g-le", out) if rules == "gcs" else out
    out = out.strip("-._")
    if rules == "gcs" and out.startswith("goog"):
        out = "bkt-" + out
    out = out[:63].strip("-._")
    if len(out) < 3:
        return None
    return out if out != name and _problem(rules, out) is None else None
