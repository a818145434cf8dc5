"""Event subscriptions, system topics and custom topics through azure-mgmt-eventgrid 10.x, unchanged:
its paths, status codes and LRO polling (Azure-AsyncOperation) against a real callgrid process."""

from __future__ import annotations

from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.eventgrid.models import (
    AzureFunctionEventSubscriptionDestination,
    EventSubscription,
    EventSubscriptionFilter,
    EventSubscriptionUpdateParameters,
    RetryPolicy,
    StorageBlobDeadLetterDestination,
    StringInAdvancedFilter,
    SystemTopic,
    TopicRegenerateKeyRequest,
    WebHookEventSubscriptionDestination,
)

from callgrid.testing import CallgridServer, WebhookReceiver
from tests.eventgrid.mgmt import GROUP, SUBSCRIPTION, create_topic, mgmt, resource_group

INCOMING_CALL = "Microsoft.Communication.IncomingCall"


def webhook_subscription(url: str, **kwargs: object) -> EventSubscription:
    kwargs.setdefault("filter", EventSubscriptionFilter(included_event_types=[INCOMING_CALL]))
    return EventSubscription(destination=WebHookEventSubscriptionDestination(endpoint_url=url), **kwargs)  # type: ignore[arg-type]


def handshakes(webhook: WebhookReceiver) -> int:
    return sum(1 for r in webhook.received if r.header("aeg-event-type") == "SubscriptionValidation")


