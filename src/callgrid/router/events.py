"""Reading Event Grid deliveries: both schemas (CloudEvents through azure-core's model), one IncomingCall model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from azure.core.messaging import CloudEvent
from azure.eventgrid import SystemEventNames

from callgrid.router.models import IncomingCall

INCOMING_CALL = "Microsoft.Communication.IncomingCall"
VALIDATION: str = SystemEventNames.EventGridSubscriptionValidationEventName.value


class BadDelivery(ValueError):
    """A body that is not an Event Grid delivery."""


@dataclass
class Delivery:
    validation_code: str | None = None
    calls: list[IncomingCall] = field(default_factory=list)
    ignored: int = 0  # other event types
    malformed: list[str] = field(default_factory=list)  # IncomingCall events missing what routing needs


def _raw_id(identifier: Any) -> str | None:
    if not isinstance(identifier, dict):
        return None
    raw = identifier.get("rawId")
    if isinstance(raw, str) and raw:
        return str(raw)
    phone = identifier.get("phoneNumber")
    if isinstance(phone, dict) and isinstance(phone.get("value"), str):
        return "4:" + str(phone["value"])
    user = identifier.get("communicationUser")
    if isinstance(user, dict) and isinstance(user.get("id"), str):
        return str(user["id"])
    return None


def _incoming_call(event_id: str, event_time: str, data: Any) -> IncomingCall | str:
    if not isinstance(data, dict):
        return f"event {event_id}: data is not an object"
    caller, callee = _raw_id(data.get("from")), _raw_id(data.get("to"))
    context = data.get("incomingCallContext")
    if not caller or not callee or not isinstance(context, str) or not context:
        return f"event {event_id}: IncomingCall without from, to or incomingCallContext"
    return IncomingCall(
        event_id=event_id,
        caller=caller,
        callee=callee,
        incoming_call_context=context,
        server_call_id=str(data.get("serverCallId") or ""),
        correlation_id=str(data.get("correlationId") or ""),
        event_time=event_time,
    )


def parse_delivery(body: Any) -> Delivery:
    """An Event Grid-schema array, a CloudEvents batch, or a single CloudEvent."""
    items = body if isinstance(body, list) else [body] if isinstance(body, dict) else None
    if items is None or not all(isinstance(i, dict) for i in items):
        raise BadDelivery("expected an Event Grid event array or CloudEvents JSON.")
    out = Delivery()
    for item in items:
        event_id: Any
        event_type: Any
        try:
            if "specversion" in item:
                ce: CloudEvent[Any] = CloudEvent.from_dict(item)
                event_id, event_type, data = ce.id, ce.type, ce.data
                event_time = ce.time.isoformat() if ce.time else ""
            else:
                # Plain reads, no model: the router needs four fields, and EventGridEvent's constructor
                # made a uuid4 and a timestamp per event only to discard them (the id and time are given).
                event_id, event_type, data = item.get("id"), item.get("eventType"), item.get("data")
                event_time = str(item.get("eventTime") or "")
        except (ValueError, TypeError, KeyError) as exc:
            raise BadDelivery(f"an event could not be read: {exc}") from None
        if not isinstance(event_id, str) or not event_id:
            raise BadDelivery("an event has no id.")
        if event_type == VALIDATION:
            code = data.get("validationCode") if isinstance(data, dict) else None
            if not isinstance(code, str):
                raise BadDelivery("a SubscriptionValidationEvent without validationCode.")
            out.validation_code = code
        elif event_type == INCOMING_CALL:
            parsed = _incoming_call(event_id, event_time, data)
            if isinstance(parsed, str):
                out.malformed.append(parsed)
            else:
                out.calls.append(parsed)
        else:
            out.ignored += 1
    return out
