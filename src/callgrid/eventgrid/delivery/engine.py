"""The delivery engine: claims due outbox rows, sends them, and records each outcome durably.

Rows are leased while in flight, so a crash mid-send only means the row is sent again after the
lease runs out (at-least-once). Outcomes are written back in batches, one transaction each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from callgrid.clock import Clock
from callgrid.eventgrid.delivery.retry import RetryPolicy
from callgrid.eventgrid.delivery.sender import Sender, SendResult
from callgrid.eventgrid.subscriptions import SUCCEEDED
from callgrid.store import DeliveryRow, Store, StoreTx

log = logging.getLogger(__name__)

_IDLE_POLL_SECONDS = 1.0


@dataclass
class DeliverySettings:
    timeout_seconds: float = 30.0
    uppercase_subscription_name: bool = True
    claim_batch: int = 256
    max_in_flight: int = 256


@dataclass
class _Request:
    row: DeliveryRow
    body: bytes
    headers: dict[str, str]


class DeliveryEngine:
    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        sender: Sender,
        callback_authorization: Callable[[], str],
        settings: DeliverySettings,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._sender = sender
        self._callback_authorization = callback_authorization
        self.settings = settings
        self.retry = retry or RetryPolicy()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._done: asyncio.Queue[tuple[DeliveryRow, SendResult]] = asyncio.Queue()
        self._in_flight: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        self._wake.set()

    async def recover(self) -> None:
        """On start (single node): rows leased by a process that died are due again now."""
        async with self._store.transaction() as tx:
            await tx.release_leases()

    async def run_forever(self) -> None:
        finisher = asyncio.create_task(self._finish_forever())
        try:
            while True:
                self._wake.clear()
                try:
                    claimed = await self.dispatch_due()
                except Exception:
                    log.exception("delivery loop error")
                    claimed = 0
                if claimed:
                    continue
                async with self._store.transaction() as tx:
                    next_due = await tx.next_delivery_due(self._clock.now())
                now = self._clock.now()
                if next_due is not None and next_due <= now and not self._in_flight:
                    continue
                deadline = now + 3600 if next_due is None else max(next_due, now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._clock.sleep_until(deadline, self._wake), _IDLE_POLL_SECONDS)
        finally:
            finisher.cancel()
            for task in list(self._in_flight):
                task.cancel()

    async def dispatch_due(self) -> int:
        """Claim what is due and start sending it; returns how many rows were claimed."""
        now = self._clock.now()
        lease = now + self.settings.timeout_seconds + 30.0
        requests: list[_Request] = []
        async with self._store.transaction() as tx:
            claimed = await tx.claim_deliveries(now, self.settings.claim_batch, lease)
            for row, body in claimed:
                request = await self._prepare(tx, row, body, now)
                if request is not None:
                    requests.append(request)
        for request in requests:
            await self._slots.acquire()
            task = asyncio.create_task(self._send(request))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        return len(claimed)

    async def _prepare(self, tx: StoreTx, row: DeliveryRow, body: str, now: float) -> _Request | None:
        if row.expires_at is not None and now > row.expires_at:
            # TTL is only looked at when an attempt falls due (eventgrid.md 4.5).
            self._finalise(row, "dropped", "TimeToLiveExceeded")
            await tx.finish_attempt(row)
            return None
        event = json.loads(body)
        if row.kind == "callback":
            headers = {
                "Content-Type": "application/json",
                "Authorization": self._callback_authorization(),
            }
            return _Request(row, json.dumps([event]).encode(), headers)
        sub = await tx.get_subscription(row.subscription_id or "")
        if sub is None or sub["properties"].get("provisioningState") != SUCCEEDED:
            self._finalise(row, "dropped", "SubscriptionDeleted" if sub is None else "SubscriptionNotActive")
            await tx.finish_attempt(row)
            return None
        name = sub["name"].upper() if self.settings.uppercase_subscription_name else sub["name"]
        row.url = sub["properties"]["destination"]["properties"]["endpointUrl"]
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "aeg-event-type": "Notification",
            "aeg-subscription-name": name,
            "aeg-delivery-count": str(row.attempts),
            "aeg-data-version": str(event.get("dataVersion", "")),
            "aeg-metadata-version": "1",
            "aeg-output-event-id": row.id,
        }
        return _Request(row, json.dumps([event]).encode(), headers)

    async def _send(self, request: _Request) -> None:
        try:
            result = await self._sender.send(
                "POST",
                request.row.url,
                body=request.body,
                headers=request.headers,
                timeout=self.settings.timeout_seconds,
            )
        except Exception as exc:  # a sender bug must not lose the row: record it as a failed attempt
            log.exception("sender failed")
            result = SendResult(None, "GenericError", error=str(exc))
        finally:
            self._slots.release()
        await self._done.put((request.row, result))

    async def _finish_forever(self) -> None:
        while True:
            first = await self._done.get()
            batch = [first]
            while not self._done.empty() and len(batch) < 512:
                batch.append(self._done.get_nowait())
            try:
                async with self._store.transaction() as tx:
                    for row, result in batch:
                        self._record(row, result)
                        await tx.finish_attempt(row)
            except Exception:
                # Not recorded: the lease runs out and the rows are sent again (at-least-once).
                log.exception("could not record %d delivery outcomes", len(batch))
            self._wake.set()

    def _record(self, row: DeliveryRow, result: SendResult) -> None:
        now = self._clock.now()
        row.attempts += 1
        row.last_attempt_at = now
        row.last_status = result.status
        row.last_outcome = result.outcome
        row.last_error = result.error
        row.lease_until = None
        if result.ok:
            row.status = "delivered"
            return
        if row.kind == "eventgrid" and not self.retry.should_retry(result.status):
            self._finalise(row, "dropped", _undeliverable_reason(result))
            return
        if row.attempts >= row.max_attempts:
            self._finalise(row, "dropped", "MaxDeliveryAttemptsExceeded")
            return
        row.next_attempt_at = now + self.retry.delay(row.attempts, result.status)

    @staticmethod
    def _finalise(row: DeliveryRow, status: str, reason: str) -> None:
        row.status = status
        row.lease_until = None
        row.last_error = reason if row.last_error is None else f"{reason}: {row.last_error}"

    async def drain(self) -> None:
        """Wait for what is in flight now to be recorded (used on shutdown and by tests)."""
        while self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)
        while not self._done.empty():
            await asyncio.sleep(0.01)


def _undeliverable_reason(result: SendResult) -> str:
    return "UndeliverableDueToHttp" + (result.outcome if result.status else "Error")


def describe(row: DeliveryRow) -> dict[str, Any]:
    """A delivery as callgrid's own API shows it."""
    return {
        "id": row.id,
        "kind": row.kind,
        "eventId": row.event_id,
        "subscriptionId": row.subscription_id,
        "url": row.url.split("?", 1)[0],
        "status": row.status,
        "attempts": row.attempts,
        "maxAttempts": row.max_attempts,
        "nextAttemptAt": row.next_attempt_at,
        "lastStatus": row.last_status,
        "lastOutcome": row.last_outcome,
        "lastError": row.last_error,
    }
