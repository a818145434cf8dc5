"""The delivery engine: claims due outbox rows, sends them, and records each outcome durably.

Rows are leased while in flight, so a crash mid-send only means the row is sent again after a
restart (at-least-once). Rows this node publishes while the engine runs are inserted already leased
to it and handed over once their transaction commits (`lease_for_handoff`, `hand_over`): they are sent
without a claim transaction, and are the store's to give back like any claimed row (its lease ends,
or this node starting again takes its leases back). A claim groups a subscription's due rows into
output batches; outcomes are written back in bulk, many POSTs per transaction. Every wait (retry
delays, the response time limit, probation) is on the injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from callgrid import jsonio
from callgrid.clock import Clock
from callgrid.eventgrid.delivery.batching import plan_batches
from callgrid.eventgrid.delivery.deadletter import (
    MAX_DELIVERY_ATTEMPTS_EXCEEDED,
    PROBATION_OUTCOME,
    PROBATION_REASON,
    dead_letter_item,
    undeliverable_reason,
)
from callgrid.eventgrid.delivery.metrics import MetricCounts, MetricsBuffer
from callgrid.eventgrid.delivery.payload import Target, dead_letter_text, delivered_text, request_for
from callgrid.eventgrid.delivery.probation import Probation
from callgrid.eventgrid.delivery.retry import RetryPolicy
from callgrid.eventgrid.delivery.sender import Sender, SendResult
from callgrid.eventgrid.subscriptions import PENDING_VALIDATION, SUCCEEDED
from callgrid.store import AttemptRow, DeadLetterRow, DeliveryRow, Store, StoreTx

log = logging.getLogger(__name__)

_IDLE_POLL_SECONDS = 1.0
# How long (real time) answered requests' outcomes may wait in memory for a claim to share a transaction
# with. Unrecorded, a row is only sent again after a crash, as one in flight would be (at-least-once).
_RECORD_HOLD_SECONDS = 0.02
# Outcomes recorded in one transaction at most.
_RECORD_BATCH = 1024
# A webhook that answers a timed-out request within this long after it was sent still gets the event
# counted delivered, if its retry has not gone out yet: Azure's best-effort cancel (eventgrid.md 4.5).
LATE_ANSWER_WINDOW_SECONDS = 180.0
# A subscription being re-validated (an update) keeps its events; they are looked at again after this.
_REVALIDATION_WAIT_SECONDS = 10.0
# Outcome recorded for an event that expired or was dropped without any attempt.
_NO_ATTEMPT_OUTCOME = "Canceled"
CALLBACK_NOT_ANSWERED = "CallbackNotAnswered"
# How long (real time) a clock moved in steps waits for sends, claims or records that are not a POST in flight.
_SETTLE_LIMIT_SECONDS = 30.0


@dataclass
class DeliverySettings:
    timeout_seconds: float = 30.0
    uppercase_subscription_name: bool = True
    claim_batch: int = 2048
    max_in_flight: int = 256
    # Bulkhead: one destination (an endpoint URL) has at most this many requests in flight and this many
    # waiting, so one that hangs holds its own share of the slots, never all of them.
    max_in_flight_per_destination: int = 32
    max_queued_per_destination: int = 2048
    # How long (real time) a callback still unanswered holds back the next ones to its URL. Callbacks go
    # out in the order raised; an app that answers late (or never: Microsoft's JavaScript transcription
    # and OpenAI samples never answer theirs, and their flows run on Azure) is not made to wait the whole
    # response timeout for each event. Inferred from those samples: ACS documents no such wait.
    callback_hold_seconds: float = 2.0
    ttl_reason: str = "TimeToLiveExceeded"
    dead_letter_delay_seconds: float = 0.0
    probation_failure_threshold: int = 10
    cloud_event_dataschema: bool = True
    # The name this node leases rows under (store.own_leases): what it takes back when it starts again.
    lease_owner: str = ""


@dataclass
class _Request:
    rows: list[DeliveryRow]
    texts: list[str]  # what each event's dead-letter item is built on (payload.dead_letter_text)
    target: Target | None  # None for Call Automation callbacks
    url: str
    body: bytes
    headers: dict[str, str]
    started_at: float = 0.0
    duration_ms: float = 0.0


@dataclass
class _Lane:
    """One destination: how many of its requests are in flight, and those waiting for one of its slots."""

    queue: deque[_Request] = field(default_factory=deque)
    in_flight: int = 0
    # The loop waits for this destination's room (rows were put back, or it has a backlog): wake it then.
    deferred: bool = False


@dataclass
class _Outcomes:
    """Answered requests' changes, to be written in one transaction."""

    rows: list[DeliveryRow] = field(default_factory=list)
    attempts: list[AttemptRow] = field(default_factory=list)
    dead: list[DeadLetterRow] = field(default_factory=list)
    counts: MetricCounts = field(default_factory=MetricCounts)


@dataclass
class _Work:
    """One of the engine's transactions: its metric counts, and whether it started sending anything."""

    tx: StoreTx
    counts: MetricCounts
    busy: bool = False


