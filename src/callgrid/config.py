"""One Settings object: defaults, then CALLGRID_* environment variables, then CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_PORT = 8710


def _env(name: str) -> str | None:
    value = os.environ.get("CALLGRID_" + name.upper())
    return value if value not in (None, "") else None


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path(".callgrid")
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    tls: bool = True
    # Store location (CALLGRID_STORE or --store): sqlite:///path, or postgresql://... for several nodes
    # on one database; empty means SQLite in the data directory.
    store_url: str = ""
    # "system" in production; "virtual" lets tests move time through /callgrid/v1/clock.
    clock: str = "system"
    # The Communication resource this server plays.
    resource_name: str = "callgrid"
    subscription_id: str = "00000000-0000-0000-0000-000000000000"
    resource_group: str = "callgrid-rg"
    # Connections: a request's headers must arrive within this many seconds (Kestrel's RequestHeadersTimeout
    # default), and an idle kept-alive connection is closed after keep_alive_timeout_seconds (uvicorn's default).
    request_headers_timeout_seconds: float = 30.0
    keep_alive_timeout_seconds: float = 5.0
    # Past this many requests in flight, the next is answered 429 with Retry-After (api/throttle.py) rather
    # than queued; 0 turns the bound off. Far above what a test suite or the 200 calls/s benchmark keeps.
    max_requests_in_flight: int = 256
    # ... and while the oldest due event delivery is this many seconds late (system clock only; 0: off).
    max_delivery_lag_seconds: float = 0.5
    throttle_retry_after_seconds: int = 1
    # HMAC: how far x-ms-date may be from our clock.
    max_clock_skew_seconds: float = 900.0
    # How long an offer rings (and its incomingCallContext lives) before it times out (sub-code 8587).
    ring_timeout_seconds: float = 30.0
    # Phone Numbers long-running operations (search, purchase, release, capabilities) take this long on the
    # system clock; on a virtual clock they are done when the request that starts them is answered.
    number_operation_seconds: float = 3.0
    # Event Grid: the response time limit for a delivery or a validation handshake.
    delivery_timeout_seconds: float = 30.0
    # Event Grid upper-cases subscription names in aeg-subscription-name (eventgrid.md O6).
    uppercase_subscription_name_header: bool = True
    # Dead letters: Azure writes them ~5 min after the last attempt; 0 writes at once, easier to watch.
    dead_letter_delay_seconds: float = 0.0
    # Azure Storage connection string (Azurite works) for deadLetterDestination; empty: folders under
    # <data_dir>/deadletters/<storage account>/<container>/.
    dead_letter_connection_string: str = ""
    # deadLetterReason of an expired event: undocumented (eventgrid.md O9).
    ttl_dead_letter_reason: str = "TimeToLiveExceeded"
    # Consecutive failures of an endpoint before its deliveries are delayed (probation, eventgrid.md 4.5).
    probation_failure_threshold: int = 10
    # Delivered and dropped deliveries (and their events) are purged this long after their last
    # attempt; dead-lettered ones are kept for replay. 0 keeps everything.
    delivery_retention_hours: float = 24.0
    # Event Grid -> CloudEvents: dataschema = "#" + dataVersion (eventgrid.md O8); false omits it.
    cloud_event_dataschema: bool = True
    # AzureFunction destinations are delivered to {this}/runtime/webhooks/EventGrid?functionName=<function>,
    # the local Functions host's Event Grid webhook; "{app}" in it is replaced by the function app's name.
    azure_functions_url: str = "http://127.0.0.1:7071"
    # Retry delays get up to this fraction of random jitter, as in Azure; 0 makes schedules exact.
    retry_jitter: float = 0.1
    # A virtual clock advanced over due work waits this long (real seconds) for a webhook's answer
    # before letting the clock run on towards the POST's response time limit.
    advance_patience_seconds: float = 1.0
    # Callback JWT issuer: the real service's by default, so apps validate unchanged.
    callback_issuer: str = "https://acscallautomation.communication.azure.com"
    # The SIP trunk (Direct Routing edge): UDP and TCP on this port; 0 leaves it off.
    sip_port: int = 0
    # Who may send INVITEs and OPTIONS besides the configured trunks' addresses (comma-separated networks).
    sip_allow: str = "127.0.0.0/8,::1/128"
    # The transport of the calls callgrid places over the trunks: "udp" or "tcp" (Azure uses TLS; an SBC on
    # a test bench rarely has a certificate for it).
    sip_transport: str = "udp"
    # RFC 3261's T1 (ms): SIP's retransmission and timeout timers scale with it (a trunk that never answers
    # times out after 64 x T1, then the call fails over to the next trunk).
    sip_t1_ms: int = 500
    # RFC 4028 session timers: the interval (s) callgrid offers on the calls it places and the longest it
    # accepts on calls in, so a far end that vanished mid-call is noticed (0: no session timers); and the
    # shortest it accepts (Min-SE; a shorter Session-Expires is answered 422).
    sip_session_expires: int = 1800
    sip_min_se: int = 90
    # Recording files are announced (contentLocation, metadataLocation, deleteLocation) on this host name at
    # the server's port instead of the endpoint's. The SDK's download_recording and delete_recording (1.6 and
    # later) send the access key only to Azure's recording hosts (*.asm.skype.com, ...): a name under
    # .asm.skype.com that resolves to this machine (a hosts-file line) lets them fetch from callgrid. The
    # server certificate covers it. Empty: the endpoint's host.
    recording_host: str = ""
    # The media plane's ticks and sockets run in a thread of their own, out of reach of the server loop's
    # pauses; false runs them on the server's loop (kept to measure the two side by side).
    media_thread: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "extra":
                continue
            raw = _env(f.name)
            if f.name == "store_url":
                raw = _env("store") or raw  # the documented name; CALLGRID_STORE_URL also works
            if raw is None:
                continue
            default = getattr(cls(), f.name)
            if isinstance(default, bool):
                values[f.name] = raw.lower() in ("1", "true", "yes", "on")
            elif isinstance(default, int):
                values[f.name] = int(raw)
            elif isinstance(default, float):
                values[f.name] = float(raw)
            elif isinstance(default, Path):
                values[f.name] = Path(raw)
            else:
                values[f.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values)

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def endpoint(self) -> str:
        # No trailing slash: the SDK would sign "host:port/" and never match the Host header.
        host = "localhost" if self.tls and self.host in ("127.0.0.1", "0.0.0.0") else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def recording_base(self) -> str:
        """Where recording files are announced: the endpoint, or the recording host at the same port."""
        if not self.recording_host:
            return self.endpoint
        return f"{self.scheme}://{self.recording_host}:{self.port}"

    @property
    def tls_hostnames(self) -> tuple[str, ...]:
        """The names the server certificate must cover."""
        return ("localhost", self.recording_host) if self.recording_host else ("localhost",)

    @property
    def resolved_store_url(self) -> str:
        return self.store_url or f"sqlite:///{(self.data_dir / 'callgrid.db').resolve()}"
