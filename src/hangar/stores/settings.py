"""Per-store settings and credentials, resolved from each cloud's standard chain.

Precedence, for every setting, in one function (`pick`):

    explicit option (Store constructor kwargs: the task YAML or a CLI flag)
      > environment (the cloud's own variables, e.g. AWS_REGION)
      > ``$HANGAR_HOME/config.yaml`` (``stores: {<type>: {<name>: value}}``)
      > default

Credentials come from the cloud's own chain so an existing setup just works (AWS: explicit keys,
then boto3's chain for the chosen profile, i.e. the AWS_* variables, ~/.aws, SSO, instance roles;
Google: application default credentials; Azure: connection string, account key, SAS, then
DefaultAzureCredential). When no credentials are found the store works anonymously (public
buckets). The config file holds no secrets.

Resolution reads files and may ask a metadata service, so stores call it lazily (first use),
never in their constructors. Secrets sit only in ``repr=False`` fields and never reach a
message, a log or an rclone command line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from hangar.config import load_user_config
from hangar.errors import SpecError, StoreError

# Settings each store type accepts in config.yaml (never secrets).
CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    "s3": ("endpoint", "region", "profile"),
    "r2": ("account_id", "endpoint", "profile"),
    "gcs": ("endpoint", "project", "region"),
    "azure": ("account", "endpoint"),
}

AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public; only for UseDevelopmentStorage=true).
_AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def store_config(store_type: str) -> Mapping[str, Any]:
    """The ``stores.<store_type>`` section of the user's config file (empty when absent)."""
    section = load_user_config().stores.get(store_type, {})
    allowed = CONFIG_KEYS.get(store_type, ())
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise SpecError(
            f"config.yaml: unknown setting(s) {', '.join(unknown)} under stores.{store_type}; "
            f"allowed: {', '.join(allowed)}. (Credentials belong in the cloud's own files or "
            "environment, never in config.yaml.)"
        )
    return section


def pick_with_source(
    name: str,
    *,
    option: Any = None,
    env: Sequence[str] = (),
    config: Mapping[str, Any] | None = None,
    default: Any = None,
) -> tuple[Any, str]:
    """The value of setting `name` and where it came from ("option", "env:VAR", "config",
    "default"), by the one precedence rule: option > environment > config file > default.

    Empty strings count as unset.
    """
    if option is not None and option != "":
        return option, "option"
    for var in env:
        value = os.environ.get(var)
        if value:
            return value, f"env:{var}"
    if config is not None and config.get(name) not in (None, ""):
        return config[name], "config"
    return default, "default"


def pick(
    name: str,
    *,
    option: Any = None,
    env: Sequence[str] = (),
    config: Mapping[str, Any] | None = None,
    default: Any = None,
) -> Any:
    """`pick_with_source` without the source."""
    return pick_with_source(name, option=option, env=env, config=config, default=default)[0]


def _is_loopback(url: str) -> bool:
    host = urlparse(url if "://" in url else f"http://{url}").hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


# -- AWS S3 and S3-compatible (R2) ------------------------------------------------------------


@dataclass(frozen=True)
class AwsKeys:
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class S3Settings:
    """Where an S3 (or S3-compatible) store is and how to sign for it."""

    store_type: str  # "s3" or "r2"
    endpoint: str | None  # None: AWS's regional endpoint
    region: str
    profile: str | None
    provider: str  # rclone's provider name: AWS, Cloudflare, Other
    session: Any = field(default=None, repr=False, compare=False)  # boto3 Session; None: anonymous

    @property
    def anonymous(self) -> bool:
        return self.session is None

    @property
    def refreshable(self) -> bool:
        """The credentials are temporary (SSO, assumed role...): call keys() again for fresh
        ones."""
        creds = self.session.get_credentials() if self.session is not None else None
        return hasattr(creds, "refresh_needed")

    def keys(self) -> AwsKeys | None:
        """The current credentials (temporary ones are refreshed by boto3); None: anonymous."""
        if self.session is None:
            return None
        creds = self.session.get_credentials()
        if creds is None:
            return None
        frozen = creds.get_frozen_credentials()
        return AwsKeys(frozen.access_key, frozen.secret_key, frozen.token or None)


