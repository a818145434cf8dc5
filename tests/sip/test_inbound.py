"""Calls into owned numbers over the SIP trunk, from SIPp as the carrier's SBC: the app sees an
IncomingCall from the PSTN caller and answers, rejects or lets it ring; the caller hears the SIP answer
that follows."""

from __future__ import annotations

from pathlib import Path

from azure.communication.callautomation import CallAutomationClient, CallRejectReason

from callgrid.testing import CallgridServer, WebhookReceiver
from tests.sip.sipp import Sipp, ack, in_dialog, invite, pause, recv, scenario

NUMBER = "+14255551212"
CALLER = "+12065550100"


def _remote(server: CallgridServer) -> str:
    return f"127.0.0.1:{server.sip_port}"  # type: ignore[attr-defined]


def _incoming(app: WebhookReceiver) -> dict:
    return app.wait_for("Microsoft.Communication.IncomingCall", timeout=20)["data"]


def test_an_answered_call_carries_the_caller_and_ends_with_the_callers_bye(
    sip: CallgridServer, app: WebhookReceiver, tmp_path: Path, automation: CallAutomationClient
) -> None:
    sip.own_number(NUMBER)
    xml = scenario(
        "answered",
        invite(caller=CALLER, headers="X-MS-Custom-Ticket: 42\nX-Region: emea"),
        recv(100, optional=True),
        recv(180),
        recv(200, rrs=True),
        ack(),
        pause(500),
        in_dialog("BYE", 2),
        recv(200),
    )
    uac = Sipp(tmp_path, "uac", xml, remote=_remote(sip), service=NUMBER, caller=CALLER).start()
    try:
        incoming = _incoming(app)
        assert incoming["from"]["phoneNumber"]["value"] == CALLER
        assert incoming["to"]["phoneNumber"]["value"] == NUMBER
        assert incoming["callerDisplayName"] == "Pat Caller"
        assert incoming["customContext"]["sipHeaders"] == {"X-MS-Custom-Ticket": "42", "X-Region": "emea"}
        answered = automation.answer_call(incoming["incomingCallContext"], app.url + "/callbacks")
        ccid = answered.call_connection_id
        app.wait_for("Microsoft.Communication.CallConnected", lambda e: e["data"]["callConnectionId"] == ccid)
        run = uac.wait()
        assert run.returncode == 0, run.out + run.trace
        gone = app.wait_for("Microsoft.Communication.CallDisconnected", lambda e: e["data"]["callConnectionId"] == ccid)
        assert gone["data"]["resultInformation"]["code"] == 200
        ended = app.wait_for("Microsoft.Communication.CallEnded")
        assert ended["data"]["serverCallId"] == incoming["serverCallId"]
    finally:
        uac.stop()
