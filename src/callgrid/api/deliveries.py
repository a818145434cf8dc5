"""callgrid's view of Event Grid delivery: deliveries with their attempts, dead letters, and replay.

The default resource's key (the server owner's) sees every delivery; another resource's key sees those of
its own event subscriptions and its own calls' callbacks, and nothing of any other resource's.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from callgrid.api.auth import hmac_signed, node_of, resource_of
from callgrid.api.responses import JSONResponse
from callgrid.clock import iso7
from callgrid.errors import InvalidRequest, NotFound
from callgrid.eventgrid.delivery.deadletter import replay
from callgrid.store import AttemptRow, DeadLetterRow, DeliveryRow

STATUSES = ("pending", "delivered", "dropped", "deadLettered")


def _time(ts: float | None) -> str | None:
    return None if ts is None else iso7(ts)


def attempt_view(a: AttemptRow) -> dict[str, Any]:
    return {
        "attempt": a.attempt,
        "startedAt": _time(a.started_at),
        "status": a.status,
        "outcome": a.outcome,
        "error": a.error,
        "durationMs": a.duration_ms,
        "batchSize": a.batch_size,
    }


def delivery_view(row: DeliveryRow, attempts: list[AttemptRow]) -> dict[str, Any]:
    in_flight = row.status == "pending" and row.lease_until is not None
    return {
        "id": row.id,
        "kind": row.kind,
        "eventId": row.event_id,
        "subscriptionId": row.subscription_id,
        "url": row.url.split("?", 1)[0],
        "status": row.status,
        "reason": row.reason,
        "attempts": row.attempts,
        "maxAttempts": row.max_attempts,
        "createdAt": _time(row.created_at),
        "expiresAt": _time(row.expires_at),
        "inFlight": in_flight,
        "nextAttemptAt": _time(row.next_attempt_at) if row.status == "pending" and not in_flight else None,
        "lastStatus": row.last_status,
        "lastOutcome": row.last_outcome,
        "lastError": row.last_error,
        "history": [attempt_view(a) for a in attempts],
    }


def dead_letter_view(row: DeadLetterRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "deliveryId": row.delivery_id,
        "eventId": row.event_id,
        "subscriptionId": row.subscription_id,
        "subscriptionName": row.subscription_name,
        "deadLetterReason": row.reason,
        "deadLetteredAt": _time(row.created_at),
        "write": {
            "status": row.write_status,
            "dueAt": _time(row.write_due_at),
            "location": row.location,
            "error": row.write_error,
        },
        "replayedAt": _time(row.replayed_at),
        "replayDeliveryId": row.replay_delivery_id,
        "event": row.item,
    }


def query_limit(request: Request) -> int:
    """`?limit=`: 1 to 1000, 100 when absent."""
    raw = request.query_params.get("limit", "100")
    if not raw.isascii() or not raw.strip().isdigit():  # int() also reads fullwidth digits
        raise InvalidRequest(f"limit must be an integer; got '{raw}'.")
    limit = int(raw)
    if not 1 <= limit <= 1000:
        raise InvalidRequest("limit must be between 1 and 1000.")
    return limit


def _subscription(request: Request) -> str | None:
    value = request.query_params.get("subscriptionId")
    return value.lower() if value else None


@hmac_signed
async def list_deliveries(request: Request) -> Response:
    node = node_of(request)
    limit = query_limit(request)
    status = request.query_params.get("status")
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}; got '{status}'.")
    async with node.store.transaction() as tx:
        resource, wanted = resource_of(request), _subscription(request)
        if resource.is_default:
            rows = await tx.list_deliveries_by(limit, subscription_id=wanted, status=status)
        else:
            mine = await node.subscription_ids_of(tx, resource)
            scope = [wanted] if wanted is not None else sorted(mine)
            rows = []
            for sub_id in scope:
                if sub_id in mine:
                    rows += await tx.list_deliveries_by(limit, subscription_id=sub_id, status=status)
            if wanted is None:
                # Its calls' callbacks: the recent ones, as far as the limit reaches.
                recent = await tx.list_deliveries_by(limit, status=status)
                rows += [r for r in recent if r.kind == "callback" and r.audience == resource.immutable_id]
            rows = sorted(rows, key=lambda r: (-r.created_at, r.id))[:limit]
        history = await tx.list_attempts([r.id for r in rows])
    return JSONResponse({"value": [delivery_view(r, history[r.id]) for r in rows]})


@hmac_signed
async def list_dead_letters(request: Request) -> Response:
    node = node_of(request)
    limit = query_limit(request)
    async with node.store.transaction() as tx:
        resource, wanted = resource_of(request), _subscription(request)
        if resource.is_default:
            rows = await tx.list_dead_letters(limit, wanted)
        else:
            mine = await node.subscription_ids_of(tx, resource)
            rows = []
            for sub_id in [wanted] if wanted is not None else sorted(mine):
                if sub_id in mine:
                    rows += await tx.list_dead_letters(limit, sub_id)
            rows = sorted(rows, key=lambda r: (-r.created_at, r.id))[:limit]
    return JSONResponse({"value": [dead_letter_view(r) for r in rows]})


@hmac_signed
async def replay_dead_letter(request: Request) -> Response:
    node = node_of(request)
    resource = resource_of(request)
    async with node.store.transaction() as tx:
        if not resource.is_default:
            dead = await tx.get_dead_letter(request.path_params["id"])
            if dead is None or dead.subscription_id.lower() not in await node.subscription_ids_of(tx, resource):
                raise NotFound(f"Dead letter '{request.path_params['id']}' was not found.", code="DeadLetterNotFound")
        replayed = await replay(tx, request.path_params["id"], node.clock.now())
        history = await tx.list_attempts([replayed.delivery.id])
    node.delivery.wake()
    return JSONResponse(
        {
            "deadLetter": dead_letter_view(replayed.dead_letter),
            "delivery": delivery_view(replayed.delivery, history[replayed.delivery.id]),
        },
        status_code=202,
    )


routes = [
    Route("/callgrid/v1/deliveries", list_deliveries, methods=["GET"]),
    Route("/callgrid/v1/deadLetters", list_dead_letters, methods=["GET"]),
    Route("/callgrid/v1/deadLetters/{id}:replay", replay_dead_letter, methods=["POST"]),
]
