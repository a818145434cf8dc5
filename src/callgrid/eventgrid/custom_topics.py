"""Event Grid topics as ARM resources, and what a publisher's request must satisfy (eventgrid.md 1.1-1.3).

Custom topics (`Microsoft.EventGrid/topics`) take events from any publisher: `endpoint` is where
`EventGridPublisherClient` posts (`{callgrid endpoint}/eventgrid/topics/{name}/api/events`), with an
`aeg-sas-key` (key1 or key2) or an `aeg-sas-token` made by `generate_sas`. Their name is unique per
server, as Azure's are per region (they are DNS names). Input schemas: EventGridSchema,
CloudEventSchemaV1_0, and CustomEventSchema with a JSON `inputSchemaMapping` (mapping.py): any JSON
object is accepted and mapped to an Event Grid envelope whose `data` is the whole original event.

System topics (`Microsoft.EventGrid/systemTopics`) name the Communication resource as `source`;
their event subscriptions receive its system events, like extension subscriptions on the resource.

Events are stored as published (after Event Grid's own stamping of `topic`, `dataVersion` and
`metadataVersion` on Event Grid events); the delivery engine converts them per subscription.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from callgrid.clock import Clock, iso7
from callgrid.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge, Unauthorized
from callgrid.eventgrid.events import parse_time
from callgrid.eventgrid.mapping import map_custom_event, validate_input_schema_mapping
from callgrid.eventgrid.subscriptions import CLOUD_EVENT_SCHEMA, CUSTOM_EVENT_SCHEMA, EVENT_GRID_SCHEMA
from callgrid.jsonbody import loads
from callgrid.store import StoreTx

CUSTOM = "topic"
SYSTEM = "systemTopic"
TOPIC_RESOURCE_TYPE = "Microsoft.EventGrid/topics"
SYSTEM_TOPIC_RESOURCE_TYPE = "Microsoft.EventGrid/systemTopics"
COMMUNICATION_TOPIC_TYPE = "Microsoft.Communication.CommunicationServices"

# Documented publish limits (eventgrid.md 1.1, 6.2). Azure was measured slightly more generous.
MAX_REQUEST_BYTES = 1024 * 1024
MAX_EVENT_BYTES = 1024 * 1024
MAX_EVENTS_PER_REQUEST = 5000

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9-]{3,50}$")
_CE_ATTRIBUTE = re.compile(r"^[a-z0-9]{1,20}$")
_CE_KNOWN = {
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "subject",
    "datacontenttype",
    "dataschema",
    "data",
    "data_base64",
}


def _invalid(message: str, code: str = "InvalidRequest") -> InvalidRequest:
    return InvalidRequest(message, code=code)


def new_topic_key() -> str:
    """A topic access key as Azure makes them: 32 random bytes, base64 (generate_sas b64-decodes it)."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def _system_data(existing: dict[str, Any] | None, now: str) -> dict[str, Any]:
    return {
        "createdBy": "callgrid-local-user",
        "createdByType": "User",
        "createdAt": existing["systemData"]["createdAt"] if existing else now,
        "lastModifiedBy": "callgrid-local-user",
        "lastModifiedByType": "User",
        "lastModifiedAt": now,
    }


def _location(body: dict[str, Any]) -> str:
    location = body.get("location")
    if not isinstance(location, str) or not location:
        raise _invalid("The resource 'location' is required (any Azure region name, or 'global').", "LocationRequired")
    return location


def _tags(body: dict[str, Any]) -> dict[str, str]:
    tags = body.get("tags") or {}
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise _invalid("'tags' must be an object of strings.")
    return tags


def public_topic(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "callgrid"}


