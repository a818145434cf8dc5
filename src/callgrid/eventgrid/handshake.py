"""Webhook validation (eventgrid.md 4.1): no event reaches an endpoint that did not consent.

A subscription that is created or updated stays `Creating`/`Updating` until its endpoint echoes
the validation code (-> `Succeeded`), answers 200 without it (-> `AwaitingManualAction`, until a
GET on the validationUrl within 5 minutes), or refuses (-> `Failed`). Pending validations are
found in the store, so a restart resumes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from callgrid.clock import Clock, iso7
from callgrid.errors import InvalidRequest, NotFound
from callgrid.eventgrid.delivery.sender import Sender, SendResult
from callgrid.eventgrid.events import validation_event
from callgrid.eventgrid.subscriptions import AWAITING, PENDING_VALIDATION, SubscriptionService
from callgrid.store import Store

log = logging.getLogger(__name__)

MANUAL_VALIDATION_WINDOW_SECONDS = 300.0
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

    async def start_pending(self) -> None:
        async with self._store.transaction() as tx:
            docs = await tx.list_subscriptions()
        now = self._clock.now()
        for doc in docs:
            state = doc["properties"]["provisioningState"]
            key = doc["id"].lower()
            if state in PENDING_VALIDATION:
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
        result: SendResult | None = None
        for attempt in range(_ATTEMPTS):
            result = await self._sender.send("POST", url, body=body, headers=headers, timeout=self._timeout)
            if result.status is not None:
                break
            if attempt + 1 < _ATTEMPTS:
                await asyncio.sleep(_RETRY_AFTER_SECONDS if self._timeout >= 5 else 0.1)
        assert result is not None
        key = doc["id"].lower()
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
        """The GET on a validationUrl: the endpoint's owner consents out of band."""
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
        parsed = json.loads(body or b"null")
    except ValueError:
        return None
    if isinstance(parsed, dict) and isinstance(parsed.get("validationResponse"), str):
        return str(parsed["validationResponse"])
    return None


def _failure(url: str, reason: str) -> str:
    base = url.split("?", 1)[0]
    return (
        f"Webhook validation handshake failed for {base}. Http POST request failed with {reason}. "
        "The endpoint must answer the SubscriptionValidationEvent with 200 and "
        '{"validationResponse": "<validationCode>"}. See https://aka.ms/esvalidation.'
    )
