"""A call over the SIP trunk routed by the router (issue 13's pipeline, as `benchmarks/sip_cps.py --router`
drives it): SIPp dials an assigned number, the router redirects the call to the number's identity, whose
scripted device answers; the caller hears 180 and 200, and its BYE ends the call."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.communication.identity import CommunicationIdentityClient
from azure.core.pipeline.transport import RequestsTransport

from callgrid.router.models import Assignment
from callgrid.testing import CallgridServer, WebhookReceiver
from tests.router.support import RouterServer, wait_for
from tests.sip.sipp import Sipp, ack, in_dialog, invite, pause, recv, scenario

NUMBER = "+14255551212"
CALLER = "+12065550100"


@pytest.fixture
def router(sip: CallgridServer, tmp_path: Path) -> Iterator[RouterServer]:
    server = RouterServer(sip, tmp_path / "router.db").start()
    yield server
    server.stop()


def _user(sip: CallgridServer) -> str:
    transport = RequestsTransport(connection_verify=sip.ca_bundle)
    try:
        client = CommunicationIdentityClient.from_connection_string(sip.connection_string, transport=transport)
        return str(client.create_user().properties["id"])
    finally:
        transport.close()


def test_a_routed_call_is_answered_by_the_identitys_device_and_ended_by_the_callers_bye(
    sip: CallgridServer, app: WebhookReceiver, router: RouterServer, tmp_path: Path
) -> None:
    user = _user(sip)
    sip.own_number(NUMBER)  # the number's own device rings: only the redirect answers the call
    sip.set_device(user, "answer")
    router.store.assign(Assignment(NUMBER, user, "Ada"))
    router.subscribe()
    xml = scenario(
        "routed",
        invite(caller=CALLER),
        recv(100, optional=True),
        recv(180, optional=True),
        recv(200, rrs=True),
        ack(),
        pause(200),
        in_dialog("BYE", 2),
        recv(200),
    )
    uac = Sipp(tmp_path, "uac", xml, remote=f"127.0.0.1:{sip.sip_port}", service=NUMBER, caller=CALLER)  # type: ignore[attr-defined]
    try:
        run = uac.start().wait(timeout=60)
        assert run.returncode == 0, run.out + run.trace
    finally:
        uac.stop()
    first = app.wait_for("Microsoft.Communication.IncomingCall", lambda e: e["data"]["to"]["rawId"] == "4:" + NUMBER)
    call = first["data"]["serverCallId"]
    decision = router.decision(call)
    assert (decision.rule, decision.outcome) == ("assigned", f"redirected to {user}")
    second = app.wait_for("Microsoft.Communication.IncomingCall", lambda e: e["data"]["to"]["rawId"] == user)
    assert second["data"]["serverCallId"] == call
    assert second["data"]["from"]["phoneNumber"]["value"] == CALLER
    ended = app.wait_for("Microsoft.Communication.CallEnded", lambda e: e["data"]["serverCallId"] == call)
    assert ended["data"]["reason"]["code"] == 200
    view = wait_for(lambda: (c := sip.get_call(call))["state"] == "disconnected" and c)
    events = [t["event"] for t in view["timeline"]]
    assert [e for e in events if e in ("redirected", "answered", "participantLeft", "disconnected")] == [
        "redirected",
        "answered",
        "participantLeft",
        "disconnected",
    ], events
