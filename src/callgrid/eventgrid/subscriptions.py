"""Event subscriptions: the ARM resource, its validation, and its provisioning lifecycle.

Stored as the ARM JSON Azure would return, plus a private `callgrid` section (validation code,
async operation id, last error, the event source it listens to, its expiry). Keys in the store are
the lower-cased ARM ids: ARM ids are case-insensitive.

Destinations: `WebHook` (validated by a handshake, handshake.py) and `AzureFunction`, which Azure
reaches without a handshake (eventgrid.md 2.4). callgrid delivers to a function through its HTTP
webhook, `{azure_functions_url}/runtime/webhooks/EventGrid?functionName={function}` (what `func start`
serves); `{app}` in the base URL is replaced by the function app's name.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from callgrid.clock import Clock, iso7
from callgrid.errors import InvalidRequest, NotFound
from callgrid.eventgrid.delivery.attributes import validate_delivery_attribute_mappings
from callgrid.eventgrid.delivery.deadletter import is_container_name, storage_account
from callgrid.eventgrid.events import parse_time
from callgrid.eventgrid.filters import CompiledFilter, InvalidFilter, compile_filter
from callgrid.store import StoreTx

API_VERSION = "2025-02-15"
EXTENSION_TYPE = "Microsoft.EventGrid/eventSubscriptions"
SYSTEM_TOPIC_TYPE = "Microsoft.EventGrid/systemTopics/eventSubscriptions"
TOPIC_TYPE = "Microsoft.EventGrid/topics/eventSubscriptions"

EVENT_GRID_SCHEMA = "EventGridSchema"
CLOUD_EVENT_SCHEMA = "CloudEventSchemaV1_0"
CUSTOM_INPUT_SCHEMA = "CustomInputSchema"
CUSTOM_EVENT_SCHEMA = "CustomEventSchema"  # a topic's input schema; its output twin is CustomInputSchema
DELIVERY_SCHEMAS = (EVENT_GRID_SCHEMA, CLOUD_EVENT_SCHEMA, CUSTOM_INPUT_SCHEMA)
# Output schemas allowed per topic input schema (eventgrid.md 1.3).
_ALLOWED_OUTPUT = {
    EVENT_GRID_SCHEMA: (EVENT_GRID_SCHEMA, CLOUD_EVENT_SCHEMA),
    CLOUD_EVENT_SCHEMA: (CLOUD_EVENT_SCHEMA,),
    CUSTOM_EVENT_SCHEMA: DELIVERY_SCHEMAS,
}
_NAME = re.compile(r"^[A-Za-z0-9-]{3,64}\Z")
_FUNCTION_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Web/sites/(?P<app>[^/]+)"
    r"/functions/(?P<function>[^/]+)$",
    re.IGNORECASE,
)

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
    topic: str  # the ARM id shown as properties.topic
    source: str  # lower-cased id of the event source it listens to (the topic, or a system topic's source)
    filter: CompiledFilter
    endpoint_url: str
    delivery_schema: str
    max_delivery_attempts: int
    event_ttl_minutes: int
    expires_at: float | None
    doc: dict[str, Any]


def _invalid(message: str) -> InvalidRequest:
    return InvalidRequest(message, code="InvalidRequest")


def _int_in(value: Any, lo: int, hi: int, name: str, default: int) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise _invalid(f"{name} must be an integer between {lo} and {hi}.")
    return value


def _object(value: Any, name: str, *, required: bool = True) -> dict[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise _invalid(f"{name} {'is required and ' if value is None else ''}must be a JSON object.")
    return value


def function_url(base_url: str, resource_id: str) -> str:
    """The HTTP endpoint callgrid delivers to for an AzureFunction destination (module docstring)."""
    match = _FUNCTION_ID.match(resource_id)
    if match is None:
        raise _invalid(
            f"AzureFunction resourceId '{resource_id}' must look like /subscriptions/{{s}}/resourceGroups/{{rg}}"
            "/providers/Microsoft.Web/sites/{app}/functions/{function}."
        )
    base = base_url.rstrip("/").replace("{app}", match["app"])
    return f"{base}/runtime/webhooks/EventGrid?functionName={quote(match['function'], safe='')}"


def _destination(destination: Any, functions_url: str) -> dict[str, Any]:
    destination = _object(destination, "properties.destination")
    endpoint_type = destination.get("endpointType")
    dest_props = _object(destination.get("properties"), "properties.destination.properties")
    max_batch = _int_in(dest_props.get("maxEventsPerBatch"), 1, 5000, "maxEventsPerBatch", 1)
    batch_kb = _int_in(dest_props.get("preferredBatchSizeInKilobytes"), 1, 1024, "preferredBatchSizeInKilobytes", 64)
    out: dict[str, Any]
    if endpoint_type == "WebHook":
        url = dest_props.get("endpointUrl")
        if not isinstance(url, str) or not url:
            raise _invalid("properties.destination.properties.endpointUrl is required for a WebHook destination.")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            # Azure demands https; a local emulator also accepts http, the way local apps listen.
            raise _invalid(f"endpointUrl '{url}' must be an absolute http(s) URL.")
        out = {
            "endpointUrl": url,
            "endpointBaseUrl": urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")),
            "maxEventsPerBatch": max_batch,
            "preferredBatchSizeInKilobytes": batch_kb,
        }
        for key in (
            "azureActiveDirectoryTenantId",
            "azureActiveDirectoryApplicationIdOrUri",
            "minimumTlsVersionAllowed",
        ):
            if dest_props.get(key) is not None:
                out[key] = dest_props[key]
    elif endpoint_type == "AzureFunction":
        resource_id = dest_props.get("resourceId")
        if not isinstance(resource_id, str) or not resource_id:
            raise _invalid("properties.destination.properties.resourceId is required for an AzureFunction destination.")
        out = {
            "resourceId": resource_id,
            "maxEventsPerBatch": max_batch,
            "preferredBatchSizeInKilobytes": batch_kb,
            # Private: hidden by public_view like a webhook's URL; the delivery engine reads it.
            "endpointUrl": function_url(functions_url, resource_id),
        }
    else:
        raise _invalid(
            f"Destination endpointType '{endpoint_type}' is not supported by callgrid; "
            "use 'WebHook' or 'AzureFunction'."
        )
    mappings = validate_delivery_attribute_mappings(dest_props.get("deliveryAttributeMappings"))
    if mappings is not None:
        out["deliveryAttributeMappings"] = mappings
    return {"endpointType": endpoint_type, "properties": out}


def _dead_letter(value: Any) -> dict[str, Any]:
    dead_letter = _object(value, "properties.deadLetterDestination")
    if dead_letter.get("endpointType") != "StorageBlob":
        raise _invalid("deadLetterDestination.endpointType must be 'StorageBlob' (the only dead-letter destination).")
    props = _object(dead_letter.get("properties"), "deadLetterDestination.properties")
    resource_id = props.get("resourceId")
    container = props.get("blobContainerName")
    if not isinstance(resource_id, str) or not resource_id:
        raise _invalid("deadLetterDestination.properties.resourceId (the storage account's ARM id) is required.")
    if storage_account(resource_id) is None:
        raise _invalid(
            f"deadLetterDestination.properties.resourceId '{resource_id}' is not a storage account's id: "
            "/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}, "
            "the name 3 to 24 lower-case letters and digits."
        )
    if not isinstance(container, str) or not is_container_name(container):
        raise _invalid(
            "deadLetterDestination.properties.blobContainerName must be a container name: 3 to 63 lower-case "
            "letters, digits and single hyphens."
        )
    return {"endpointType": "StorageBlob", "properties": {"resourceId": resource_id, "blobContainerName": container}}


def validate_properties(
    body: Any,
    *,
    input_schema: str = EVENT_GRID_SCHEMA,
    now: float | None = None,
    functions_url: str = "http://127.0.0.1:7071",
) -> dict[str, Any]:
    """Validate a PUT body as ARM does and return its normalised `properties`.

    `input_schema` is the topic's (system topics: EventGridSchema); it decides the allowed
    `eventDeliverySchema` values. `now` (seconds) lets ARM's "expiration in the past" check run.
    """
    body = _object(body, "The request body")
    props = _object(body.get("properties"), "properties")
    if props.get("deliveryWithResourceIdentity") is not None or props.get("deadLetterWithResourceIdentity") is not None:
        raise _invalid("Managed-identity delivery (…WithResourceIdentity) is not supported by callgrid.")
    destination = _destination(props.get("destination"), functions_url)
    schema = props.get("eventDeliverySchema") or EVENT_GRID_SCHEMA
    if schema not in DELIVERY_SCHEMAS:
        raise _invalid(f"eventDeliverySchema must be one of {', '.join(DELIVERY_SCHEMAS)}.")
    if schema not in _ALLOWED_OUTPUT.get(input_schema, DELIVERY_SCHEMAS):
        raise _invalid(
            f"eventDeliverySchema '{schema}' cannot be used with a topic whose input schema is '{input_schema}'; "
            f"allowed: {', '.join(_ALLOWED_OUTPUT[input_schema])}."
        )
    retry = _object(props.get("retryPolicy"), "retryPolicy", required=False)
    max_attempts = _int_in(retry.get("maxDeliveryAttempts"), 1, 30, "retryPolicy.maxDeliveryAttempts", 30)
    ttl = _int_in(retry.get("eventTimeToLiveInMinutes"), 1, 1440, "retryPolicy.eventTimeToLiveInMinutes", 1440)
    raw_filter = props.get("filter")
    try:
        compile_filter(raw_filter)
    except InvalidFilter as exc:
        raise _invalid(f"Invalid filter: {exc.message}") from None
    labels = props.get("labels")
    if labels is not None and (not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)):
        raise _invalid("labels must be a list of strings.")
    normalised: dict[str, Any] = {
        "destination": destination,
        "filter": _normalised_filter(raw_filter),
        "labels": labels or [],
        "eventDeliverySchema": schema,
        "retryPolicy": {"maxDeliveryAttempts": max_attempts, "eventTimeToLiveInMinutes": ttl},
    }
    expiration = props.get("expirationTimeUtc")
    if expiration is not None:
        at = parse_time(expiration)
        if at is None:
            raise _invalid(f"expirationTimeUtc '{expiration}' is not an ISO-8601 date-time.")
        if now is not None and at <= now:
            raise _invalid(f"expirationTimeUtc '{expiration}' is in the past; an expiration must be in the future.")
        normalised["expirationTimeUtc"] = iso7(at)
    if props.get("deadLetterDestination") is not None:
        normalised["deadLetterDestination"] = _dead_letter(props["deadLetterDestination"])
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
    mappings = dest_props.get("deliveryAttributeMappings")
    if isinstance(mappings, list):
        dest_props["deliveryAttributeMappings"] = [_hide_secret(m) for m in mappings]
    destination["properties"] = dest_props
    props["destination"] = destination
    view["properties"] = props
    return view


def _hide_secret(mapping: Any) -> Any:
    # A static mapping marked isSecret is write-only, like the endpoint URL; getDeliveryAttributes shows it.
    if (
        isinstance(mapping, dict)
        and isinstance(mapping.get("properties"), dict)
        and mapping["properties"].get("isSecret")
    ):
        props = {k: v for k, v in mapping["properties"].items() if k != "value"}
        return {**mapping, "properties": props}
    return mapping


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise _invalid(f"Event subscription name '{name}' is invalid: use 3 to 64 letters, digits or hyphens.")


def active_subscription(doc: dict[str, Any]) -> ActiveSubscription | None:
    props = doc["properties"]
    if props.get("provisioningState") != SUCCEEDED:
        return None
    private = doc.get("callgrid", {})
    delivery_schema = props.get("eventDeliverySchema", EVENT_GRID_SCHEMA)
    return ActiveSubscription(
        id=doc["id"].lower(),
        name=doc["name"],
        topic=props["topic"],
        source=str(private.get("source") or props["topic"]).lower(),
        filter=compile_filter(props.get("filter"), cloud_events=delivery_schema == CLOUD_EVENT_SCHEMA),
        endpoint_url=props["destination"]["properties"]["endpointUrl"],
        delivery_schema=delivery_schema,
        max_delivery_attempts=props["retryPolicy"]["maxDeliveryAttempts"],
        event_ttl_minutes=props["retryPolicy"]["eventTimeToLiveInMinutes"],
        expires_at=private.get("expiresAt"),
        doc=doc,
    )


def needs_handshake(doc: dict[str, Any]) -> bool:
    """Only webhooks prove consent; Azure-resource destinations are the subscriber's own (eventgrid.md 2.4)."""
    return bool(doc["properties"]["destination"]["endpointType"] == "WebHook")


