"""Reading request bodies with a limit: refused by their declared length, else while they stream in.

A body is never read whole before its limit is known to hold: an oversized one is refused with 413 as
soon as its Content-Length, or its bytes so far, pass the limit, and the connection is then closed
rather than drained. A body that stalls (no bytes for `IDLE_SECONDS`) is refused with 408.

Limits, and where they come from:
- ACS and callgrid routes: 256 KiB. ACS documents no request-size limit for these APIs; the largest bodies
  the SDKs build (a create-call with targets, custom calling context and play sources) are a few KB,
  so 256 KiB refuses nothing real while bounding what an authenticated client can make the server hold.
- a simulated party's audio (`.../participants/{rawId}:play`): 16 MiB.
- ARM routes: 4 MiB, ARM's documented limit on the largest request it takes (a deployment template).
- Event Grid publish: 1 MB per request, Event Grid's documented limit (eventgrid/custom_topics.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.requests import ClientDisconnect, Request

from callgrid.errors import PayloadTooLarge, RequestTimeout

ACS_BODY_LIMIT = 256 * 1024
# callgrid's own route for a simulated party's voice carries a base64 WAV or MP3: about 6 minutes of
# 16 kHz mono WAV fit.
AUDIO_BODY_LIMIT = 16 * 1024 * 1024
ARM_BODY_LIMIT = 4 * 1024 * 1024
# Kestrel's MinRequestBodyDataRate gives a body a 5 s grace, then wants 240 bytes/s; callgrid only
# refuses a body that stops altogether, which is what holds a connection and a task forever.
IDLE_SECONDS = 30.0


_READ = "callgrid.body_read"  # in the ASGI scope, which every Request object of one request shares


def has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return "chunked" in request.headers.get("transfer-encoding", "").lower() or (
        length is not None and length.strip() not in ("", "0")
    )


def close_if_unread(request: Request) -> dict[str, str] | None:
    """Headers for an answer given before the body was read whole: the connection is closed, not drained
    (draining would read, and wait for, whatever the client still sends)."""
    if has_body(request) and not request.scope.get(_READ):
        return {"Connection": "close"}
    return None


def _too_large(size: int | str, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body is {size} bytes; at most {limit} bytes are accepted here.", code="PayloadTooLarge"
    )


async def read_body(request: Request, limit: int, *, on_chunk: Callable[[bytes], object] | None = None) -> bytes:
    """The request's body, at most `limit` bytes (:class:`PayloadTooLarge` otherwise).

    `on_chunk` sees every chunk as it arrives (the HMAC check hashes the body with it). The body is then
    kept where Starlette keeps it, so `request.body()` and `request.json()` return it afterwards.
    """
    cached: bytes | None = getattr(request, "_body", None)
    if cached is not None:
        request.scope[_READ] = True
        if len(cached) > limit:
            raise _too_large(len(cached), limit)
        if on_chunk is not None:
            on_chunk(cached)
        return cached
    declared = request.headers.get("content-length", "").strip()
    if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        raise _too_large(declared, limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            # Not wait_for: on Python 3.11 it wraps each receive in a task of its own, and the caller waits a
            # turn of the loop for it even when the body is already there (nearly always).
            async with asyncio.timeout(IDLE_SECONDS):
                message = await request.receive()
        except TimeoutError:
            raise RequestTimeout(
                f"No part of the request body arrived for {IDLE_SECONDS:g} seconds.", code="RequestTimeout"
            ) from None
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _too_large(f"more than {limit}", limit)
            if on_chunk is not None:
                on_chunk(chunk)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    request.scope[_READ] = True
    # Starlette's own cache for request.body(): the stream cannot be read twice.
    request._body = body
    return body
