"""Event envelopes, serialised in one place: Event Grid schema, and CloudEvents 1.0 derived from it."""

from __future__ import annotations

import uuid
from typing import Any

from callgrid.clock import iso7


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
        "id": event_id or str(uuid.uuid4()),
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


def validation_event(*, topic: str, validation_code: str, validation_url: str, now: float) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "topic": topic,
        "subject": "",
        "data": {"validationCode": validation_code, "validationUrl": validation_url},
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime": iso7(now),
        "metadataVersion": "1",
        "dataVersion": "1",
    }