def _boto3_session(profile: str | None, keys: AwsKeys | None, shown: str | None = None) -> Any:
    """A boto3 Session for explicit `keys`, else for `profile` (None: boto3's own choice, which
    reads AWS_PROFILE). `shown` names the profile in errors."""
    import boto3
    from botocore.exceptions import ProfileNotFound

    if keys is not None:
        return boto3.session.Session(
            aws_access_key_id=keys.access_key_id,
            aws_secret_access_key=keys.secret_access_key,
            aws_session_token=keys.session_token,
        )
    try:
        return boto3.session.Session(profile_name=profile)
    except ProfileNotFound as exc:
        raise StoreError(
            f"AWS profile {shown or profile!r} is not in ~/.aws/config or ~/.aws/credentials.\n"
            "To fix: create it (aws configure --profile NAME), or unset AWS_PROFILE / the "
            "'profile' setting."
        ) from exc


class _KeysSession:
    """Stands in for a boto3 Session when the credentials are plain keys (given, or
    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment, which boto3's chain would
    take first anyway) and the region is known: boto3 (~0.3 s to import) is loaded only when a
    control-plane client is asked for."""

    def __init__(self, keys: AwsKeys, region: str) -> None:
        self._keys = keys
        self.region_name = region

    def get_credentials(self) -> _KeysSession:
        return self  # static keys: no refresh_needed, never temporary

    def get_frozen_credentials(self) -> _KeysSession:
        return self

    @property
    def access_key(self) -> str:
        return self._keys.access_key_id

    @property
    def secret_key(self) -> str:
        return self._keys.secret_access_key

    @property
    def token(self) -> str | None:
        return self._keys.session_token

    def client(self, *args: Any, **kwargs: Any) -> Any:
        return _boto3_session(None, self._keys).client(*args, **kwargs)


def _env_keys() -> AwsKeys | None:
    """The keys boto3's chain takes first: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY."""
    key = os.environ.get("AWS_ACCESS_KEY_ID", "")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    if key and secret:
        return AwsKeys(key, secret, os.environ.get("AWS_SESSION_TOKEN") or None)
    return None


def _explicit_keys(
    access_key_id: str | None, secret_access_key: str | None, session_token: str | None
) -> AwsKeys | None:
    if bool(access_key_id) != bool(secret_access_key):
        raise StoreError("give both access_key_id and secret_access_key, or neither")
    if access_key_id and secret_access_key:
        return AwsKeys(access_key_id, secret_access_key, session_token)
    return None


def resolve_s3(
    *,
    endpoint: str | None = None,
    region: str | None = None,
    profile: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    session_token: str | None = None,
    anonymous: bool | None = None,
) -> S3Settings:
    """S3 settings: endpoint (AWS_ENDPOINT_URL_S3 > AWS_ENDPOINT_URL), region (AWS_REGION >
    AWS_DEFAULT_REGION > config > the profile's region > us-east-1), credentials (explicit keys >
    profile option > boto3's chain: AWS_ACCESS_KEY_ID..., AWS_PROFILE, ~/.aws, SSO, roles; a
    config-file profile counts only when no keys are in the environment); anonymous when the
    chain finds nothing."""
    cfg = store_config("s3")
    endpoint = pick(
        "endpoint", option=endpoint, env=("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"), config=cfg
    )
    profile, source = pick_with_source("profile", option=profile, env=("AWS_PROFILE",), config=cfg)
    session = None
    if not anonymous:
        keys = _explicit_keys(access_key_id, secret_access_key, session_token)
        # boto3 itself reads AWS_PROFILE, after AWS_ACCESS_KEY_ID; a config-file profile yields
        # to credentials in the environment.
        explicit = source == "option" or (
            source == "config" and not os.environ.get("AWS_ACCESS_KEY_ID")
        )
        keys = keys or (None if explicit else _env_keys())
        known_region = pick(
            "region", option=region, env=("AWS_REGION", "AWS_DEFAULT_REGION"), config=cfg
        )
        if keys is not None and known_region is not None:
            session = _KeysSession(keys, str(known_region))
        else:
            session = _boto3_session(profile if explicit and not keys else None, keys, profile)
    region = pick("region", option=region, env=("AWS_REGION", "AWS_DEFAULT_REGION"), config=cfg)
    if region is None and session is not None:
        region = session.region_name
    if session is not None and session.get_credentials() is None:
        session = None  # nothing in the chain: anonymous (public buckets)
    return S3Settings(
        store_type="s3",
        endpoint=str(endpoint).rstrip("/") if endpoint else None,
        region=str(region or "us-east-1"),
        profile=profile,
        provider="AWS" if not endpoint else "Other",
        session=session,
    )


