"""Bad subscription bodies get ARM's 400 error shape at PUT time (eventgrid.md 2, 3.7), vectors 78-80."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from callgrid.testing import CallgridServer
from tests.eventgrid.rest import extension_url, headers, put, webhook_properties

HOOK = "http://127.0.0.1:9/hook"


def string_in(count: int) -> dict[str, Any]:
    return {"operatorType": "StringIn", "key": "data.k", "values": [f"v{i}" for i in range(count)]}


STORAGE = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/deadacct"
BLOB = {"blobContainerName": "dead-letters"}

BAD: list[tuple[str, dict[str, Any], str]] = [
    ("v78-26-filters", {"filter": {"advancedFilters": [string_in(1) for _ in range(26)]}}, "26 advanced filters"),
    ("v79-26-values", {"filter": {"advancedFilters": [string_in(13), string_in(13)]}}, "26 values"),
    (
        "v80-513-chars",
        {"filter": {"advancedFilters": [{"operatorType": "StringIn", "key": "data.k", "values": ["x" * 513]}]}},
        "512",
    ),
    (
        "unknown-operator",
        {"filter": {"advancedFilters": [{"operatorType": "StringLike", "key": "data.k", "values": ["x"]}]}},
        "StringLike",
    ),
    ("custom-input-on-system-topic", {"eventDeliverySchema": "CustomInputSchema"}, "CustomInputSchema"),
    ("unknown-schema", {"eventDeliverySchema": "Avro"}, "eventDeliverySchema"),
    (
        "batch-too-big",
        {"destination": {"endpointType": "WebHook", "properties": {"endpointUrl": HOOK, "maxEventsPerBatch": 5001}}},
        "maxEventsPerBatch",
    ),
    (
        "batch-kb-zero",
        {
            "destination": {
                "endpointType": "WebHook",
                "properties": {"endpointUrl": HOOK, "preferredBatchSizeInKilobytes": 0},
            }
        },
        "preferredBatchSizeInKilobytes",
    ),
    ("retry-31", {"retryPolicy": {"maxDeliveryAttempts": 31}}, "maxDeliveryAttempts"),
    ("ttl-1441", {"retryPolicy": {"eventTimeToLiveInMinutes": 1441}}, "eventTimeToLiveInMinutes"),
    ("dead-letter-queue", {"deadLetterDestination": {"endpointType": "StorageQueue", "properties": {}}}, "StorageBlob"),
    (
        "dead-letter-no-container",
        {"deadLetterDestination": {"endpointType": "StorageBlob", "properties": {"resourceId": STORAGE}}},
        "blobContainerName",
    ),
    *(
        (
            f"dead-letter-{label}",
            {"deadLetterDestination": {"endpointType": "StorageBlob", "properties": {"resourceId": rid, **BLOB}}},
            "resourceId",
        )
        for label, rid in [
            ("dotdot", "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/.."),
            ("dotdot-tail", STORAGE + "/.."),
            ("not-storage", "/x"),
            ("short-name", STORAGE.replace("deadacct", "ab")),
            ("long-name", STORAGE.replace("deadacct", "a" * 25)),
            ("hyphen-name", STORAGE.replace("deadacct", "dead-acct")),
            ("web-site", "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/deadacct"),
        ]
    ),
    *(
        (
            f"dead-letter-container-{label}",
            {
                "deadLetterDestination": {
                    "endpointType": "StorageBlob",
                    "properties": {"resourceId": STORAGE, "blobContainerName": container},
                }
            },
            "blobContainerName",
        )
        for label, container in [
            ("dotdot", ".."),
            ("slash", "../../etc"),
            ("upper", "Letters"),
            ("double-hyphen", "dead--letters"),
            ("newline", "letters\n"),
            ("short", "ab"),
            ("long", "a" * 64),
        ]
    ),
    (
        "relative-url",
        {"destination": {"endpointType": "WebHook", "properties": {"endpointUrl": "/hook"}}},
        "endpointUrl",
    ),
    (
        "service-bus",
        {"destination": {"endpointType": "ServiceBusQueue", "properties": {"resourceId": "/x"}}},
        "ServiceBusQueue",
    ),
    (
        "function-id",
        {"destination": {"endpointType": "AzureFunction", "properties": {"resourceId": "/not/a/function"}}},
        "resourceId",
    ),
    ("labels", {"labels": "a"}, "labels"),
]


@pytest.mark.parametrize(("case", "override", "mentions"), BAD, ids=[b[0] for b in BAD])
def test_bad_subscription_is_a_400_in_arm_shape(
    fresh: CallgridServer, case: str, override: dict[str, Any], mentions: str
) -> None:
    response = put(fresh, extension_url(fresh, "bad-sub"), {**webhook_properties(HOOK), **override})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "InvalidRequest"
    assert mentions in error["message"]
    assert requests.get(extension_url(fresh, "bad-sub"), headers=headers(fresh)).status_code == 404  # nothing half-made


def test_bad_names(fresh: CallgridServer) -> None:
    assert put(fresh, extension_url(fresh, "ab"), webhook_properties(HOOK)).status_code == 400
    assert put(fresh, extension_url(fresh, "a_b_c"), webhook_properties(HOOK)).status_code == 400
