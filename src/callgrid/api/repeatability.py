"""Repeatability-Request-ID / Repeatability-First-Sent (acs-wire.md 1.6): a retried request acts once.

azure-core retries POSTs with the same Repeatability-Request-ID; the first response (success or ACS
error) is kept in the store for a bounded time and replayed to every retry.

At most once, even across a crash: a repeatable route runs its operation in `operation(node)`, whose
transaction both acts and stores the response it answers with. Either both are committed or neither,
so a retry finds the first response or finds nothing done. Errors roll their operation back, so
they are stored afterwards in a transaction of their own. Two copies of one request racing each other
are settled by the store's transactions being serial: the one that commits second sees the first's
answer when its transaction begins, and replays it instead of acting.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from callgrid.api.auth import Handler, node_of, resource_of
from callgrid.api.errors import error_response
from callgrid.errors import CallgridError
from callgrid.node import Node
from callgrid.store import StoreTx

# How long a first response is replayed (the SDK's retries happen within seconds; Azure keeps it minutes).
LIFETIME_SECONDS = 600.0


@dataclass
class _Claim:
    """The repeatable request being served (set by `repeatable` for the handler's task)."""

    request_id: str
    fingerprint: str
    answered: bool = False


_current: ContextVar[_Claim | None] = ContextVar("callgrid_repeatable_request", default=None)


class _AlreadyAnswered(Exception):
    """Raised at the start of an operation's transaction when another copy of the request got there first."""

    def __init__(self, seen: dict[str, Any]) -> None:
        super().__init__("already answered")
        self.seen = seen


@dataclass
class Operation:
    """An operation's transaction; `respond` stores the answer in it when the request is repeatable."""

    tx: StoreTx
    now: float
    _claim: _Claim | None

    async def respond(self, response: Response) -> Response:
        claim = self._claim
        if claim is not None and response.status_code < 500:
            await self.tx.put_repeatable(
                claim.request_id, _entry(claim, response), self.now, self.now + LIFETIME_SECONDS
            )
            claim.answered = True
        return response


@asynccontextmanager
async def operation(node: Node) -> AsyncIterator[Operation]:
    """The transaction of a route's one state-changing step. Outside a repeatable request it is just that."""
    claim = _current.get()
    async with node.store.transaction() as tx:
        now = node.clock.now()
        if claim is not None:
            seen = await _answered(tx, claim.request_id, now)
            if seen is not None:
                raise _AlreadyAnswered(seen)
        yield Operation(tx, now, claim)


def repeatable(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def wrapper(request: Request) -> Response:
        request_id = request.headers.get("repeatability-request-id")
        if request_id is None:
            return await handler(request)
        problem = _check_headers(request_id, request.headers.get("repeatability-first-sent"))
        if problem is not None:
            return error_response(400, "8523", problem)
        node = node_of(request)
        body = await request.body()
        fingerprint = hashlib.sha256(f"{request.method} {request.url.path}\n".encode() + body).hexdigest()
        # No look-up here: the operation's own transaction checks for an earlier answer before acting, and
        # a route that fails before it checks at the end, so a retry is answered without an extra transaction.
        # Request ids are the client's: each resource has its own (the default one keeps the bare id).
        resource = resource_of(request)
        key = request_id if resource.is_default else f"{resource.immutable_id}/{request_id}"
        claim = _Claim(key, fingerprint)
        token = _current.set(claim)
        try:
            response = await handler(request)
        except _AlreadyAnswered as exc:
            return _to_retry(request_id, exc.seen, fingerprint)
        except CallgridError as exc:
            response = error_response(int(exc.kind), exc.code, exc.message)
        finally:
            _current.reset(token)
        if claim.answered or response.status_code >= 500:
            return response
        # Not stored by an operation: an error, whose operation (if it began) rolled back. Nothing was done,
        # so storing it on its own is safe; if a copy of the request was answered meanwhile, that answer wins.
        async with node.store.transaction() as tx:
            now = node.clock.now()
            seen = await _answered(tx, key, now)
            if seen is None:
                await tx.put_repeatable(key, _entry(claim, response), now, now + LIFETIME_SECONDS)
        return response if seen is None else _to_retry(request_id, seen, fingerprint)

    return wrapper


async def _answered(tx: StoreTx, request_id: str, now: float) -> dict[str, Any] | None:
    seen = await tx.get_repeatable(request_id, now)
    # Entries without a status are "in progress" markers written by earlier versions; they promise nothing.
    return seen if seen is not None and seen["status"] is not None else None


def _entry(claim: _Claim, response: Response) -> dict[str, Any]:
    return {
        "fingerprint": claim.fingerprint,
        "status": response.status_code,
        "response": {
            "status": response.status_code,
            "body": bytes(response.body).decode("utf-8"),
            "mediaType": response.headers.get("content-type"),
        },
    }


def _to_retry(request_id: str, seen: dict[str, Any], fingerprint: str) -> Response:
    if seen["fingerprint"] != fingerprint:
        return error_response(
            409, "8519", f"Repeatability-Request-ID {request_id} was already used for a different request."
        )
    saved = seen["response"]
    response = Response(
        saved["body"].encode("utf-8"), status_code=int(saved["status"]), headers={"Repeatability-Result": "accepted"}
    )
    if saved.get("mediaType"):
        response.headers["content-type"] = saved["mediaType"]
    return response


def _check_headers(request_id: str, first_sent: str | None) -> str | None:
    try:
        uuid.UUID(request_id)
    except ValueError:
        return f"Repeatability-Request-ID must be a UUID; got {request_id!r}."
    if first_sent is not None:
        try:
            parsedate_to_datetime(first_sent)
        except (TypeError, ValueError):
            return f"Repeatability-First-Sent must be an RFC 1123 date; got {first_sent!r}."
    return None
