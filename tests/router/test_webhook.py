"""The router's webhook and callback endpoint: handshakes in both schemas, forged and replayed requests, JWTs."""

from __future__ import annotations

from collections.abc import Callable

import requests
from azure.communication.callautomation import CallAutomationClient
from azure.mgmt.eventgrid.models import EventSubscription

from callgrid.router.config import CALLBACK_PATH, WEBHOOK_PATH
from callgrid.router.models import Assignment, IncomingCall
from callgrid.router.subscribe import Scope
from callgrid.testing import CallgridServer, WebhookReceiver
from tests.router.support import RouterServer, wait_for
from tests.support.arm import put_subscription

OWNED = "+14255551212"
CALLER = "+12065550100"


def test_requests_without_the_secret_are_refused(router: RouterServer) -> None:
    for url in (router.url + WEBHOOK_PATH, router.url + WEBHOOK_PATH + "?secret=guess"):
        posted = requests.post(url, json=[], timeout=5)
        assert posted.status_code == 401
        assert posted.json()["error"]["code"] == "Unauthorized"
        options = requests.options(url, headers={"WebHook-Request-Origin": "eventgrid.azure.net"}, timeout=5)
        assert options.status_code == 401
    assert router.store.decisions() == []


def test_an_oversized_delivery_is_refused_and_so_is_a_large_one_without_the_secret(router: RouterServer) -> None:
    big = b"[" + b" " * (1024 * 1024 + 10) + b"]"
    refused = requests.post(router.webhook_url, data=big, headers={"Content-Type": "application/json"}, timeout=10)
    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == "PayloadTooLarge"
    stranger = requests.post(router.url + WEBHOOK_PATH, data=big, timeout=10)
    assert stranger.status_code == 401
    assert router.store.decisions() == []


def test_event_grid_schema_validation_handshake(router: RouterServer) -> None:
    body = [
        {
            "id": "v1",
            "topic": "/subscriptions/x",
            "subject": "",
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": "2026-01-01T00:00:00Z",
            "dataVersion": "1",
            "metadataVersion": "1",
            "data": {"validationCode": "512d38b6", "validationUrl": "https://example/validate"},
        }
    ]
    answer = requests.post(router.webhook_url, json=body, headers={"aeg-event-type": "SubscriptionValidation"})
    assert answer.status_code == 200
    assert answer.json() == {"validationResponse": "512d38b6"}


def test_cloudevents_options_handshake(router: RouterServer) -> None:
    answer = requests.options(
        router.webhook_url,
        headers={"WebHook-Request-Origin": "eventgrid.azure.net", "WebHook-Request-Rate": "120"},
        timeout=5,
    )
    assert answer.status_code == 200
    assert answer.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert answer.headers["WebHook-Allowed-Rate"] == "*"
    assert requests.options(router.webhook_url, timeout=5).status_code == 400


def test_cloudevents_subscription_routes_calls(
    fresh: CallgridServer, router: RouterServer, new_user: Callable[[], str]
) -> None:
    user = new_user()
    fresh.client().own_number(OWNED)
    router.store.assign(Assignment(OWNED, user))
    subscriber = router.subscriber()
    subscriber.cloud_events = True
    subscriber.sync(router.store.assigned_numbers(), scope=Scope.ASSIGNED, webhook_url=router.webhook_url)
    sub: EventSubscription = subscriber.client.event_subscriptions.get(fresh.resource_id, "router-001")
    assert sub.event_delivery_schema == "CloudEventSchemaV1_0"

    call = fresh.client().place_call(CALLER, OWNED)["serverCallId"]
    decision = router.decision(call)
    assert (decision.rule, decision.outcome) == ("assigned", f"redirected to {user}")


