"""Webhook validation (eventgrid.md 4.1, 4.2): no event reaches an endpoint that did not consent.

A subscription that is created or updated stays `Creating`/`Updating` until its endpoint consents
(-> `Succeeded`), answers 200 without consenting (-> `AwaitingManualAction`, until a GET on the
validation/callback URL within 5 minutes), or refuses (-> `Failed`). Pending validations are found
in the store, so a restart resumes them.

Event Grid schema (and CustomInputSchema) subscriptions get the SubscriptionValidationEvent POST:
consent is `{"validationResponse": code}`. CloudEvents subscriptions get the CloudEvents
abuse-protection OPTIONS request instead: consent is 200 with `WebHook-Allowed-Origin:
eventgrid.azure.net` (or `*`), or a later GET/POST on the `WebHook-Request-Callback` URL, which is
the same URL callgrid serves for manual validation. 405 (OPTIONS not implemented) is no consent.

This loop also removes subscriptions whose expirationTimeUtc has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from callgrid.clock import Clock, iso7
from callgrid.errors import InvalidRequest, NotFound
from callgrid.eventgrid.delivery.sender import MAX_RESPONSE_BYTES, Sender, SendResult
from callgrid.eventgrid.events import validation_event
from callgrid.eventgrid.subscriptions import (
    AWAITING,
    CLOUD_EVENT_SCHEMA,
    PENDING_VALIDATION,
    SubscriptionService,
    needs_handshake,
)
from callgrid.jsonbody import loads
from callgrid.store import Store

log = logging.getLogger(__name__)

MANUAL_VALIDATION_WINDOW_SECONDS = 300.0
# The origin Event Grid (public cloud) names in the CloudEvents handshake.
WEBHOOK_ORIGIN = "eventgrid.azure.net"
_ATTEMPTS = 2
_RETRY_AFTER_SECONDS = 5.0


class SubscriptionValidator:
    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        sender: Sender,
        subscriptions: SubscriptionService,
        public_endpoint: str,
        timeout_seconds: float,
        uppercase_name: bool,
        on_change: Callable[[], None],
    ) -> None:
        self._store = store
        self._clock = clock
        self._sender = sender
        self._subscriptions = subscriptions
        self._endpoint = public_endpoint
        self._timeout = timeout_seconds
        self._uppercase = uppercase_name
        self._on_change = on_change
        self._wake = asyncio.Event()
        self._running: dict[str, asyncio.Task[None]] = {}
        # The loop and a clock advanced in steps both look; one look at a time.
        self._looking = asyncio.Lock()

    def wake(self) -> None:
        self._wake.set()

    def validation_url(self, doc: dict[str, Any]) -> str:
        return (
            f"{self._endpoint}/eventsubscriptions/{quote(doc['name'])}/validate"
            f"?id={quote(doc['id'].lower(), safe='')}&t={quote(iso7(self._clock.now()))}"
            f"&apiVersion=2018-05-01-preview&token={doc['callgrid']['validationCode']}"
        )

    async def run_forever(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.start_pending()
            except Exception:
                log.exception("validation loop error")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)

    async def next_due(self) -> float | None:
        """When a subscription next expires or its manual validation window closes, on the clock."""
        async with self._store.transaction() as tx:
            docs = await tx.list_subscriptions()
        due: list[float] = []
        for doc in docs:
            extra = doc.get("callgrid", {})
            if extra.get("expiresAt") is not None:
                due.append(float(extra["expiresAt"]))
            if doc["properties"]["provisioningState"] == AWAITING:
                window_end = float(extra["validationRequestedAt"]) + MANUAL_VALIDATION_WINDOW_SECONDS
                due.append(math.nextafter(window_end, math.inf))  # the window is closed only once past
        return min(due, default=None)

    async def start_pending(self) -> None:
        async with self._looking:
            await self._start_pending()

    async def _start_pending(self) -> None:
        async with self._store.transaction() as tx:
            docs = await tx.list_subscriptions()
        now = self._clock.now()
        expired = [doc for doc in docs if self._subscriptions.expired(doc)]
        expired_ids = {doc["id"] for doc in expired}
        if expired:
            async with self._store.transaction() as tx:
                for doc in expired:
                    await self._subscriptions.delete(tx, doc["id"])
            self._on_change()
        for doc in docs:
            state = doc["properties"]["provisioningState"]
            key = doc["id"].lower()
            if doc["id"] in expired_ids:
                continue
            if state in PENDING_VALIDATION and not needs_handshake(doc):
                await self._complete(key, doc["callgrid"]["validationCode"], None)
            elif state in PENDING_VALIDATION:
                code = doc["callgrid"]["validationCode"]
                if key + code not in self._running:
                    task = asyncio.create_task(self._validate(doc))
                    self._running[key + code] = task
                    task.add_done_callback(self._forget)
            elif state == AWAITING and (
                now - doc["callgrid"]["validationRequestedAt"] > MANUAL_VALIDATION_WINDOW_SECONDS
            ):
                await self._complete(
                    key,
                    doc["callgrid"]["validationCode"],
                    "The validation URL was not visited within 5 minutes.",
                )

    def _forget(self, task: asyncio.Task[None]) -> None:
        for key, running in list(self._running.items()):
            if running is task:
                del self._running[key]

    async def _validate(self, doc: dict[str, Any]) -> None:
        if self._store.shared and not await self._claim(doc):
            return
        if doc["properties"].get("eventDeliverySchema") == CLOUD_EVENT_SCHEMA:
            await self._validate_cloud_events(doc)
        else:
            await self._validate_event_grid(doc)

    async def _claim(self, doc: dict[str, Any]) -> bool:
        """With nodes sharing the store, one of them sends the handshake: the first to mark the subscription.
        The mark lasts as long as the handshake can, so a node that died in it leaves it to another."""
        key, code = doc["id"].lower(), doc["callgrid"]["validationCode"]
        async with self._store.transaction() as tx:
            current = await tx.get_subscription(key)
            if current is None or current["callgrid"]["validationCode"] != code:
                return False
            if current["properties"]["provisioningState"] not in PENDING_VALIDATION:
                return False
            now = self._clock.now()
            if current["callgrid"].get("handshakeUntil", -math.inf) > now:
                return False
            current["callgrid"]["handshakeUntil"] = now + (self._timeout + _RETRY_AFTER_SECONDS) * _ATTEMPTS + 5
            await tx.put_subscription(key, current)
        return True

    async def _send_with_retry(self, method: str, url: str, *, body: bytes, headers: dict[str, str]) -> SendResult:
        result: SendResult | None = None
        for attempt in range(_ATTEMPTS):
            result = await self._sender.send(method, url, body=body, headers=headers, timeout=self._timeout)
            if result.status is not None:
                break
            if attempt + 1 < _ATTEMPTS:
                await asyncio.sleep(_RETRY_AFTER_SECONDS if self._timeout >= 5 else 0.1)
        assert result is not None
        return result

    async def _validate_cloud_events(self, doc: dict[str, Any]) -> None:
        """The CloudEvents webhook abuse-protection handshake (eventgrid.md 4.2)."""
        url = doc["properties"]["destination"]["properties"]["endpointUrl"]
        code = doc["callgrid"]["validationCode"]
        headers = {
            "WebHook-Request-Origin": WEBHOOK_ORIGIN,
            "WebHook-Request-Callback": self.validation_url(doc),
        }
        result = await self._send_with_retry("OPTIONS", url, body=b"", headers=headers)
        key = doc["id"].lower()
        if result.status == 200:
            allowed = {k.lower(): v for k, v in (result.headers or {}).items()}.get("webhook-allowed-origin", "")
            origins = {o.strip().lower() for o in allowed.split(",")}
            if WEBHOOK_ORIGIN in origins or "*" in origins:
                await self._complete(key, code, None)
            else:
                # No consent in the answer: the endpoint may still consent through the callback URL.
                await self._complete(key, code, None, awaiting_manual=True)
            return
        reason = (
            f"no response ({result.outcome}: {result.error})"
            if result.status is None
            else f"response code {result.status}"
        )
        await self._complete(key, code, _failure(url, reason, method="OPTIONS"))

    async def _validate_event_grid(self, doc: dict[str, Any]) -> None:
        props = doc["properties"]
        url = props["destination"]["properties"]["endpointUrl"]
        code = doc["callgrid"]["validationCode"]
        event = validation_event(
            topic=props["topic"],
            validation_code=code,
            validation_url=self.validation_url(doc),
            now=self._clock.now(),
        )
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "aeg-event-type": "SubscriptionValidation",
            "aeg-subscription-name": doc["name"].upper() if self._uppercase else doc["name"],
            "aeg-delivery-count": "0",
            "aeg-data-version": "1",
            "aeg-metadata-version": "1",
        }
        body = json.dumps([event]).encode()
        result = await self._send_with_retry("POST", url, body=body, headers=headers)
        key = doc["id"].lower()
        if result.status == 200 and result.truncated:
            # Not read whole (a validation answer is tens of bytes; this may be a decompression bomb).
            reason = f"an answer larger than {MAX_RESPONSE_BYTES // 1024} KiB"
            await self._complete(key, code, _failure(url, reason))
            return
        if result.status == 200:
            echoed = _validation_response(result.body)
            if echoed == code:
                await self._complete(key, code, None)
                return
            if echoed is None:
                await self._complete(key, code, None, awaiting_manual=True)
                return
            await self._complete(key, code, _failure(url, f"the endpoint echoed a wrong validationResponse '{echoed}'"))
            return
        if result.status is None:
            reason = f"no response ({result.outcome}: {result.error})"
        else:
            reason = f"response code {result.status}"
        await self._complete(key, code, _failure(url, reason))

    async def _complete(self, key: str, code: str, error: str | None, awaiting_manual: bool = False) -> None:
        async with self._store.transaction() as tx:
            await self._subscriptions.complete_validation(
                tx, key, code=code, error=error, awaiting_manual=awaiting_manual
            )
        self._on_change()

    async def validate_manually(self, sub_id: str, token: str) -> str:
        """A GET on a validationUrl, or a GET/POST on a CloudEvents WebHook-Request-Callback: consent out of band."""
        async with self._store.transaction() as tx:
            doc = await tx.get_subscription(sub_id.lower())
            if doc is None:
                raise NotFound("No such event subscription.", code="ResourceNotFound")
            if doc["callgrid"]["validationCode"] != token:
                raise InvalidRequest("The validation token does not match.", code="InvalidValidationToken")
            if doc["properties"]["provisioningState"] not in (AWAITING, *PENDING_VALIDATION):
                raise InvalidRequest(
                    f"The subscription is {doc['properties']['provisioningState']}; nothing to validate.",
                    code="InvalidValidationState",
                )
            if self._clock.now() - doc["callgrid"]["validationRequestedAt"] > MANUAL_VALIDATION_WINDOW_SECONDS:
                raise InvalidRequest("The validation URL has expired (5 minutes).", code="ValidationUrlExpired")
            await self._subscriptions.complete_validation(tx, sub_id.lower(), code=token, error=None)
        self._on_change()
        return str(doc["name"])


def _validation_response(body: bytes) -> str | None:
    try:
        parsed = loads(body or b"null")
    except ValueError:
        try:
            parsed = loads(_single_quotes_to_double(body.decode("utf-8")))
        except ValueError:
            return None
    if isinstance(parsed, dict) and isinstance(parsed.get("validationResponse"), str):
        return str(parsed["validationResponse"])
    return None


def _failure(url: str, reason: str, *, method: str = "POST") -> str:
    base = url.split("?", 1)[0]
    if method == "OPTIONS":
        expected = (
            "The endpoint must answer the CloudEvents OPTIONS request with 200 and "
            f"'WebHook-Allowed-Origin: {WEBHOOK_ORIGIN}', or call the WebHook-Request-Callback URL."
        )
    else:
        expected = (
            "The endpoint must answer the SubscriptionValidationEvent with 200 and "
            '{"validationResponse": "<validationCode>"}.'
        )
    return (
        f"Webhook validation handshake failed for {base}. Http {method} request failed with {reason}. "
        f"{expected} See https://aka.ms/esvalidation."
    )


def _single_quotes_to_double(text: str) -> str:
    """`text` with its single-quoted strings written as JSON strings.

    Inferred, not documented: Microsoft's Python call-recording and live-transcription samples answer the
    handshake with `str({"validationResponse": code})`, that is `{'validationResponse': '...'}`, and
    document the subscription as succeeding; Event Grid is a .NET service, and Json.NET reads single-quoted
    names and strings. Double-quoted strings are kept as they are; what is still not JSON afterwards is
    refused by the parser as before (no consent).
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        quote_char = text[i]
        if quote_char not in "'\"":
            out.append(quote_char)
            i += 1
            continue
        j, chars = i + 1, []
        while j < n and text[j] != quote_char:
            if text[j] == "\\" and j + 1 < n:
                chars.append(text[j : j + 2])
                j += 2
            else:
                chars.append(text[j])
                j += 1
        if quote_char == '"':
            out.append(text[i : j + 1])
        else:
            inner = "".join(chars).replace("\\'", "'")
            out.append('"' + inner.replace('"', '\\"') + '"')
        i = j + 1
    return "".join(out)