# Keys of a PATCH body (EventSubscriptionUpdateParameters): they replace the stored properties one by one.
_UPDATABLE = (
    "destination",
    "filter",
    "labels",
    "expirationTimeUtc",
    "eventDeliverySchema",
    "retryPolicy",
    "deadLetterDestination",
    "deliveryWithResourceIdentity",
    "deadLetterWithResourceIdentity",
)


class SubscriptionService:
    """Create, update, read and delete event subscriptions; validation runs in `handshake.py`."""

    def __init__(self, clock: Clock, *, azure_functions_url: str = "http://127.0.0.1:7071") -> None:
        self._clock = clock
        self._functions_url = azure_functions_url

    async def put(
        self,
        tx: StoreTx,
        *,
        arm_id: str,
        name: str,
        topic: str,
        resource_type: str,
        body: Any,
        source: str | None = None,
        input_schema: str = EVENT_GRID_SCHEMA,
    ) -> tuple[dict[str, Any], bool]:
        """Create or replace; `topic` is shown as properties.topic, `source` is whose events it receives."""
        check_name(name)
        properties = validate_properties(
            body, input_schema=input_schema, now=self._clock.now(), functions_url=self._functions_url
        )
        existing = await tx.get_subscription(arm_id.lower())
        now = iso7(self._clock.now())
        operation_id = str(uuid.uuid4())
        properties["topic"] = topic
        properties["provisioningState"] = UPDATING if existing else CREATING
        created_at = existing["systemData"]["createdAt"] if existing else now
        expiration = properties.get("expirationTimeUtc")
        doc: dict[str, Any] = {
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
                "source": source or topic,
                "inputSchema": input_schema,
                "expiresAt": parse_time(expiration) if expiration else None,
            },
        }
        if not needs_handshake(doc):
            properties["provisioningState"] = SUCCEEDED
            doc["callgrid"]["operationStatus"] = "Succeeded"
        await tx.put_subscription(arm_id.lower(), doc)
        return doc, existing is None

    async def update(self, tx: StoreTx, arm_id: str, patch: Any) -> dict[str, Any]:
        """PATCH: the given top-level properties replace the stored ones; validated and handshaken anew."""
        if not isinstance(patch, dict):
            raise _invalid("The request body must be a JSON object of event subscription properties.")
        existing = await self.get(tx, arm_id)
        props = {k: v for k, v in existing["properties"].items() if k in _UPDATABLE}
        for key, value in patch.items():
            if key in _UPDATABLE:
                props[key] = value
            elif key != "properties":
                raise _invalid(f"'{key}' cannot be updated on an event subscription.")
        private = existing["callgrid"]
        doc, _ = await self.put(
            tx,
            arm_id=existing["id"],
            name=existing["name"],
            topic=existing["properties"]["topic"],
            resource_type=existing["type"],
            body={"properties": props},
            source=private.get("source"),
            input_schema=private.get("inputSchema", EVENT_GRID_SCHEMA),
        )
        return doc

    async def get(self, tx: StoreTx, arm_id: str) -> dict[str, Any]:
        doc = await tx.get_subscription(arm_id.lower())
        if doc is None or self.expired(doc):
            name = arm_id.rstrip("/").rsplit("/", 1)[-1]
            raise NotFound(f"The event subscription '{name}' was not found.", code="ResourceNotFound")
        return doc

    def expired(self, doc: dict[str, Any]) -> bool:
        expires_at = doc.get("callgrid", {}).get("expiresAt")
        return expires_at is not None and self._clock.now() >= expires_at

    async def list_in(self, tx: StoreTx, scope_prefix: str) -> list[dict[str, Any]]:
        """Subscriptions directly under `scope_prefix` (".../eventSubscriptions/"), expired ones left out."""
        prefix = scope_prefix.lower()
        return [
            d
            for d in await tx.list_subscriptions()
            if d["id"].lower().startswith(prefix) and "/" not in d["id"][len(prefix) :] and not self.expired(d)
        ]

    async def delete(self, tx: StoreTx, arm_id: str) -> bool:
        return await tx.delete_subscription(arm_id.lower())

    async def delete_under(self, tx: StoreTx, scope_prefix: str) -> int:
        """Delete every subscription whose id starts with `scope_prefix` (a deleted topic takes its own along)."""
        prefix = scope_prefix.lower()
        count = 0
        for doc in await tx.list_subscriptions():
            if doc["id"].lower().startswith(prefix):
                count += await tx.delete_subscription(doc["id"].lower())
        return count

    async def delete_expired(self, tx: StoreTx) -> list[str]:
        """Expired subscriptions are removed, as Azure removes them (eventgrid.md 2.1)."""
        gone = []
        for doc in await tx.list_subscriptions():
            if self.expired(doc):
                await tx.delete_subscription(doc["id"].lower())
                gone.append(doc["id"])
        return gone

    async def find_operation(self, tx: StoreTx, operation_id: str) -> dict[str, Any] | None:
        for doc in await tx.list_subscriptions():
            if doc["callgrid"]["operationId"] == operation_id:
                return doc
        return None

    async def complete_validation(
        self, tx: StoreTx, sub_id: str, *, code: str | None, error: str | None, awaiting_manual: bool = False
    ) -> dict[str, Any] | None:
        """Record a handshake's outcome; `code` must still be the current one (an update starts anew).

        Only a subscription still waiting moves: a callback consent that arrived while the OPTIONS
        request was in flight must not be overwritten by that request's own outcome.
        """
        doc = await tx.get_subscription(sub_id)
        if doc is None or (code is not None and doc["callgrid"]["validationCode"] != code):
            return None
        props = doc["properties"]
        state = props["provisioningState"]
        if state not in (*PENDING_VALIDATION, AWAITING) or (awaiting_manual and state == AWAITING):
            return None
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
