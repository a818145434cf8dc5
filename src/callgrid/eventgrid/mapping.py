"""Custom input schema (eventgrid.md 1.5): a topic's `inputSchemaMapping` and what it does to events.

A `CustomEventSchema` topic takes any JSON objects. Its `JsonInputSchemaMapping` names, for each
Event Grid envelope field, the top-level field of the published event to take it from
(`sourceField`), and for `subject`, `eventType` and `dataVersion` a `defaultValue` used when that
field is absent. The event is stored as the Event Grid envelope so filters read it like any other
(`data.<field>` reaches the original fields); its `data` is the whole original event, which a
`CustomInputSchema` subscription receives verbatim.

Where Azure's documentation is silent, callgrid decides (and says so in the README):
`id` absent -> a new GUID; `eventTime` absent -> the publish time (present but not a date-time -> 400);
`topic` is always the topic's own ARM id (a mapped value is ignored, as Event Grid stamps topics);
`eventType` absent with no default -> 400; `subject` and `dataVersion` absent -> "".
"""

from __future__ import annotations

from typing import Any

from callgrid.clock import iso7
from callgrid.errors import InvalidRequest
from callgrid.eventgrid.events import parse_time
from callgrid.eventgrid.subscriptions import CUSTOM_EVENT_SCHEMA
from callgrid.store.keys import random_uuid

_SOURCE_ONLY = ("id", "topic", "eventTime")
_WITH_DEFAULT = ("subject", "eventType", "dataVersion")


def _invalid(message: str, code: str = "InvalidRequest") -> InvalidRequest:
    return InvalidRequest(message, code=code)


def validate_input_schema_mapping(value: Any, input_schema: str) -> dict[str, Any] | None:
    """The normalised `inputSchemaMapping` of a topic PUT (None for the other input schemas)."""
    if input_schema != CUSTOM_EVENT_SCHEMA:
        if value is not None:
            raise _invalid("inputSchemaMapping is only allowed with inputSchema 'CustomEventSchema'.")
        return None
    if not isinstance(value, dict):
        raise _invalid("inputSchema 'CustomEventSchema' requires an inputSchemaMapping object.")
    if value.get("inputSchemaMappingType") != "Json":
        raise _invalid("inputSchemaMapping.inputSchemaMappingType must be 'Json'.")
    props = value.get("properties") or {}
    if not isinstance(props, dict):
        raise _invalid("inputSchemaMapping.properties must be a JSON object.")
    out: dict[str, Any] = {}
    for name, field in props.items():
        if name not in _SOURCE_ONLY and name not in _WITH_DEFAULT:
            raise _invalid(f"inputSchemaMapping.properties.{name} is not a mappable field.")
        if field is None:
            continue
        if not isinstance(field, dict):
            raise _invalid(f"inputSchemaMapping.properties.{name} must be a JSON object.")
        allowed = {"sourceField"} if name in _SOURCE_ONLY else {"sourceField", "defaultValue"}
        for key, item in field.items():
            if key not in allowed:
                raise _invalid(f"inputSchemaMapping.properties.{name}.{key} is not allowed.")
            if item is not None and (not isinstance(item, str) or not item):
                raise _invalid(f"inputSchemaMapping.properties.{name}.{key} must be a non-empty string.")
        kept = {k: v for k, v in field.items() if v is not None}
        if kept:
            out[name] = kept
    return {"inputSchemaMappingType": "Json", "properties": out}


def _mapped(event: dict[str, Any], field: dict[str, Any] | None, name: str, index: int) -> str | None:
    if not field:
        return None
    source = field.get("sourceField")
    if source is not None and event.get(source) is not None:
        value = event[source]
        if not isinstance(value, str):
            raise _invalid(f"Event {index}: '{source}' (mapped to {name}) must be a string.", "BadRequest")
        return value
    default: str | None = field.get("defaultValue")
    return default


def map_custom_event(
    event: dict[str, Any], index: int, mapping: dict[str, Any], topic_id: str, now: float
) -> dict[str, Any]:
    """The Event Grid envelope of one published custom event."""
    fields = mapping.get("properties") or {}
    event_type = _mapped(event, fields.get("eventType"), "eventType", index)
    if not event_type:
        raise _invalid(
            f"Event {index} has no event type: the topic maps eventType from "
            f"'{(fields.get('eventType') or {}).get('sourceField', '(nothing)')}' and gives no defaultValue.",
            "BadRequest",
        )
    event_time = _mapped(event, fields.get("eventTime"), "eventTime", index)
    if event_time is not None and parse_time(event_time) is None:
        raise _invalid(f"Event {index}: eventTime '{event_time}' is not an RFC 3339 date-time.", "BadRequest")
    return {
        "id": _mapped(event, fields.get("id"), "id", index) or random_uuid(),
        "topic": topic_id,
        "subject": _mapped(event, fields.get("subject"), "subject", index) or "",
        "eventType": event_type,
        "eventTime": event_time or iso7(now),
        "dataVersion": _mapped(event, fields.get("dataVersion"), "dataVersion", index) or "",
        "metadataVersion": "1",
        "data": event,
    }