def resolve_r2(
    *,
    account_id: str | None = None,
    endpoint: str | None = None,
    profile: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    session_token: str | None = None,
    anonymous: bool | None = None,
) -> S3Settings:
    """Cloudflare R2 settings: endpoint (option > config) or
    ``https://<account_id>.r2.cloudflarestorage.com`` (account_id: option > R2_ACCOUNT_ID >
    config); credentials: explicit keys > profile (option > config > a profile named "r2") >
    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; region "auto"."""
    cfg = store_config("r2")
    endpoint = pick("endpoint", option=endpoint, config=cfg)
    if not endpoint:
        account_id = pick("account_id", option=account_id, env=("R2_ACCOUNT_ID",), config=cfg)
        if not account_id:
            raise StoreError(
                "R2 needs your Cloudflare account id.\nTo fix: export R2_ACCOUNT_ID=<id>, or set "
                "stores.r2.account_id in $HANGAR_HOME/config.yaml."
            )
        endpoint = f"https://{account_id}.r2.cloudflarestorage.com"
    session = None
    if not anonymous:
        keys = _explicit_keys(access_key_id, secret_access_key, session_token)
        profile = pick("profile", option=profile, config=cfg)
        if keys is None and profile is None:
            import boto3

            if "r2" in boto3.session.Session().available_profiles:
                profile = "r2"
        if keys is None and profile is None:
            keys = _explicit_keys(
                os.environ.get("AWS_ACCESS_KEY_ID"),
                os.environ.get("AWS_SECRET_ACCESS_KEY"),
                os.environ.get("AWS_SESSION_TOKEN"),
            )
        if keys is not None or profile is not None:
            session = _boto3_session(None if keys else profile, keys)
        if session is not None and session.get_credentials() is None:
            session = None
    return S3Settings(
        store_type="r2",
        endpoint=str(endpoint).rstrip("/"),
        region="auto",
        profile=profile,
        provider="Cloudflare",
        session=session,
    )


# -- Google Cloud Storage ------------------------------------------------------------------------


@dataclass(frozen=True)
class GcsSettings:
    endpoint: str | None  # None: Google's
    emulator: bool  # the endpoint is an emulator (STORAGE_EMULATOR_HOST, or on loopback)
    project: str | None
    region: str | None  # default location for create_bucket
    credentials: Any = field(default=None, repr=False, compare=False)  # None: anonymous

    @property
    def anonymous(self) -> bool:
        return self.credentials is None


def resolve_gcs(
    *,
    endpoint: str | None = None,
    project: str | None = None,
    region: str | None = None,
    anonymous: bool | None = None,
    credentials: Any = None,
) -> GcsSettings:
    """GCS settings: endpoint (STORAGE_EMULATOR_HOST > config), project (GOOGLE_CLOUD_PROJECT >
    GCLOUD_PROJECT > config > the ADC project); credentials: explicit > application default
    credentials; anonymous for an emulator, or when no ADC is found."""
    cfg = store_config("gcs")
    endpoint, source = pick_with_source(
        "endpoint", option=endpoint, env=("STORAGE_EMULATOR_HOST",), config=cfg
    )
    if endpoint and "://" not in str(endpoint):
        endpoint = f"http://{endpoint}"
    emulator = bool(endpoint) and (source.startswith("env:") or _is_loopback(str(endpoint)))
    project = pick(
        "project",
        option=project,
        env=("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"),
        config=cfg,
    )
    region = pick("region", option=region, config=cfg)
    if credentials is None and not anonymous and not emulator:
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError

        try:
            credentials, adc_project = google.auth.default(
                scopes=["https://www.googleapis.com/auth/devstorage.full_control"]
            )
            project = project or adc_project
        except DefaultCredentialsError:
            credentials = None
    if anonymous:
        credentials = None
    return GcsSettings(
        endpoint=str(endpoint).rstrip("/") if endpoint else None,
        emulator=emulator,
        project=str(project) if project else None,
        region=str(region) if region else None,
        credentials=credentials,
    )


# -- Azure Blob ----------------------------------------------------------------------------------


def parse_connection_string(value: str) -> dict[str, str]:
    """``Key=Value;...`` -> {key: value}; UseDevelopmentStorage=true expands to Azurite's."""
    parts: dict[str, str] = {}
    for item in value.split(";"):
        key, sep, val = item.strip().partition("=")
        if sep and key:
            parts[key.strip().lower()] = val.strip()
    if parts.get("usedevelopmentstorage", "").lower() == "true":
        parts.setdefault("accountname", AZURITE_ACCOUNT)
        parts.setdefault("accountkey", _AZURITE_KEY)
        parts.setdefault("blobendpoint", f"http://127.0.0.1:10000/{AZURITE_ACCOUNT}")
    return parts


