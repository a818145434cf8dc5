"""Event subscriptions: the ARM resource, its validation, and its provisioning lifecycle.

Stored as the ARM JSON Azure would return, plus a private `callgrid` section (validation code,
async operation id, last error). Keys in the store are the lower-cased ARM ids: ARM ids are
case-insensitive.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from callgrid.clock import Clock, iso7
from callgrid.errors import InvalidRequest, NotFound
from callgrid.eventgrid.filters import CompiledFilter, InvalidFilter, compile_filter
from callgrid.store import StoreTx

API_VERSION = "2025-02-15"
EXTENSION_TYPE = "Microsoft.EventGrid/eventSubscriptions"
SYSTEM_TOPIC_TYPE = "Microsoft.EventGrid/systemTopics/eventSubscriptions"

DELIVERY_SCHEMAS = ("EventGridSchema", "CloudEventSchemaV1_0", "CustomInputSchema")
_NAME = re.compile(r"^[A-Za-z0-9-]{3,64}$")

# Provisioning states (eventgrid.md 2.1).
CREATING, UPDATING, SUCCEEDED, FAILED, AWAITING = (
    "Creating",
    "Updating",
    "Succeeded",
    "Failed",
    "AwaitingManualAction",
)
PENDING_VALIDATION = (CREATING, UPDATING)


@dataclass(frozen=True)
class ActiveSubscription:
    """What publishing needs of a subscription that may receive events."""

    id: str  # lower-cased ARM id
    name: str
    topic: str
    filter: CompiledFilter
    endpoint_url: str
    delivery_schema: str
    max_delivery_attempts: int
    event_ttl_minutes: int
    doc: dict[str, Any]


def _invalid(message: str) -> InvalidRequest:
    return InvalidRequest(message, code="InvalidRequest")


def _int_in(value: Any, lo: int, hi: int, name: str, default: int) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise _invalid(f"{name} must be an integer between {lo} and {hi}.")
    return value


def validate_properties(body: Any, *, topic_is_system: bool) -> dict[str, Any]:
    """Validate a PUT body as ARM does and return its normalised `properties`."""
    if not isinstance(body, dict):
        raise _invalid("The request body must be a JSON object with a 'properties' object.")
    props = body.get("properties")
    if not isinstance(props, dict):
        raise _invalid("The request body must have a 'properties' object.")
    destination = props.get("destination")
    if not isinstance(destination, dict):
        raise _invalid("properties.destination is required.")
    endpoint_type = destination.get("endpointType")
    if endpoint_type != "WebHook":
        raise _invalid(f"Destination endpointType '{endpoint_type}' is not supported by callgrid yet; use 'WebHook'.")
    dest_props = destination.get("properties")
    if not isinstance(dest_props, dict):
        raise _invalid("properties.destination.properties is required.")
    url = dest_props.get("endpointUrl")
    if not isinstance(url, str) or not url:
        raise _invalid("properties.destination.properties.endpointUrl is required for a WebHook destination.")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        # Azure demands https; a local emulator also accepts http, the way local apps listen.
        raise _invalid(f"endpointUrl '{url}' must be an absolute http(s) URL.")
    max_batch = _int_in(dest_props.get("maxEventsPerBatch"), 1, 5000, "maxEventsPerBatch", 1)
    batch_kb = _int_in(dest_props.get("preferredBatchSizeInKilobytes"), 1, 1024, "preferredBatchSizeInKilobytes", 64)
    schema = props.get("eventDeliverySchema") or "EventGridSchema"
    if schema not in DELIVERY_SCHEMAS:
        raise _invalid(f"eventDeliverySchema must be one of {', '.join(DELIVERY_SCHEMAS)}.")
    if topic_is_system and schema == "CustomInputSchema":
        raise _invalid("CustomInputSchema cannot be used with a system topic; its events are EventGridSchema.")
    if schema == "CloudEventSchemaV1_0":
        raise _invalid("CloudEventSchemaV1_0 delivery is not supported by callgrid yet; use EventGridSchema.")
    retry = props.get("retryPolicy") or {}
    if not isinstance(retry, dict):
        raise _invalid("retryPolicy must be an object.")
    max_attempts = _int_in(retry.get("maxDeliveryAttempts"), 1, 30, "retryPolicy.maxDeliveryAttempts", 30)
    ttl = _int_in(retry.get("eventTimeToLiveInMinutes"), 1, 1440, "retryPolicy.eventTimeToLiveInMinutes", 1440)
    raw_filter = props.get("filter")
    try:
        compile_filter(raw_filter)
    except InvalidFilter as exc:
        raise _invalid(f"Invalid filter: {exc}") from None
    labels = props.get("labels")
    if labels is not None and (not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)):
        raise _invalid("labels must be a list of strings.")
    normalised: dict[str, Any] = {
        "destination": {
            "endpointType": "WebHook",
            "properties": {
                "endpointUrl": url,
                "endpointBaseUrl": urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")),
                "maxEventsPerBatch": max_batch,
                "preferredBatchSizeInKilobytes": batch_kb,
            },
        },
        "filter": _normalised_filter(raw_filter),
        "labels": labels or [],
        "eventDeliverySchema": schema,
        "retryPolicy": {"maxDeliveryAttempts": max_attempts, "eventTimeToLiveInMinutes": ttl},
    }
    for passthrough in ("expirationTimeUtc", "deadLetterDestination"):
        if props.get(passthrough) is not None:
            normalised[passthrough] = props[passthrough]
    for key in (
        "deliveryAttributeMappings",
        "azureActiveDirectoryTenantId",
        "azureActiveDirectoryApplicationIdOrUri",
    ):
        if dest_props.get(key) is not None:
            normalised["destination"]["properties"][key] = dest_props[key]
    return normalised


def _normalised_filter(raw: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"isSubjectCaseSensitive": False}
    if isinstance(raw, dict):
        result.update({k: v for k, v in raw.items() if v is not None})
    return result


def public_view(doc: dict[str, Any]) -> dict[str, Any]:
    """The resource as ARM shows it: no private section, and no secret endpoint URL."""
    view = {k: v for k, v in doc.items() if k != "callgrid"}
    props = dict(view["properties"])
    destination = dict(props["destination"])
    dest_props = {k: v for k, v in destination["properties"].items() if k != "endpointUrl"}
    destination["properties"] = dest_props
    props["destination"] = destination
    view["properties"] = props
    return view


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise _invalid(f"Event subscription name '{name}' is invalid: use 3 to 64 letters, digits or hyphens.")


def active_subscription(doc: dict[str, Any]) -> ActiveSubscription | None:
    props = doc["properties"]
    if props.get("provisioningState") != SUCCEEDED:
        return None
    return ActiveSubscription(
        id=doc["id"].lower(),
        name=doc["name"],
        topic=props["topic"],
        filter=compile_filter(props.get("filter")),
        endpoint_url=props["destination"]["properties"]["endpointUrl"],
        delivery_schema=props.get("eventDeliverySchema", "EventGridSchema"),
        max_delivery_attempts=props["retryPolicy"]["maxDeliveryAttempts"],
        event_ttl_minutes=props["retryPolicy"]["eventTimeToLiveInMinutes"],
        doc=doc,
    )


class SubscriptionService:
    """Create, update, read and delete event subscriptions; validation runs in `handshake.py`."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    async def put(
        self, tx: StoreTx, *, arm_id: str, name: str, topic: str, resource_type: str, body: Any
    ) -> tuple[dict[str, Any], bool]:
        check_name(name)
        properties = validate_properties(body, topic_is_system=True)
        existing = await tx.get_subscription(arm_id.lower())
        now = iso7(self._clock.now())
        operation_id = str(uuid.uuid4())
        state = UPDATING if existing else CREATING
        properties["topic"] = topic
        properties["provisioningState"] = state
        created_at = existing["systemData"]["createdAt"] if existing else now
        doc = {
            "id": arm_id,
            "name": name,
            "type": resource_type,
            "properties": properties,
            "systemData": {
                "createdBy": "callgrid-local-user",
                "createdByType": "User",
                "createdAt": created_at,
                "lastModifiedBy": "callgrid-local-user",
                "lastModifiedByType": "User",
                "lastModifiedAt": now,
            },
            "callgrid": {
                "validationCode": str(uuid.uuid4()),
                "operationId": operation_id,
                "operationStatus": "InProgress",
                "error": None,
                "validationRequestedAt": self._clock.now(),
            },
        }
        await tx.put_subscription(arm_id.lower(), doc)
        return doc, existing is None

    async def get(self, tx: StoreTx, arm_id: str) -> dict[str, Any]:
        doc = await tx.get_subscription(arm_id.lower())
        if doc is None:
            name = arm_id.rstrip("/").rsplit("/", 1)[-1]
            raise NotFound(f"The event subscription '{name}' was not found.", code="ResourceNotFound")
        return doc

    async def list(self, tx: StoreTx, scope_prefix: str) -> list[dict[str, Any]]:
        prefix = scope_prefix.lower()
        return [d for d in await tx.list_subscriptions() if d["id"].lower().startswith(prefix)]

    async def delete(self, tx: StoreTx, arm_id: str) -> bool:
        return await tx.delete_subscription(arm_id.lower())

    async def find_operation(self, tx: StoreTx, operation_id: str) -> dict[str, Any] | None:
        for doc in await tx.list_subscriptions():
            if doc["callgrid"]["operationId"] == operation_id:
                return doc
        return None

    async def complete_validation(
        self, tx: StoreTx, sub_id: str, *, code: str | None, error: str | None, awaiting_manual: bool = False
    ) -> dict[str, Any] | None:
        """Record a handshake's outcome; `code` must still be the current one (an update starts anew)."""
        doc = await tx.get_subscription(sub_id)
        if doc is None or (code is not None and doc["callgrid"]["validationCode"] != code):
            return None
        props = doc["properties"]
        if awaiting_manual:
            props["provisioningState"] = AWAITING
        elif error is None:
            props["provisioningState"] = SUCCEEDED
            doc["callgrid"]["operationStatus"] = "Succeeded"
        else:
            props["provisioningState"] = FAILED
            doc["callgrid"]["operationStatus"] = "Failed"
            doc["callgrid"]["error"] = error
        await tx.put_subscription(sub_id, doc)
        return doc
