"""Filters of a subscription that receives CloudEvents 1.0 read the CloudEvent it is sent: keys name its
attributes (`type`, `source`, `subject`, `id`, `time`, `specversion`, `dataschema`, extensions) and `data.*`;
an Event Grid envelope name such as `eventType` is a literal key the CloudEvent does not have (observed
on Azure, azure-docs#86764). `includedEventTypes` reads `type`, the subject filters `subject`. Subscriptions
made with azure-mgmt-eventgrid, events delivered to a real webhook; Event Grid schema subscriptions beside
them keep the envelope's names."""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any

from azure.core.credentials import AzureKeyCredential
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridPublisherClient
from azure.mgmt.eventgrid.models import (
    AdvancedFilter,
    EventSubscription,
    EventSubscriptionFilter,
    IsNotNullAdvancedFilter,
    IsNullOrUndefinedAdvancedFilter,
    StringBeginsWithAdvancedFilter,
    StringInAdvancedFilter,
    WebHookEventSubscriptionDestination,
)

from callgrid.testing import CallgridServer, WebhookReceiver
from tests.eventgrid.mgmt import SUBSCRIPTION, create_topic, mgmt, topic_key

INCOMING_CALL = "Microsoft.Communication.IncomingCall"
CLOUD_EVENTS = "CloudEventSchemaV1_0"
NUMBER = "+14255550123"
CALLER = "+12065550100"


def _subscribe(
    server: CallgridServer,
    scope: str,
    webhook: WebhookReceiver,
    name: str,
    *,
    schema: str = CLOUD_EVENTS,
    types: list[str] | None = None,
    advanced: list[AdvancedFilter] | None = None,
    subject_begins_with: str | None = None,
    subscription: str | None = None,
) -> None:
    created: Any = (
        mgmt(server, subscription)
        .event_subscriptions.begin_create_or_update(
            scope,
            name,
            EventSubscription(
                destination=WebHookEventSubscriptionDestination(endpoint_url=f"{webhook.url}/{name}"),
                filter=EventSubscriptionFilter(
                    included_event_types=types,
                    advanced_filters=advanced,
                    subject_begins_with=subject_begins_with,
                ),
                event_delivery_schema=schema,
            ),
        )
        .result()
    )
    assert created.provisioning_state == "Succeeded"


def _deliveries_by_subscription(server: CallgridServer) -> Counter[str]:
    """Deliveries are queued in the transaction that raises the event: what is not here was not matched."""
    rows = server.client().request("GET", "/callgrid/v1/deliveries?limit=1000")["value"]
    return Counter(row["subscriptionId"].rsplit("/", 1)[-1] for row in rows if row["kind"] == "eventgrid")


def _posts(webhook: WebhookReceiver, name: str) -> list[dict[str, Any]]:
    return [
        r.body
        for r in webhook.received
        if r.method == "POST" and r.path == f"/{name}" and r.header("aeg-event-type") == "Notification"
    ]


def _at_least(webhook: WebhookReceiver, name: str, count: int) -> list[dict[str, Any]]:
    found = _posts(webhook, name)
    return found if len(found) >= count else []