@dataclass(frozen=True)
class AzureSettings:
    account: str
    endpoint: str  # the blob service URL, e.g. https://acct.blob.core.windows.net
    auth: str  # "key", "sas", "token" or "anonymous"
    account_key: str | None = field(default=None, repr=False)
    sas_token: str | None = field(default=None, repr=False)
    token_credential: Any = field(default=None, repr=False, compare=False)

    @property
    def anonymous(self) -> bool:
        return self.auth == "anonymous"

    def secrets(self) -> list[str]:
        return [s for s in (self.account_key, self.sas_token) if s]


_AZURE_SCOPE = "https://storage.azure.com/.default"


def _default_azure_credential() -> Any:
    """DefaultAzureCredential when it can produce a token, else None (anonymous)."""
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        return None
    from azure.core.exceptions import ClientAuthenticationError

    credential = DefaultAzureCredential(exclude_interactive_browser_credential=True)
    try:
        credential.get_token(_AZURE_SCOPE)
    except ClientAuthenticationError:
        return None
    return credential


def resolve_azure(
    *,
    account: str | None = None,
    endpoint: str | None = None,
    account_key: str | None = None,
    sas_token: str | None = None,
    connection_string: str | None = None,
    anonymous: bool | None = None,
) -> AzureSettings:
    """Azure settings. Account: option (or the https:// URL) > AZURE_STORAGE_ACCOUNT > the
    connection string's > config. The connection string (option >
    AZURE_STORAGE_CONNECTION_STRING) is used when it is for that account. Endpoint: option >
    connection string > config > https://<account>.blob.core.windows.net. Credentials: key
    (option > connection string > AZURE_STORAGE_KEY) > SAS (option > connection string >
    AZURE_STORAGE_SAS_TOKEN) > DefaultAzureCredential > anonymous."""
    cfg = store_config("azure")
    conn = pick(
        "connection_string", option=connection_string, env=("AZURE_STORAGE_CONNECTION_STRING",)
    )
    parts = parse_connection_string(conn) if conn else {}
    account = pick(
        "account",
        option=account,
        env=("AZURE_STORAGE_ACCOUNT",),
        default=parts.get("accountname") or cfg.get("account"),
    )
    if not account:
        raise StoreError(
            "Azure needs a storage account.\nTo fix: use an https://<account>.blob.core.windows.net"
            "/<container> URL, export AZURE_STORAGE_ACCOUNT or AZURE_STORAGE_CONNECTION_STRING, "
            "or set stores.azure.account in $HANGAR_HOME/config.yaml."
        )
    account = str(account)
    if parts.get("accountname", "").lower() != account.lower():
        parts = {}  # a connection string for another account says nothing about this one
    cfg_endpoint = cfg.get("endpoint") if cfg.get("account") in (None, account) else None
    suffix = parts.get("endpointsuffix", "core.windows.net")
    scheme = parts.get("defaultendpointsprotocol", "https")
    endpoint = pick(
        "endpoint",
        option=endpoint,
        default=parts.get("blobendpoint") or cfg_endpoint or f"{scheme}://{account}.blob.{suffix}",
    )
    env_account = os.environ.get("AZURE_STORAGE_ACCOUNT")
    env_key = os.environ.get("AZURE_STORAGE_KEY") if env_account in (None, "", account) else None
    # Credentials are taken as a whole from the first place that has any: options, then the
    # connection string, then the environment (an explicit SAS beats a key in the environment).
    candidates = [
        (account_key, sas_token),
        (parts.get("accountkey"), parts.get("sharedaccesssignature")),
        (env_key, os.environ.get("AZURE_STORAGE_SAS_TOKEN")),
    ]
    key, sas = next(((k, t) for k, t in candidates if k or t), (None, None))
    token_credential = None
    if anonymous:
        auth = "anonymous"
        key = sas = None
    elif key:
        auth, sas = "key", None
    elif sas:
        auth = "sas"
        sas = str(sas).lstrip("?")
    else:
        token_credential = _default_azure_credential()
        auth = "token" if token_credential is not None else "anonymous"
    return AzureSettings(
        account=account,
        endpoint=str(endpoint).rstrip("/"),
        auth=auth,
        account_key=key,
        sas_token=sas,
        token_credential=token_credential,
    )
