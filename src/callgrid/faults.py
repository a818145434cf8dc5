"""Faults a test injects on purpose (`/callgrid/v1/faults`): what production does on a bad day.

Three kinds, each scoped to one target:
- `delivery`: POSTs to URLs starting with `url` (Event Grid deliveries and Call Automation callbacks) get
  `status` without reaching the app, or no answer at all (`timeout`), so the response time limit applies.
  Validation handshakes are left alone: a subscription can still be made to a failing endpoint.
- `device`: the device of `rawId` is `busy` or `unreachable` whatever its script says.
- `operation`: a Call Automation operation (`answerCall`, `redirectCall`, `createCall`, `play`, ...) is
  answered with ACS's error `{"error": {"code", "message"}}` and `status`, before it does anything.

A fault applies until removed, or `count` times. Faults live in memory (test configuration, not state):
a restart or a reset removes them.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass
from typing import Any

from callgrid.errors import InvalidRequest, NotFound
from callgrid.eventgrid.delivery.sender import Sender, SendResult, outcome_for

KINDS = ("delivery", "device", "operation")
DEVICE_FAULTS = ("busy", "unreachable")


@dataclass
class Fault:
    id: str
    kind: str
    target: str  # the URL prefix, the raw id, or the operation name
    status: int | None = None
    timeout: bool = False
    behaviour: str | None = None
    code: str | None = None
    message: str | None = None
    count: int | None = None  # how many more times it applies; None: until removed
    hits: int = 0

    def to_wire(self) -> dict[str, Any]:
        key = {"delivery": "url", "device": "rawId", "operation": "operation"}[self.kind]
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, key: self.target, "hits": self.hits}
        extra = {
            "status": self.status,
            "timeout": self.timeout or None,
            "behaviour": self.behaviour,
            "code": self.code,
            "message": self.message,
            "count": self.count,
        }
        out.update({k: v for k, v in extra.items() if v is not None})
        return out


class Faults:
    def __init__(self) -> None:
        self._faults: dict[str, Fault] = {}

    def add(self, spec: dict[str, Any]) -> Fault:
        kind = spec.get("kind")
        if kind not in KINDS:
            raise InvalidRequest(f"'kind' must be one of {', '.join(KINDS)}.")
        count = _optional_int(spec, "count")
        if count is not None and count < 1:
            raise InvalidRequest("'count' must be at least 1 (leave it out: until removed).")
        fault_id = str(uuid.uuid4())
        if kind == "delivery":
            url = _required_str(spec, "url")
            timeout = spec.get("timeout", False) is True
            status = _optional_int(spec, "status")
            if timeout == (status is not None):
                raise InvalidRequest("A delivery fault has either 'status' (an HTTP status) or 'timeout': true.")
            fault = Fault(fault_id, kind, url, status=status, timeout=timeout, count=count)
        elif kind == "device":
            behaviour = _required_str(spec, "behaviour")
            if behaviour not in DEVICE_FAULTS:
                raise InvalidRequest(f"A device fault's 'behaviour' is one of {', '.join(DEVICE_FAULTS)}.")
            fault = Fault(fault_id, kind, _required_str(spec, "rawId"), behaviour=behaviour, count=count)
        else:
            status = _optional_int(spec, "status") or 500
            if not 400 <= status <= 599:
                raise InvalidRequest("An operation fault's 'status' is an HTTP error status (400-599).")
            fault = Fault(
                fault_id,
                kind,
                _required_str(spec, "operation"),
                status=status,
                code=str(spec.get("code") or status),
                message=str(spec.get("message") or "Injected fault (callgrid)."),
                count=count,
            )
        self._faults[fault_id] = fault
        return fault

    def list(self) -> list[Fault]:
        return list(self._faults.values())

    def remove(self, fault_id: str) -> None:
        if self._faults.pop(fault_id, None) is None:
            raise NotFound(f"No fault {fault_id}.")

    def clear(self) -> None:
        self._faults.clear()

    def take(self, kind: str, target: str) -> Fault | None:
        """The fault that applies to `target` now (the first added), counted as used once."""
        for fault in self._faults.values():
            matches = target.startswith(fault.target) if kind == "delivery" else target == fault.target
            if fault.kind == kind and matches:
                fault.hits += 1
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        del self._faults[fault.id]
                return fault
        return None

    def device(self, raw_id: str) -> str | None:
        """The behaviour a device fault forces on `raw_id`'s device, if any."""
        fault = self.take("device", raw_id) if self._faults else None
        return fault.behaviour if fault is not None else None


class FaultySender:
    """The delivery sender with delivery faults in front of it (the Sender seam)."""

    def __init__(self, inner: Sender, faults: Faults) -> None:
        self._inner = inner
        self._faults = faults

    async def send(self, method: str, url: str, *, body: bytes, headers: dict[str, str], timeout: float) -> SendResult:
        handshake = method == "OPTIONS" or headers.get("aeg-event-type") == "SubscriptionValidation"
        fault = None if handshake or not self._faults.list() else self._faults.take("delivery", url)
        if fault is None:
            return await self._inner.send(method, url, body=body, headers=headers, timeout=timeout)
        if fault.timeout:
            await asyncio.sleep(timeout)  # the caller's response time limit ends it first, on its clock
            return SendResult(None, "TimedOut", error=f"no response within {timeout:g} s (injected fault)")
        assert fault.status is not None
        return SendResult(fault.status, outcome_for(fault.status), error="injected fault")

    async def close(self) -> None:
        await self._inner.close()


# The operation a Call Automation request is, by method and path.
_OPERATIONS: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"^/calling/callConnections$"), "createCall"),
    ("POST", re.compile(r"^/calling/callConnections:(\w+)$"), "{}Call"),  # answerCall, redirectCall, ...
    ("POST", re.compile(r"^/calling/callConnections/[^/]+/participants:(\w+)$"), "{}Participant"),
    ("POST", re.compile(r"^/calling/callConnections/[^/:]+:(\w+)$"), "{}"),  # play, recognize, terminate...
    ("DELETE", re.compile(r"^/calling/callConnections/[^/]+$"), "hangUp"),
    ("POST", re.compile(r"^/calling/recordings$"), "startRecording"),
    ("POST", re.compile(r"^/calling/recordings/[^/]+:(\w+)$"), "{}Recording"),
    ("DELETE", re.compile(r"^/calling/recordings/[^/]+$"), "stopRecording"),
]


def operation_of(method: str, path: str) -> str | None:
    """`answerCall` for POST /calling/callConnections:answer, `play` for .../{id}:play, and so on."""
    for verb, pattern, name in _OPERATIONS:
        found = pattern.match(path) if verb == method else None
        if found is not None:
            return name.format(*found.groups())
    return None


def _required_str(spec: dict[str, Any], name: str) -> str:
    value = spec.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"'{name}' is required (a string).")
    return value


def _optional_int(spec: dict[str, Any], name: str) -> int | None:
    value = spec.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(f"'{name}' must be an integer.")
    return value
