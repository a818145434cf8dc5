"""Injected faults (/callgrid/v1/faults) through the plugin's `faults` fixture, seen by the official SDKs."""

from __future__ import annotations

from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError

from callgrid.client import CallgridHttpError
from callgrid.testing import INCOMING_CALL, CallgridServer, FaultInjector, WebhookReceiver

CALLER = "+12065550100"
LINE = "+14255550123"


def _deliveries(server: CallgridServer) -> list[dict[str, Any]]:
    value: list[dict[str, Any]] = server.client().deliveries(100)["value"]
    return value


def test_deliveries_to_a_url_fail_with_a_status_until_the_fault_is_removed(
    callgrid: CallgridServer, webhook: WebhookReceiver, faults: FaultInjector
) -> None:
    fault = faults.fail_deliveries(webhook.url, 503)
    callgrid.subscribe(webhook.url, to=[LINE])  # the handshake is not faulted
    callgrid.place_call(CALLER, LINE)
    callgrid.advance(0)
    (row,) = _deliveries(callgrid)
    assert (row["status"], row["attempts"], row["lastStatus"], row["lastOutcome"]) == ("pending", 1, 503, "Busy")
    assert webhook.events() == []  # the app never saw it
    assert faults.list()[0]["hits"] == 1
    faults.remove(fault["id"])
    callgrid.advance(40)  # 503: retried after at least 30 s
    assert webhook.wait_for(INCOMING_CALL)
    assert _deliveries(callgrid)[0]["status"] == "delivered"


def test_a_timed_out_delivery_times_out_on_the_clock(
    callgrid: CallgridServer, webhook: WebhookReceiver, faults: FaultInjector
) -> None:
    faults.time_out_deliveries(webhook.url, count=1)
    callgrid.subscribe(webhook.url)
    callgrid.place_call(CALLER, LINE)
    callgrid.advance(31, patience=0)
    history = callgrid.client().deliveries(10)["value"][0]["history"]
    assert history[0]["outcome"] == "TimedOut"
    callgrid.advance(15)  # the retry, 10 s later: the fault was used up
    assert webhook.wait_for(INCOMING_CALL)
    assert faults.list() == []


@pytest.mark.parametrize(("behaviour", "code", "sub_code"), [("busy", 486, 8539), ("unreachable", 480, 10037)])
def test_a_device_fault_overrides_its_script(
    callgrid: CallgridServer, identity_client: Any, faults: FaultInjector, behaviour: str, code: int, sub_code: int
) -> None:
    agent = identity_client.create_user().properties["id"]
    callgrid.set_device(agent, "answer")
    faults.device(agent, behaviour)
    call = callgrid.place_call(CALLER, agent)
    callgrid.advance(1)
    view = callgrid.get_call(call["serverCallId"])
    assert view["state"] != "connected"
    assert any(e.get("reason") == behaviour for e in view["timeline"]), view["timeline"]


def test_an_operation_fails_with_the_given_acs_error_then_works(
    callgrid: CallgridServer,
    webhook: WebhookReceiver,
    call_automation_client: Any,
    faults: FaultInjector,
) -> None:
    faults.fail_operation("answerCall", 400, code="8523", message="Invalid request.", count=1)
    callgrid.subscribe(webhook.url)
    callgrid.place_call(CALLER, LINE)
    context = webhook.wait_for(INCOMING_CALL)["data"]["incomingCallContext"]
    with pytest.raises(HttpResponseError) as failed:
        call_automation_client.answer_call(context, webhook.url + "/callbacks")
    assert failed.value.status_code == 400
    assert "Invalid request." in str(failed.value)
    answered = call_automation_client.answer_call(context, webhook.url + "/callbacks")
    assert answered.call_connection_id


def test_faults_are_listed_removed_after_the_test_and_checked(callgrid: CallgridServer) -> None:
    injector = FaultInjector(callgrid)
    injector.fail_operation("redirectCall", 503)
    injector.device("8:acs:someone", "busy")
    assert [f["kind"] for f in injector.list()] == ["operation", "device"]
    assert injector.list()[0]["operation"] == "redirectCall"
    injector.remove_all()
    assert injector.list() == []
    with pytest.raises(CallgridHttpError) as bad:
        injector.add(kind="delivery", url="http://x")
    assert bad.value.status == 400
    with pytest.raises(CallgridHttpError):
        injector.device("8:acs:someone", "asleep")


def test_a_reset_removes_faults(callgrid: CallgridServer) -> None:
    callgrid.faults.fail_deliveries("http://127.0.0.1:9/", 500)
    callgrid.reset()
    assert callgrid.faults.list() == []
