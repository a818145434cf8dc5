"""Custom topics with inputSchema CustomEventSchema (eventgrid.md 1.5): arbitrary JSON published with
EventGridPublisherClient (plain dicts), mapped to the Event Grid envelope for filtering, and delivered in
each of the three delivery schemas; the mapping's validation at create time and at publish time."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError
from azure.eventgrid import EventGridPublisherClient
from azure.mgmt.eventgrid.models import JsonField, JsonFieldWithDefault, JsonInputSchemaMapping, Topic

from callgrid.testing import CallgridServer, WebhookReceiver
from tests.eventgrid.mgmt import GROUP, SUBSCRIPTION, mgmt, topic_key
from tests.eventgrid.rest import headers, topic_id
from tests.eventgrid.test_custom_topic_publish import posts, subscribe

MAPPING = JsonInputSchemaMapping(
    id=JsonField(source_field="orderId"),
    event_time=JsonField(source_field="placedAt"),
    event_type=JsonFieldWithDefault(source_field="kind", default_value="Contoso.Order"),
    subject=JsonFieldWithDefault(source_field="store"),
    data_version=JsonFieldWithDefault(default_value="3.0"),
)


def custom_topic(server: CallgridServer, name: str) -> Any:
    return (
        mgmt(server, SUBSCRIPTION)
        .topics.begin_create_or_update(
            GROUP, name, Topic(location="westus", input_schema="CustomEventSchema", input_schema_mapping=MAPPING)
        )
        .result()
    )


def test_custom_events_are_mapped_filtered_and_delivered_in_each_schema(
    fresh: CallgridServer, webhook: WebhookReceiver
) -> None:
    topic = custom_topic(fresh, "custom-orders")
    assert topic.input_schema == "CustomEventSchema"
    assert topic.input_schema_mapping.event_type.source_field == "kind"
    cloud = WebhookReceiver()
    raw = WebhookReceiver()
    try:
        big_orders = {"advancedFilters": [{"operatorType": "NumberGreaterThan", "key": "data.total", "value": 100}]}
        subscribe(fresh, "custom-orders", "eg-app", webhook.url, filter=big_orders)
        subscribe(fresh, "custom-orders", "ce-app", cloud.url, eventDeliverySchema="CloudEventSchemaV1_0")
        subscribe(fresh, "custom-orders", "raw-app", raw.url, eventDeliverySchema="CustomInputSchema")
        orders = [
            {
                "orderId": "A-1",
                "placedAt": "2025-03-01T10:00:00Z",
                "kind": "Contoso.Big",
                "store": "/s/9",
                "total": 250,
            },
            {"orderId": "A-2", "total": 5, "lines": [1, 2]},
        ]
        client = EventGridPublisherClient(topic.endpoint, AzureKeyCredential(topic_key(fresh, "custom-orders")))
        client.send(orders)

        # EventGridSchema: the mapped envelope, the whole original event as data; the filter read data.total.
        [big] = webhook.wait_until(lambda: webhook.events())
        assert big == {
            "id": "A-1",
            "topic": topic.id,
            "subject": "/s/9",
            "eventType": "Contoso.Big",
            "eventTime": "2025-03-01T10:00:00Z",
            "dataVersion": "3.0",
            "metadataVersion": "1",
            "data": orders[0],
        }
        # CloudEvents: mapped from the envelope; defaults fill what the event lacks.
        delivered = cloud.wait_until(lambda: [p.body for p in posts(cloud)] if len(posts(cloud)) == 2 else None)
        small = next(e for e in delivered if e["id"] == "A-2")
        assert small["type"] == "Contoso.Order" and small["subject"] == "" and small["source"] == topic.id
        assert small["data"] == orders[1]
        # CustomInputSchema: the original events, verbatim.
        bodies = raw.wait_until(lambda: [p.body for p in posts(raw)] if len(posts(raw)) == 2 else None)
        assert sorted((e for b in bodies for e in b), key=lambda e: e["orderId"]) == orders
    finally:
        cloud.close()
        raw.close()


def test_custom_schema_publish_and_create_errors(fresh: CallgridServer) -> None:
    topic = custom_topic(fresh, "custom-strict")
    key = topic_key(fresh, "custom-strict")
    client = EventGridPublisherClient(topic.endpoint, AzureKeyCredential(key))
    with pytest.raises(HttpResponseError) as bad_time:
        client.send([{"orderId": "1", "placedAt": "yesterday"}])
    assert bad_time.value.status_code == 400

    def put_topic(name: str, properties: dict[str, Any]) -> requests.Response:
        return requests.put(
            f"{fresh.endpoint}{topic_id(name)}?api-version=2025-02-15",
            json={"location": "westus", "properties": properties},
            headers=headers(fresh),
        )

    no_mapping = put_topic("custom-bad", {"inputSchema": "CustomEventSchema"})
    assert no_mapping.status_code == 400 and "inputSchemaMapping" in no_mapping.json()["error"]["message"]
    no_type = put_topic(
        "custom-untyped",
        {
            "inputSchema": "CustomEventSchema",
            "inputSchemaMapping": {"inputSchemaMappingType": "Json", "properties": {"id": {"sourceField": "n"}}},
        },
    )
    assert no_type.status_code == 201
    untyped_key = topic_key(fresh, "custom-untyped")
    response = requests.post(
        no_type.json()["properties"]["endpoint"],
        json=[{"n": "1"}],
        headers={"aeg-sas-key": untyped_key},
        verify=fresh.ca_bundle,
    )
    assert response.status_code == 400 and "event type" in response.json()["error"]["message"]
    unknown_field = put_topic(
        "custom-odd",
        {
            "inputSchema": "CustomEventSchema",
            "inputSchemaMapping": {"inputSchemaMappingType": "Json", "properties": {"colour": {"sourceField": "c"}}},
        },
    )
    assert unknown_field.status_code == 400
    mapping_elsewhere = put_topic(
        "plain-with-mapping",
        {"inputSchema": "EventGridSchema", "inputSchemaMapping": {"inputSchemaMappingType": "Json"}},
    )
    assert mapping_elsewhere.status_code == 400


def test_event_grid_topics_still_refuse_custom_input_delivery(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    from tests.eventgrid.mgmt import create_topic
    from tests.eventgrid.rest import put, topic_subscription_url, webhook_properties

    create_topic(fresh, "eg-only")
    response = put(
        fresh,
        topic_subscription_url(fresh, "eg-only", "raw-app"),
        webhook_properties(webhook.url, eventDeliverySchema="CustomInputSchema"),
    )
    assert response.status_code == 400