class TopicService:
    def __init__(self, clock: Clock, *, public_endpoint: str, wall_clock: Clock) -> None:
        self._clock = clock
        self._endpoint = public_endpoint
        # SAS tokens carry an expiry stamped by the publisher's real clock.
        self._wall_clock = wall_clock

    def endpoint_for(self, name: str) -> str:
        return f"{self._endpoint}/eventgrid/topics/{name}/api/events"

    # ------------------------------------------------------------------ custom topics (ARM)

    async def put_topic(self, tx: StoreTx, *, arm_id: str, name: str, body: Any) -> tuple[dict[str, Any], bool]:
        if not _TOPIC_NAME.match(name):
            raise _invalid(f"Topic name '{name}' is invalid: use 3 to 50 letters, digits or hyphens.")
        if not isinstance(body, dict):
            raise _invalid("The request body must be a JSON object.")
        props = body.get("properties") or {}
        if not isinstance(props, dict):
            raise _invalid("'properties' must be a JSON object.")
        location = _location(body)
        schema = props.get("inputSchema") or EVENT_GRID_SCHEMA
        if schema not in (EVENT_GRID_SCHEMA, CLOUD_EVENT_SCHEMA, CUSTOM_EVENT_SCHEMA):
            raise _invalid("inputSchema must be 'EventGridSchema', 'CloudEventSchemaV1_0' or 'CustomEventSchema'.")
        mapping = validate_input_schema_mapping(props.get("inputSchemaMapping"), schema)
        existing = await tx.get_topic(arm_id.lower())
        same_name = await tx.find_topic_by_name(CUSTOM, name)
        if same_name is not None and same_name["id"].lower() != arm_id.lower():
            raise Conflict(
                f"A topic named '{name}' already exists ({same_name['id']}); "
                "topic names are DNS names, unique per region.",
                code="TopicNameNotAvailable",
            )
        if existing is not None and existing["properties"]["inputSchema"] != schema:
            raise _invalid("The inputSchema of an existing topic cannot be changed.")
        disable_local_auth = props.get("disableLocalAuth", False)
        if not isinstance(disable_local_auth, bool):
            raise _invalid("disableLocalAuth must be a boolean.")
        now = iso7(self._clock.now())
        doc = {
            "id": arm_id,
            "name": name,
            "type": TOPIC_RESOURCE_TYPE,
            "location": location,
            "tags": _tags(body),
            "systemData": _system_data(existing, now),
            "properties": {
                "provisioningState": "Succeeded",
                "endpoint": self.endpoint_for(name),
                "inputSchema": schema,
                **({"inputSchemaMapping": mapping} if mapping is not None else {}),
                "metricResourceId": existing["properties"]["metricResourceId"] if existing else str(uuid.uuid4()),
                "publicNetworkAccess": props.get("publicNetworkAccess") or "Enabled",
                "disableLocalAuth": disable_local_auth,
                "minimumTlsVersionAllowed": props.get("minimumTlsVersionAllowed") or "1.2",
                "dataResidencyBoundary": props.get("dataResidencyBoundary") or "WithinGeopair",
            },
            "callgrid": existing["callgrid"] if existing else {"key1": new_topic_key(), "key2": new_topic_key()},
        }
        await tx.put_topic(arm_id.lower(), CUSTOM, name, doc)
        return doc, existing is None

    async def get(self, tx: StoreTx, arm_id: str, kind: str = CUSTOM) -> dict[str, Any]:
        doc = await tx.get_topic(arm_id.lower())
        if doc is None or doc["type"] != (TOPIC_RESOURCE_TYPE if kind == CUSTOM else SYSTEM_TOPIC_RESOURCE_TYPE):
            name = arm_id.rstrip("/").rsplit("/", 1)[-1]
            what = "topic" if kind == CUSTOM else "system topic"
            raise NotFound(f"The {what} '{name}' was not found.", code="ResourceNotFound")
        return doc

    async def list_in(self, tx: StoreTx, kind: str, scope_prefix: str) -> list[dict[str, Any]]:
        prefix = scope_prefix.lower()
        return [d for d in await tx.list_topics(kind) if d["id"].lower().startswith(prefix)]

    async def delete(self, tx: StoreTx, arm_id: str) -> bool:
        return await tx.delete_topic(arm_id.lower())

    @staticmethod
    def keys(doc: dict[str, Any]) -> dict[str, str]:
        return {"key1": doc["callgrid"]["key1"], "key2": doc["callgrid"]["key2"]}

    async def regenerate_key(self, tx: StoreTx, arm_id: str, body: Any) -> dict[str, str]:
        doc = await self.get(tx, arm_id)
        key_name = body.get("keyName") if isinstance(body, dict) else None
        if key_name not in ("key1", "key2"):
            raise _invalid("keyName must be 'key1' or 'key2'.")
        doc["callgrid"][key_name] = new_topic_key()
        await tx.put_topic(arm_id.lower(), CUSTOM, doc["name"], doc)
        return self.keys(doc)

    # ------------------------------------------------------------------ system topics (ARM)

    async def put_system_topic(
        self, tx: StoreTx, *, arm_id: str, name: str, body: Any, resource_id: str
    ) -> tuple[dict[str, Any], bool]:
        if not _TOPIC_NAME.match(name):
            raise _invalid(f"System topic name '{name}' is invalid: use 3 to 50 letters, digits or hyphens.")
        if not isinstance(body, dict):
            raise _invalid("The request body must be a JSON object.")
        props = body.get("properties") or {}
        if not isinstance(props, dict):
            raise _invalid("'properties' must be a JSON object.")
        source = props.get("source")
        if not isinstance(source, str) or source.lower() != resource_id.lower():
            raise _invalid(
                f"properties.source must be a Communication resource of this server, such as '{resource_id}'.",
                "InvalidSource",
            )
        topic_type = props.get("topicType")
        if not isinstance(topic_type, str) or topic_type.lower() != COMMUNICATION_TOPIC_TYPE.lower():
            raise _invalid(f"properties.topicType must be '{COMMUNICATION_TOPIC_TYPE}'.", "InvalidTopicType")
        existing = await tx.get_topic(arm_id.lower())
        for other in await tx.list_topics(SYSTEM):
            # One system topic per source; each Communication resource is a source of its own.
            same_source = str(other["properties"].get("source", "")).lower() == resource_id.lower()
            if other["id"].lower() != arm_id.lower() and same_source:
                raise Conflict(
                    f"The source already has a system topic, '{other['id']}'; a source has at most one.",
                    code="SystemTopicAlreadyExists",
                )
        now = iso7(self._clock.now())
        doc = {
            "id": arm_id,
            "name": name,
            "type": SYSTEM_TOPIC_RESOURCE_TYPE,
            "location": _location(body),
            "tags": _tags(body),
            "systemData": _system_data(existing, now),
            "properties": {
                "provisioningState": "Succeeded",
                "source": resource_id,
                "topicType": COMMUNICATION_TOPIC_TYPE,
                "metricResourceId": existing["properties"]["metricResourceId"] if existing else str(uuid.uuid4()),
            },
        }
        await tx.put_topic(arm_id.lower(), SYSTEM, name, doc)
        return doc, existing is None

    # ------------------------------------------------------------------ publishing (data plane)

    async def find_for_publish(self, tx: StoreTx, name: str) -> dict[str, Any]:
        doc = await tx.find_topic_by_name(CUSTOM, name)
        if doc is None:
            raise NotFound(f"The topic '{name}' was not found. Create it with ARM first.", code="NotFound")
        return doc

    def authenticate(self, doc: dict[str, Any], headers: dict[str, str]) -> None:
        """aeg-sas-key or aeg-sas-token (eventgrid.md 1.1); anything else is 401."""
        if doc["properties"].get("disableLocalAuth"):
            raise Unauthorized(
                "Local authentication (keys, SAS tokens) is disabled on this topic.", code="Unauthorized"
            )
        key = headers.get("aeg-sas-key")
        token = headers.get("aeg-sas-token")
        if key is not None:
            if any(hmac.compare_digest(key.encode(), k.encode()) for k in self.keys(doc).values()):
                return
            raise Unauthorized("The aeg-sas-key does not match key1 or key2 of the topic.", code="Unauthorized")
        if token is not None:
            self._verify_sas(doc, token)
            return
        raise Unauthorized(
            "The request carries no credential: send 'aeg-sas-key' (a topic key) or 'aeg-sas-token' (a SAS token).",
            code="Unauthorized",
        )

    def _verify_sas(self, doc: dict[str, Any], token: str) -> None:
        # Token: r=<url-encoded resource>&e=<url-encoded expiry>&s=<url-encoded base64 HMAC-SHA256 of "r=..&e=..">.
        parts: dict[str, str] = {}
        for piece in token.split("&"):
            name, _, value = piece.partition("=")
            parts[name] = value
        if not {"r", "e", "s"} <= parts.keys():
            raise Unauthorized("The aeg-sas-token is malformed: expected r=...&e=...&s=....", code="Unauthorized")
        signed = f"r={parts['r']}&e={parts['e']}".encode("ascii", "replace")
        signature = unquote(parts["s"]).encode()
        for key in self.keys(doc).values():
            expected = base64.b64encode(hmac.new(base64.b64decode(key), signed, hashlib.sha256).digest())
            if hmac.compare_digest(expected, signature):
                break
        else:
            raise Unauthorized(
                "The aeg-sas-token signature does not match key1 or key2 of the topic.", code="Unauthorized"
            )
        resource = unquote(parts["r"]).split("?", 1)[0].rstrip("/").lower()
        endpoint = doc["properties"]["endpoint"].lower()
        if resource not in (endpoint, endpoint.removesuffix("/api/events")):
            raise Unauthorized(f"The aeg-sas-token is for '{resource}', not this topic.", code="Unauthorized")
        expires = _parse_expiry(unquote(parts["e"]))
        if expires is None:
            raise Unauthorized("The aeg-sas-token expiry is not a date-time.", code="Unauthorized")
        if expires <= self._wall_clock.now():
            raise Unauthorized("The aeg-sas-token has expired.", code="Unauthorized")

    def parse_events(self, doc: dict[str, Any], body: bytes, content_type: str) -> list[dict[str, Any]]:
        """Validate a publish request (eventgrid.md 1.1, 1.2) and return the events as they will be stored."""
        if len(body) > MAX_REQUEST_BYTES:
            raise PayloadTooLarge(
                f"The request is {len(body)} bytes; at most {MAX_REQUEST_BYTES} bytes are accepted per request.",
                code="PayloadTooLarge",
            )
        try:
            parsed = loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _invalid(f"The request body is not valid JSON: {exc}.", "BadRequest") from None
        schema = doc["properties"]["inputSchema"]
        single_ce = content_type.split(";", 1)[0].strip().lower() == "application/cloudevents+json"
        if isinstance(parsed, dict) and (single_ce or schema in (CLOUD_EVENT_SCHEMA, CUSTOM_EVENT_SCHEMA)):
            parsed = [parsed]
        if not isinstance(parsed, list):
            raise _invalid("The request body must be a JSON array of events.", "BadRequest")
        if not parsed:
            raise _invalid("The request contains no events.", "BadRequest")
        if len(parsed) > MAX_EVENTS_PER_REQUEST:
            raise _invalid(
                f"The request has {len(parsed)} events; at most {MAX_EVENTS_PER_REQUEST} are accepted per request.",
                "BadRequest",
            )
        events = []
        for index, event in enumerate(parsed):
            size = len(json.dumps(event, separators=(",", ":")).encode())
            if size > MAX_EVENT_BYTES:
                raise PayloadTooLarge(
                    f"Event {index} is {size} bytes; at most {MAX_EVENT_BYTES} bytes are accepted per event.",
                    code="PayloadTooLarge",
                )
            if not isinstance(event, dict):
                raise _invalid(f"Event {index} must be a JSON object.", "BadRequest")
            if schema == CLOUD_EVENT_SCHEMA:
                events.append(_cloud_event(event, index))
            elif schema == CUSTOM_EVENT_SCHEMA:
                mapping = doc["properties"]["inputSchemaMapping"]
                events.append(map_custom_event(event, index, mapping, doc["id"], self._clock.now()))
            else:
                events.append(_event_grid_event(event, index, doc["id"]))
        return events


