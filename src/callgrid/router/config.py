"""The router's settings, and the defaults that make one command work against Azure or callgrid alike."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_DB = Path(".callgrid-router/router.db")
DEFAULT_PORT = 8720
WEBHOOK_PATH = "/api/incomingCall"
CALLBACK_PATH = "/api/callbacks"
ACS_CALLBACK_ISSUER = "https://acscallautomation.communication.azure.com"
ACS_JWKS_URL = "https://acscallautomation.communication.azure.com/calling/keys"
AZURE_ARM_ENDPOINT = "https://management.azure.com"


class ConfigError(ValueError):
    pass


def _parts(connection_string: str) -> tuple[str, str]:
    parts = dict(item.split("=", 1) for item in connection_string.strip().strip(";").split(";") if "=" in item)
    endpoint = next((v for k, v in parts.items() if k.strip().lower() == "endpoint"), None)
    key = next((v for k, v in parts.items() if k.strip().lower() == "accesskey"), None)
    if not endpoint or not key:
        raise ConfigError("the connection string needs endpoint=...;accesskey=... (as the Azure portal shows it).")
    return endpoint.strip().rstrip("/"), key.strip()


def endpoint_of(connection_string: str) -> str:
    """The `endpoint=` part of an ACS connection string, without a trailing slash."""
    return _parts(connection_string)[0]


def access_key_of(connection_string: str) -> str:
    """The `accesskey=` part of an ACS connection string."""
    return _parts(connection_string)[1]


def is_azure(endpoint: str) -> bool:
    host = (urlsplit(endpoint).hostname or "").lower()
    return host.endswith(".communication.azure.com") or host.endswith(".communication.azure.us")


def default_jwks_url(endpoint: str) -> str:
    """Microsoft's JWKS for a real resource; an emulator serves the same path on its own endpoint."""
    return ACS_JWKS_URL if is_azure(endpoint) else endpoint + "/calling/keys"


def default_arm_endpoint(endpoint: str) -> str:
    """Azure Resource Manager for a real resource; callgrid serves ARM's paths on its own endpoint."""
    return AZURE_ARM_ENDPOINT if is_azure(endpoint) else endpoint


@dataclass(frozen=True)
class RouterConfig:
    connection_string: str
    db: Path = DEFAULT_DB
    # A postgresql:// URL instead of `db`: several routers behind one webhook URL share it.
    store: str | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # Where Event Grid and ACS reach this router (a tunnel or a public host in Azure).
    public_url: str | None = None
    jwt_issuer: str = ACS_CALLBACK_ISSUER
    # The resource's immutable id (a GUID); callbacks are refused while it is unknown.
    jwt_audience: str | None = None
    jwks_url: str | None = None
    # Secrets; generated once into the router's store when not given.
    webhook_secret: str | None = None
    api_key: str | None = None
    # Seconds one SDK call may take, retries included, before the router records it as failed.
    sdk_timeout_seconds: float = 10.0

    @property
    def acs_endpoint(self) -> str:
        return endpoint_of(self.connection_string)

    @property
    def resolved_jwks_url(self) -> str:
        return self.jwks_url or default_jwks_url(self.acs_endpoint)

    @property
    def local_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return (self.public_url or self.local_url).rstrip("/")
