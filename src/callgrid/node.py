"""One callgrid node: opens the store, loads the resource and its keys, wires the services together
and runs the background loops (timers, validation, delivery). The HTTP layer sits on top of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any

from callgrid.clock import Clock, SystemClock, VirtualClock, to_datetime
from callgrid.config import Settings
from callgrid.eventgrid.custom_topics import SYSTEM, TopicService
from callgrid.eventgrid.delivery.deadletter import DeadLetterWriter, writer_for
from callgrid.eventgrid.delivery.engine import DeliveryEngine, DeliverySettings
from callgrid.eventgrid.delivery.http1 import Http1Sender
from callgrid.eventgrid.delivery.metrics import MetricCounts, MetricsBuffer
from callgrid.eventgrid.delivery.retention import Retention
from callgrid.eventgrid.delivery.retry import RetryPolicy
from callgrid.eventgrid.delivery.sender import Sender
from callgrid.eventgrid.handshake import SubscriptionValidator
from callgrid.eventgrid.subscriptions import SubscriptionService
from callgrid.eventgrid.topics import EventPublisher, SubscriptionTable
from callgrid.faults import Faults, FaultySender
from callgrid.media.listening import SpeechListener
from callgrid.media.plane import MediaPlane
from callgrid.media.prompts import PromptLoader
from callgrid.media.streaming import open_stream
from callgrid.platform import sip_routing
from callgrid.platform.calls.service import CallService, CallServiceSettings
from callgrid.platform.identities import IdentityService
from callgrid.platform.keys import Keys, load_or_create_keys
from callgrid.platform.media_port import MediaEvent
from callgrid.platform.number_orders import NumberOrders
from callgrid.platform.phone_numbers import PhoneNumberService
from callgrid.platform.resource import (
    CommunicationResource,
    ResourceDirectory,
    load_or_create_resource,
)
from callgrid.platform.timers import TimerService
from callgrid.security import (
    issue_arm_token,
    load_or_create_token,
    sign_callback_token,
)
from callgrid.sip.trunk import SipTrunk
from callgrid.store import Store, StoreConflict, StoreTx, open_store

log = logging.getLogger(__name__)


class _ResourceEventSink:
    """The platform's EventSink: system events go to their resource's system topic, and only there."""

    def __init__(self, publisher: EventPublisher) -> None:
        self._publisher = publisher

    async def publish_system_event(
        self,
        tx: StoreTx,
        resource: CommunicationResource,
        *,
        event_type: str,
        subject: str,
        data: dict[str, Any],
        data_version: str = "1.0",
    ) -> str:
        return await self._publisher.publish_system_event(
            tx,
            topic=resource.topic,
            event_type=event_type,
            subject=subject,
            data=data,
            data_version=data_version,
        )

    async def send_callback(self, tx: StoreTx, *, url: str, event: dict[str, Any], audience: str) -> None:
        await self._publisher.send_callback(tx, url=url, event=event, audience=audience)


# Several nodes drain one outbox: a node claims and queues only what it will send soon. What one node has
# queued is not another's to send, and a claim beyond a destination's room is written back (on PostgreSQL
# half of each 2,048-row claim was, doubling the database's work): BENCHMARKS.md, several nodes.
SHARED_STORE_DELIVERY: dict[str, int] = {"claim_batch": 512, "max_queued_per_destination": 256}

# The file in a node's data directory that names it as the owner of the deliveries it leases.
NODE_ID_FILE = "node-id"

# How many times (a quarter second apart) a starting node asks for its lease owner name before it takes
# another process to hold it: the database ends a killed node's session, and its hold, within moments.
_LEASE_OWNER_TRIES = 12

# How many times a reset runs when a concurrent transaction deadlocks with it (PostgreSQL).
_RESET_ATTEMPTS = 5


class Node:
    def __init__(self, settings: Settings, *, clock: Clock | None = None, sender: Sender | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or (VirtualClock() if settings.clock == "virtual" else SystemClock())
        # Request signatures and bearer tokens are stamped by clients with real time, whatever the
        # simulation's clock says; they are checked against this one.
        self.wall_clock: Clock = SystemClock()
        self.faults = Faults()
        self.sender: Sender = FaultySender(sender or Http1Sender(), self.faults)
        self.store: Store
        self.resources: ResourceDirectory
        self.keys: Keys
        self._tasks: list[asyncio.Task[None]] = []
        self._advancing = asyncio.Lock()
        # Told of every event and callback once committed (see EventPublisher.observers), and of a reset
        # (kind "reset"): how the console watches without the domain knowing it. Registered before start,
        # handed to the publisher there.
        self.event_observers: list[Callable[[str, str, dict[str, Any], list[str]], None]] = []
        self.sip: SipTrunk | None = None
        self._resources_follower: asyncio.Task[None] | None = None
        self._resources_stale = False

    @property
    def resource(self) -> CommunicationResource:
        """The default resource: the one every connection string made before `callgrid resources` names."""
        return self.resources.default

    @property
    def virtual_clock(self) -> VirtualClock | None:
        return self.clock if isinstance(self.clock, VirtualClock) else None

    async def start(self, *, run_loops: bool = True) -> None:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = await open_store(s.resolved_store_url)
        self.keys = await load_or_create_keys(self.store, s.data_dir)
        async with self.store.transaction() as tx:
            default = await load_or_create_resource(
                tx, name=s.resource_name, subscription_id=s.subscription_id, resource_group=s.resource_group
            )
            self.resources = ResourceDirectory(default)
            await self.resources.reload(tx)
            if self.virtual_clock is not None:
                # A restarted virtual clock resumes where it stopped, so stored due times stay meaningful.
                saved = await tx.get_meta("clock.virtualNow")
                if saved is not None:
                    await self.virtual_clock.set(float(saved))
        self.console_token = load_or_create_token(s.data_dir / "keys" / "console-token")

        lease_owner = await self._lease_owner()

        self.timers = TimerService(self.store, self.clock)
        self.subscription_table = SubscriptionTable()
        self.dead_letters = DeadLetterWriter(
            self.store, self.clock, writer_for(s.dead_letter_connection_string, s.data_dir.resolve())
        )
        # Event Grid's counters of system events and deliveries, between their commits and their folding
        # into one of the delivery engine's transactions (eventgrid/delivery/metrics.py).
        self.metrics = MetricsBuffer()
        self.delivery = DeliveryEngine(
            store=self.store,
            clock=self.clock,
            sender=self.sender,
            callback_authorization=self.callback_authorization,
            settings=DeliverySettings(
                timeout_seconds=s.delivery_timeout_seconds,
                uppercase_subscription_name=s.uppercase_subscription_name_header,
                ttl_reason=s.ttl_dead_letter_reason,
                dead_letter_delay_seconds=s.dead_letter_delay_seconds,
                probation_failure_threshold=s.probation_failure_threshold,
                cloud_event_dataschema=s.cloud_event_dataschema,
                lease_owner=lease_owner,
                **SHARED_STORE_DELIVERY if self.store.shared else {},
            ),
            retry=RetryPolicy(jitter_fraction=s.retry_jitter),
            on_dead_letter=self.dead_letters.wake,
            metrics=self.metrics,
        )
        self.retention = Retention(self.store, self.clock, s.delivery_retention_hours * 3600.0)
        self.publisher = EventPublisher(
            self.clock,
            self.subscription_table,
            on_enqueued=self.delivery.wake,
            cloud_event_dataschema=s.cloud_event_dataschema,
            engine=self.delivery,
        )
        self.publisher.observers = self.event_observers
        self.publisher.metrics = self.metrics
        # Tokens are checked by clients against real time, so they are stamped with it.
        self.identities = IdentityService(self.keys.token_key, self.wall_clock)
        self.numbers = PhoneNumberService(self.clock)
        self.number_orders = NumberOrders(
            self.clock,
            self.numbers,
            self.timers,
            self.resources,
            operation_seconds=0.0 if self.virtual_clock is not None else s.number_operation_seconds,
        )
        self.media = MediaPlane(s.data_dir, own_thread=s.media_thread)
        if self.virtual_clock is not None:
            self.virtual_clock.on_move(self.media.clock_moved)
        self.prompts = PromptLoader(self.media.prompts)
        self.media.listener_factory = SpeechListener
        self.media.stream_factory = open_stream
        self.calls = CallService(
            resources=self.resources,
            identities=self.identities,
            numbers=self.numbers,
            sink=_ResourceEventSink(self.publisher),
            timers=self.timers,
            clock=self.clock,
            context_secret=self.keys.context_secret,
            settings=CallServiceSettings(ring_timeout_seconds=s.ring_timeout_seconds),
            media_plane=self.media,
            device_override=self.faults.device,
        )
        self.subscriptions = SubscriptionService(self.clock, azure_functions_url=s.azure_functions_url)
        self.topics = TopicService(self.clock, public_endpoint=s.endpoint, wall_clock=self.wall_clock)
        self.validator = SubscriptionValidator(
            store=self.store,
            clock=self.clock,
            sender=self.sender,
            subscriptions=self.subscriptions,
            public_endpoint=s.endpoint,
            timeout_seconds=s.delivery_timeout_seconds,
            uppercase_name=s.uppercase_subscription_name_header,
            on_change=self.subscriptions_changed,
        )
        self.media.start(self.apply_media_event)
        if s.sip_port:
            self.sip = SipTrunk(
                self,
                host=s.host,
                port=s.sip_port,
                allow=s.sip_allow.split(","),
                outbound=s.sip_transport,
                t1=s.sip_t1_ms / 1000,
                session_expires=s.sip_session_expires,
                min_se=s.sip_min_se,
            )
            await self.sip.start()
        # Another node sharing the store gave these loops work (a store only this node uses never calls).
        self.store.on_change("delivery", self.delivery.wake)
        self.store.on_change("timer", self.timers.wake)
        self.store.on_change("subscriptions", self.subscriptions_changed)
        self.store.on_change("resources", self.resources_changed)
        if run_loops:
            await self.delivery.recover()
            for loop in (
                self.timers.run_forever(),
                self.delivery.run_forever(),
                self.dead_letters.run_forever(),
                self.validator.run_forever(),
                self.retention.run_forever(),
            ):
                self._tasks.append(asyncio.create_task(loop))

    async def _lease_owner(self) -> str:
        """The name this node leases deliveries under: kept in its data directory, so that the node started
        again takes back what it had leased (its rows are due at once, not when the leases run out). If
        another live process holds that name (its data directory was copied), this one leases under a
        name of its own and takes nothing back: what that process leased is its to send."""
        path = self.settings.data_dir / NODE_ID_FILE
        try:
            owner = path.read_text().strip()
        except FileNotFoundError:
            owner = ""
        if not owner:
            owner = "node-" + uuid.uuid4().hex
            path.write_text(owner + "\n")
        # A node killed a moment ago may still hold its name while the database notices its connection
        # is gone: it is asked a few times before this node concludes another live one has it.
        for _ in range(_LEASE_OWNER_TRIES):
            if await self.store.own_leases(owner):
                return owner
            await asyncio.sleep(0.25)
        log.warning(
            "another live node leases deliveries as %s (a copied data directory?); not taking its leases", owner
        )
        own = f"{owner}-{uuid.uuid4().hex[:8]}"
        if not await self.store.own_leases(own):
            raise RuntimeError(f"could not hold the lease owner name {own}")
        # A name of this process's life only: it has nothing to take back.
        return own

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._resources_follower is not None:
            self._resources_follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._resources_follower
        if self.sip is not None:
            await self.sip.stop()
        await self.media.stop()
        await self.sender.close()
        await self.write_metrics()
        await self.store.close()

    async def write_metrics(self) -> None:
        """Write the buffered metric counts now (on a stop: a graceful one loses none)."""
        taken = self.metrics.fold(MetricCounts(), idle=True)
        if taken is None:
            return
        committed = False
        try:
            async with self.store.transaction() as tx:
                await tx.add_metric_counts(taken.rows())
            committed = True
        except Exception:
            log.exception("could not write %d buffered metric counts", len(taken.rows()))
        finally:
            self.metrics.folded(taken, committed)

    async def apply_media_event(self, event: MediaEvent) -> None:
        """What the media plane heard or saw, applied to the call in a transaction of its own."""
        async with self.store.transaction() as tx:
            await self.calls.on_media_event(tx, event)

    def subscriptions_changed(self) -> None:
        self.subscription_table.invalidate()
        self.validator.wake()

    def resources_changed(self) -> None:
        """Another node changed the Communication resources: read them again, off any request's path (one
        reload at a time; changes meanwhile make one more)."""
        self._resources_stale = True
        if self._resources_follower is None or self._resources_follower.done():
            self._resources_follower = asyncio.get_running_loop().create_task(self._follow_resources())

    async def _follow_resources(self) -> None:
        while self._resources_stale:
            self._resources_stale = False
            try:
                await self.sync_resources()
            except Exception:
                # The store is away: the LISTEN connection's return announces every topic again.
                log.warning("could not read the Communication resources again", exc_info=True)

    async def sync_resources(self) -> bool:
        """On a store other nodes share: read the resources again if one of them changed them since this
        node last read them (one small read when they did not). True when they were read again. What a
        request finds by key, token or name is checked with this first unless it is the default resource,
        which never changes: a key regenerated on one node is refused on every node from then on."""
        if not self.store.shared or not await self.resources.moved(self.store):
            return False
        async with self.store.transaction() as tx:
            await self.resources.reload(tx)
        return True

    def callback_authorization(self, audience: str | None = None) -> str:
        """The callback JWT for a call of the resource whose immutable id is `audience` (default: the default
        resource's, for callbacks queued before there were several resources)."""
        token = sign_callback_token(
            self.keys.callback_key,
            issuer=self.settings.callback_issuer,
            audience=audience or self.resource.immutable_id,
            now=to_datetime(self.wall_clock.now()),
        )
        return "Bearer " + token

    def arm_token(self, resource: CommunicationResource | None = None) -> str:
        """An ARM bearer token for `resource`'s owner (default: the default resource's)."""
        return issue_arm_token(
            self.keys.token_key,
            issuer=self.settings.endpoint,
            now=to_datetime(self.wall_clock.now()),
            subject=(resource or self.resource).arm_subject,
        )

    async def create_resource(
        self, name: str, *, subscription_id: str | None = None, resource_group: str | None = None
    ) -> CommunicationResource:
        async with self.store.transaction() as tx:
            return await self.resources.create(
                tx, name, now=self.wall_clock.now(), subscription_id=subscription_id, resource_group=resource_group
            )

    async def subscription_ids_of(self, tx: StoreTx, resource: CommunicationResource) -> set[str]:
        """The (lower-case) ids of every event subscription that receives `resource`'s events: extension
        subscriptions on it, and those of its system topic."""
        scopes = [resource.topic + "/"]
        for topic in await tx.list_topics(SYSTEM):
            if str(topic["properties"].get("source", "")).lower() == resource.topic:
                scopes.append(topic["id"].lower() + "/")
        return {d["id"].lower() for d in await tx.list_subscriptions() if d["id"].lower().startswith(tuple(scopes))}

    async def delete_resource(self, name: str) -> CommunicationResource:
        """The resource and everything that is its: identities, numbers, its system topic and every event
        subscription on it (deliveries already queued for them are dropped with them). Its calls, if any are
        still running, run out unseen."""
        async with self.store.transaction() as tx:
            resource = await self.resources.delete(tx, name)
            await self.subscriptions.delete_under(tx, resource.arm_id + "/")
            for topic in await tx.list_topics(SYSTEM):
                if str(topic["properties"].get("source", "")).lower() == resource.topic:
                    await self.subscriptions.delete_under(tx, topic["id"] + "/")
                    await self.topics.delete(tx, topic["id"])
        self.subscriptions_changed()
        return resource

    async def advance_clock(self, seconds: float, *, patience: float | None = None) -> float:
        """Move the virtual clock `seconds` ahead as time would pass: in steps, from one due time to the
        next (timers, delivery attempts and retries, response time limits, dead-letter writes,
        subscription expiry), doing the work of each step at its own time before the next.

        A POST in flight is waited for (up to `patience` real seconds) before the clock moves on, so
        a webhook's answer and what the app does meanwhile (answering a call...) happen at the time of
        the attempt. A webhook that does not answer is timed out when the clock reaches its limit.
        """
        clock = self.virtual_clock
        if clock is None:
            raise RuntimeError("the clock is not virtual")
        patience = self.settings.advance_patience_seconds if patience is None else patience
        async with self._advancing:
            target = clock.now() + seconds
            await self._settle(patience)
            stuck = 0
            while True:
                now = clock.now()
                due = await self._next_due()
                if due is not None and due <= now:
                    # Due but not done (a POST still unanswered holds its row): look again, then go on.
                    stuck += 1
                    if stuck <= 3:
                        await self._settle(patience)
                        continue
                    due = None
                stuck = 0
                step = target if due is None or due > target else due
                await clock.set(step)
                async with self.store.transaction() as tx:
                    await tx.set_meta("clock.virtualNow", repr(clock.now()))
                await self._settle(patience)
                if step >= target:
                    return clock.now()

    async def _next_due(self) -> float | None:
        """The earliest time at which some work falls due."""
        async with self.store.transaction() as tx:
            candidates = [
                await tx.next_timer_due(),
                await tx.next_delivery_due(self.clock.now()),
                await tx.next_dead_letter_write_due(),
            ]
        candidates += [self.delivery.next_deadline(), await self.validator.next_due()]
        if self.sip is not None:
            candidates.append(self.sip.session_timers.next_due())  # SIP session refreshes and expiries
        return min((c for c in candidates if c is not None), default=None)

    async def _settle(self, patience: float) -> None:
        """Do all the work that is due now, and what it causes at the same time, before the clock moves."""
        now = self.clock.now()
        for _ in range(100):
            await self.timers.run_due()
            await self.validator.start_pending()
            await self.delivery.dispatch_due()
            await self.delivery.settle(patience)
            await self.dead_letters.write_due()
            await self.retention.purge()
            async with self.store.transaction() as tx:
                more = [await tx.next_timer_due(), await tx.next_delivery_due(now)]
            if not any(d is not None and d <= now for d in more):
                return

    async def reset(self) -> None:
        self.faults.clear()
        for attempt in range(_RESET_ATTEMPTS):
            try:
                async with self.store.transaction() as tx:
                    await tx.reset()
                    await sip_routing.reset(tx)
                    await self.resources.forget_created(tx)
                    # Counts buffered before the reset are of what it erased (a fold under way may still land).
                    tx.after_commit(self.metrics.clear)
                break
            except StoreConflict:
                # Emptying every table meets whatever else is writing (the delivery engine finishing a
                # batch of attempts): on PostgreSQL the two can deadlock and one is rolled back. A reset
                # has nothing to lose by running again; it is the one to give way.
                if attempt == _RESET_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))
        if self.sip is not None:
            self.sip.reset()
        self.subscriptions_changed()
        for observe in self.event_observers:
            observe("reset", "", {}, [])
