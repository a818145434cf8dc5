"""Event envelopes, serialised in one place: Event Grid schema, CloudEvents 1.0, and the maps between them."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from callgrid.clock import iso7
from callgrid.store.keys import ordered_uuid, random_uuid

# RFC 3339 as Event Grid writes it; .NET writes 7 fractional digits, Python takes at most 6.
_RFC3339 = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d+))?"
    r"(?P<tz>[Zz]|[+-]\d{2}:\d{2})?$",
    re.ASCII,  # \d would take any Unicode digit, and int() reads them
)


def parse_time(text: Any) -> float | None:
    """Seconds since the epoch for an RFC 3339 / ISO-8601 timestamp (no zone = UTC); None if unparseable."""
    if not isinstance(text, str):
        return None
    match = _RFC3339.match(text.strip())
    if match is None:
        return None
    frac = (match["frac"] or "")[:6].ljust(6, "0")
    tz = match["tz"] or "Z"
    tz = "+00:00" if tz in ("Z", "z") else tz
    try:
        parsed = datetime.fromisoformat(f"{match['date']}T{match['time']}.{frac}{tz}")
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def event_grid_event(
    *,
    topic: str,
    event_type: str,
    subject: str,
    data: Any,
    data_version: str,
    now: float,
    event_id: str | None = None,
) -> dict[str, Any]:
    return {
        "id": event_id or ordered_uuid(),  # the outbox's key too (store/keys.py)
        "topic": topic,
        "subject": subject,
        "data": data,
        "eventType": event_type,
        "dataVersion": data_version,
        "metadataVersion": "1",
        "eventTime": iso7(now),
    }


def to_cloud_event(event: dict[str, Any], *, include_dataschema: bool = True) -> dict[str, Any]:
    """Event Grid -> CloudEvents mapping (eventgrid.md 1.4); `dataschema` is "#" + dataVersion (O8)."""
    ce: dict[str, Any] = {
        "id": event["id"],
        "source": event.get("topic", ""),
        "specversion": "1.0",
        "type": event["eventType"],
        "time": event.get("eventTime"),
        "subject": event.get("subject", ""),
        "data": event.get("data"),
    }
    if include_dataschema and event.get("dataVersion"):
        ce["dataschema"] = "#" + event["dataVersion"]
    return ce


def is_cloud_event(event: dict[str, Any]) -> bool:
    """Stored events keep their topic's input schema; a CloudEvent is the one with `specversion`."""
    return "specversion" in event


class FilterViews:
    """An event as subscription filters read it: in the schema the subscription receives it in.

    A subscription delivering Event Grid schema (or custom input, whose topic stores the Event Grid
    envelope with the original event as `data`) filters the envelope (`eventType`, `topic`, ...). One
    delivering CloudEvents 1.0 filters the CloudEvent it is sent: keys name its attributes (`type`,
    `source`, `id`, `time`, `specversion`, `dataschema`, extensions) and `data.*`, and an envelope
    name such as `eventType` is a literal key the CloudEvent does not have (observed on Azure,
    azure-docs#86764). Each view is made once, on first use.
    """

    __slots__ = ("_cloud", "_dataschema", "event")

    def __init__(self, event: dict[str, Any], *, dataschema: bool = True) -> None:
        self.event = event
        self._dataschema = dataschema
        self._cloud: dict[str, Any] | None = None

    def view(self, cloud_events: bool) -> dict[str, Any]:
        if not cloud_events or is_cloud_event(self.event):
            return self.event
        if self._cloud is None:
            self._cloud = to_cloud_event(self.event, include_dataschema=self._dataschema)
        return self._cloud


def validation_event(*, topic: str, validation_code: str, validation_url: str, now: float) -> dict[str, Any]:
    return {
        "id": random_uuid(),
        "topic": topic,
        "subject": "",
        "data": {"validationCode": validation_code, "validationUrl": validation_url},
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime": iso7(now),
        "metadataVersion": "1",
        "dataVersion": "1",
    }