def test_bad_bodies_get_clear_errors(router: RouterServer) -> None:
    assert requests.post(router.webhook_url, data=b"not json", timeout=5).status_code == 400
    assert requests.post(router.webhook_url, json="a string", timeout=5).json()["error"]["code"] == "BadRequest"
    # An IncomingCall missing what routing needs is acknowledged (a retry cannot fix it) and reported.
    answer = requests.post(
        router.webhook_url,
        json=[{"id": "e1", "eventType": "Microsoft.Communication.IncomingCall", "data": {"to": {}}}],
        timeout=5,
    )
    assert answer.status_code == 200
    assert answer.json()["malformed"] == ["event e1: IncomingCall without from, to or incomingCallContext"]


def test_forged_event_with_the_secret_cannot_move_a_call(
    fresh: CallgridServer, router: RouterServer, new_user: Callable[[], str]
) -> None:
    """Someone who learnt the URL can invent events, but not an incomingCallContext ACS accepts."""
    fresh.client().own_number(OWNED)
    router.store.assign(Assignment(OWNED, new_user()))
    forged = {
        "id": "forged-1",
        "eventType": "Microsoft.Communication.IncomingCall",
        "subject": "x",
        "dataVersion": "1.0",
        "data": {
            "to": {"rawId": "4:" + OWNED},
            "from": {"rawId": "4:" + CALLER},
            "incomingCallContext": "eyJhbGciOiJub25lIn0.eyJjYyI6ImZvcmdlZCJ9.",
        },
    }
    assert requests.post(router.webhook_url, json=[forged], timeout=5).json()["accepted"] == 1
    decision = wait_for(lambda: (d := router.store.decisions(event_id="forged-1")) and d[0].state == "done" and d[0])
    assert decision.actions and not any(a.ok for a in decision.actions)
    assert decision.actions[0].status == 400 and decision.actions[0].error_code


def test_resumes_events_accepted_before_a_crash(
    fresh: CallgridServer, router: RouterServer, new_user: Callable[[], str], webhook: WebhookReceiver
) -> None:
    """An event acknowledged but not yet acted on (the process died in between) is routed at the next start."""
    user = new_user()
    fresh.client().own_number(OWNED)
    put_subscription(fresh, "recorder", webhook.url)
    call = fresh.client().place_call(CALLER, OWNED)["serverCallId"]
    event = webhook.wait_until(lambda: webhook.events("Microsoft.Communication.IncomingCall"))[0]
    router.stop()
    # What the webhook writes before acknowledging; the router stopped before acting.
    router.store.assign(Assignment(OWNED, user))
    data = event["data"]
    router.store.accept(
        [IncomingCall(event["id"], data["from"]["rawId"], data["to"]["rawId"], data["incomingCallContext"], call)]
    )
    restarted = RouterServer(fresh, router.config.db).start()
    try:
        decision = restarted.decision(call)
        assert decision.outcome == f"redirected to {user}"
    finally:
        restarted.stop()


def test_callbacks_need_a_valid_acs_jwt(fresh: CallgridServer, router: RouterServer, webhook: WebhookReceiver) -> None:
    fresh.client().own_number(OWNED)
    put_subscription(fresh, "answering-app", webhook.url)
    fresh.client().place_call(CALLER, OWNED)
    event = webhook.wait_until(lambda: webhook.events("Microsoft.Communication.IncomingCall"))[0]
    automation = CallAutomationClient.from_connection_string(fresh.connection_string)
    answered = automation.answer_call(event["data"]["incomingCallContext"], callback_url=router.url + CALLBACK_PATH)

    recorded = wait_for(lambda: router.api("GET", "/api/callbacks").json()["value"])
    assert {c["callConnectionId"] for c in recorded} == {answered.call_connection_id}
    assert "Microsoft.Communication.CallConnected" in {c["type"] for c in recorded}

    forged = requests.post(
        router.url + CALLBACK_PATH,
        json=[{"id": "x", "type": "Microsoft.Communication.CallConnected", "data": {}}],
        headers={"Authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln"},
        timeout=5,
    )
    assert forged.status_code == 401
    assert requests.post(router.url + CALLBACK_PATH, json=[], timeout=5).status_code == 401
