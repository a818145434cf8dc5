"""Repeatability-Request-ID / Repeatability-First-Sent (acs-wire.md 1.6): a retried request acts once.

azure-core retries POSTs with the same Repeatability-Request-ID; the first response (success or ACS
error) is kept in the store for a bounded time and replayed to every retry. A retry that arrives
while the first is still being processed waits briefly for its answer.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import uuid
from email.utils import parsedate_to_datetime

from starlette.requests import Request
from starlette.responses import Response

from callgrid.api.auth import Handler, node_of
from callgrid.api.errors import error_response
from callgrid.errors import CallgridError

# How long a first response is replayed (the SDK's retries happen within seconds; Azure keeps it minutes).
LIFETIME_SECONDS = 600.0
_WAIT_FOR_FIRST_SECONDS = 5.0


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
        deadline = asyncio.get_running_loop().time() + _WAIT_FOR_FIRST_SECONDS
        while True:
            now = node.clock.now()
            async with node.store.transaction() as tx:
                seen = await tx.get_repeatable(request_id, now)
                if seen is None:
                    await tx.put_repeatable(
                        request_id, {"fingerprint": fingerprint, "status": None}, now, now + LIFETIME_SECONDS
                    )
            if seen is None:
                break
            if seen["fingerprint"] != fingerprint:
                return error_response(
                    409,
                    "8519",
                    f"Repeatability-Request-ID {request_id} was already used for a different request.",
                )
            if seen["status"] is not None:
                return _replay(seen["response"])
            if asyncio.get_running_loop().time() > deadline:
                return error_response(
                    409, "8519", f"The request with Repeatability-Request-ID {request_id} is still being processed."
                )
            await asyncio.sleep(0.05)
        try:
            response = await handler(request)
        except CallgridError as exc:
            response = error_response(int(exc.kind), exc.code, exc.message)
        except BaseException:
            # Nothing was done (the operation's transaction rolled back): a retry may try again.
            async with node.store.transaction() as tx:
                await tx.delete_repeatable(request_id)
            raise
        async with node.store.transaction() as tx:
            if response.status_code >= 500:
                await tx.delete_repeatable(request_id)
            else:
                await tx.put_repeatable(
                    request_id,
                    {
                        "fingerprint": fingerprint,
                        "status": response.status_code,
                        "response": {
                            "status": response.status_code,
                            "body": bytes(response.body).decode("utf-8"),
                            "mediaType": response.headers.get("content-type"),
                        },
                    },
                    now,
                    now + LIFETIME_SECONDS,
                )
        return response

    return wrapper


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


def _replay(saved: dict[str, str]) -> Response:
    headers = {"Repeatability-Result": "accepted"}
    response = Response(saved["body"].encode("utf-8"), status_code=int(saved["status"]), headers=headers)
    if saved.get("mediaType"):
        response.headers["content-type"] = saved["mediaType"]
    return response
