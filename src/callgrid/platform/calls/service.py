"""The call core: placing calls, ringing offers, joining and leaving, and the pre-call actions.

Every method runs inside the caller's store transaction; events it raises (IncomingCall and the other
system-topic events, callbacks to apps) are written in that same transaction. Mid-call participant
actions live in `participants.py`, media in `platform/media.py`; they share this core.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from callgrid.clock import Clock, iso7
from callgrid.errors import CallgridError, Forbidden, InvalidRequest, NotFound
from callgrid.identifiers import CommunicationIdentifier, InvalidIdentifier, from_raw_id
from callgrid.platform import sip_routing
from callgrid.platform.calls.models import (
    Call,
    CallConnection,
    CallState,
    ConnectionState,
    OfferState,
    Participant,
    RingOffer,
    Scenario,
)
from callgrid.platform.calls.results import (
    BUSY,
    CANCELED,
    DECLINED,
    ENDED_NORMALLY,
    FORBIDDEN,
    NOT_ANSWERED,
    SUCCESS,
    UNREACHABLE,
    Result,
)
from callgrid.platform.events import EventSink
from callgrid.platform.identities import IdentityService
from callgrid.platform.media_port import MediaEvent, MediaPlanePort, Party
from callgrid.platform.phone_numbers import PhoneNumberService
from callgrid.platform.resource import CommunicationResource, ResourceDirectory
from callgrid.platform.timers import TimerService
from callgrid.platform.trunk_port import TrunkLeg, TrunkPort
from callgrid.security import InvalidCallContext, decode_call_context, encode_call_context
from callgrid.store import StoreTx, TimerRow
from callgrid.store.keys import random_uuid

INCOMING_CALL = "Microsoft.Communication.IncomingCall"
CALL_STARTED = "Microsoft.Communication.CallStarted"
CALL_ENDED = "Microsoft.Communication.CallEnded"
PARTICIPANT_ADDED = "Microsoft.Communication.CallParticipantAdded"
PARTICIPANT_REMOVED = "Microsoft.Communication.CallParticipantRemoved"
CALLBACK_API_VERSION = "2026-03-12"
MAX_OPERATION_CONTEXT = 5000


class DeviceBehaviour(StrEnum):
    """What the simulated device of an identity or number does when it rings."""

    RING = "ring"
    ANSWER = "answer"
    DECLINE = "decline"
    BUSY = "busy"
    UNREACHABLE = "unreachable"


# (mediaStreamingOptions, transcriptionOptions) of create / answer / connect, as `streaming.parse_options` reads them.
StreamsOptions = tuple[dict[str, Any] | None, dict[str, Any] | None]


class TargetKind(StrEnum):
    IDENTITY = "identity"  # a user of this resource: raises IncomingCall
    OWNED_NUMBER = "ownedNumber"  # a number this resource owns: raises IncomingCall
    EXTERNAL_NUMBER = "externalNumber"  # the public network: rings a simulated phone only


@dataclass
class CallServiceSettings:
    ring_timeout_seconds: float = 30.0


@dataclass
class Invitation:
    """What a mid-call action asks for when it rings someone (add participant, transfer)."""

    requested_by: str
    scenario: Scenario
    timeout_seconds: float | None = None
    invitation_id: str | None = None
    operation_context: str | None = None
    operation_callback_uri: str | None = None
    transferee: str | None = None
    group_transfer: bool = False


def _ident(raw_id: str) -> dict[str, Any]:
    return from_raw_id(raw_id).to_wire()


class CallService:
    def __init__(
        self,
        *,
        resources: ResourceDirectory,
        identities: IdentityService,
        numbers: PhoneNumberService,
        sink: EventSink,
        timers: TimerService,
        clock: Clock,
        context_secret: bytes,
        settings: CallServiceSettings,
        media_plane: MediaPlanePort,
        device_override: Callable[[str], str | None] | None = None,
    ) -> None:
        self.resources = resources
        self.media_plane = media_plane
        # Injected faults: a behaviour that overrides a device's script (busy, unreachable), or None.
        self._device_override = device_override
        self._identities = identities
        self._numbers = numbers
        self._sink = sink
        self._timers = timers
        self._clock = clock
        self._secret = context_secret
        self.settings = settings
        # The SIP trunk (`callgrid serve --sip-port`): public numbers matched by a SIP route ring over it.
        self.trunk: TrunkPort | None = None
        timers.register("offer.expire", self._on_offer_expire)
        timers.register("device.act", self._on_device_act)
        timers.register("connection.establish", self._on_establish)
        # Late import: participants.py builds on this module.
        from callgrid.platform.calls.participants import ParticipantActions
        from callgrid.platform.media import MediaService
        from callgrid.platform.recording import RecordingService
        from callgrid.platform.streaming import StreamingService

        self.participants = ParticipantActions(self)
        self.media = MediaService(self)
        self.recordings = RecordingService(self)
        self.streaming = StreamingService(self)

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def timers(self) -> TimerService:
        return self._timers

    @property
    def sink(self) -> EventSink:
        return self._sink

    @staticmethod
    def application_id(resource: CommunicationResource) -> str:
        """The identity an app's legs speak as when it gives none (answeredBy, create_call's caller)."""
        return f"{resource.user_prefix}app"

    def resource_of(self, call: Call) -> CommunicationResource:
        """The resource a call belongs to: the one whose app or user placed it, or whose number or user it
        rang first. Calls from before there were several resources belong to the default one."""
        if not call.resource_id:
            return self.resources.default
        found = self.resources.by_immutable_id(call.resource_id)
        if found is None:
            # The resource was deleted: its calls run out unseen (no key, no subscriptions reach them).
            return self.resources.deleted(call.resource_id)
        return found

    def owns(self, resource: CommunicationResource, call: Call) -> bool:
        return (call.resource_id or self.resources.default.immutable_id) == resource.immutable_id

    # ---- who is who -------------------------------------------------------------------------------

    async def classify_target(
        self, tx: StoreTx, target: CommunicationIdentifier, resource: CommunicationResource
    ) -> TargetKind:
        """Who `target` is to `resource`. Identities of another resource cannot be called (ACS does not
        connect Communication users of different resources); a number another resource on this server
        owns is refused too (callgrid does not carry a PSTN call from one of its resources to another)."""
        if target.is_communication_user:
            if not resource.owns_user(target.raw_id):
                raise Forbidden(
                    f"'{target.raw_id}' belongs to another Communication resource; cross-resource calls are blocked.",
                    code="7507",
                )
            if not await self._identities.exists(tx, resource, target.raw_id):
                raise NotFound(f"Identity '{target.raw_id}' does not exist in this resource.", code="8522")
            return TargetKind.IDENTITY
        if target.is_phone_number:
            owner = await self._numbers.owner(tx, target.phone_number)
            if owner == resource.immutable_id:
                return TargetKind.OWNED_NUMBER
            if owner is not None:
                raise Forbidden(
                    f"{target.phone_number} is owned by another Communication resource on this callgrid server; "
                    "callgrid does not route calls between its resources (a PSTN call from one to another).",
                    code="7507",
                )
            return TargetKind.EXTERNAL_NUMBER
        raise InvalidRequest(
            f"callgrid cannot ring '{target.raw_id}': only Communication users and phone numbers.",
            code="8523",
        )

    async def check_caller_id(
        self,
        tx: StoreTx,
        caller_id: CommunicationIdentifier | None,
        target: str,
        resource: CommunicationResource,
    ) -> None:
        """Reaching the public network needs a caller id, and it must be a number this resource owns.

        A number the resource owns is reached without leaving it, so no caller id is needed for it.
        """
        if caller_id is None:
            callee = from_raw_id(target)
            if callee.is_phone_number and not await self._numbers.is_owned(tx, resource, callee.phone_number):
                raise InvalidRequest(
                    f"Calling the phone number {target[2:]} requires sourceCallerIdNumber, a number this "
                    "resource owns.",
                    code="8523",
                )
            return
        if not caller_id.is_phone_number or not await self._numbers.is_owned(tx, resource, caller_id.phone_number):
            raise Forbidden(f"sourceCallerIdNumber {caller_id.raw_id} is not a number this resource owns.", code="7507")

    # ---- the simulator: callers and devices -----------------------------------------------------------

    async def place_call(
        self,
        tx: StoreTx,
        resource: CommunicationResource,
        *,
        source: CommunicationIdentifier,
        target: CommunicationIdentifier,
        caller_display_name: str = "",
        custom_context: dict[str, Any] | None = None,
    ) -> Call:
        if source.is_communication_user:
            await self.classify_target(tx, source, resource)  # the caller must be a user of this resource
        elif not source.is_phone_number:
            raise InvalidRequest("'from' must be an identity of this resource or a phone number.")
        if source == target:
            raise InvalidRequest("A call needs two parties: 'from' and 'to' are the same.")
        kind = await self.classify_target(tx, target, resource)
        if kind is TargetKind.EXTERNAL_NUMBER and not source.is_communication_user:
            raise InvalidRequest(
                f"{target.phone_number} is not owned by this resource: a PSTN call reaches the resource "
                "only through a number it owns (add it with POST /callgrid/v1/phoneNumbers).",
                code="PhoneNumberNotOwned",
            )
        call = self._new_call(resource, source.raw_id, caller_display_name, custom_context)
        call.record(call.created_at, "callPlaced", **{"from": source.raw_id, "to": target.raw_id})
        await self._ring(tx, call, target, source, Scenario.CALL, call.custom_context)
        await self.save(tx, call)
        return call

    def _new_call(
        self, resource: CommunicationResource, source: str, display_name: str, custom_context: dict[str, Any] | None
    ) -> Call:
        now = self._clock.now()
        call = Call(
            server_call_id=_new_server_call_id(),
            correlation_id=random_uuid(),
            state=CallState.RINGING,
            created_at=now,
            source=source,
            caller_display_name=display_name,
            custom_context=custom_context_of(custom_context),
            resource_id=resource.immutable_id,
        )
        call.participants.append(Participant(raw_id=source, role="caller", joined_at=now))
        return call

    async def hang_up_participant(self, tx: StoreTx, server_call_id: str, raw_id: str | None) -> Call:
        """A simulated party hangs up: the caller of a ringing call abandons it, or someone leaves."""
        call = await self.get_call(tx, server_call_id)
        if call.state == CallState.DISCONNECTED:
            raise InvalidRequest("The call has already ended.", code="8528")
        now = self._clock.now()
        who = raw_id or call.source
        participant = call.participant(who)
        if participant is None:
            raise NotFound(f"'{who}' is not a participant of this call.", code="8522")
        if participant.call_connection_id is not None:
            raise InvalidRequest(
                f"'{who}' is an application's leg: hang it up with the Call Automation API.", code="8523"
            )
        if call.state == CallState.RINGING:
            call.record(now, "callerHungUp", participant=who)
            await self.end_call(tx, call, CANCELED)
        else:
            await self.remove_from_call(tx, call, participant, ENDED_NORMALLY, reason="hungUp")
        await self.save(tx, call)
        return call

    async def get_call(self, tx: StoreTx, server_call_id: str, resource: CommunicationResource | None = None) -> Call:
        """The call; with `resource`, only if it is that resource's."""
        doc = await tx.get_call(server_call_id)
        call = None if doc is None else Call.from_doc(doc)
        if call is None or (resource is not None and not self.owns(resource, call)):
            raise NotFound(f"No call with serverCallId '{server_call_id}'.", code="8522")
        return call

    async def call_of_timer(self, tx: StoreTx, timer: TimerRow) -> Call | None:
        """The call a timer was set for, or None if it is gone (a timer may outlive its call)."""
        doc = await tx.get_call(timer.payload["serverCallId"])
        return None if doc is None else Call.from_doc(doc)

    async def _ringing_offer_of_timer(self, tx: StoreTx, timer: TimerRow) -> tuple[Call, RingOffer] | None:
        """The call and offer of an offer's timer, if that offer is still ringing."""
        call = await self.call_of_timer(tx, timer)
        offer = None if call is None else call.offer(timer.payload["offerId"])
        if call is None or offer is None or offer.state != OfferState.RINGING:
            return None
        return call, offer

    async def list_calls(
        self, tx: StoreTx, limit: int = 100, resource: CommunicationResource | None = None
    ) -> list[Call]:
        if resource is None:
            return [Call.from_doc(d) for d in await tx.list_calls(limit)]
        # The store filters before its limit: a resource's calls are not crowded out by another's.
        ids = (resource.immutable_id, "") if resource.immutable_id == self.resources.default.immutable_id else None
        docs = await tx.list_calls(limit, ids or (resource.immutable_id,))
        return [Call.from_doc(d) for d in docs]

    async def set_device(
        self,
        tx: StoreTx,
        resource: CommunicationResource,
        target: CommunicationIdentifier,
        behaviour: DeviceBehaviour,
        answer_delay_ms: int,
        connect_delay_ms: int = 0,
    ) -> dict[str, Any]:
        if target.is_communication_user:
            await self.classify_target(tx, target, resource)
        elif target.is_phone_number:
            owner = await self._numbers.owner(tx, target.phone_number)
            if owner is not None and owner != resource.immutable_id:
                raise NotFound(f"The resource does not own {target.phone_number}.", code="PhoneNumberNotFound")
        else:
            raise InvalidRequest("Simulated devices exist for identities and phone numbers only.")
        if answer_delay_ms < 0 or answer_delay_ms > 3_600_000:
            raise InvalidRequest("answerDelayMs must be between 0 and 3600000.")
        if connect_delay_ms < 0 or connect_delay_ms > 600_000:
            raise InvalidRequest("connectDelayMs must be between 0 and 600000.")
        doc = {
            "rawId": target.raw_id,
            "onIncomingCall": behaviour.value,
            "answerDelayMs": answer_delay_ms,
            "connectDelayMs": connect_delay_ms,
        }
        await tx.put_endpoint(target.raw_id, doc)
        return doc

    async def get_device(self, tx: StoreTx, raw_id: str) -> dict[str, Any]:
        doc = await tx.get_endpoint(raw_id)
        found = doc or {"rawId": raw_id, "onIncomingCall": DeviceBehaviour.RING.value, "answerDelayMs": 0}
        found.setdefault("connectDelayMs", 0)
        return found

    async def list_devices(self, tx: StoreTx, resource: CommunicationResource | None = None) -> list[dict[str, Any]]:
        """The scripted devices (every other identity and number rings until the ring timeout); with
        `resource`, those it may see: its own identities and numbers, and external numbers' phones."""
        devices = []
        for doc in await tx.list_endpoints():
            if resource is not None and not await self._sees_device(tx, resource, doc["rawId"]):
                continue
            devices.append({"connectDelayMs": 0, **doc})
        return devices

    async def _sees_device(self, tx: StoreTx, resource: CommunicationResource, raw_id: str) -> bool:
        target = from_raw_id(raw_id)
        if target.is_communication_user:
            return resource.owns_user(raw_id)
        if target.is_phone_number:
            owner = await self._numbers.owner(tx, target.phone_number)
            return owner is None or owner == resource.immutable_id
        return True

    # ---- an app places or joins a call ------------------------------------------------------------

    async def create_call(
        self,
        tx: StoreTx,
        resource: CommunicationResource,
        *,
        targets: list[CommunicationIdentifier],
        callback_uri: str,
        source: CommunicationIdentifier | None = None,
        source_caller_id: CommunicationIdentifier | None = None,
        source_display_name: str | None = None,
        operation_context: str | None = None,
        custom_context: dict[str, Any] | None = None,
        streams: StreamsOptions = (None, None),
    ) -> tuple[Call, CallConnection]:
        check_callback_uri(callback_uri)
        if not targets:
            raise InvalidRequest("'targets' must name at least one participant.", code="8523")
        if len({t.raw_id for t in targets}) != len(targets):
            raise InvalidRequest("'targets' names the same participant twice.", code="8523")
        if source is not None:
            await self.classify_target(tx, source, resource)
        for target in targets:
            await self.check_caller_id(tx, source_caller_id, target.raw_id, resource)
            await self.classify_target(tx, target, resource)
        app_id = source.raw_id if source is not None else self.application_id(resource)
        call = self._new_call(resource, app_id, source_display_name or "", custom_context)
        now = call.created_at
        connection = CallConnection(
            call_connection_id=random_uuid(),
            callback_uri=callback_uri,
            answered_for=app_id,
            state=ConnectionState.CONNECTING,
            created_at=now,
            operation_context=operation_context,
            origin="created",
        )
        call.connections.append(connection)
        self.streaming.configure(call, connection, *streams)
        call.participants[0].call_connection_id = connection.call_connection_id
        await tx.add_call_connection(connection.call_connection_id, call.server_call_id)
        call.record(now, "callCreated", by="app", targets=[t.raw_id for t in targets])
        for target in targets:
            # Who the callee sees: phones see the caller id when there is one, users the app's identity.
            shown = source_caller_id if target.is_phone_number and source_caller_id else from_raw_id(app_id)
            offer = await self._ring(tx, call, target, shown, Scenario.CALL, call.custom_context)
            offer.exclusive = len(targets) == 1
        await self.save(tx, call)
        return call, connection

    async def connect_call(
        self,
        tx: StoreTx,
        resource: CommunicationResource,
        *,
        server_call_id: str,
        callback_uri: str,
        operation_context: str | None = None,
        streams: StreamsOptions = (None, None),
    ) -> tuple[Call, CallConnection]:
        check_callback_uri(callback_uri)
        call = await self.get_call(tx, server_call_id, resource)
        if call.state == CallState.DISCONNECTED:
            raise InvalidRequest("The call has already ended.", code="8528")
        if call.state != CallState.CONNECTED:
            raise InvalidRequest("The call is not established yet; connect once it is connected.", code="8501")
        connection = CallConnection(
            call_connection_id=random_uuid(),
            callback_uri=callback_uri,
            answered_for=self.application_id(resource),
            state=ConnectionState.CONNECTING,
            created_at=self._clock.now(),
            operation_context=operation_context,
            origin="connected",
        )
        call.connections.append(connection)
        self.streaming.configure(call, connection, *streams)
        await tx.add_call_connection(connection.call_connection_id, call.server_call_id)
        call.record(self._clock.now(), "connecting", callConnectionId=connection.call_connection_id)
        await self._establish_later(tx, call, connection, None)
        await self.save(tx, call)
        return call, connection

    # ---- pre-call actions (incomingCallContext) ---------------------------------------------------

    async def answer(
        self,
        tx: StoreTx,
        resource: CommunicationResource,
        *,
        incoming_call_context: str,
        callback_uri: str,
        operation_context: str | None = None,
        streams: StreamsOptions = (None, None),
    ) -> tuple[Call, CallConnection]:
        check_callback_uri(callback_uri)
        call, offer = await self._ringing_offer(tx, resource, incoming_call_context)
        now = self._clock.now()
        # Answering a transfer out of a group call joins the new call the transferee moves to.
        joined = self._onward_call(call, offer) if offer.group_transfer else call
        connection = CallConnection(
            call_connection_id=random_uuid(),
            callback_uri=callback_uri,
            answered_for=offer.target,
            state=ConnectionState.CONNECTING,
            created_at=now,
            operation_context=operation_context,
            caller=offer.source,
        )
        joined.connections.append(connection)
        self.streaming.configure(joined, connection, *streams)
        await tx.add_call_connection(connection.call_connection_id, joined.server_call_id)
        call.record(now, "answered", by="app", callConnectionId=connection.call_connection_id)
        if offer.group_transfer:
            # The transferee is already in a call (the onward one): nothing is left to set up.
            connection.state = ConnectionState.CONNECTED
            await self.callback(tx, joined, connection, "CallConnected", operation_context=operation_context)
            await self._join(tx, call, offer, connection.call_connection_id, onward=joined)
        else:
            # The answer claims the offer now; the leg connects when the media is set up (a timer on
            # the clock). A caller who hangs up before that leaves the app an AnswerFailed.
            await self._claim(tx, call, offer, now)
            offer.answered_by = connection.call_connection_id
            await self._establish_later(tx, call, connection, offer)
        await self.save(tx, call)
        return joined, connection

    async def redirect(
        self,
        tx: StoreTx,
        resource: CommunicationResource,
        *,
        incoming_call_context: str,
        target: CommunicationIdentifier,
    ) -> Call:
        call, offer = await self._ringing_offer(tx, resource, incoming_call_context)
        if target.raw_id == offer.target:
            raise InvalidRequest("A call cannot be redirected to the target it is ringing.", code="8523")
        if target.raw_id == call.source:
            raise InvalidRequest("A call cannot be redirected to its own caller.", code="8523")
        now = self._clock.now()
        await self._offer_ended(tx, offer, now, OfferState.REDIRECTED, f"redirected to {target.raw_id}")
        call.record(now, "redirected", **{"from": offer.target, "to": target.raw_id})
        new = await self._ring(tx, call, target, from_raw_id(offer.source), Scenario.REDIRECT, offer.custom_context)
        # The new offer stands in for the old one: the same inviter hears how it ends.
        new.exclusive = offer.exclusive
        new.requested_by, new.invitation_id = offer.requested_by, offer.invitation_id
        new.operation_context, new.operation_callback_uri = offer.operation_context, offer.operation_callback_uri
        new.transferee, new.group_transfer = offer.transferee, offer.group_transfer
        if offer.requested_by is not None:
            new.scenario = offer.scenario
        await self.save(tx, call)
        return call

    async def reject(
        self, tx: StoreTx, resource: CommunicationResource, *, incoming_call_context: str, reason: str | None
    ) -> Call:
        reason = reason or "none"
        result = {"none": DECLINED, "busy": BUSY, "forbidden": FORBIDDEN}.get(reason)
        if result is None:
            raise InvalidRequest(f"callRejectReason '{reason}' is not one of none, busy, forbidden.", code="8523")
        call, offer = await self._ringing_offer(tx, resource, incoming_call_context)
        now = self._clock.now()
        await self._offer_ended(tx, offer, now, OfferState.REJECTED, f"rejected ({reason})")
        call.record(now, "rejected", by="app", reason=reason, target=offer.target)
        await self._offer_failed(tx, call, offer, result)
        await self.save(tx, call)
        return call

    # ---- mid-call ---------------------------------------------------------------------------------

    async def connection(
        self, tx: StoreTx, call_connection_id: str, resource: CommunicationResource | None = None
    ) -> tuple[Call, CallConnection]:
        """The call and leg of a call connection id; with `resource`, only if the call is that resource's
        (another resource's connection is as unknown as one that never existed)."""
        server_call_id = await tx.get_call_id_for_connection(call_connection_id)
        if server_call_id is None:
            raise NotFound(f"Call connection '{call_connection_id}' was not found.", code="8522")
        call = await self.get_call(tx, server_call_id)
        if resource is not None and not self.owns(resource, call):
            raise NotFound(f"Call connection '{call_connection_id}' was not found.", code="8522")
        connection = call.connection(call_connection_id)
        if connection is None:  # pragma: no cover - the index and the document are written together
            raise NotFound(f"Call connection '{call_connection_id}' was not found.", code="8522")
        return call, connection

    async def active_connection(self, tx: StoreTx, call_connection_id: str) -> tuple[Call, CallConnection]:
        """A leg that can act now: connected, in a call that has not ended."""
        call, connection = await self.connection(tx, call_connection_id)
        if connection.state == ConnectionState.DISCONNECTED or call.state == CallState.DISCONNECTED:
            raise InvalidRequest("The call has ended; no further actions are possible.", code="8528")
        if connection.state != ConnectionState.CONNECTED:
            raise InvalidRequest("Action not supported: the call is not established yet.", code="8501")
        return call, connection

    async def hang_up(self, tx: StoreTx, call_connection_id: str, *, for_everyone: bool) -> Call:
        call, connection = await self.connection(tx, call_connection_id)
        if connection.state == ConnectionState.DISCONNECTED or call.state == CallState.DISCONNECTED:
            raise InvalidRequest("The call has already ended.", code="8528")
        now = self._clock.now()
        in_call = [p for p in call.participants if p.call_connection_id != call_connection_id]
        leaves_alone = connection.origin == "connected" or len(in_call) >= 2
        answered = next((o for o in call.offers if o.answered_by == call_connection_id), None)
        if not for_everyone and connection.state == ConnectionState.CONNECTING and answered is not None:
            # The app gives up on a call it answered before it connected: the answer falls through.
            connection.state = ConnectionState.DISCONNECTED
            call.record(now, "left", callConnectionId=call_connection_id)
            await self.callback(tx, call, connection, "CallDisconnected", result=ENDED_NORMALLY)
            await self._offer_failed(tx, call, answered, CANCELED)
        elif for_everyone or not leaves_alone:
            call.record(now, "hungUp", callConnectionId=call_connection_id, forEveryone=for_everyone)
            await self.end_call(tx, call, ENDED_NORMALLY if call.state == CallState.CONNECTED else CANCELED)
        else:
            await self.leave(tx, call, connection, ENDED_NORMALLY)
        await self.save(tx, call)
        return call

    async def leave(self, tx: StoreTx, call: Call, connection: CallConnection, result: Result) -> None:
        """One app leg leaves a call that goes on without it."""
        now = self._clock.now()
        connection.state = ConnectionState.DISCONNECTED
        call.record(now, "left", callConnectionId=connection.call_connection_id)
        await self.callback(tx, call, connection, "CallDisconnected", result=result)
        gone = [p for p in call.participants if p.call_connection_id == connection.call_connection_id]
        call.participants = [p for p in call.participants if p not in gone]
        for p in gone:
            await self._participant_event(tx, call, PARTICIPANT_REMOVED, p.raw_id)
        if gone:
            await self.participants_updated(tx, call)

    async def remove_from_call(
        self, tx: StoreTx, call: Call, participant: Participant, result: Result, *, reason: str
    ) -> None:
        """Someone leaves or is removed; a call left with fewer than two parties ends."""
        now = self._clock.now()
        call.participants = [p for p in call.participants if p.raw_id != participant.raw_id]
        call.record(now, "participantLeft", participant=participant.raw_id, reason=reason)
        await self._participant_event(tx, call, PARTICIPANT_REMOVED, participant.raw_id)
        if participant.call_connection_id is not None:
            leg = call.connection(participant.call_connection_id)
            if leg is not None and leg.state != ConnectionState.DISCONNECTED:
                leg.state = ConnectionState.DISCONNECTED
                await self.callback(tx, call, leg, "CallDisconnected", result=result)
        if len(call.participants) < 2:
            await self.end_call(tx, call, ENDED_NORMALLY)
        else:
            await self.participants_updated(tx, call)

    def connection_properties(self, call: Call, connection: CallConnection, state: str | None = None) -> dict[str, Any]:
        others = [p.raw_id for p in call.participants if p.raw_id != connection.answered_for]
        if connection.origin == "created" and call.state == CallState.RINGING:
            others = [o.target for o in call.offers if o.state == OfferState.RINGING]
        props: dict[str, Any] = {
            "callConnectionId": connection.call_connection_id,
            "serverCallId": call.server_call_id,
            "targets": [_ident(r) for r in others],
            "callConnectionState": state or connection.state,
            "callbackUri": connection.callback_uri,
            # ACS names the call's caller here for a leg the app answered (answeredFor says whom it
            # answered as); Microsoft's lobby samples read the waiting caller from it.
            "source": _ident(connection.caller or connection.answered_for),
            "correlationId": call.correlation_id,
            "answeredBy": {"id": self.application_id(self.resource_of(call))},
        }
        if call.caller_display_name and connection.origin == "created":
            props["sourceDisplayName"] = call.caller_display_name
        answered_for = from_raw_id(connection.answered_for)
        if answered_for.is_phone_number:
            props["answeredFor"] = {"value": answered_for.phone_number}
        props.update(self.streaming.properties(call, connection))
        return props

    # ---- ringing -------------------------------------------------------------------------------------

    async def ring(
        self,
        tx: StoreTx,
        call: Call,
        target: CommunicationIdentifier,
        source: CommunicationIdentifier,
        custom_context: dict[str, Any],
        invitation: Invitation,
    ) -> RingOffer:
        """Ring someone on behalf of a mid-call action; the outcome is reported to `requested_by`."""
        offer = await self._ring(
            tx, call, target, source, invitation.scenario, custom_context, timeout=invitation.timeout_seconds
        )
        offer.exclusive = False
        offer.requested_by = invitation.requested_by
        offer.invitation_id = invitation.invitation_id
        offer.operation_context = invitation.operation_context
        offer.operation_callback_uri = invitation.operation_callback_uri
        offer.transferee = invitation.transferee
        offer.group_transfer = invitation.group_transfer
        return offer

    async def _ring(
        self,
        tx: StoreTx,
        call: Call,
        target: CommunicationIdentifier,
        source: CommunicationIdentifier,
        scenario: Scenario,
        custom_context: dict[str, Any],
        *,
        timeout: float | None = None,
    ) -> RingOffer:
        kind = await self.classify_target(tx, target, self.resource_of(call))
        now = self._clock.now()
        offer = RingOffer(
            offer_id=random_uuid(),
            target=target.raw_id,
            source=source.raw_id,
            scenario=scenario.value,
            state=OfferState.RINGING,
            created_at=now,
            expires_at=now + (timeout if timeout is not None else self.settings.ring_timeout_seconds),
            custom_context=custom_context,
        )
        call.offers.append(offer)
        if kind is not TargetKind.EXTERNAL_NUMBER:
            offer.incoming_call_event_id = await self._publish_incoming_call(tx, call, offer, target, source)
        call.record(
            now,
            "ringing",
            target=target.raw_id,
            scenario=scenario.value,
            incomingCall=kind is not TargetKind.EXTERNAL_NUMBER,
        )
        offer.ring_timer_id = await self._timers.schedule(
            tx,
            "offer.expire",
            offer.expires_at,
            {"serverCallId": call.server_call_id, "offerId": offer.offer_id},
        )
        if kind is TargetKind.EXTERNAL_NUMBER and self.trunk is not None:
            trunks = await sip_routing.trunks_for(tx, target.phone_number)
            if trunks:
                trunk = trunks[0]
                # The far end decides, over the trunk: its answer or refusal comes back as far_end_*.
                port, leg = (
                    self.trunk,
                    TrunkLeg(
                        server_call_id=call.server_call_id,
                        offer_id=offer.offer_id,
                        target=target.phone_number,
                        caller=source.phone_number if source.is_phone_number else source.raw_id,
                        trunk_fqdn=trunk.fqdn,
                        trunk_port=trunk.sip_signaling_port,
                        custom_context=custom_context,
                        failover=tuple((t.fqdn, t.sip_signaling_port) for t in trunks[1:]),
                    ),
                )
                call.record(now, "sentToTrunk", target=target.raw_id, trunk=trunk.fqdn)
                tx.after_commit(lambda: port.ring(leg))
                return offer
        device = await self.get_device(tx, target.raw_id)
        forced = self._device_override(target.raw_id) if self._device_override is not None else None
        behaviour = DeviceBehaviour(forced or device["onIncomingCall"])
        if behaviour is not DeviceBehaviour.RING:
            due = now + (device["answerDelayMs"] / 1000.0 if behaviour is DeviceBehaviour.ANSWER else 0.0)
            await self._timers.schedule(
                tx,
                "device.act",
                due,
                {"serverCallId": call.server_call_id, "offerId": offer.offer_id, "action": behaviour.value},
            )
        return offer

    async def _publish_incoming_call(
        self,
        tx: StoreTx,
        call: Call,
        offer: RingOffer,
        target: CommunicationIdentifier,
        source: CommunicationIdentifier,
    ) -> str:
        context = encode_call_context(
            self._secret,
            {
                "res": self.resource_of(call).immutable_id,
                "call": call.server_call_id,
                "offer": offer.offer_id,
                "exp": offer.expires_at,
            },
        )
        if target.is_phone_number:
            caller = source.phone_number if source.is_phone_number else source.raw_id
            subject = f"/phoneCall/caller/{caller}/recipient/{target.phone_number}"
        else:
            subject = f"/caller/{source.raw_id}/recipient/{target.raw_id}"
        data = {
            "to": target.to_wire(),
            "from": source.to_wire(),
            "serverCallId": call.server_call_id,
            "callerDisplayName": call.caller_display_name,
            "customContext": offer.custom_context,
            "incomingCallContext": context,
            "correlationId": call.correlation_id,
        }
        return await self._sink.publish_system_event(
            tx, self.resource_of(call), event_type=INCOMING_CALL, subject=subject, data=data
        )

    async def _ringing_offer(
        self, tx: StoreTx, resource: CommunicationResource, incoming_call_context: str
    ) -> tuple[Call, RingOffer]:
        if not isinstance(incoming_call_context, str) or not incoming_call_context:
            raise InvalidRequest("incomingCallContext is required.", code="8523")
        try:
            claims = decode_call_context(self._secret, incoming_call_context)
        except InvalidCallContext as exc:
            raise InvalidRequest(f"Invalid incomingCallContext: {exc}", code="8523") from None
        if claims.get("res") != resource.immutable_id:
            raise InvalidRequest("The incomingCallContext was issued for another resource.", code="8523")
        doc = await tx.get_call(str(claims.get("call")))
        if doc is None:
            raise NotFound("The call of this incomingCallContext no longer exists.", code="8522")
        call = Call.from_doc(doc)
        offer = call.offer(str(claims.get("offer")))
        if offer is None:
            raise InvalidRequest("Invalid incomingCallContext: unknown offer.", code="8523")
        if offer.state != OfferState.RINGING:
            raise NotFound(
                f"The incomingCallContext was already used or is no longer valid: the call was {offer.outcome}.",
                code="8522",
            )
        if self._clock.now() >= offer.expires_at:
            raise NotFound("The incomingCallContext has expired: the call was not answered within time.", code="8587")
        return call, offer

    # ---- joining, failing, ending ------------------------------------------------------------------

    async def _offer_ended(self, tx: StoreTx, offer: RingOffer, now: float, state: OfferState, outcome: str) -> None:
        offer.state = state
        offer.ended_at = now
        offer.outcome = outcome
        if offer.ring_timer_id is not None and state is not OfferState.EXPIRED:
            # Gone with the offer, rather than firing later in a transaction of its own to find it no longer
            # ringing: every routed call's offers are redirected, then answered.
            await tx.delete_timer(offer.ring_timer_id)
            offer.ring_timer_id = None

    async def _join(
        self,
        tx: StoreTx,
        call: Call,
        offer: RingOffer,
        call_connection_id: str | None,
        *,
        onward: Call | None = None,
    ) -> None:
        """A ringing offer was answered (by an app or a simulated device): its target joins the call."""
        now = self._clock.now()
        by = "app" if call_connection_id else "device"
        await self._offer_ended(tx, offer, now, OfferState.ANSWERED, f"answered by {by}")
        if offer.exclusive:
            for other in call.ringing_offers():
                if other.exclusive:
                    await self._offer_ended(tx, other, now, OfferState.CANCELED, "answered elsewhere")
        if offer.group_transfer:
            await self._transfer_out(tx, call, offer, call_connection_id, onward)
            return
        call.participants.append(
            Participant(raw_id=offer.target, role="callee", joined_at=now, call_connection_id=call_connection_id)
        )
        if call.state == CallState.RINGING:
            call.state = CallState.CONNECTED
            call.connected_at = now
            await self._call_event(tx, call, CALL_STARTED, f"call/{call.server_call_id}/startedBy/{call.source}")
            await self._participant_event(tx, call, PARTICIPANT_ADDED, call.source)
        await self._participant_event(tx, call, PARTICIPANT_ADDED, offer.target)
        for leg in call.connections:
            # The app's own create_call connects with its first callee (answered legs connect on their timer).
            if leg.state == ConnectionState.CONNECTING and leg.origin == "created":
                leg.state = ConnectionState.CONNECTED
                await self.callback(tx, call, leg, "CallConnected", operation_context=leg.operation_context)
        requester = call.connection(offer.requested_by) if offer.requested_by else None
        if requester is not None and requester.state == ConnectionState.CONNECTED:
            if offer.scenario == Scenario.ADD_PARTICIPANT:
                await self.operation_callback(
                    tx, call, requester, offer, "AddParticipantSucceeded", SUCCESS, participant=offer.target
                )
            elif offer.scenario == Scenario.TRANSFER:
                await self._transfer_accepted(tx, call, requester, offer)
                await self.leave(tx, call, requester, (200, 7015, "The call was transferred."))
                return
        await self.participants_updated(tx, call)

    async def _transfer_accepted(self, tx: StoreTx, call: Call, requester: CallConnection, offer: RingOffer) -> None:
        await self.operation_callback(
            tx,
            call,
            requester,
            offer,
            "CallTransferAccepted",
            (202, 0, "The transfer was accepted."),
            extra={"transferTarget": _ident(offer.target), "transferee": _ident(offer.transferee or "")},
        )

    def _onward_call(self, call: Call, offer: RingOffer) -> Call:
        onward = self._new_call(
            self.resource_of(call), offer.transferee or call.source, call.caller_display_name, call.custom_context
        )
        onward.state = CallState.CONNECTED
        onward.connected_at = onward.created_at
        onward.record(onward.created_at, "transferredFrom", serverCallId=call.server_call_id)
        return onward

    async def _transfer_out(
        self, tx: StoreTx, call: Call, offer: RingOffer, call_connection_id: str | None, onward: Call | None
    ) -> None:
        """A group call's transferee leaves it for a new call with the target; the app stays."""
        now = self._clock.now()
        requester = call.connection(offer.requested_by) if offer.requested_by else None
        if requester is not None and requester.state == ConnectionState.CONNECTED:
            await self._transfer_accepted(tx, call, requester, offer)
        onward = onward if onward is not None and onward is not call else self._onward_call(call, offer)
        onward.participants.append(
            Participant(raw_id=offer.target, role="callee", joined_at=now, call_connection_id=call_connection_id)
        )
        # The new call starts as any call does on the system topic: CallStarted, then who joined it.
        await self._call_event(tx, onward, CALL_STARTED, f"call/{onward.server_call_id}/startedBy/{onward.source}")
        for p in onward.participants:
            await self._participant_event(tx, onward, PARTICIPANT_ADDED, p.raw_id)
        if call_connection_id is not None:
            leg = onward.connection(call_connection_id)
            if leg is not None:
                await self.participants_updated(tx, onward, only=leg)
        await self.save(tx, onward)
        moved = call.participant(offer.transferee or "")
        call.record(now, "transferredOut", participant=offer.transferee, serverCallId=onward.server_call_id)
        if moved is not None:
            result = (200, 7015, "The participant was transferred.")
            await self.remove_from_call(tx, call, moved, result, reason="transferred")

    async def _offer_failed(self, tx: StoreTx, call: Call, offer: RingOffer, result: Result) -> None:
        """An offer ended unanswered: tell whoever asked, and end a call that no longer rings anywhere."""
        requester = call.connection(offer.requested_by) if offer.requested_by else None
        if requester is not None and requester.state == ConnectionState.CONNECTED:
            if offer.scenario == Scenario.ADD_PARTICIPANT:
                await self.operation_callback(
                    tx, call, requester, offer, "AddParticipantFailed", result, participant=offer.target
                )
            elif offer.scenario == Scenario.TRANSFER:
                await self.operation_callback(tx, call, requester, offer, "CallTransferFailed", result)
        if call.state == CallState.RINGING and not call.ringing_offers():
            await self.end_call(tx, call, result)

    async def end_call(self, tx: StoreTx, call: Call, result: Result) -> None:
        now = self._clock.now()
        await self.recordings.call_ended(tx, call)
        for offer in call.ringing_offers():
            await self._offer_ended(tx, offer, now, OfferState.CANCELED, "call ended")
        for connection in call.active_connections():
            was_connecting = connection.state == ConnectionState.CONNECTING
            connection.state = ConnectionState.DISCONNECTED
            # A leg that never connected hears why its create, answer or connect failed, not a disconnect.
            if was_connecting:
                await self.callback(
                    tx,
                    call,
                    connection,
                    _FAILED_BEFORE_CONNECTING[connection.origin],
                    result=result if result[0] >= 400 else CANCELED,
                    operation_context=connection.operation_context,
                )
            else:
                await self.callback(tx, call, connection, "CallDisconnected", result=result)
        was_connected = call.state == CallState.CONNECTED
        call.state = CallState.DISCONNECTED
        call.ended_at = now
        code, sub_code, message = result
        call.end_reason = {"code": code, "subCode": sub_code, "message": message}
        call.record(now, "disconnected", code=code, subCode=sub_code, message=message)
        if was_connected:
            for p in call.participants:
                await self._participant_event(tx, call, PARTICIPANT_REMOVED, p.raw_id)
            await self._call_event(
                tx,
                call,
                CALL_ENDED,
                f"call/{call.server_call_id}",
                durationOfCall=round(now - (call.connected_at or now), 3),
                endedBy=None,
                reason={"code": code, "subCode": sub_code, "phrase": message},
            )

    async def _on_offer_expire(self, tx: StoreTx, timer: TimerRow) -> None:
        found = await self._ringing_offer_of_timer(tx, timer)
        if found is None:
            return
        call, offer = found
        now = self._clock.now()
        await self._offer_ended(tx, offer, now, OfferState.EXPIRED, "not answered within time")
        call.record(now, "ringTimeout", target=offer.target)
        await self._offer_failed(tx, call, offer, NOT_ANSWERED)
        await self.save(tx, call)

    async def _on_device_act(self, tx: StoreTx, timer: TimerRow) -> None:
        found = await self._ringing_offer_of_timer(tx, timer)
        if found is None:
            return
        call, offer = found
        await self._device_acts(tx, call, offer, DeviceBehaviour(timer.payload["action"]))

    async def device_act(self, tx: StoreTx, server_call_id: str, target: str, action: DeviceBehaviour) -> Call:
        """The simulated device of `target` (a raw id) acts on its ringing offer now, as its script would
        (answer, decline, busy, unreachable): what a person at that phone does, from the console."""
        call = await self.get_call(tx, server_call_id)
        offer = next((o for o in call.ringing_offers() if o.target == target), None)
        if offer is None:
            raise InvalidRequest(f"'{target}' is not ringing in this call.", code="8523")
        if action is DeviceBehaviour.RING:
            raise InvalidRequest("A ringing device is already ringing: answer, decline, busy or unreachable.")
        await self._device_acts(tx, call, offer, action)
        return call

    async def _device_acts(self, tx: StoreTx, call: Call, offer: RingOffer, action: DeviceBehaviour) -> None:
        if action is DeviceBehaviour.ANSWER:
            await self._device_answered(tx, call, offer, "device")
        else:
            result = {DeviceBehaviour.DECLINE: DECLINED, DeviceBehaviour.UNREACHABLE: UNREACHABLE}.get(action, BUSY)
            await self._device_refused(tx, call, offer, "device", action.value, result)

    async def _device_answered(self, tx: StoreTx, call: Call, offer: RingOffer, by: str) -> None:
        call.record(self._clock.now(), "answered", by=by, target=offer.target)
        await self._join(tx, call, offer, None)
        await self.save(tx, call)

    async def _device_refused(
        self, tx: StoreTx, call: Call, offer: RingOffer, by: str, reason: str, result: Result
    ) -> None:
        now = self._clock.now()
        await self._offer_ended(tx, offer, now, OfferState.REJECTED, f"{reason} by {by}")
        call.record(now, "rejected", by=by, reason=reason, target=offer.target)
        await self._offer_failed(tx, call, offer, result)
        await self.save(tx, call)

    # ---- the far end of a SIP trunk -------------------------------------------------------------------

    async def _ringing_trunk_offer(
        self, tx: StoreTx, server_call_id: str, offer_id: str
    ) -> tuple[Call, RingOffer] | None:
        doc = await tx.get_call(server_call_id)
        call = None if doc is None else Call.from_doc(doc)
        offer = None if call is None else call.offer(offer_id)
        if call is None or offer is None or offer.state != OfferState.RINGING:
            return None
        return call, offer

    async def far_end_answered(self, tx: StoreTx, server_call_id: str, offer_id: str) -> bool:
        """The trunk's far end answered (200 OK): as a simulated device answering. False if the offer
        no longer rings (the trunk then hangs up)."""
        found = await self._ringing_trunk_offer(tx, server_call_id, offer_id)
        if found is None:
            return False
        await self._device_answered(tx, *found, "trunk")
        return True

    async def far_end_refused(
        self, tx: StoreTx, server_call_id: str, offer_id: str, reason: str, result: Result
    ) -> None:
        """The trunk's far end refused (486, 603, ...) or could not be reached."""
        found = await self._ringing_trunk_offer(tx, server_call_id, offer_id)
        if found is not None:
            await self._device_refused(tx, *found, "trunk", reason, result)

    async def far_end_hung_up(self, tx: StoreTx, server_call_id: str, raw_id: str) -> None:
        """A party on the trunk hung up (BYE, or CANCEL of a call still ringing)."""
        doc = await tx.get_call(server_call_id)
        if doc is None or Call.from_doc(doc).state == CallState.DISCONNECTED:
            return
        call = Call.from_doc(doc)
        if call.participant(raw_id) is not None:
            await self.hang_up_participant(tx, server_call_id, raw_id)

    async def _claim(self, tx: StoreTx, call: Call, offer: RingOffer, now: float) -> None:
        """An app answered: the offer is taken, and the places an exclusive offer shared stop ringing."""
        await self._offer_ended(tx, offer, now, OfferState.ANSWERED, "answered by app")
        if offer.exclusive:
            for other in call.ringing_offers():
                if other.exclusive:
                    await self._offer_ended(tx, other, now, OfferState.CANCELED, "answered elsewhere")

    async def _establish_later(
        self, tx: StoreTx, call: Call, connection: CallConnection, offer: RingOffer | None
    ) -> None:
        # How long the caller's side takes to connect (a simulated endpoint's connectDelayMs, default 0).
        device = await self.get_device(tx, call.source)
        due = self._clock.now() + int(device["connectDelayMs"]) / 1000.0
        payload = {"serverCallId": call.server_call_id, "callConnectionId": connection.call_connection_id}
        if offer is not None:
            payload["offerId"] = offer.offer_id
        await self._timers.schedule(tx, "connection.establish", due, payload)

    async def _on_establish(self, tx: StoreTx, timer: TimerRow) -> None:
        """An answered or connected leg's media is up: it connects, and an answered offer's target joins."""
        call = await self.call_of_timer(tx, timer)
        if call is None:
            return
        connection = call.connection(timer.payload["callConnectionId"])
        if connection is None or connection.state != ConnectionState.CONNECTING:
            return  # the call ended first: the leg already heard AnswerFailed or ConnectFailed
        offer = call.offer(timer.payload["offerId"]) if "offerId" in timer.payload else None
        connection.state = ConnectionState.CONNECTED
        call.record(self._clock.now(), "connected", callConnectionId=connection.call_connection_id)
        await self.callback(tx, call, connection, "CallConnected", operation_context=connection.operation_context)
        if offer is None:
            await self.participants_updated(tx, call, only=connection)
        else:
            await self._join(tx, call, offer, connection.call_connection_id)
        await self.save(tx, call)

    # ---- events ----------------------------------------------------------------------------------

    async def callback(
        self,
        tx: StoreTx,
        call: Call,
        connection: CallConnection,
        name: str,
        *,
        operation_context: str | None = None,
        result: Result = (200, 0, ""),
        extra: dict[str, Any] | None = None,
        url: str | None = None,
        source: str | None = None,
    ) -> None:
        event_type = "Microsoft.Communication." + name
        code, sub_code, message = result
        data: dict[str, Any] = {
            "version": CALLBACK_API_VERSION,
            "resultInformation": {"code": code, "subCode": sub_code, "message": message},
            "callConnectionId": connection.call_connection_id,
            "serverCallId": call.server_call_id,
            "correlationId": call.correlation_id,
            "publicEventType": event_type,
        }
        if operation_context is not None:
            data["operationContext"] = operation_context
        if extra:
            data.update(extra)
        source = source or f"calling/callConnections/{connection.call_connection_id}"
        event = {
            "id": random_uuid(),
            "source": source,
            "type": event_type,
            "data": data,
            "time": iso7(call.event_time(self._clock.now())).replace("Z", "+00:00"),
            "specversion": "1.0",
            "datacontenttype": "application/json",
            "subject": source,
        }
        await self._sink.send_callback(
            tx, url=url or connection.callback_uri, event=event, audience=self.resource_of(call).immutable_id
        )
        if name == "CallConnected":
            # Streams asked to start with the call start once its leg is up (after CallConnected).
            await self.streaming.connected(tx, call, connection)

    async def operation_callback(
        self,
        tx: StoreTx,
        call: Call,
        connection: CallConnection,
        offer: RingOffer,
        name: str,
        result: Result,
        *,
        participant: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        data = dict(extra or {})
        if participant is not None:
            data["participant"] = _ident(participant)
        if offer.invitation_id is not None and offer.scenario == Scenario.ADD_PARTICIPANT:
            data["invitationId"] = offer.invitation_id
        await self.callback(
            tx,
            call,
            connection,
            name,
            operation_context=offer.operation_context,
            result=result,
            extra=data,
            url=offer.operation_callback_uri,
        )

    async def participants_updated(self, tx: StoreTx, call: Call, only: CallConnection | None = None) -> None:
        legs = [c for c in ([only] if only else call.active_connections()) if c.state == ConnectionState.CONNECTED]
        if not legs:
            return
        call.participants_sequence += 1
        sequence = call.participants_sequence
        participants = [
            {"identifier": _ident(p.raw_id), "isMuted": p.is_muted, "isOnHold": p.is_on_hold} for p in call.participants
        ]
        call.record(self._clock.now(), "participantsUpdated", sequenceNumber=sequence)
        for connection in legs:
            await self.callback(
                tx,
                call,
                connection,
                "ParticipantsUpdated",
                extra={"sequenceNumber": sequence, "participants": participants},
            )

    async def _call_event(self, tx: StoreTx, call: Call, event_type: str, subject: str, **extra: Any) -> None:
        starter = from_raw_id(call.source)
        data: dict[str, Any] = {
            "startedBy": {"communicationIdentifier": starter.to_wire(), "role": "None"},
            "serverCallId": call.server_call_id,
            "group": None,
            "room": None,
            "isTwoParty": len(call.participants) <= 2,
            "correlationId": call.correlation_id,
            "isRoomsCall": False,
            **extra,
        }
        await self._sink.publish_system_event(
            tx, self.resource_of(call), event_type=event_type, subject=subject, data=data
        )

    async def _participant_event(self, tx: StoreTx, call: Call, event_type: str, raw_id: str) -> None:
        # ACS reports only its own users (not phones, Teams users or the app's bot) this way (acs-wire.md 4.3).
        who = from_raw_id(raw_id)
        if not who.is_communication_user or raw_id == self.application_id(self.resource_of(call)):
            return
        starter = from_raw_id(call.source)
        data = {
            "user": {"communicationIdentifier": who.to_wire(), "role": "None"},
            "displayName": "",
            "participantId": str(uuid.uuid5(uuid.NAMESPACE_URL, call.server_call_id + raw_id)),
            "endpointType": "VoIP",
            "startedBy": {"communicationIdentifier": starter.to_wire(), "role": "None"},
            "serverCallId": call.server_call_id,
            "group": None,
            "room": None,
            "isTwoParty": len(call.participants) <= 2,
            "correlationId": call.correlation_id,
            "isRoomsCall": False,
        }
        subject = f"call/{call.server_call_id}/participant/{raw_id}"
        await self._sink.publish_system_event(
            tx, self.resource_of(call), event_type=event_type, subject=subject, data=data
        )

    async def on_media_event(self, tx: StoreTx, event: MediaEvent) -> None:
        try:
            await self.media.on_media_event(tx, event)
            await self.streaming.on_media_event(tx, event)
        except NotFound:
            return  # the call is gone (reset, or never stored here)

    async def save(self, tx: StoreTx, call: Call) -> None:
        # After-commit actions can run out of commit order (a commit, an await, then its actions): the
        # revision lets a follower (the SIP trunk) tell an older snapshot from a newer one.
        call.revision += 1
        await tx.put_call(call.server_call_id, call.to_doc(), self._clock.now())
        # The media plane follows who is in the call once this is committed.
        plane, server_call_id = self.media_plane, call.server_call_id
        if call.state == CallState.CONNECTED:
            parties = [
                Party(p.raw_id, on_hold=p.is_on_hold, muted=p.is_muted, app=p.call_connection_id is not None)
                for p in call.participants
            ]
            tx.after_commit(lambda: plane.call_state(server_call_id, parties))
        elif call.state == CallState.DISCONNECTED:
            tx.after_commit(lambda: plane.call_state(server_call_id, None))
        trunk = self.trunk
        if trunk is not None:
            tx.after_commit(lambda: trunk.call_changed(call))


# What a leg that never connected hears when its call ends, by how the leg began.
_FAILED_BEFORE_CONNECTING = {"created": "CreateCallFailed", "answered": "AnswerFailed", "connected": "ConnectFailed"}


def _new_server_call_id() -> str:
    # Like the real service: base64 of an internal conversation URL (URL-safe here, so it fits a path).
    url = f"https://callgrid.local/conv/{random_uuid()}"
    return base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def custom_context_of(value: dict[str, Any] | None) -> dict[str, Any]:
    """The IncomingCall's customContext from a caller's custom headers (always both maps)."""
    value = value or {}
    sip = value.get("sipHeaders") or {}
    voip = value.get("voipHeaders") or {}
    if not isinstance(sip, dict) or not isinstance(voip, dict):
        raise InvalidRequest("customContext.sipHeaders and customContext.voipHeaders must be objects.", code="8523")
    for headers in (sip, voip):
        for k, v in headers.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise InvalidRequest("customContext headers must map strings to strings.", code="8523")
    return {"sipHeaders": dict(sip), "voipHeaders": dict(voip)}


def check_callback_uri(uri: str) -> None:
    if not isinstance(uri, str) or not uri.lower().startswith(("http://", "https://")):
        raise InvalidRequest("callbackUri must be an absolute http(s) URI.", code="8523")


def check_operation_context(value: str | None) -> None:
    if value is not None and len(value) > MAX_OPERATION_CONTEXT:
        raise InvalidRequest(f"operationContext is longer than {MAX_OPERATION_CONTEXT} characters.", code="8523")


def parse_identifier(raw: Any, field: str) -> CommunicationIdentifier:
    """Read a raw id or E.164 string given to callgrid's own API."""
    if not isinstance(raw, str):
        raise InvalidRequest(f"'{field}' must be a string: a raw id (8:acs:..., 4:+1...) or an E.164 number.")
    try:
        return from_raw_id(raw)
    except InvalidIdentifier as exc:
        raise InvalidRequest(f"'{field}': {exc}") from None


__all__ = [
    "CallService",
    "CallServiceSettings",
    "CallgridError",
    "DeviceBehaviour",
    "Invitation",
    "TargetKind",
    "parse_identifier",
]
