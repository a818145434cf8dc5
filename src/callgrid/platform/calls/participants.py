"""Mid-call participant actions of Call Automation: add (and cancel), remove, mute, transfer, list.

Each runs in the caller's transaction on top of the call core (`service.py`): invitations ring like
any call (IncomingCall for identities and owned numbers, a simulated phone otherwise) and their
outcome is reported to the inviting leg's operation callback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from callgrid.errors import InvalidRequest, NotFound
from callgrid.identifiers import CommunicationIdentifier, from_raw_id
from callgrid.platform.audio import Probe
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
from callgrid.platform.calls.results import SUCCESS
from callgrid.platform.calls.service import Invitation, custom_context_of
from callgrid.platform.resource import CommunicationResource
from callgrid.store import StoreTx
from callgrid.store.keys import random_uuid

if TYPE_CHECKING:
    from callgrid.platform.calls.service import CallService

MAX_INVITATION_TIMEOUT_SECONDS = 180
CANCELED_BY_APP = (487, 8508, "The invitation was canceled.")
REMOVED = (200, 5001, "The participant was removed from the call.")


class ParticipantActions:
    def __init__(self, core: CallService) -> None:
        self._core = core

    def participant_view(self, p: Participant) -> dict[str, Any]:
        return {"identifier": from_raw_id(p.raw_id).to_wire(), "isMuted": p.is_muted, "isOnHold": p.is_on_hold}

    async def list_all(self, tx: StoreTx, call_connection_id: str) -> list[dict[str, Any]]:
        call, _ = await self._core.connection(tx, call_connection_id)
        return [self.participant_view(p) for p in call.participants]

    async def get(self, tx: StoreTx, call_connection_id: str, raw_id: str) -> dict[str, Any]:
        call, _ = await self._core.connection(tx, call_connection_id)
        return self.participant_view(self._in_call(call, raw_id))

    async def add(
        self,
        tx: StoreTx,
        call_connection_id: str,
        *,
        target: CommunicationIdentifier,
        source_caller_id: CommunicationIdentifier | None = None,
        invitation_timeout: int | None = None,
        operation_context: str | None = None,
        operation_callback_uri: str | None = None,
        custom_context: dict[str, Any] | None = None,
    ) -> tuple[RingOffer, Call]:
        core = self._core
        call, connection = await core.active_connection(tx, call_connection_id)
        if invitation_timeout is not None and not 1 <= invitation_timeout <= MAX_INVITATION_TIMEOUT_SECONDS:
            raise InvalidRequest(
                f"invitationTimeoutInSeconds must be between 1 and {MAX_INVITATION_TIMEOUT_SECONDS}.", code="8523"
            )
        if call.participant(target.raw_id) is not None:
            raise InvalidRequest(f"'{target.raw_id}' is already in the call.", code="8523")
        if any(o.target == target.raw_id for o in call.ringing_offers()):
            raise InvalidRequest(f"'{target.raw_id}' is already being invited to the call.", code="8523")
        await core.check_caller_id(tx, source_caller_id, target.raw_id, core.resource_of(call))
        _check_callback(operation_callback_uri)
        offer = await core.ring(
            tx,
            call,
            target,
            source_caller_id or from_raw_id(self._caller_of(call, connection)),
            custom_context_of(custom_context),
            Invitation(
                requested_by=call_connection_id,
                scenario=Scenario.ADD_PARTICIPANT,
                timeout_seconds=float(invitation_timeout) if invitation_timeout is not None else None,
                invitation_id=random_uuid(),
                operation_context=operation_context,
                operation_callback_uri=operation_callback_uri,
            ),
        )
        call.record(core.clock.now(), "addParticipant", target=target.raw_id, invitationId=offer.invitation_id)
        await core.save(tx, call)
        return offer, call

    async def cancel_add(
        self,
        tx: StoreTx,
        call_connection_id: str,
        *,
        invitation_id: str,
        operation_context: str | None = None,
        operation_callback_uri: str | None = None,
    ) -> None:
        core = self._core
        call, connection = await core.active_connection(tx, call_connection_id)
        _check_callback(operation_callback_uri)
        offer = call.invitation(invitation_id)
        if offer is None:
            raise NotFound(f"No add-participant invitation '{invitation_id}' in this call.", code="8522")
        report = RingOffer(**{**offer.__dict__})
        report.operation_context = operation_context
        report.operation_callback_uri = operation_callback_uri
        now = core.clock.now()
        if offer.state == OfferState.RINGING:
            offer.state, offer.ended_at, offer.outcome = OfferState.CANCELED, now, "canceled by the app"
            call.record(now, "addParticipantCanceled", invitationId=invitation_id, target=offer.target)
            await core.operation_callback(tx, call, connection, report, "CancelAddParticipantSucceeded", SUCCESS)
        else:
            await core.operation_callback(
                tx,
                call,
                connection,
                report,
                "CancelAddParticipantFailed",
                (400, 8583, f"The invitation can no longer be canceled: it was {offer.outcome}."),
            )
        await core.save(tx, call)

    async def remove(
        self,
        tx: StoreTx,
        call_connection_id: str,
        *,
        target: CommunicationIdentifier,
        operation_context: str | None = None,
        operation_callback_uri: str | None = None,
    ) -> None:
        core = self._core
        call, connection = await core.active_connection(tx, call_connection_id)
        _check_callback(operation_callback_uri)
        participant = self._in_call(call, target.raw_id)
        if participant.call_connection_id == call_connection_id:
            raise InvalidRequest("An application cannot remove its own leg; use hang_up.", code="8523")
        report = RingOffer(
            offer_id="",
            target=target.raw_id,
            source="",
            scenario="removeParticipant",
            state="",
            created_at=0.0,
            expires_at=0.0,
            operation_context=operation_context,
            operation_callback_uri=operation_callback_uri,
        )
        await core.operation_callback(
            tx, call, connection, report, "RemoveParticipantSucceeded", SUCCESS, participant=target.raw_id
        )
        await core.remove_from_call(tx, call, participant, REMOVED, reason="removed")
        await core.save(tx, call)

    async def move_here(
        self,
        tx: StoreTx,
        call_connection_id: str,
        *,
        targets: list[CommunicationIdentifier],
        from_call: str,
        operation_context: str | None = None,
        operation_callback_uri: str | None = None,
    ) -> list[str]:
        """Move participants out of another call the app is in (named by its callConnectionId, or its
        serverCallId) into this one: MoveParticipantSucceeded for each, ParticipantsUpdated in both calls;
        the call they left ends if fewer than two parties remain."""
        core = self._core
        call, connection = await core.active_connection(tx, call_connection_id)
        _check_callback(operation_callback_uri)
        if not targets:
            raise InvalidRequest("targetParticipants must name at least one participant.", code="8523")
        source = await self._source_call(tx, from_call, core.resource_of(call))
        if source.server_call_id == call.server_call_id:
            raise InvalidRequest("fromCall is this call: participants can only move from another call.", code="8523")
        moving = [self._in_call(source, t.raw_id) for t in targets]
        for participant in moving:
            if participant.call_connection_id is not None:
                raise InvalidRequest(
                    f"'{participant.raw_id}' is an application's own leg; it cannot move.", code="8523"
                )
            if call.participant(participant.raw_id) is not None:
                raise InvalidRequest(f"'{participant.raw_id}' is already in this call.", code="8523")
        now = core.clock.now()
        moved = (200, 0, "The participant moved to another call.")
        for participant in moving:
            await core.remove_from_call(tx, source, participant, moved, reason="moved")
            call.participants.append(Participant(raw_id=participant.raw_id, role="callee", joined_at=now))
            call.record(now, "participantMovedIn", participant=participant.raw_id, fromCall=source.server_call_id)
            report = self._report(participant.raw_id, operation_context, operation_callback_uri)
            await core.operation_callback(
                tx,
                call,
                connection,
                report,
                "MoveParticipantSucceeded",
                SUCCESS,
                participant=participant.raw_id,
                extra={"fromCall": from_call},
            )
        await core.participants_updated(tx, call)
        await core.save(tx, source)
        await core.save(tx, call)
        return [p.raw_id for p in moving]

    async def _source_call(self, tx: StoreTx, from_call: str, resource: CommunicationResource) -> Call:
        core = self._core
        server_call_id = await tx.get_call_id_for_connection(from_call)
        try:
            source = await core.get_call(tx, server_call_id or from_call, resource)
        except NotFound:
            raise NotFound(f"fromCall '{from_call}' names no call of this resource.", code="8522") from None
        if source.state != CallState.CONNECTED:
            raise InvalidRequest("fromCall is not an established call.", code="8501")
        if not any(c.state == ConnectionState.CONNECTED for c in source.connections):
            raise InvalidRequest("The application is not in the call named by fromCall.", code="8523")
        return source

    async def mute(self, tx: StoreTx, call_connection_id: str, targets: list[CommunicationIdentifier]) -> None:
        core = self._core
        call, _ = await core.active_connection(tx, call_connection_id)
        if len(targets) != 1:
            raise InvalidRequest("targetParticipants must name exactly one participant.", code="8523")
        participant = self._in_call(call, targets[0].raw_id)
        if not participant.is_muted:
            participant.is_muted = True
            call.record(core.clock.now(), "muted", participant=participant.raw_id)
            await core.participants_updated(tx, call)
        await core.save(tx, call)

    async def hold(
        self,
        tx: StoreTx,
        call_connection_id: str,
        target: CommunicationIdentifier,
        *,
        music: Probe | None = None,
        operation_context: str | None = None,
        operation_callback_uri: str | None = None,
    ) -> None:
        """Put someone on hold (optionally with music, played to them alone); ParticipantsUpdated shows it.

        Failures the app hears as HoldFailed: a target not in the call, or music that cannot be played.
        """
        core = self._core
        call, connection = await core.active_connection(tx, call_connection_id)
        _check_callback(operation_callback_uri)
        participant = call.participant(target.raw_id)
        failure: tuple[int, int, str] | None = None
        if participant is None:
            failure = (400, 8522, f"Hold failed: '{target.raw_id}' is not in the call.")
        elif participant.call_connection_id is not None:
            raise InvalidRequest("An application cannot hold its own leg.", code="8523")
        elif music is not None and not music.ok:
            failure = (400, int(music.sub_code or 8536), f"Hold failed: {music.message}")
        if failure is not None or participant is None:
            report = self._report(target.raw_id, operation_context, operation_callback_uri)
            await core.operation_callback(tx, call, connection, report, "HoldFailed", failure or SUCCESS)
            await core.save(tx, call)
            return
        now = core.clock.now()
        held = call.media.setdefault("hold", {})
        held[participant.raw_id] = {"music": music.to_doc() if music is not None else None, "since": now}
        plane, server_call_id, held_id = core.media_plane, call.server_call_id, participant.raw_id
        music_op = "hold:" + held_id
        tx.after_commit(lambda: plane.stop_play(server_call_id, music_op))
        if music is not None and music.key:
            key = music.key
            # Hold music loops to the held participant alone, until unhold.
            tx.after_commit(lambda: plane.play(server_call_id, music_op, [key], [held_id], True))
        if not participant.is_on_hold:
            participant.is_on_hold = True
            call.record(now, "held", participant=participant.raw_id, music=music is not None)
            await core.participants_updated(tx, call)
        await core.save(tx, call)

    async def unhold(self, tx: StoreTx, call_connection_id: str, target: CommunicationIdentifier) -> None:
        core = self._core
        call, _ = await core.active_connection(tx, call_connection_id)
        participant = self._in_call(call, target.raw_id)
        call.media.get("hold", {}).pop(participant.raw_id, None)
        plane, server_call_id, music_op = core.media_plane, call.server_call_id, "hold:" + participant.raw_id
        tx.after_commit(lambda: plane.stop_play(server_call_id, music_op))
        if participant.is_on_hold:
            participant.is_on_hold = False
            call.record(core.clock.now(), "unheld", participant=participant.raw_id)
            await core.participants_updated(tx, call)
        await core.save(tx, call)

    def _report(self, raw_id: str, operation_context: str | None, operation_callback_uri: str | None) -> RingOffer:
        """Where an operation that rings no one reports: its context and callback URI."""
        return RingOffer(
            offer_id="",
            target=raw_id,
            source="",
            scenario="",
            state="",
            created_at=0.0,
            expires_at=0.0,
            operation_context=operation_context,
            operation_callback_uri=operation_callback_uri,
        )

    async def transfer(
        self,
        tx: StoreTx,
        call_connection_id: str,
        *,
        target: CommunicationIdentifier,
        transferee: CommunicationIdentifier | None = None,
        source_caller_id: CommunicationIdentifier | None = None,
        operation_context: str | None = None,
        operation_callback_uri: str | None = None,
        custom_context: dict[str, Any] | None = None,
    ) -> None:
        core = self._core
        call, _ = await core.active_connection(tx, call_connection_id)
        _check_callback(operation_callback_uri)
        others = [p for p in call.participants if p.call_connection_id != call_connection_id]
        if transferee is not None:
            moved = self._in_call(call, transferee.raw_id)
        elif len(others) == 1:
            moved = others[0]
        else:
            raise InvalidRequest("In a group call, transferee names who is transferred.", code="8523")
        if moved.call_connection_id == call_connection_id:
            raise InvalidRequest("An application cannot transfer its own leg.", code="8523")
        if call.participant(target.raw_id) is not None:
            raise InvalidRequest(f"'{target.raw_id}' is already in the call.", code="8523")
        if source_caller_id is not None:
            await core.check_caller_id(tx, source_caller_id, target.raw_id, core.resource_of(call))
        elif not from_raw_id(moved.raw_id).is_phone_number:
            # A phone transferee's own number is forwarded as the caller id; anyone else may need one.
            await core.check_caller_id(tx, None, target.raw_id, core.resource_of(call))
        await core.ring(
            tx,
            call,
            target,
            source_caller_id or from_raw_id(moved.raw_id),
            custom_context_of(custom_context),
            Invitation(
                requested_by=call_connection_id,
                scenario=Scenario.TRANSFER,
                operation_context=operation_context,
                operation_callback_uri=operation_callback_uri,
                transferee=moved.raw_id,
                group_transfer=len(others) > 1,
            ),
        )
        call.record(core.clock.now(), "transfer", target=target.raw_id, transferee=moved.raw_id)
        await core.save(tx, call)

    def _in_call(self, call: Call, raw_id: str) -> Participant:
        participant = call.participant(raw_id)
        if participant is None:
            raise NotFound(f"Participant '{raw_id}' is not in the call.", code="8522")
        return participant

    def _caller_of(self, call: Call, connection: CallConnection) -> str:
        """Who an invited party sees calling: the call's caller, unless the app is the caller."""
        if call.source != connection.answered_for and call.participant(call.source) is not None:
            return call.source
        return connection.answered_for


def _check_callback(uri: str | None) -> None:
    if uri is not None and not uri.lower().startswith(("http://", "https://")):
        raise InvalidRequest("operationCallbackUri must be an absolute http(s) URI.", code="8523")
