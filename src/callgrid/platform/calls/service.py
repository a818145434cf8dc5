"""The call core: placing calls, ringing offers, and the pre-call and mid-call actions of Call Automation.

Every method runs inside the caller's store transaction; events it raises (IncomingCall on the
system topic, callbacks to apps) are written in that same transaction.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from callgrid.clock import Clock, iso7
from callgrid.errors import CallgridError, Forbidden, InvalidRequest, NotFound
from callgrid.identifiers import CommunicationIdentifier, InvalidIdentifier, from_raw_id
from callgrid.platform.calls.models import (
    Call,
    CallConnection,
    CallState,
    OfferState,
    Participant,
    RingOffer,
    Scenario,
)
from callgrid.platform.events import EventSink
from callgrid.platform.identities import IdentityService
from callgrid.platform.phone_numbers import PhoneNumberService
from callgrid.platform.resource import CommunicationResource
from callgrid.platform.timers import TimerService
from callgrid.security import InvalidCallContext, decode_call_context, encode_call_context
from callgrid.store import StoreTx, TimerRow

INCOMING_CALL = "Microsoft.Communication.IncomingCall"
CALLBACK_API_VERSION = "2026-03-12"

# ACS result codes used when a call or offer ends (acs-wire.md 5.3).
ENDED_NORMALLY = (200, 7000, "The conversation has ended.")
NOT_ANSWERED = (408, 8587, "Incoming call not answered within time.")
DECLINED = (603, 8538, "The callee declined the call.")
BUSY = (486, 8539, "The callee is busy.")
FORBIDDEN = (403, 8540, "The call was rejected as forbidden.")


class DeviceBehaviour(StrEnum):
    """What the simulated device of an identity or number does when it rings."""

    RING = "ring"
    ANSWER = "answer"
    DECLINE = "decline"
    BUSY = "busy"


class TargetKind(StrEnum):
    IDENTITY = "identity"  # a user of this resource: raises IncomingCall
    OWNED_NUMBER = "ownedNumber"  # a number this resource owns: raises IncomingCall
    EXTERNAL_NUMBER = "externalNumber"  # the public network: rings a simulated phone only


@dataclass
class CallServiceSettings:
    ring_timeout_seconds: float = 30.0


def _ident(raw_id: str) -> dict[str, Any]:
    return from_raw_id(raw_id).to_wire()


class CallService:
    def __init__(
        self,
        *,
        resource: CommunicationResource,
        identities: IdentityService,
        numbers: PhoneNumberService,
        sink: EventSink,
        timers: TimerService,
        clock: Clock,
        context_secret: bytes,
        settings: CallServiceSettings,
    ) -> None:
        self.resource = resource
        self._identities = identities
        self._numbers = numbers
        self._sink = sink
        self._timers = timers
        self._clock = clock
        self._secret = context_secret
        self.settings = settings
        timers.register("offer.expire", self._on_offer_expire)
        timers.register("device.act", self._on_device_act)

    # ---- who is who -------------------------------------------------------------------------------

    async def classify_target(self, tx: StoreTx, target: CommunicationIdentifier) -> TargetKind:
        if target.is_communication_user:
            if not target.raw_id.startswith(f"8:acs:{self.resource.immutable_id}_"):
                raise Forbidden(
                    f"'{target.raw_id}' belongs to another Communication resource; cross-resource calls are blocked.",
                    code="7507",
                )
            if not await self._identities.exists(tx, target.raw_id):
                raise NotFound(f"Identity '{target.raw_id}' does not exist in this resource.", code="8522")
            return TargetKind.IDENTITY
        if target.is_phone_number:
            if await self._numbers.is_owned(tx, target.phone_number):
                return TargetKind.OWNED_NUMBER
            return TargetKind.EXTERNAL_NUMBER
        raise InvalidRequest(
            f"callgrid cannot ring '{target.raw_id}': only Communication users and phone numbers.",
            code="8523",
        )

    # ---- the simulator: callers and devices -----------------------------------------------------------

    async def place_call(
        self,
        tx: StoreTx,
        *,
        source: CommunicationIdentifier,
        target: CommunicationIdentifier,
        caller_display_name: str = "",
        custom_context: dict[str, Any] | None = None,
    ) -> Call:
        if source.is_communication_user:
            await self.classify_target(tx, source)  # the caller must be a user of this resource
        elif not source.is_phone_number:
            raise InvalidRequest("'from' must be an identity of this resource or a phone number.")
        if source == target:
            raise InvalidRequest("A call needs two parties: 'from' and 'to' are the same.")
        kind = await self.classify_target(tx, target)
        if kind is TargetKind.EXTERNAL_NUMBER and not source.is_communication_user:
            raise InvalidRequest(
                f"{target.phone_number} is not owned by this resource: a PSTN call reaches the resource "
                "only through a number it owns (add it with POST /callgrid/v1/phoneNumbers).",
                code="PhoneNumberNotOwned",
            )
        now = self._clock.now()
        call = Call(
            server_call_id=_new_server_call_id(),
            correlation_id=str(uuid.uuid4()),
            state=CallState.RINGING,
            created_at=now,
            source=source.raw_id,
            caller_display_name=caller_display_name,
            custom_context=_custom_context(custom_context),
        )
        call.participants.append(Participant(raw_id=source.raw_id, role="caller", joined_at=now))
        call.record(now, "callPlaced", **{"from": source.raw_id, "to": target.raw_id})
        await self._ring(tx, call, target, source, Scenario.CALL, call.custom_context)
        await self._save(tx, call)
        return call

    async def get_call(self, tx: StoreTx, server_call_id: str) -> Call:
        doc = await tx.get_call(server_call_id)
        if doc is None:
            raise NotFound(f"No call with serverCallId '{server_call_id}'.", code="8522")
        return Call.from_doc(doc)

    async def list_calls(self, tx: StoreTx, limit: int = 100) -> list[Call]:
        return [Call.from_doc(d) for d in await tx.list_calls(limit)]

    async def set_device(
        self, tx: StoreTx, target: CommunicationIdentifier, behaviour: DeviceBehaviour, answer_delay_ms: int
    ) -> dict[str, Any]:
        if target.is_communication_user:
            await self.classify_target(tx, target)
        elif not target.is_phone_number:
            raise InvalidRequest("Simulated devices exist for identities and phone numbers only.")
        if answer_delay_ms < 0 or answer_delay_ms > 3_600_000:
            raise InvalidRequest("answerDelayMs must be between 0 and 3600000.")
        doc = {"rawId": target.raw_id, "onIncomingCall": behaviour.value, "answerDelayMs": answer_delay_ms}
        await tx.put_endpoint(target.raw_id, doc)
        return doc

    async def get_device(self, tx: StoreTx, raw_id: str) -> dict[str, Any]:
        doc = await tx.get_endpoint(raw_id)
        return doc or {"rawId": raw_id, "onIncomingCall": DeviceBehaviour.RING.value, "answerDelayMs": 0}

    # ---- pre-call actions (incomingCallContext) ---------------------------------------------------

    async def answer(
        self,
        tx: StoreTx,
        *,
        incoming_call_context: str,
        callback_uri: str,
        operation_context: str | None = None,
    ) -> tuple[Call, CallConnection]:
        _check_callback_uri(callback_uri)
        call, offer = await self._ringing_offer(tx, incoming_call_context)
        now = self._clock.now()
        connection = CallConnection(
            call_connection_id=str(uuid.uuid4()),
            callback_uri=callback_uri,
            answered_for=offer.target,
            state="connected",
            created_at=now,
            operation_context=operation_context,
        )
        call.connections.append(connection)
        await tx.add_call_connection(connection.call_connection_id, call.server_call_id)
        self._offer_answered(call, offer, now, by="app", call_connection_id=connection.call_connection_id)
        call.record(now, "answered", by="app", callConnectionId=connection.call_connection_id)
        await self._callback(tx, call, connection, "CallConnected", operation_context=operation_context)
        await self._participants_updated(tx, call)
        await self._save(tx, call)
        return call, connection

    async def redirect(self, tx: StoreTx, *, incoming_call_context: str, target: CommunicationIdentifier) -> Call:
        call, offer = await self._ringing_offer(tx, incoming_call_context)
        if target.raw_id == offer.target:
            raise InvalidRequest("A call cannot be redirected to the target it is ringing.", code="8523")
        if target.raw_id == call.source:
            raise InvalidRequest("A call cannot be redirected to its own caller.", code="8523")
        now = self._clock.now()
        offer.state = OfferState.REDIRECTED
        offer.ended_at = now
        offer.outcome = f"redirected to {target.raw_id}"
        call.record(now, "redirected", **{"from": offer.target, "to": target.raw_id})
        await self._ring(tx, call, target, from_raw_id(offer.source), Scenario.REDIRECT, offer.custom_context)
        await self._save(tx, call)
        return call

    async def reject(self, tx: StoreTx, *, incoming_call_context: str, reason: str | None) -> Call:
        reason = reason or "none"
        result = {"none": DECLINED, "busy": BUSY, "forbidden": FORBIDDEN}.get(reason)
        if result is None:
            raise InvalidRequest(f"callRejectReason '{reason}' is not one of none, busy, forbidden.", code="8523")
        call, offer = await self._ringing_offer(tx, incoming_call_context)
        now = self._clock.now()
        self._offer_ended(call, offer, now, OfferState.REJECTED, f"rejected ({reason})")
        call.record(now, "rejected", by="app", reason=reason, target=offer.target)
        await self._after_offer_ended(tx, call, result)
        await self._save(tx, call)
        return call

    # ---- mid-call ---------------------------------------------------------------------------------

    async def connection(self, tx: StoreTx, call_connection_id: str) -> tuple[Call, CallConnection]:
        server_call_id = await tx.get_call_id_for_connection(call_connection_id)
        if server_call_id is None:
            raise NotFound(f"Call connection '{call_connection_id}' was not found.", code="8522")
        call = await self.get_call(tx, server_call_id)
        connection = call.connection(call_connection_id)
        if connection is None:  # pragma: no cover - the index and the document are written together
            raise NotFound(f"Call connection '{call_connection_id}' was not found.", code="8522")
        return call, connection

    async def hang_up(self, tx: StoreTx, call_connection_id: str, *, for_everyone: bool) -> Call:
        call, connection = await self.connection(tx, call_connection_id)
        if connection.state == "disconnected" or call.state == CallState.DISCONNECTED:
            raise InvalidRequest("The call has already ended.", code="8528")
        now = self._clock.now()
        connected = [p for p in call.participants]
        if for_everyone or len(connected) <= 2:
            call.record(now, "hungUp", callConnectionId=call_connection_id, forEveryone=for_everyone)
            await self._end_call(tx, call, ENDED_NORMALLY)
        else:
            call.participants = [p for p in call.participants if p.call_connection_id != call_connection_id]
            connection.state = "disconnected"
            call.record(now, "left", callConnectionId=call_connection_id)
            await self._callback(tx, call, connection, "CallDisconnected", result=ENDED_NORMALLY)
            await self._participants_updated(tx, call)
        await self._save(tx, call)
        return call

    def connection_properties(self, call: Call, connection: CallConnection, state: str | None = None) -> dict[str, Any]:
        others = [p.raw_id for p in call.participants if p.raw_id != connection.answered_for]
        props: dict[str, Any] = {
            "callConnectionId": connection.call_connection_id,
            "serverCallId": call.server_call_id,
            "targets": [_ident(r) for r in others],
            "callConnectionState": state or connection.state,
            "callbackUri": connection.callback_uri,
            "source": _ident(connection.answered_for),
            "correlationId": call.correlation_id,
            "answeredBy": {"id": f"8:acs:{self.resource.immutable_id}_app"},
        }
        answered_for = from_raw_id(connection.answered_for)
        if answered_for.is_phone_number:
            props["answeredFor"] = {"value": answered_for.phone_number}
        return props

    # ---- internals ---------------------------------------------------------------------------------

    async def _ring(
        self,
        tx: StoreTx,
        call: Call,
        target: CommunicationIdentifier,
        source: CommunicationIdentifier,
        scenario: Scenario,
        custom_context: dict[str, Any],
    ) -> RingOffer:
        kind = await self.classify_target(tx, target)
        now = self._clock.now()
        offer = RingOffer(
            offer_id=str(uuid.uuid4()),
            target=target.raw_id,
            source=source.raw_id,
            scenario=scenario.value,
            state=OfferState.RINGING,
            created_at=now,
            expires_at=now + self.settings.ring_timeout_seconds,
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
        await self._timers.schedule(
            tx,
            "offer.expire",
            offer.expires_at,
            {"serverCallId": call.server_call_id, "offerId": offer.offer_id},
        )
        device = await self.get_device(tx, target.raw_id)
        behaviour = DeviceBehaviour(device["onIncomingCall"])
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
                "res": self.resource.immutable_id,
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
        return await self._sink.publish_system_event(tx, event_type=INCOMING_CALL, subject=subject, data=data)

    async def _ringing_offer(self, tx: StoreTx, incoming_call_context: str) -> tuple[Call, RingOffer]:
        if not isinstance(incoming_call_context, str) or not incoming_call_context:
            raise InvalidRequest("incomingCallContext is required.", code="8523")
        try:
            claims = decode_call_context(self._secret, incoming_call_context)
        except InvalidCallContext as exc:
            raise InvalidRequest(f"Invalid incomingCallContext: {exc}", code="8523") from None
        if claims.get("res") != self.resource.immutable_id:
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

    def _offer_ended(self, call: Call, offer: RingOffer, now: float, state: OfferState, outcome: str) -> None:
        offer.state = state
        offer.ended_at = now
        offer.outcome = outcome

    def _offer_answered(
        self, call: Call, offer: RingOffer, now: float, *, by: str, call_connection_id: str | None = None
    ) -> None:
        self._offer_ended(call, offer, now, OfferState.ANSWERED, f"answered by {by}")
        for other in call.ringing_offers():
            self._offer_ended(call, other, now, OfferState.CANCELED, "answered elsewhere")
        call.participants.append(
            Participant(raw_id=offer.target, role="callee", joined_at=now, call_connection_id=call_connection_id)
        )
        call.state = CallState.CONNECTED

    async def _after_offer_ended(self, tx: StoreTx, call: Call, result: tuple[int, int, str]) -> None:
        if call.state == CallState.RINGING and not call.ringing_offers():
            await self._end_call(tx, call, result)

    async def _end_call(self, tx: StoreTx, call: Call, result: tuple[int, int, str]) -> None:
        now = self._clock.now()
        for offer in call.ringing_offers():
            self._offer_ended(call, offer, now, OfferState.CANCELED, "call ended")
        for connection in call.active_connections():
            connection.state = "disconnected"
            await self._callback(tx, call, connection, "CallDisconnected", result=result)
        call.state = CallState.DISCONNECTED
        call.ended_at = now
        code, sub_code, message = result
        call.end_reason = {"code": code, "subCode": sub_code, "message": message}
        call.record(now, "disconnected", code=code, subCode=sub_code, message=message)

    async def _on_offer_expire(self, tx: StoreTx, timer: TimerRow) -> None:
        doc = await tx.get_call(timer.payload["serverCallId"])
        if doc is None:
            return
        call = Call.from_doc(doc)
        offer = call.offer(timer.payload["offerId"])
        if offer is None or offer.state != OfferState.RINGING:
            return
        now = self._clock.now()
        self._offer_ended(call, offer, now, OfferState.EXPIRED, "not answered within time")
        call.record(now, "ringTimeout", target=offer.target)
        await self._after_offer_ended(tx, call, NOT_ANSWERED)
        await self._save(tx, call)

    async def _on_device_act(self, tx: StoreTx, timer: TimerRow) -> None:
        doc = await tx.get_call(timer.payload["serverCallId"])
        if doc is None:
            return
        call = Call.from_doc(doc)
        offer = call.offer(timer.payload["offerId"])
        if offer is None or offer.state != OfferState.RINGING:
            return
        now = self._clock.now()
        action = DeviceBehaviour(timer.payload["action"])
        if action is DeviceBehaviour.ANSWER:
            self._offer_answered(call, offer, now, by="device")
            call.record(now, "answered", by="device", target=offer.target)
            for connection in call.active_connections():
                await self._participants_updated(tx, call, only=connection)
        else:
            result = DECLINED if action is DeviceBehaviour.DECLINE else BUSY
            self._offer_ended(call, offer, now, OfferState.REJECTED, f"{action.value} by device")
            call.record(now, "rejected", by="device", reason=action.value, target=offer.target)
            await self._after_offer_ended(tx, call, result)
        await self._save(tx, call)

    async def _callback(
        self,
        tx: StoreTx,
        call: Call,
        connection: CallConnection,
        name: str,
        *,
        operation_context: str | None = None,
        result: tuple[int, int, str] = (200, 0, ""),
        extra: dict[str, Any] | None = None,
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
        source = f"calling/callConnections/{connection.call_connection_id}"
        event = {
            "id": str(uuid.uuid4()),
            "source": source,
            "type": event_type,
            "data": data,
            "time": iso7(self._clock.now()).replace("Z", "+00:00"),
            "specversion": "1.0",
            "datacontenttype": "application/json",
            "subject": source,
        }
        await self._sink.send_callback(tx, url=connection.callback_uri, event=event)

    async def _participants_updated(self, tx: StoreTx, call: Call, only: CallConnection | None = None) -> None:
        sequence = sum(1 for t in call.timeline if t.event == "participantsUpdated") + 1
        participants = [
            {"identifier": _ident(p.raw_id), "isMuted": p.is_muted, "isOnHold": False} for p in call.participants
        ]
        call.record(self._clock.now(), "participantsUpdated", sequenceNumber=sequence)
        for connection in [only] if only else call.active_connections():
            await self._callback(
                tx,
                call,
                connection,
                "ParticipantsUpdated",
                extra={"sequenceNumber": sequence, "participants": participants},
            )

    async def _save(self, tx: StoreTx, call: Call) -> None:
        await tx.put_call(call.server_call_id, call.to_doc(), self._clock.now())


def _new_server_call_id() -> str:
    # Like the real service: base64 of an internal conversation URL (URL-safe here, so it fits a path).
    url = f"https://callgrid.local/conv/{uuid.uuid4()}"
    return base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def _custom_context(value: dict[str, Any] | None) -> dict[str, Any]:
    value = value or {}
    sip = value.get("sipHeaders") or {}
    voip = value.get("voipHeaders") or {}
    if not isinstance(sip, dict) or not isinstance(voip, dict):
        raise InvalidRequest("customContext.sipHeaders and customContext.voipHeaders must be objects.")
    for headers in (sip, voip):
        for k, v in headers.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise InvalidRequest("customContext headers must map strings to strings.")
    return {"sipHeaders": dict(sip), "voipHeaders": dict(voip)}


def _check_callback_uri(uri: str) -> None:
    if not isinstance(uri, str) or not uri.lower().startswith(("http://", "https://")):
        raise InvalidRequest("callbackUri must be an absolute http(s) URI.", code="8523")


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
    "TargetKind",
    "parse_identifier",
]
