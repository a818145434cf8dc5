"""Past capacity, answer 429 with `Retry-After` at once, as ACS throttles, instead of queueing into seconds.

Every request that is not a scrape, a health probe or the console counts as in flight from the moment its
headers are parsed until its response ends: what waits for the event loop, for the store's write lock or
for a commit is in there. While `max_requests_in_flight` are, the next one is refused before any of its
work starts (nothing is read, written or raised), so whatever callgrid did accept still completes, and a
client that honours `Retry-After` (azure-core's RetryPolicy sleeps for it, then retries, POSTs included)
comes back when the queue has drained. The refusals are counted in `/metrics`.

Requests are not the only queue: each accepted call leaves deliveries behind it, and past capacity those
wait while new calls keep being accepted cheaply. So, on the system clock, a task samples how far the
oldest due delivery is behind (the store's `next_delivery_due`, every 0.1 s) and, while that is more than
`max_delivery_lag_seconds`, requests that could add work (any method but GET, HEAD and OPTIONS) are refused
the same way. Reads are still answered then: they leave no delivery behind, and a client watching a backlog
drain must be able to see it. On a virtual clock the sampling is off: moving the clock makes deliveries due
at once by design.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from callgrid.api.errors import error_response
from callgrid.clock import Clock
from callgrid.store import Store, StoreUnavailable

log = logging.getLogger(__name__)

# Never refused, never counted: Prometheus must see an overload, probes must not call a busy server dead,
# and the console's event stream stays open for as long as a browser watches.
_EXEMPT = ("/metrics", "/callgrid/v1/health", "/console")
# A refused request's unread body up to this size is left for the HTTP parser to skip, keeping the
# connection (a new TLS handshake per refusal would cost more than the refusal saves); above it, close.
_KEEP_ALIVE_BODY_LIMIT = 64 * 1024
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class Admission:
    """The bound, and what `/metrics` reports of it."""

    max_requests_in_flight: int  # 0: no bound
    retry_after_seconds: int
    max_delivery_lag_seconds: float = 0.0  # 0: no bound
    in_flight: int = 0
    max_in_flight_seen: int = 0
    throttled: int = 0
    delivery_lag_seconds: float = 0.0

    def refuses(self, method: str) -> bool:
        if 0 < self.max_requests_in_flight <= self.in_flight:
            return True
        return method not in _READS and 0 < self.max_delivery_lag_seconds < self.delivery_lag_seconds

    def snapshot(self) -> dict[str, float]:
        return {
            "requestsInFlight": self.in_flight,
            "maxRequestsInFlight": self.max_requests_in_flight,
            "maxRequestsInFlightSeen": self.max_in_flight_seen,
            "requestsThrottled": self.throttled,
            "deliveryLagSeconds": round(self.delivery_lag_seconds, 3),
        }

    async def watch_deliveries(
        self,
        store: Store,
        clock: Clock,
        interval: float = 0.1,
        *,
        waiting_since: Callable[[], float | None] | None = None,
    ) -> None:
        """Keeps `delivery_lag_seconds` current until cancelled (the server's lifespan runs it): the oldest due
        delivery the store holds unleased, or the oldest `waiting_since` says waits in the engine's memory
        (claimed rows are leased while they wait there for a slot, so the store does not see them wait)."""
        while True:
            try:
                async with store.transaction() as tx:
                    due = await tx.next_delivery_due(clock.now())
                waiting = waiting_since() if waiting_since is not None else None
                if waiting is not None and (due is None or waiting < due):
                    due = waiting
                self.delivery_lag_seconds = max(0.0, clock.now() - due) if due is not None else 0.0
            except StoreUnavailable:
                self.delivery_lag_seconds = 0.0  # the requests themselves will say so
            except Exception:
                # A stale lag would refuse every request for good: forget it, say why, and keep sampling.
                log.exception("could not sample the delivery lag")
                self.delivery_lag_seconds = 0.0
            await asyncio.sleep(interval)


class Throttle:
    """ASGI middleware: counts requests in flight and refuses those past `Admission.max_requests_in_flight`."""

    def __init__(self, app: ASGIApp, admission: Admission) -> None:
        self.app = app
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(_EXEMPT):
            await self.app(scope, receive, send)
            return
        admission = self.admission
        if admission.refuses(scope["method"]):
            admission.throttled += 1
            await self._refuse(scope, receive, send)
            return
        admission.in_flight += 1
        admission.max_in_flight_seen = max(admission.max_in_flight_seen, admission.in_flight)
        try:
            await self.app(scope, receive, send)
        finally:
            admission.in_flight -= 1

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        seconds = self.admission.retry_after_seconds
        headers = {"Retry-After": str(seconds)}
        if _body_length(scope) > _KEEP_ALIVE_BODY_LIMIT:
            headers["Connection"] = "close"
        response = error_response(
            429,
            "TooManyRequests",
            f"callgrid is past capacity ({self.admission.in_flight} requests in flight, event deliveries "
            f"{self.admission.delivery_lag_seconds:.1f} s behind); nothing was done. Retry after {seconds} s.",
            headers=headers,
        )
        await response(scope, receive, send)


def _body_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return _KEEP_ALIVE_BODY_LIMIT + 1
        if name == b"transfer-encoding":
            return _KEEP_ALIVE_BODY_LIMIT + 1  # chunked: its size is unknown until read
    return 0
