"""Shared steps for delivery tests: raise events, read deliveries, walk a retry schedule on the virtual clock."""

from __future__ import annotations

import time
from typing import Any

from callgrid.client import CallgridHttpError
from callgrid.eventgrid.events import parse_time
from callgrid.testing import CallgridServer

OWNED = "+14255550123"
CALLER = "+12065550100"
DEAD_LETTER = {
    "endpointType": "StorageBlob",
    "properties": {
        "resourceId": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/deadacct",
        "blobContainerName": "dead-letters",
    },
}


def raise_incoming_calls(server: CallgridServer, count: int = 1, *, number: str = OWNED) -> list[str]:
    """Place calls to an owned number: each raises one IncomingCall on the resource's system topic."""
    client = server.client()
    try:
        client.own_number(number)
    except CallgridHttpError as exc:
        assert exc.status == 409, exc  # already owned
    return [client.place_call(CALLER, number)["serverCallId"] for _ in range(count)]


def deliveries(server: CallgridServer, **query: Any) -> list[dict[str, Any]]:
    value: list[dict[str, Any]] = server.client().deliveries(query.pop("limit", 1000), **query)["value"]
    return value


def wait_for(predicate: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def settled(server: CallgridServer, **query: Any) -> list[dict[str, Any]]:
    """Deliveries once none is in flight or due now (the engine has recorded every outcome)."""

    def check() -> list[dict[str, Any]] | None:
        rows = deliveries(server, **query)
        now = server.client().request("GET", "/callgrid/v1/clock")["now"]
        for r in rows:
            if r["inFlight"]:
                return None
            # Due now, within the rounding of the wire's 7-digit times: the engine has yet to claim it.
            if r["status"] == "pending" and (parse_time(r["nextAttemptAt"]) or 0) <= now + 0.001:
                return None
        return rows or None

    result: list[dict[str, Any]] = wait_for(check)
    return result


def advance_to(server: CallgridServer, iso_time: str) -> None:
    target = parse_time(iso_time)
    assert target is not None
    now = server.client().request("GET", "/callgrid/v1/clock")["now"]
    server.advance(max(0.0, target - now) + 0.001)


def run_to_end(server: CallgridServer, delivery_id: str, max_steps: int = 40) -> dict[str, Any]:
    """Move the clock to each next attempt of one delivery until it is delivered, dropped or dead-lettered."""
    for _ in range(max_steps):
        row = next(r for r in settled(server) if r["id"] == delivery_id)
        if row["status"] != "pending":
            return row
        advance_to(server, row["nextAttemptAt"])
    raise AssertionError(f"delivery {delivery_id} still pending after {max_steps} steps")


def attempt_offsets(row: dict[str, Any]) -> list[float]:
    times = [parse_time(a["startedAt"]) or 0.0 for a in row["history"]]
    return [round(t - times[0], 3) for t in times]