def test_acs_events_to_a_cloud_events_subscription_filter_on_cloud_event_attributes(
    callgrid: CallgridServer, webhook: WebhookReceiver
) -> None:
    scope = callgrid.resource_id
    source = scope.lower()
    incoming = [INCOMING_CALL]
    subscriptions: dict[str, dict[str, Any]] = {
        "ce-type": {"advanced": [StringInAdvancedFilter(key="type", values=[INCOMING_CALL])]},
        "ce-eventtype": {"advanced": [StringInAdvancedFilter(key="eventType", values=[INCOMING_CALL])]},
        "ce-no-eventtype": {"types": incoming, "advanced": [IsNullOrUndefinedAdvancedFilter(key="eventType")]},
        "ce-no-topic": {"types": incoming, "advanced": [IsNotNullAdvancedFilter(key="topic")]},
        "ce-no-eventtime": {"types": incoming, "advanced": [IsNotNullAdvancedFilter(key="eventTime")]},
        "ce-attributes": {
            "types": incoming,
            "advanced": [
                StringInAdvancedFilter(key="source", values=[source]),
                StringInAdvancedFilter(key="specversion", values=["1.0"]),
                StringInAdvancedFilter(key="dataschema", values=["#1.0"]),
                IsNotNullAdvancedFilter(key="id"),
                IsNotNullAdvancedFilter(key="time"),
                StringBeginsWithAdvancedFilter(key="subject", values=["/phoneCall/caller/"]),
                StringInAdvancedFilter(key="Data.To.PhoneNumber.Value", values=[NUMBER]),
            ],
        },
        "ce-subject": {
            "types": ["microsoft.communication.incomingcall"],
            "subject_begins_with": f"/phoneCall/caller/{CALLER}/recipient/",
        },
        "ce-other-subject": {"types": incoming, "subject_begins_with": "/caller/"},
        "ce-other-type": {"types": ["Microsoft.Communication.CallEnded"]},
        "eg-eventtype": {
            "schema": "EventGridSchema",
            "advanced": [StringInAdvancedFilter(key="eventType", values=[INCOMING_CALL])],
        },
        "eg-topic": {
            "schema": "EventGridSchema",
            "types": incoming,
            "advanced": [StringInAdvancedFilter(key="topic", values=[source])],
        },
        "eg-type": {
            "schema": "EventGridSchema",
            "advanced": [StringInAdvancedFilter(key="type", values=[INCOMING_CALL])],
        },
    }
    for name, options in subscriptions.items():
        _subscribe(callgrid, scope, webhook, name, **options)

    callgrid.own_number(NUMBER)
    callgrid.client().place_call(CALLER, NUMBER)

    delivered = {"ce-type", "ce-no-eventtype", "ce-attributes", "ce-subject", "eg-eventtype", "eg-topic"}
    counts = _deliveries_by_subscription(callgrid)
    assert {name for name in subscriptions if counts[name]} == delivered
    assert all(counts[name] == 1 for name in delivered)

    for name in delivered:
        [body] = webhook.wait_until(functools.partial(_posts, webhook, name))
        event = body[0] if isinstance(body, list) else body
        if name.startswith("ce-"):
            assert event["type"] == INCOMING_CALL and "eventType" not in event
            assert event["data"]["to"]["phoneNumber"]["value"] == NUMBER
        else:
            assert event["eventType"] == INCOMING_CALL


def test_cloud_events_topic_filters_on_attributes_and_extensions(
    callgrid: CallgridServer, webhook: WebhookReceiver
) -> None:
    topic = create_topic(callgrid, "ce-keys", CLOUD_EVENTS)
    created = "Contoso.Order.Created"
    subscriptions: dict[str, dict[str, Any]] = {
        "by-type": {"advanced": [StringInAdvancedFilter(key="type", values=[created])]},
        # Only an event with an extension attribute of that very name has the key.
        "by-eventtype": {"advanced": [StringInAdvancedFilter(key="eventType", values=[created])]},
        "by-extension": {"advanced": [StringInAdvancedFilter(key="tenant", values=["T1"])]},
        "by-source": {"advanced": [StringBeginsWithAdvancedFilter(key="source", values=["/contoso/"])]},
        "included": {"types": [created]},
        "by-subject": {"types": [created], "subject_begins_with": "/orders/"},
    }
    for name, options in subscriptions.items():
        _subscribe(callgrid, topic.id, webhook, name, subscription=SUBSCRIPTION, **options)

    client = EventGridPublisherClient(topic.endpoint, AzureKeyCredential(topic_key(callgrid, "ce-keys")))
    client.send(
        [
            CloudEvent(
                source="/contoso/orders", type=created, subject="/orders/1", data={"n": 1}, extensions={"tenant": "t1"}
            ),
            CloudEvent(
                source="/fabrikam",
                type=created,
                subject="/invoices/2",
                data={"n": 2},
                extensions={"eventtype": created},
            ),
            CloudEvent(source="/contoso/orders", type="Contoso.Order.Deleted", data={"n": 3}),
        ]
    )

    expected = {
        "by-type": [1, 2],
        "by-eventtype": [2],
        "by-extension": [1],
        "by-source": [1, 3],
        "included": [1, 2],
        "by-subject": [1],
    }
    for name, numbers in expected.items():
        received = webhook.wait_until(functools.partial(_at_least, webhook, name, len(numbers)))
        assert sorted(e["data"]["n"] for e in received) == numbers, name
    assert sum(_deliveries_by_subscription(callgrid).values()) == sum(len(n) for n in expected.values())
