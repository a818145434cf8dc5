"""Custom topics published to with azure-eventgrid's EventGridPublisherClient (key and SAS), both input
schemas, delivered in the subscription's schema; and the publish-time checks of eventgrid.md 1.1."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from azure.core.credentials import AzureKeyCredential, AzureSasCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent, EventGridPublisherClient, generate_sas

from callgrid.testing import CallgridServer, WebhookReceiver
from tests.eventgrid.mgmt import create_topic, topic_key
from tests.eventgrid.rest import put, topic_subscription_url, wait_state, webhook_properties


def subscribe(server: CallgridServer, topic: str, name: str, url: str, **extra: Any) -> None:
    response = put(server, topic_subscription_url(server, topic, name), webhook_properties(url, **extra))
    assert response.status_code == 201, response.text
    assert (
        wait_state(server, topic_subscription_url(server, topic, name))["properties"]["provisioningState"]
        == "Succeeded"
    )


def order_event(event_id: str = "o-1") -> EventGridEvent:
    return EventGridEvent(
        subject="/orders/42",
        event_type="Contoso.Order.Created",
        data={"amount": 150.5},
        data_version="2.0",
        id=event_id,
    )


def posts(webhook: WebhookReceiver) -> list[Any]:
    return [r for r in webhook.received if r.method == "POST" and r.header("aeg-event-type") == "Notification"]


def test_event_grid_events_with_a_key_are_delivered(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    topic = create_topic(fresh, "orders")
    subscribe(fresh, "orders", "app", webhook.url)
    EventGridPublisherClient(topic.endpoint, AzureKeyCredential(topic_key(fresh, "orders"))).send([order_event()])
    [event] = webhook.wait_until(lambda: webhook.events("Contoso.Order.Created"))
    assert event["id"] == "o-1" and event["data"] == {"amount": 150.5}
    assert event["topic"] == topic.id
    assert event["dataVersion"] == "2.0" and event["metadataVersion"] == "1"


def test_sas_token_publish_and_event_grid_to_cloud_events(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    topic = create_topic(fresh, "orders-ce-out")
    subscribe(fresh, "orders-ce-out", "ce-app", webhook.url, eventDeliverySchema="CloudEventSchemaV1_0")
    token = generate_sas(topic.endpoint, topic_key(fresh, "orders-ce-out"), datetime.now(UTC) + timedelta(hours=1))
    EventGridPublisherClient(topic.endpoint, AzureSasCredential(token)).send(order_event("o-2"))
    [delivery] = webhook.wait_until(lambda: posts(webhook))
    assert delivery.header(
        "Content-Type",
    ).startswith("application/cloudevents+json")
    assert delivery.body["type"] == "Contoso.Order.Created"
    assert delivery.body["id"] == "o-2" and delivery.body["source"] == topic.id


def test_cloud_events_topic_delivers_cloud_events(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    topic = create_topic(fresh, "ce-topic", "CloudEventSchemaV1_0")
    subscribe(fresh, "ce-topic", "ce-app", webhook.url, eventDeliverySchema="CloudEventSchemaV1_0")
    client = EventGridPublisherClient(topic.endpoint, AzureKeyCredential(topic_key(fresh, "ce-topic")))
    client.send(
        [CloudEvent(source="/contoso/orders", type="Contoso.Order.Created", data={"n": 1}, extensions={"tenant": "t1"})]
    )
    [delivery] = webhook.wait_until(lambda: posts(webhook))
    assert delivery.body["source"] == "/contoso/orders" and delivery.body["tenant"] == "t1"
    assert delivery.body["data"] == {"n": 1} and delivery.body["specversion"] == "1.0"


def test_cloud_events_topic_refuses_event_grid_subscriptions(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    create_topic(fresh, "ce-only", "CloudEventSchemaV1_0")
    response = put(fresh, topic_subscription_url(fresh, "ce-only", "eg-app"), webhook_properties(webhook.url))
    assert response.status_code == 400
    assert "EventGridSchema" in response.json()["error"]["message"]


def test_publish_errors(fresh: CallgridServer) -> None:
    topic = create_topic(fresh, "strict")
    key = topic_key(fresh, "strict")
    with pytest.raises(ClientAuthenticationError):
        EventGridPublisherClient(topic.endpoint, AzureKeyCredential("d3Jvbmc=")).send([order_event()])
    expired = generate_sas(topic.endpoint, key, datetime.now(UTC) - timedelta(minutes=1))
    with pytest.raises(ClientAuthenticationError):
        EventGridPublisherClient(topic.endpoint, AzureSasCredential(expired)).send([order_event()])
    with pytest.raises(ResourceNotFoundError):
        EventGridPublisherClient(topic.endpoint.replace("strict", "nosuch"), AzureKeyCredential(key)).send(
            [order_event()]
        )
    client = EventGridPublisherClient(topic.endpoint, AzureKeyCredential(key))
    with pytest.raises(HttpResponseError) as too_large:
        client.send([EventGridEvent(subject="s", event_type="t", data={"blob": "x" * (1024 * 1024)}, data_version="1")])
    assert too_large.value.status_code == 413
    with pytest.raises(HttpResponseError) as wrong_schema:
        client.send([CloudEvent(source="/x", type="t", data={})])
    assert wrong_schema.value.status_code == 400

    def raw(body: Any) -> requests.Response:
        return requests.post(topic.endpoint, json=body, headers={"aeg-sas-key": key}, verify=fresh.ca_bundle)

    missing_type = raw([{"id": "1", "subject": "s", "eventTime": "2024-05-01T10:00:00Z", "data": {}}])
    assert missing_type.status_code == 400 and "eventType" in missing_type.json()["error"]["message"]
    too_many = raw(
        [{"id": str(i), "subject": "", "eventType": "t", "eventTime": "2024-05-01T10:00:00Z"} for i in range(5001)]
    )
    assert too_many.status_code == 400
    wrong_topic = raw(
        [{"id": "1", "subject": "", "eventType": "t", "eventTime": "2024-05-01T10:00:00Z", "topic": "/other"}]
    )
    assert wrong_topic.status_code == 400
