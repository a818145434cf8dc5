"""The console's read models: what each live panel shows, gathered from the domain's own services.

Each `*_view` opens one short transaction and returns plain data for a template; none writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jwt

from callgrid.console.journal import Journal, Observed
from callgrid.eventgrid.subscriptions import public_view
from callgrid.eventgrid.topics import Verdict
from callgrid.node import Node
from callgrid.platform.calls import Call
from callgrid.platform.calls.models import CallState, OfferState
from callgrid.store import AttemptRow, DeliveryRow

ROWS = 50  # rows per panel: the newest; the HTTP API lists more


def subscription_name(sub_id: str | None) -> str:
    return "" if not sub_id else sub_id.rsplit("/", 1)[-1]


def call_rows(calls: list[Call]) -> list[dict[str, Any]]:
    rows = []
    for call in calls:
        app_legs = {p.raw_id for p in call.participants if p.call_connection_id is not None}
        rows.append(
            {
                "call": call,
                "ringing": [o for o in call.offers if o.state == OfferState.RINGING],
                "offers": call.offers,
                # People (not app legs) who can hang up or press keys from the console.
                "people": [p for p in call.participants if p.raw_id not in app_legs],
                "connected": call.state == CallState.CONNECTED,
                "ended": call.state == CallState.DISCONNECTED,
                "timeline": [{"time": t.time, "event": t.event, "detail": t.detail} for t in call.timeline],
            }
        )
    return rows


async def calls_view(node: Node) -> list[dict[str, Any]]:
    async with node.store.transaction() as tx:
        calls = await node.calls.list_calls(tx, ROWS)
    return call_rows(calls)


@dataclass
class EventRow:
    item: Observed
    verdicts: list[Verdict]
    matched_names: list[str]


async def events_view(node: Node, journal: Journal) -> list[EventRow]:
    items = journal.recent("event", ROWS)
    rows = []
    table = node.subscription_table
    async with node.store.transaction() as tx:
        for item in items:
            if item.explained is None or item.explained[0] != table.version:
                item.explained = (
                    table.version,
                    await table.explain(
                        tx, item.where, item.event, item.at, dataschema=node.settings.cloud_event_dataschema
                    ),
                )
            verdicts: list[Verdict] = item.explained[1]
            matched = set(item.matched)
            known = {v.subscription_id for v in verdicts}
            rows.append(
                EventRow(
                    item,
                    [_as_published(v, matched) for v in verdicts]
                    + [Verdict(m, subscription_name(m), True) for m in item.matched if m not in known],
                    [subscription_name(m) for m in item.matched],
                )
            )
    return rows


def _as_published(verdict: Verdict, matched: set[str]) -> Verdict:
    """The verdict at publish time wins over today's: the subscription may have changed since."""
    if verdict.subscription_id in matched:
        return Verdict(verdict.subscription_id, verdict.name, True)
    if verdict.matched:
        return Verdict(
            verdict.subscription_id,
            verdict.name,
            False,
            "not matched when published (the subscription was created, changed or validated since)",
        )
    return verdict


@dataclass
class DeliveryView:
    row: DeliveryRow
    attempts: list[AttemptRow]
    subscription: str
    event_type: str
    in_flight: bool
    next_attempt_at: float | None


async def deliveries_view(node: Node, journal: Journal, kind: str) -> list[DeliveryView]:
    async with node.store.transaction() as tx:
        rows = [r for r in await tx.list_deliveries_by(ROWS * 4) if r.kind == kind][:ROWS]
        history = await tx.list_attempts([r.id for r in rows])
    views = []
    for row in rows:
        seen = journal.by_event_id(row.event_id)
        in_flight = row.status == "pending" and row.lease_until is not None
        views.append(
            DeliveryView(
                row=row,
                attempts=history.get(row.id, []),
                subscription=subscription_name(row.subscription_id),
                event_type=seen.event_type if seen is not None else "",
                in_flight=in_flight,
                next_attempt_at=row.next_attempt_at if row.status == "pending" and not in_flight else None,
            )
        )
    return views


async def dead_letters_view(node: Node) -> list[dict[str, Any]]:
    async with node.store.transaction() as tx:
        rows = await tx.list_dead_letters(ROWS)
    return [
        {
            "row": row,
            "event_type": str(row.item.get("eventType") or row.item.get("type") or ""),
            "subject": str(row.item.get("subject") or ""),
        }
        for row in rows
    ]


def callback_claims(node: Node) -> dict[str, Any]:
    """The claims of the bearer JWT every callback carries now (signed at send time, so alike for all)."""
    token = node.callback_authorization().removeprefix("Bearer ")
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


async def directory_view(node: Node) -> dict[str, Any]:
    async with node.store.transaction() as tx:
        numbers, _ = await node.numbers.list(tx, node.resource, 0, 200)
        identities = await tx.list_identities(200, node.resource.user_prefix)
    return {"numbers": numbers, "identities": identities}


async def subscriptions_view(node: Node) -> list[dict[str, Any]]:
    async with node.store.transaction() as tx:
        docs = await tx.list_subscriptions()
    rows = []
    for doc in sorted(docs, key=lambda d: str(d.get("name", "")).lower()):
        view = public_view(doc)
        props = view["properties"]
        rows.append(
            {
                "id": doc["id"],
                "name": doc["name"],
                "topic": props.get("topic", ""),
                "state": props.get("provisioningState", ""),
                "endpoint": props.get("destination", {}).get("properties", {}).get("endpointBaseUrl")
                or props.get("destination", {}).get("properties", {}).get("endpointUrl", ""),
                "filter": json.dumps(props.get("filter", {}), indent=1),
                "error": doc.get("callgrid", {}).get("error"),
            }
        )
    return rows


def clock_view(node: Node) -> dict[str, Any]:
    return {"now": node.clock.now(), "virtual": node.virtual_clock is not None}