def _parse_expiry(text: str) -> float | None:
    parsed = parse_time(text)
    if parsed is not None:
        return parsed
    # .NET publishers write e.g. "1/31/2026 5:00:00 PM".
    try:
        return datetime.strptime(text.strip(), "%m/%d/%Y %I:%M:%S %p").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _required_string(event: dict[str, Any], name: str, index: int, *, allow_empty: bool = False) -> str:
    value = event.get(name)
    if not isinstance(value, str) or (not value and not allow_empty):
        raise _invalid(
            f"Event {index}: '{name}' is required and must be a {'' if allow_empty else 'non-empty '}string.",
            "BadRequest",
        )
    return value


def _event_grid_event(event: dict[str, Any], index: int, topic_id: str) -> dict[str, Any]:
    if "specversion" in event:
        raise _invalid(
            f"Event {index} is a CloudEvent, but this topic's input schema is EventGridSchema: publish Event Grid "
            "events (id, subject, eventType, eventTime, data), or create a topic with CloudEventSchemaV1_0.",
            "BadRequest",
        )
    _required_string(event, "id", index)
    _required_string(event, "subject", index, allow_empty=True)
    _required_string(event, "eventType", index)
    if parse_time(_required_string(event, "eventTime", index)) is None:
        raise _invalid(f"Event {index}: eventTime '{event['eventTime']}' is not an RFC 3339 date-time.", "BadRequest")
    out = dict(event)
    data_version = out.get("dataVersion")
    if data_version is None:
        out["dataVersion"] = ""
    elif not isinstance(data_version, str):
        raise _invalid(f"Event {index}: dataVersion must be a string.", "BadRequest")
    metadata_version = out.get("metadataVersion")
    if metadata_version is not None and metadata_version != "1":
        raise _invalid(f'Event {index}: metadataVersion must be "1" when present.', "BadRequest")
    out["metadataVersion"] = "1"
    topic = out.get("topic")
    if topic is not None and (not isinstance(topic, str) or topic.lower() != topic_id.lower()):
        raise _invalid(f"Event {index}: topic '{topic}' does not match this topic, '{topic_id}'.", "BadRequest")
    out["topic"] = topic_id
    return out


def _cloud_event(event: dict[str, Any], index: int) -> dict[str, Any]:
    if "specversion" not in event:
        raise _invalid(
            f"Event {index} is not a CloudEvent (no 'specversion'), but this topic's input schema is "
            "CloudEventSchemaV1_0: publish CloudEvents 1.0, or create a topic with EventGridSchema.",
            "BadRequest",
        )
    if event["specversion"] != "1.0":
        raise _invalid(f'Event {index}: specversion must be "1.0".', "BadRequest")
    for name in ("id", "source", "type"):
        _required_string(event, name, index)
    if "time" in event and event["time"] is not None and parse_time(event["time"]) is None:
        raise _invalid(f"Event {index}: time '{event['time']}' is not an RFC 3339 date-time.", "BadRequest")
    if "data" in event and "data_base64" in event:
        raise _invalid(f"Event {index}: 'data' and 'data_base64' are mutually exclusive.", "BadRequest")
    for name in event:
        if name not in _CE_KNOWN and not _CE_ATTRIBUTE.match(name):
            raise _invalid(
                f"Event {index}: extension attribute '{name}' is invalid: names are lower-case letters and digits.",
                "BadRequest",
            )
    return dict(event)
