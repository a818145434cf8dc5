"""A callgrid server with its SIP trunk on (UDP and TCP on a free port) for the SIP tests; reset before
each test like the plugin's own."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callgrid.testing import CallgridServer, WebhookReceiver
from tests.sip.sipp import SIPP
from tests.support.arm import put_subscription

CALL_EVENTS = [
    "Microsoft.Communication.IncomingCall",
    "Microsoft.Communication.CallStarted",
    "Microsoft.Communication.CallEnded",
]

if SIPP is None:  # pragma: no cover - .ci/run installs sip-tester
    pytest.fail("sipp (Debian's sip-tester) is required for the SIP tests", pytrace=False)


def _free_udp_and_tcp_port() -> int:
    while True:
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port


@pytest.fixture(scope="module")
def sip_server(tmp_path_factory: pytest.TempPathFactory, callgrid_tls_dir: Path) -> Iterator[CallgridServer]:
    port = _free_udp_and_tcp_port()
    # Only 127.0.0.1 may call in besides the trunks: tests call from 127.0.0.2 to be refused.
    server = CallgridServer(
        tmp_path_factory.mktemp("callgrid-sip"),
        tls_dir=callgrid_tls_dir,
        extra_args=["--sip-port", str(port), "--sip-allow", "127.0.0.1/32"],
    )
    server.sip_port = port  # type: ignore[attr-defined]
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sip(sip_server: CallgridServer) -> CallgridServer:
    sip_server.reset()
    return sip_server


@pytest.fixture
def app(sip: CallgridServer) -> Iterator[WebhookReceiver]:
    """The app's webhook, subscribed to calls."""
    with WebhookReceiver() as hook:
        put_subscription(sip, "sip-app", hook.url + "/eventgrid", included_event_types=CALL_EVENTS)
        yield hook


@pytest.fixture
def automation(sip: CallgridServer) -> Iterator[Any]:
    """The official Call Automation client, for the SIP server."""
    from azure.communication.callautomation import CallAutomationClient
    from azure.core.pipeline.transport import RequestsTransport

    transport = RequestsTransport(connection_verify=sip.ca_bundle)
    try:
        yield CallAutomationClient.from_connection_string(sip.connection_string, transport=transport)
    finally:
        transport.close()


def sip_metric(server: CallgridServer, name: str) -> float:
    """A SIP counter from /metrics (callgrid_sip_<name>), 0 while it has not counted anything."""
    text = server.client().download("/metrics").decode()
    for line in text.splitlines():
        if line.startswith(f"callgrid_sip_{name} "):
            return float(line.split()[1])
    return 0.0


@pytest.fixture
def sip_routing(sip: CallgridServer) -> Any:
    """The official SipRoutingClient (azure-communication-phonenumbers), for the SIP server."""
    from azure.communication.phonenumbers.siprouting import SipRoutingClient

    return SipRoutingClient.from_connection_string(sip.connection_string, connection_verify=sip.ca_bundle)