def test_extension_subscription_lifecycle(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    client = mgmt(fresh)
    ops = client.event_subscriptions
    url = webhook.url + "/hook?code=s3cret"
    created: Any = ops.begin_create_or_update(
        fresh.resource_id,
        "ext-sub",
        webhook_subscription(
            url,
            labels=["a", "b"],
            retry_policy=RetryPolicy(max_delivery_attempts=2, event_time_to_live_in_minutes=1),
            dead_letter_destination=StorageBlobDeadLetterDestination(
                resource_id="/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct",
                blob_container_name="deadletters",
            ),
        ),
    ).result()
    assert created.provisioning_state == "Succeeded"
    assert created.labels == ["a", "b"]
    assert created.destination.endpoint_url is None  # write-only
    assert created.destination.endpoint_base_url == webhook.url + "/hook"
    assert created.retry_policy.max_delivery_attempts == 2
    assert created.dead_letter_destination.blob_container_name == "deadletters"
    assert created.topic.lower() == fresh.resource_id.lower()
    assert ops.get_full_url(fresh.resource_id, "ext-sub").endpoint_url == url

    provider, type_name, name = "Microsoft.Communication", "communicationServices", fresh.resource_id.split("/")[-1]
    listed = list(ops.list_by_resource(resource_group(fresh), provider, type_name, name))
    assert [s.name for s in listed] == ["ext-sub"]

    # An update handshakes again before it takes effect.
    before = handshakes(webhook)
    updated = ops.begin_update(fresh.resource_id, "ext-sub", EventSubscriptionUpdateParameters(labels=["c"])).result()
    assert updated.labels == ["c"] and updated.provisioning_state == "Succeeded"
    assert handshakes(webhook) == before + 1

    ops.begin_delete(fresh.resource_id, "ext-sub").result()
    with pytest.raises(ResourceNotFoundError):
        ops.get(fresh.resource_id, "ext-sub")


def test_system_topic_and_its_subscriptions_receive_incoming_calls(
    fresh: CallgridServer, webhook: WebhookReceiver
) -> None:
    client = mgmt(fresh)
    rg = resource_group(fresh)
    topic = client.system_topics.begin_create_or_update(
        rg,
        "acs-events",
        SystemTopic(
            location="global", source=fresh.resource_id, topic_type="Microsoft.Communication.CommunicationServices"
        ),
    ).result()
    assert topic.provisioning_state == "Succeeded"
    assert client.system_topics.get(rg, "acs-events").source == fresh.resource_id
    assert [t.name for t in client.system_topics.list_by_resource_group(rg)] == ["acs-events"]

    ops = client.system_topic_event_subscriptions
    sub: Any = ops.begin_create_or_update(
        rg,
        "acs-events",
        "router",
        webhook_subscription(
            webhook.url + "/events",
            filter=EventSubscriptionFilter(
                included_event_types=[INCOMING_CALL],
                advanced_filters=[StringInAdvancedFilter(key="data.to.PhoneNumber.Value", values=["+14255551212"])],
            ),
        ),
    ).result()
    assert sub.provisioning_state == "Succeeded"
    assert sub.type == "Microsoft.EventGrid/systemTopics/eventSubscriptions"
    assert sub.topic.endswith("/systemTopics/acs-events")
    assert ops.get_full_url(rg, "acs-events", "router").endpoint_url == webhook.url + "/events"
    assert [s.name for s in ops.list_by_system_topic(rg, "acs-events")] == ["router"]

    calls = fresh.client()
    calls.own_number("+14255551212")
    calls.own_number("+14255550000")
    calls.place_call("+12065550100", "+14255550000")  # filtered out
    placed = calls.place_call("+12065550100", "+14255551212")
    events = webhook.wait_until(lambda: webhook.events(INCOMING_CALL))
    assert [e["data"]["serverCallId"] for e in events] == [placed["serverCallId"]]

    ops.begin_delete(rg, "acs-events", "router").result()
    with pytest.raises(ResourceNotFoundError):
        ops.get(rg, "acs-events", "router")
    client.system_topics.begin_delete(rg, "acs-events").result()
    with pytest.raises(ResourceNotFoundError):
        client.system_topics.get(rg, "acs-events")


def test_system_topic_must_name_the_communication_resource(fresh: CallgridServer) -> None:
    client = mgmt(fresh)
    with pytest.raises(HttpResponseError) as error:
        client.system_topics.begin_create_or_update(
            resource_group(fresh),
            "other",
            SystemTopic(
                location="global",
                source="/subscriptions/x/resourceGroups/y/providers/Microsoft.Storage/storageAccounts/z",
                topic_type="Microsoft.Storage.StorageAccounts",
            ),
        ).result()
    assert error.value.status_code == 400


def test_custom_topic_lifecycle_with_keys(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    client = mgmt(fresh, SUBSCRIPTION)
    topic = create_topic(fresh, "orders")
    assert (
        topic.id == f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.EventGrid/topics/orders"
    )
    assert topic.endpoint == f"{fresh.endpoint}/eventgrid/topics/orders/api/events"
    assert topic.input_schema == "EventGridSchema"
    keys = client.topics.list_shared_access_keys(GROUP, "orders")
    assert keys.key1 and keys.key2 and keys.key1 != keys.key2
    regenerated = client.topics.begin_regenerate_key(
        GROUP, "orders", TopicRegenerateKeyRequest(key_name="key2")
    ).result()
    assert regenerated.key1 == keys.key1 and regenerated.key2 != keys.key2
    assert [t.name for t in client.topics.list_by_resource_group(GROUP)] == ["orders"]
    assert [t.name for t in client.topics.list_by_subscription()] == ["orders"]

    ops = client.topic_event_subscriptions
    sub: Any = ops.begin_create_or_update(
        GROUP,
        "orders",
        "orders-app",
        EventSubscription(destination=WebHookEventSubscriptionDestination(endpoint_url=webhook.url)),
    ).result()
    assert sub.provisioning_state == "Succeeded" and sub.topic == topic.id
    assert [s.name for s in ops.list(GROUP, "orders")] == ["orders-app"]

    client.topics.begin_delete(GROUP, "orders").result()
    with pytest.raises(ResourceNotFoundError):
        client.topics.get(GROUP, "orders")
    with pytest.raises(ResourceNotFoundError):
        ops.get(GROUP, "orders", "orders-app")


def test_azure_function_destination_needs_no_handshake(fresh: CallgridServer) -> None:
    ops = mgmt(fresh).event_subscriptions
    function_id = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/my-app/functions/OnIncomingCall"
    sub: Any = ops.begin_create_or_update(
        fresh.resource_id,
        "to-function",
        EventSubscription(
            destination=AzureFunctionEventSubscriptionDestination(resource_id=function_id, max_events_per_batch=10)
        ),
    ).result()
    assert sub.provisioning_state == "Succeeded"
    assert sub.destination.resource_id == function_id
    assert sub.destination.max_events_per_batch == 10
    full = ops.get_full_url(fresh.resource_id, "to-function").endpoint_url
    assert full == "http://127.0.0.1:7071/runtime/webhooks/EventGrid?functionName=OnIncomingCall"


def test_failed_handshake_fails_the_operation(fresh: CallgridServer) -> None:
    refusing = WebhookReceiver(validate=False, responder=lambda r: (500, None))
    try:
        ops = mgmt(fresh).event_subscriptions
        with pytest.raises(HttpResponseError) as error:
            ops.begin_create_or_update(fresh.resource_id, "refused", webhook_subscription(refusing.url)).result()
        assert "Url validation" in str(error.value)
        assert "response code 500" in str(error.value)
        assert ops.get(fresh.resource_id, "refused").provisioning_state == "Failed"
    finally:
        refusing.close()


def test_extension_subscription_on_a_custom_topic(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    from azure.core.credentials import AzureKeyCredential
    from azure.eventgrid import EventGridEvent, EventGridPublisherClient

    from tests.eventgrid.mgmt import topic_key

    topic = create_topic(fresh, "scoped-orders")
    ops = mgmt(fresh, SUBSCRIPTION).event_subscriptions
    created: Any = ops.begin_create_or_update(
        topic.id,
        "topic-ext",
        webhook_subscription(webhook.url, filter=EventSubscriptionFilter(subject_begins_with="/orders")),
    ).result()
    assert created.provisioning_state == "Succeeded"
    assert created.type == "Microsoft.EventGrid/eventSubscriptions"
    assert created.topic.lower() == topic.id.lower()
    assert created.id.lower() == f"{topic.id}/providers/Microsoft.EventGrid/eventSubscriptions/topic-ext".lower()
    listed = list(ops.list_by_resource(GROUP, "Microsoft.EventGrid", "topics", "scoped-orders"))
    assert [s.name for s in listed] == ["topic-ext"]

    EventGridPublisherClient(topic.endpoint, AzureKeyCredential(topic_key(fresh, "scoped-orders"))).send(
        [
            EventGridEvent(subject=s, event_type="Contoso.Order", data={"n": i}, data_version="1")
            for i, s in enumerate(("/orders/1", "/invoices/1"))
        ]
    )
    [event] = webhook.wait_until(lambda: webhook.events("Contoso.Order"))
    assert event["subject"] == "/orders/1" and event["topic"] == topic.id

    # Deleting the topic takes its extension subscriptions along.
    mgmt(fresh, SUBSCRIPTION).topics.begin_delete(GROUP, "scoped-orders").result()
    create_topic(fresh, "scoped-orders")  # a new topic of the same name starts with none
    with pytest.raises(ResourceNotFoundError):
        ops.get(topic.id, "topic-ext")


def test_extension_subscription_on_a_missing_custom_topic_is_not_found(fresh: CallgridServer) -> None:
    ops = mgmt(fresh, SUBSCRIPTION).event_subscriptions
    missing = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.EventGrid/topics/nothing-here"
    with pytest.raises(ResourceNotFoundError):
        ops.begin_create_or_update(missing, "x-sub", webhook_subscription("http://127.0.0.1:9/")).result()