@dataclass
class _Handed:
    """Rows one committed transaction inserted leased to this node: (row, stored event, the subscription's
    document as published against, None for a callback), and whether those documents are still current."""

    rows: list[tuple[DeliveryRow, str, dict[str, Any] | None]]
    current: Callable[[], bool] | None
    since: float  # when handed over: it waits for the starter as a claimed request waits for a slot


@dataclass
class _Claim:
    requests: list[_Request] = field(default_factory=list)
    settled: list[DeliveryRow] = field(default_factory=list)  # ended or rescheduled without an attempt
    dead: list[DeadLetterRow] = field(default_factory=list)
    counts: MetricCounts = field(default_factory=MetricCounts)
    full: set[str] = field(default_factory=set)  # destinations left with less than their refill room


class DeliveryEngine:
    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        sender: Sender,
        callback_authorization: Callable[[str | None], str],
        settings: DeliverySettings,
        retry: RetryPolicy | None = None,
        on_dead_letter: Callable[[], None] | None = None,
        metrics: MetricsBuffer | None = None,
    ) -> None:
        self._store = store
        # Where counts wait to be folded into one of this engine's transactions (None: each is written
        # with the transaction that made it).
        self._metrics = metrics
        self._clock = clock
        self._sender = sender
        self._callback_authorization = callback_authorization
        self.settings = settings
        self.retry = retry or RetryPolicy()
        self.probation = Probation(settings.probation_failure_threshold)
        self._on_dead_letter = on_dead_letter
        self._wake = asyncio.Event()  # set for a claim wanted, and for an outcome to record
        self._claim_wanted = True
        # Ends a hold of outcomes (a claim is wanted, or a batch's worth waits); not set by each outcome, so a
        # hold costs one wait however many come in meanwhile.
        self._hold_end = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._done: asyncio.Queue[tuple[_Request, SendResult]] = asyncio.Queue()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._in_flight_ids: set[str] = set()
        self._callback_queues: dict[str, deque[_Request]] = {}
        self._lanes: dict[str, _Lane] = {}
        self._next_due: float | None = None
        self._callback_chains: dict[str, asyncio.Task[None]] = {}
        # Response time limits, watched on the clock (a virtual clock times requests out when moved).
        self._deadlines: dict[asyncio.Future[Any], float] = {}
        self._timed_out: set[asyncio.Future[Any]] = set()
        # Requests that timed out but may still be answered, and the recording of such late answers.
        self._late: set[asyncio.Future[Any]] = set()
        self._watch_wake = asyncio.Event()
        # For a clock that is advanced in steps (settle): claims being made, outcomes being recorded,
        # and when (real time) each sending task began its current POST.
        self._dispatching = 0
        self._recording = 0
        self._sending_since: dict[asyncio.Future[Any], float] = {}
        # Requests claimed and waiting for one of the engine's slots: id -> since when. Their rows are leased, so
        # the store's due rows do not show them waiting. Not those behind their own destination (a full lane,
        # an earlier callback to the URL): one slow app is its own backlog, not the server's.
        self._waiting: dict[int, float] = {}
        # Rows inserted leased to this node, handed over after their commit, waiting to be started.
        self._running = False
        self._handed: list[_Handed] = []
        self._handed_rows = 0
        self._handed_ready = asyncio.Event()
        self._handoff_targets: dict[str, tuple[dict[str, Any], Target]] = {}

    def backlog_since(self) -> float | None:
        """Since when the oldest request claimed and waiting for a slot has waited in this engine's memory, None
        if none waits: the part of the delivery lag the store cannot see (the throttle adds it to the store's).
        Rows handed over and not yet planned count from their hand-over: they are leased too."""
        oldest = min(self._waiting.values(), default=None)
        if self._handed:
            handed = self._handed[0].since
            oldest = handed if oldest is None else min(oldest, handed)
        return oldest

    def wake(self) -> None:
        """Claim what is due now (rows were added)."""
        self._claim_wanted = True
        self._wake.set()
        self._hold_end.set()

    def lease_for_handoff(self, now: float) -> tuple[float, str] | None:
        """Until when, and in whose name, a row published now may be leased to this node and handed over (as
        a claim would lease it), or None: the engine is not running, and the row is inserted unleased
        (claimed once it runs)."""
        # Never refused for a backlog: handed rows are started without waiting for a slot (each request waits
        # in its own task, within its lane's bounds), and one refusal could let a callback overtake the one
        # raised before it, which went in unleased.
        if not self._running:
            return None
        return self._lease_end(now), self.settings.lease_owner

    def _lease_end(self, now: float) -> float:
        return now + self.settings.timeout_seconds + 30.0

    def hand_over(
        self, rows: list[tuple[DeliveryRow, str, dict[str, Any] | None]], current: Callable[[], bool] | None
    ) -> None:
        """Send rows that a committed transaction inserted leased to this node (after `lease_for_handoff`).
        `current` says whether the subscription documents given are still what the store holds; when it says
        no, they are read again before the rows are planned. Not started (the engine stopped first), the rows
        wait for their leases to end, or for this node to start again and take them back."""
        self._handed.append(_Handed(rows, current, self._clock.now()))
        self._handed_rows += len(rows)
        self._handed_ready.set()

    async def recover(self) -> None:
        """On start: rows this node leased before it stopped (or died) are due again now, not when their
        leases run out; on a shared store, other nodes' leases are theirs (see Store.release_leases)."""
        async with self._store.transaction() as tx:
            await tx.release_leases(self.settings.lease_owner)

    async def run_forever(self) -> None:
        watcher = asyncio.create_task(self._watch_timeouts())
        starter = asyncio.create_task(self._start_handed_forever())
        self._running = True
        try:
            while True:
                claim = True
                if not (self._done.empty() or self._claim_wanted or self._due_now()):
                    # Only outcomes to record: a claim now would only find what a full lane put back.
                    await self._hold_outcomes()
                    claim = self._claim_wanted or self._due_now()
                self._wake.clear()
                self._claim_wanted = False
                try:
                    claimed = await self._cycle(claim)
                except Exception:
                    log.exception("delivery loop error")
                    claimed, self._next_due = 0, self._clock.now() + _IDLE_POLL_SECONDS
                if claimed >= self._claim_size or not self._done.empty():
                    continue  # there may be more due right now, or outcomes came in meanwhile
                next_due = self._next_due  # read in the claim's own transaction
                now = self._clock.now()
                if next_due is not None and next_due <= now and not self._in_flight:
                    continue
                deadline = now + 3600 if next_due is None else max(next_due, now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._clock.sleep_until(deadline, self._wake), _IDLE_POLL_SECONDS)
        finally:
            self._waiting.clear()
            self._running = False
            for task in (watcher, starter, *self._in_flight, *self._late):
                task.cancel()

    def _due_now(self) -> bool:
        return self._next_due is not None and self._next_due <= self._clock.now()

    async def _hold_outcomes(self) -> None:
        """Outcomes to record, and nothing to claim yet: wait a little (real time) for a claim to record them
        with. A routed call's first outcome comes just before the redirect that raises its next event, and
        under load the next call's event comes within the hold: one transaction instead of two."""
        self._hold_end.clear()
        if self._claim_wanted or self._done.qsize() >= _RECORD_BATCH:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hold_end.wait(), _RECORD_HOLD_SECONDS)

    async def _cycle(self, claim: bool) -> int:
        """One transaction for what the loop has to do now: record the outcomes that came in, then claim
        what is due (if `claim`). A routed call's deliveries each need both, and one COMMIT is cheaper than
        two (the two touch the same delivery pages). Returns how many rows were claimed."""
        batch: list[tuple[_Request, SendResult]] = []
        while not self._done.empty() and len(batch) < _RECORD_BATCH:
            batch.append(self._done.get_nowait())
        if not batch:
            return await self.dispatch_due() if claim else 0
        if not claim:
            self._recording += 1
            outcomes = self._outcomes(batch, self._clock.now())
            try:
                await self._record(outcomes)
            finally:
                self._in_flight_ids.difference_update(r.id for r in outcomes.rows)
                self._recording -= 1
            # A retry may now be due before the loop's next look; an ended row needs no look.
            if any(r.status == "pending" for r in outcomes.rows):
                self.wake()
            return 0
        self._recording += 1
        self._dispatching += 1
        outcomes = self._outcomes(batch, self._clock.now())
        try:
            try:
                async with self._transaction(outcomes.counts) as work:
                    await self._write_outcomes(work.tx, outcomes)
                    # Recorded rows are no longer in flight: one whose retry is due now is claimed below.
                    self._in_flight_ids.difference_update(r.id for r in outcomes.rows)
                    claimed = await self._claim(work)
            except Exception:
                # The outcomes alone, so that a claim that fails does not keep them from being recorded.
                log.exception("delivery loop error; recording %d outcomes on their own", len(outcomes.rows))
                await self._record(outcomes)
                raise
            self._recorded(outcomes)
            return await self._start(*claimed)
        finally:
            self._in_flight_ids.difference_update(r.id for r in outcomes.rows)
            self._recording -= 1
            self._dispatching -= 1

    @contextlib.asynccontextmanager
    async def _transaction(self, counts: MetricCounts) -> AsyncIterator[_Work]:
        """A transaction of the engine's, whose metric counts (`counts`, which the body adds to) are written
        at its end: with what the buffer holds when a fold is due (the engine goes idle, or the interval has
        passed), else into the buffer once it commits. A fold that does not commit goes back to the buffer."""
        buffer = self._metrics
        taken: MetricCounts | None = None
        committed = False
        try:
            async with self._store.transaction() as tx:
                work = _Work(tx, MetricCounts())
                work.counts.merge(counts)  # a copy: what the body adds stays out of the caller's
                yield work
                if buffer is None:
                    if work.counts:
                        await tx.add_metric_counts(work.counts.rows())
                else:
                    idle = not (self._in_flight_ids or work.busy) and self._done.empty()
                    taken = buffer.fold(work.counts, idle=idle)
                    if taken is not None:
                        await tx.add_metric_counts(taken.rows())
                    elif work.counts:
                        tx.after_commit(functools.partial(buffer.add, work.counts))
            committed = True
        finally:
            if buffer is not None and taken is not None:
                buffer.folded(taken, committed)

    # ------------------------------------------------------------------ claiming

    async def dispatch_due(self) -> int:
        """Claim what is due and start sending it; returns how many rows were claimed."""
        self._dispatching += 1
        try:
            return await self._dispatch_due()
        finally:
            self._dispatching -= 1

    async def _dispatch_due(self) -> int:
        async with self._transaction(MetricCounts()) as work:
            claimed = await self._claim(work)
        return await self._start(*claimed)

    async def _claim(self, work: _Work) -> tuple[_Claim, int, bool]:
        """Claim what is due and plan its requests: (the claim, rows claimed, whether some were put back)."""
        tx = work.tx
        now = self._clock.now()
        lease = self._lease_end(now)
        rows = await tx.claim_deliveries(now, self._claim_size, lease, self.settings.lease_owner)
        targets: dict[str, Target | None] = {}
        for row, _ in rows:
            sid = row.subscription_id
            if row.kind != "callback" and row.id not in self._in_flight_ids and sid is not None and sid not in targets:
                targets[sid] = await self._read_target(tx, sid)
        claim = self._plan(rows, now, targets)
        deferred = self._defer_beyond_lanes(claim, now)
        await self._write_claim(work, claim)
        # Put-back rows are due now, behind the others; the lane that had no room wakes the loop once it
        # has, rather than the loop claiming them again and again meanwhile.
        self._next_due = None if deferred else await tx.next_delivery_due(now)
        return claim, len(rows), deferred

    async def _read_target(self, tx: StoreTx, sid: str) -> Target | None:
        doc = await tx.get_subscription(sid)
        return None if doc is None else Target.from_doc(doc, uppercase_name=self._uppercase)

    @staticmethod
    async def _write_claim(work: _Work, claim: _Claim) -> None:
        """Write what planning settled without an attempt (ended, dead-lettered, put back)."""
        if claim.settled:
            await work.tx.finish_attempts(claim.settled, [])
        if claim.dead:
            await work.tx.add_dead_letters(claim.dead)
        work.counts.merge(claim.counts)
        work.busy = bool(claim.requests)

    # ------------------------------------------------------------------ rows handed over

    async def _start_handed_forever(self) -> None:
        while True:
            await self._handed_ready.wait()
            self._handed_ready.clear()
            while self._handed:
                self._dispatching += 1
                try:
                    await self._start_handed()
                except Exception:
                    # Their leases stand: the rows are sent when those end (or this node starts again).
                    log.exception("could not start deliveries handed over; they go when their leases end")
                finally:
                    self._dispatching -= 1

    def _handoff_target(self, doc: dict[str, Any]) -> Target:
        sid = doc["id"].lower()
        cached = self._handoff_targets.get(sid)
        if cached is not None and cached[0] is doc:
            return cached[1]
        target = Target.from_doc(doc, uppercase_name=self._uppercase)
        self._handoff_targets[sid] = (doc, target)
        return target

    async def _start_handed(self) -> None:
        """Plan and start what was handed over: with no transaction unless a subscription changed meanwhile
        (it is read again) or planning settled some rows (a lane had no room, a row expired, probation)."""
        handed, self._handed = self._handed, []
        try:
            await self._plan_handed(handed)
        finally:
            # Counted until started: what drain and settle wait for.
            self._handed_rows -= sum(len(h.rows) for h in handed)

    async def _plan_handed(self, handed: list[_Handed]) -> None:
        now = self._clock.now()
        rows: list[tuple[DeliveryRow, str]] = []
        targets: dict[str, Target | None] = {}
        stale: set[str] = set()
        for batch in handed:
            fresh = batch.current is None or batch.current()
            for row, stored, doc in batch.rows:
                rows.append((row, stored))
                if doc is None or row.subscription_id is None:
                    continue
                if fresh:
                    targets[row.subscription_id] = self._handoff_target(doc)
                else:
                    stale.add(row.subscription_id)
        stale.difference_update(targets)
        if stale:
            async with self._transaction(MetricCounts()) as work:
                for sid in stale:
                    targets[sid] = await self._read_target(work.tx, sid)
                claim = self._plan(rows, now, targets)
                deferred = self._defer_beyond_lanes(claim, now)
                await self._write_claim(work, claim)
        else:
            claim = self._plan(rows, now, targets)
            deferred = self._defer_beyond_lanes(claim, now)
            if claim.settled or claim.dead or claim.counts:
                try:
                    async with self._transaction(MetricCounts()) as work:
                        await self._write_claim(work, claim)
                except Exception:
                    # The rows settled stay leased (looked at again when that ends); the others are sent.
                    log.exception("could not record %d deliveries handed over and settled", len(claim.settled))
                    claim.dead.clear()
        await self._start(claim, 0, deferred, wait=False)

    async def _start(self, claim: _Claim, claimed: int, deferred: bool, *, wait: bool = True) -> int:
        """Start sending what a committed claim planned; returns the rows claimed (0 if some were put back).
        With `wait` false, a request does not wait here for a global slot but in its own task (in order: the
        semaphore is fair), so what starts handed-over rows is never held up behind a busy destination."""
        if claim.dead and self._on_dead_letter is not None:
            self._on_dead_letter()
        now = self._clock.now()
        for request in claim.requests:
            self._in_flight_ids.update(r.id for r in request.rows)
            self._waiting[id(request)] = now
        for request in claim.requests:
            if request.target is None:
                self._queue_callback(request)
                continue
            key = request.target.endpoint
            lane = self._lanes.setdefault(key, _Lane())
            if lane.in_flight >= self.settings.max_in_flight_per_destination:
                lane.queue.append(request)  # sent by one of the lane's own tasks when it is done
                self._waiting.pop(id(request), None)  # its destination's backlog, not the engine's
                continue
            lane.in_flight += 1
            if wait:
                await self._slots.acquire()
            task = asyncio.create_task(self._send_in_lane(key, lane, request, acquire=not wait))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        # Marked only now that the claim's requests are in the lanes: marked while the claim commits, a lane
        # would find the room it had before them, and wake the loop at once.
        for key in claim.full:
            full = self._lanes.get(key)
            if full is not None and self._room(full) < self._refill_room:
                full.deferred = True
            else:
                self.wake()  # it drained while the claim committed
        return 0 if deferred else claimed

    def _room(self, lane: _Lane) -> int:
        """How many more requests a destination takes: its free in-flight slots and its queue's free places."""
        free_slots = max(0, self.settings.max_in_flight_per_destination - lane.in_flight)
        return free_slots + self.settings.max_queued_per_destination - len(lane.queue)

    @property
    def _claim_size(self) -> int:
        """Rows claimed at most at once: no more than one destination can take, so that a claim of one
        destination's backlog fits it (what does not fit is put back: read, planned and written for nothing)."""
        s = self.settings
        return max(1, min(s.claim_batch, s.max_in_flight_per_destination + s.max_queued_per_destination))

    @property
    def _refill_room(self) -> int:
        """The room a destination with a backlog waits for before the loop claims again: most of a claim's
        worth, so that a claim mostly fits and puts little back."""
        return max(1, self._claim_size * 3 // 4)

    def _defer_beyond_lanes(self, claim: _Claim, now: float) -> bool:
        """Put back (due now, behind every row already due) what a destination has no room for: its share of
        in-flight slots and its queue are full. A destination that hangs fills only its own.

        Returns whether the loop should wait before claiming again: rows were put back, or a destination is
        left with less room than `_refill_room` (another claim now would mostly be put back). Such a
        destination wakes the loop once it has that room again; meanwhile the loop's idle poll still claims
        (others' rows are due before the ones put back)."""
        room: dict[str, int] = {}
        kept: list[_Request] = []
        for request in claim.requests:
            if request.target is not None:
                key = request.target.endpoint
                if key not in room:
                    room[key] = self._room(self._lanes.get(key) or _Lane())
                if room[key] <= 0:
                    for row in request.rows:
                        self._postpone(row, now)
                        claim.settled.append(row)
                    continue
                room[key] -= 1
            kept.append(request)
        claim.requests = kept
        claim.full = {key for key, left in room.items() if left < self._refill_room}
        return bool(claim.full)

    async def _send_in_lane(self, key: str, lane: _Lane, request: _Request, *, acquire: bool = False) -> None:
        """Send `request` (its global slot taken, or taken here if `acquire`), then the lane's waiting requests
        while there are any."""
        try:
            if acquire:
                await self._slots.acquire()
            await self._send(request)
            while lane.queue:
                if lane.deferred and self._room(lane) >= self._refill_room:
                    lane.deferred = False
                    self.wake()
                waiting = lane.queue.popleft()
                await self._slots.acquire()
                await self._send(waiting)
        finally:
            # What this task leaves unsent no longer counts as waiting: too little lag is the safe mistake,
            # a stale entry would refuse requests for good.
            self._waiting.pop(id(request), None)
            for left in lane.queue if lane.in_flight <= 1 else ():
                self._waiting.pop(id(left), None)
            lane.in_flight -= 1
            if lane.deferred:
                lane.deferred = False
                self.wake()
            if lane.in_flight == 0 and not lane.queue and self._lanes.get(key) is lane:
                del self._lanes[key]

    def _queue_callback(self, request: _Request) -> None:
        """Callbacks to one URL go out one after another, in the order raised (CallConnected before
        ParticipantsUpdated, ...), as an app written for ACS expects; retries may come later."""
        queue = self._callback_queues.setdefault(request.url, deque())
        if request.url in self._callback_chains:
            self._waiting.pop(id(request), None)  # behind the app's earlier callback, not behind the engine
        queue.append(request)
        if request.url not in self._callback_chains:
            task = asyncio.create_task(self._send_callbacks(request.url, queue))
            self._callback_chains[request.url] = task
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _send_callbacks(self, url: str, queue: deque[_Request]) -> None:
        unanswered: set[asyncio.Task[None]] = set()
        try:
            while queue:
                if len(unanswered) >= self.settings.max_in_flight_per_destination:
                    await asyncio.wait(unanswered, return_when=asyncio.FIRST_COMPLETED)
                    unanswered = {t for t in unanswered if not t.done()}
                await self._slots.acquire()
                sending = asyncio.create_task(self._send(queue.popleft()))
                self._in_flight.add(sending)
                sending.add_done_callback(self._in_flight.discard)
                # The next one waits for this one's answer, or for the hold: then it goes out beside it.
                await asyncio.wait({sending}, timeout=self.settings.callback_hold_seconds)
                if not sending.done():
                    unanswered.add(sending)
        finally:
            for left in queue:
                self._waiting.pop(id(left), None)
            del self._callback_chains[url]
            self._callback_queues.pop(url, None)

    def _plan(self, claimed: list[tuple[DeliveryRow, str]], now: float, targets: dict[str, Target | None]) -> _Claim:
        """Plan the requests for leased rows; `targets` holds each row's subscription (None: deleted)."""
        claim = _Claim()
        groups: dict[tuple[str, int], list[tuple[DeliveryRow, str]]] = {}
        for row, stored in claimed:
            if row.id in self._in_flight_ids:
                continue  # still being sent by this process; its outcome will be recorded
            if row.kind == "callback":
                if row.expires_at is not None and now > row.expires_at:
                    self._end(row, "dropped", self.settings.ttl_reason)
                    claim.settled.append(row)
                else:
                    claim.requests.append(self._callback_request(row, stored))
                continue
            sid = row.subscription_id or ""
            target = targets.get(sid)
            if target is None or (target.state != SUCCEEDED and target.state not in PENDING_VALIDATION):
                self._end(row, "dropped", "SubscriptionDeleted" if target is None else "SubscriptionNotActive")
                claim.settled.append(row)
                claim.counts.ended(target.topic if target else "", sid, row.status, row.reason)
                continue
            if target.state in PENDING_VALIDATION:
                self._postpone(row, now + _REVALIDATION_WAIT_SECONDS)
                claim.settled.append(row)
                continue
            row.url = target.url
            if row.expires_at is not None and now > row.expires_at:
                # TTL is only looked at when an attempt falls due (eventgrid.md 4.5).
                self._settle(claim, row, target, stored, self.settings.ttl_reason, now)
                continue
            until = self.probation.until(target.endpoint, now)
            if until is not None:
                if row.expires_at is not None and row.expires_at < until:
                    # Its time to live ends before the endpoint may be tried again: Event Grid gives up on
                    # such events during probation without an attempt (eventgrid.md 4.5).
                    row.last_outcome = PROBATION_OUTCOME
                    self._settle(claim, row, target, stored, PROBATION_REASON, now)
                else:
                    self._postpone(row, until)
                    claim.settled.append(row)
                continue
            # Members of one POST share aeg-delivery-count, so a batch is built of equal attempt counts.
            groups.setdefault((sid, row.attempts), []).append((row, stored))
        for (sid, attempts), members in groups.items():
            target = targets[sid]
            assert target is not None
            claim.requests.extend(self._batches(target, attempts, members))
        return claim

    def _settle(self, claim: _Claim, row: DeliveryRow, target: Target, stored: str, reason: str, now: float) -> None:
        """End a row without an attempt: dead-lettered or dropped, and counted."""
        text = delivered_text(stored, target.schema, dataschema=self.settings.cloud_event_dataschema)
        dead = self._conclude(row, target, dead_letter_text(stored, text, target.schema), reason, now)
        claim.settled.append(row)
        if dead is not None:
            claim.dead.append(dead)
        claim.counts.ended(target.topic, target.subscription_id, row.status, row.reason)

    def _batches(self, target: Target, attempts: int, members: list[tuple[DeliveryRow, str]]) -> list[_Request]:
        dataschema = self.settings.cloud_event_dataschema
        texts = [(row, delivered_text(stored, target.schema, dataschema=dataschema)) for row, stored in members]
        if target.batched:
            batches = plan_batches([(m, len(m[1].encode())) for m in texts], target.max_events, target.max_bytes)
        else:
            batches = [[m] for m in texts]
        requests = []
        stored_by_id = {row.id: stored for row, stored in members}
        for batch in batches:
            rows = [r for r, _ in batch]
            bodies = [t for _, t in batch]
            body, headers = request_for(target, bodies, attempts, rows[0].id if len(rows) == 1 else None)
            letters = [dead_letter_text(stored_by_id[r.id], t, target.schema) for r, t in batch]
            requests.append(_Request(rows, letters, target, target.url, body, headers))
        return requests

    def _callback_request(self, row: DeliveryRow, stored: str) -> _Request:
        headers = {"Content-Type": "application/json", "Authorization": self._callback_authorization(row.audience)}
        return _Request([row], [stored], None, row.url, ("[" + stored + "]").encode(), headers)

    @property
    def _uppercase(self) -> bool:
        return self.settings.uppercase_subscription_name

    # ------------------------------------------------------------------ sending

    async def _send(self, request: _Request) -> None:
        self._waiting.pop(id(request), None)
        task = asyncio.current_task()
        assert task is not None
        timeout = self.settings.timeout_seconds
        request.started_at = self._clock.now()
        attempts = [(row.id, row.attempts + 1) for row in request.rows]
        if not self._deadlines:
            self._watch_wake.set()
        self._deadlines[task] = request.started_at + timeout
        began = time.perf_counter()
        self._sending_since[task] = began
        # The response limit is kept on the engine's clock; the HTTP request itself may live on past it,
        # for a late answer (Event Grid deliveries only).
        late_window = LATE_ANSWER_WINDOW_SECONDS if request.target is not None else 0.0
        http = asyncio.ensure_future(
            self._sender.send(
                "POST", request.url, body=request.body, headers=request.headers, timeout=timeout + late_window
            )
        )
        try:
            result = await asyncio.shield(http)
        except asyncio.CancelledError:
            if task not in self._timed_out:
                http.cancel()
                raise
            task.uncancel()
            result = SendResult(None, "TimedOut", error=f"no response within {timeout:g} s")
            if late_window:
                self._await_late_answer(request, http, attempts, request.started_at + late_window)
            else:
                http.cancel()
        except Exception as exc:  # a sender bug must not lose the rows: record it as a failed attempt
            log.exception("sender failed")
            result = SendResult(None, "GenericError", error=str(exc))
        finally:
            self._deadlines.pop(task, None)
            self._timed_out.discard(task)
            self._sending_since.pop(task, None)
            self._slots.release()
        request.duration_ms = (time.perf_counter() - began) * 1000.0
        if request.target is not None:
            self.probation.record(request.target.endpoint, result.ok, result.outcome, self._clock.now())
        self._done.put_nowait((request, result))
        self._wake.set()  # the loop records it, with what it claims next if that comes soon
        if self._done.qsize() >= _RECORD_BATCH:
            self._hold_end.set()

    def _await_late_answer(
        self, request: _Request, http: asyncio.Future[SendResult], attempts: list[tuple[str, int]], until: float
    ) -> None:
        self._late.add(http)
        self._deadlines[http] = until  # the watcher cancels it then
        self._watch_wake.set()

        def answered(done: asyncio.Future[SendResult]) -> None:
            self._late.discard(done)
            self._deadlines.pop(done, None)
            self._timed_out.discard(done)
            if done.cancelled() or done.exception() is not None or not done.result().ok:
                return  # the retry stands
            recording = asyncio.ensure_future(self._record_late_answer(request, done.result(), attempts))
            self._late.add(recording)
            recording.add_done_callback(self._late.discard)

        http.add_done_callback(answered)

    async def _record_late_answer(self, request: _Request, result: SendResult, attempts: list[tuple[str, int]]) -> None:
        now = self._clock.now()
        note = (
            f"no response within {self.settings.timeout_seconds:g} s; answered {result.status} "
            f"{now - request.started_at:.1f} s after it was sent, so its retry was cancelled"
        )
        try:
            async with self._store.transaction() as tx:
                settled = await tx.settle_late_answer(attempts, result.status or 0, note, now)
                target = request.target
                if settled and target is not None:
                    counts = MetricCounts()
                    for row in request.rows:
                        if row.id in settled:
                            counts.ended(target.topic, target.subscription_id, "delivered", None, now - row.created_at)
                    await tx.add_metric_counts(counts.rows())
        except Exception:
            log.exception("could not record a late answer (its retry stands)")

    async def _watch_timeouts(self) -> None:
        while True:
            self._watch_wake.clear()
            waiting = [d for t, d in self._deadlines.items() if t not in self._timed_out]
            if not waiting:
                await self._watch_wake.wait()
                continue
            await self._clock.sleep_until(min(waiting), self._watch_wake)
            now = self._clock.now()
            for task, deadline in list(self._deadlines.items()):
                if deadline <= now and task not in self._timed_out:
                    self._timed_out.add(task)
                    task.cancel()
            await asyncio.sleep(0)

    # ------------------------------------------------------------------ recording

    def _outcomes(self, batch: list[tuple[_Request, SendResult]], now: float) -> _Outcomes:
        """What a batch of answered requests changes: the rows, their attempts, dead letters and counts."""
        out = _Outcomes()
        for request, result in batch:
            # One delay per POST: a batch is retried as a unit (all-or-none, eventgrid.md 4.4).
            delay = self._retry_delay(request, result)
            target = request.target
            for row, text in zip(request.rows, request.texts, strict=True):
                out.attempts.append(
                    AttemptRow(
                        delivery_id=row.id,
                        attempt=row.attempts + 1,
                        started_at=request.started_at,
                        status=result.status,
                        outcome=result.outcome,
                        error=result.error,
                        duration_ms=round(request.duration_ms, 3),
                        batch_size=len(request.rows),
                    )
                )
                letter = self._record_row(row, result, request, text, now, delay)
                out.rows.append(row)
                if letter is not None:
                    out.dead.append(letter)
                if target is not None:
                    sid = target.subscription_id
                    out.counts.attempt(target.topic, sid, result.ok, result.outcome, request.duration_ms)
                    if row.status != "pending":
                        latency = (row.last_attempt_at or now) - row.created_at
                        out.counts.ended(target.topic, sid, row.status, row.reason, latency)
        return out

    @staticmethod
    async def _write_outcomes(tx: StoreTx, out: _Outcomes) -> None:
        await tx.finish_attempts(out.rows, out.attempts)
        if out.dead:
            await tx.add_dead_letters(out.dead)

    async def _record(self, out: _Outcomes) -> None:
        """Record outcomes in a transaction of their own."""
        try:
            async with self._transaction(out.counts) as work:
                await self._write_outcomes(work.tx, out)
                # No longer in flight (whatever the COMMIT does: unrecorded, a row is sent again once its lease
                # ends); the engine is idle if nothing else is, and writes the buffered counts now.
                self._in_flight_ids.difference_update(r.id for r in out.rows)
        except Exception:
            # Not recorded: the leases stay, and the rows are sent again (at-least-once).
            log.exception("could not record %d delivery outcomes", len(out.rows))
            return
        self._recorded(out)

    def _recorded(self, out: _Outcomes) -> None:
        if out.dead and self._on_dead_letter is not None:
            self._on_dead_letter()

    def _retry_delay(self, request: _Request, result: SendResult) -> float:
        attempts = request.rows[0].attempts + 1
        azure_resource = request.target is not None and request.target.azure_resource
        return self.retry.delay(attempts, result.status, azure_resource=azure_resource)

    def _record_row(
        self, row: DeliveryRow, result: SendResult, request: _Request, text: str, now: float, delay: float
    ) -> DeadLetterRow | None:
        row.attempts += 1
        row.last_attempt_at = request.started_at
        row.last_status = result.status
        row.last_outcome = result.outcome
        row.last_error = result.error
        row.lease_until = None
        if result.ok:
            row.status = "delivered"
            return None
        target = request.target
        if target is None and result.outcome == "TimedOut":
            # A callback the app took in and never answered is not sent again: the app has it, and a second
            # CallConnected would have it act twice. Microsoft's JavaScript transcription and OpenAI samples
            # never answer theirs (ACS documents no callback retries; acs-wire.md 5.1 assumes none).
            self._end(row, "dropped", CALLBACK_NOT_ANSWERED)
            return None
        if target is not None and not self.retry.should_retry(result.status, azure_resource=target.azure_resource):
            return self._conclude(row, target, text, undeliverable_reason(result.outcome), now)
        if row.attempts >= row.max_attempts:
            return self._conclude(row, target, text, MAX_DELIVERY_ATTEMPTS_EXCEEDED, now)
        # The TTL is looked at when this next attempt falls due, not now (eventgrid.md 4.5).
        row.next_attempt_at = now + delay
        return None

    def _conclude(
        self, row: DeliveryRow, target: Target | None, text: str, reason: str, now: float
    ) -> DeadLetterRow | None:
        """End an undeliverable row: dead-lettered if the subscription says where, else dropped."""
        if target is None or not target.dead_letter:
            self._end(row, "dropped", reason)
            return None
        self._end(row, "deadLettered", reason)
        return DeadLetterRow(
            id=str(uuid.uuid4()),
            delivery_id=row.id,
            event_id=row.event_id,
            subscription_id=target.subscription_id,
            subscription_name=target.name,
            reason=reason,
            item=dead_letter_item(jsonio.loads(text), target.schema, row, reason, _NO_ATTEMPT_OUTCOME),
            destination=target.dead_letter,
            created_at=now,
            write_due_at=now + self.settings.dead_letter_delay_seconds,
        )

    @staticmethod
    def _end(row: DeliveryRow, status: str, reason: str) -> None:
        row.status = status
        row.reason = reason
        row.lease_until = None

    @staticmethod
    def _postpone(row: DeliveryRow, until: float) -> None:
        row.next_attempt_at = until
        row.lease_until = None

    # ------------------------------------------------------------------ a clock moved in steps

    def next_deadline(self) -> float | None:
        """The earliest response time limit (or late-answer window) still running, on the engine's clock."""
        return min(self._deadlines.values(), default=None)

    async def settle(self, patience: float) -> None:
        """Wait (real time) until the POSTs in flight are answered and their outcomes recorded.

        A POST still unanswered `patience` real seconds after it was sent is left to its response time
        limit, which falls due on the clock like any other work. Sends waiting for their turn, claims and
        records of outcomes are waited for up to `_SETTLE_LIMIT_SECONDS`, then left, and said: moving a
        clock must never hang on a store slow to answer or on a slot that only the clock can free.
        """
        began = time.perf_counter()
        while True:
            now = time.perf_counter()
            sending = [self._sending_since.get(t) for t in self._in_flight]
            answering = any(since is not None and since > now - patience for since in sending)
            waiting = (
                None in sending or self._dispatching or self._recording or not self._done.empty() or self._handed_rows
            )
            if not answering and not waiting:
                return
            if not answering and now - began > _SETTLE_LIMIT_SECONDS:
                log.warning(
                    "the clock moves on after %.0f s with deliveries still waiting to be sent (%d), claimed (%d) "
                    "or recorded (%d, %d queued)",
                    now - began,
                    sending.count(None),
                    self._dispatching,
                    self._recording,
                    self._done.qsize(),
                )
                return
            await asyncio.sleep(0.002)

    async def drain(self) -> None:
        """Wait for what is in flight now to be recorded (used on shutdown and by tests)."""
        while self._running and self._handed_rows:
            await asyncio.sleep(0.01)
        while self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)
        while not self._done.empty() or self._in_flight_ids:
            await asyncio.sleep(0.01)
