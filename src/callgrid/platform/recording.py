"""Call recording: start, pause, resume, stop; RecordingStateChanged callbacks; and on stop the file of
the recorded time (the call's audio, captured by the media plane, pauses left out) plus its metadata,
announced by a `Microsoft.Communication.RecordingFileStatusUpdated` event on the system topic.

The media plane writes the file right after the stopping transaction commits, before the event can be
delivered. If the audio was lost (the server restarted mid-recording), the download is the recorded
time rendered from the stored document: silence with the keys pressed, as long as the recording was.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from callgrid.clock import iso7
from callgrid.errors import InvalidRequest, NotFound
from callgrid.platform.audio import RECORDING_RATE, wav_bytes
from callgrid.platform.calls.models import Call, CallState, ConnectionState
from callgrid.platform.resource import CommunicationResource
from callgrid.store import StoreTx

if TYPE_CHECKING:
    from callgrid.platform.calls.service import CallService

RECORDING_STATE_CHANGED = "RecordingStateChanged"
FILE_STATUS_UPDATED = "Microsoft.Communication.RecordingFileStatusUpdated"
RECORDING_KIND = "azureCommunicationServices"
# (content, channel, format) as ACS records them.
_FORMATS = {
    ("audio", "mixed", "wav"),
    ("audio", "mixed", "mp3"),
    ("audio", "unmixed", "wav"),
    ("audioVideo", "mixed", "mp4"),
}


class RecordingService:
    def __init__(self, core: CallService) -> None:
        self._core = core

    async def start(
        self,
        tx: StoreTx,
        resource: CommunicationResource,
        *,
        server_call_id: str,
        download_base: str,
        state_callback_uri: str | None = None,
        content_type: str = "audio",
        channel_type: str = "mixed",
        format_type: str = "wav",
        pause_on_start: bool = False,
    ) -> dict[str, Any]:
        call = await self._core.get_call(tx, server_call_id, resource)
        if call.state != CallState.CONNECTED:
            raise InvalidRequest("Recording needs an established call.", code="8501")
        if (content_type, channel_type, format_type) not in _FORMATS:
            raise InvalidRequest(
                f"Unsupported recording combination {content_type}/{channel_type}/{format_type}: ACS records "
                "audio mixed as wav or mp3, audio unmixed as wav, and audioVideo mixed as mp4.",
                code="8523",
            )
        if state_callback_uri is not None and not state_callback_uri.lower().startswith(("http://", "https://")):
            raise InvalidRequest("recordingStateCallbackUri must be an absolute http(s) URI.", code="8523")
        active = call.media.get("recordingId")
        if active is not None:
            raise InvalidRequest(f"The call is already being recorded (recording {active}).", code="8559")
        now = self._core.clock.now()
        recording_id = str(uuid.uuid4())
        doc: dict[str, Any] = {
            "recordingId": recording_id,
            "serverCallId": server_call_id,
            "state": "inactive" if pause_on_start else "active",
            "startedAt": now,
            "segments": [] if pause_on_start else [[now, None]],
            "callbackUri": state_callback_uri,
            "downloadBase": download_base.rstrip("/"),
            "contentType": content_type,
            "channelType": channel_type,
            "formatType": format_type,
            "resourceId": resource.immutable_id,
        }
        call.media["recordingId"] = recording_id
        call.record(now, "recordingStarted", recordingId=recording_id)
        plane, active = self._core.media_plane, not pause_on_start
        tx.after_commit(lambda: plane.start_recording(server_call_id, recording_id, channel_type, active))
        await tx.put_recording(recording_id, server_call_id, doc)
        await self._state_changed(tx, call, doc)
        await self._core.save(tx, call)
        return doc

    def belongs_to(self, doc: dict[str, Any], resource: CommunicationResource) -> bool:
        """Whether the recording is `resource`'s (recordings from before several resources: the default's)."""
        return bool(doc.get("resourceId", self._core.resources.default.immutable_id) == resource.immutable_id)

    async def stored(self, tx: StoreTx, resource: CommunicationResource, recording_id: str) -> dict[str, Any]:
        """The recording in any state, if it is `resource`'s."""
        doc = await tx.get_recording(recording_id)
        if doc is None or not self.belongs_to(doc, resource):
            raise NotFound(f"Recording '{recording_id}' was not found.", code="8522")
        return doc

    async def get(
        self, tx: StoreTx, recording_id: str, resource: CommunicationResource | None = None
    ) -> dict[str, Any]:
        doc = await tx.get_recording(recording_id)
        if (
            doc is None
            or doc["state"] in ("stopped", "deleted")
            or (resource is not None and not self.belongs_to(doc, resource))
        ):
            raise NotFound(f"Recording '{recording_id}' was not found or has stopped.", code="8522")
        return doc

    async def pause(self, tx: StoreTx, resource: CommunicationResource, recording_id: str) -> None:
        await self.get(tx, recording_id, resource)
        await self._set_active(tx, recording_id, False)

    async def resume(self, tx: StoreTx, resource: CommunicationResource, recording_id: str) -> None:
        await self.get(tx, recording_id, resource)
        await self._set_active(tx, recording_id, True)

    async def stop(self, tx: StoreTx, resource: CommunicationResource, recording_id: str) -> None:
        doc = await self.get(tx, recording_id, resource)
        call = await self._core.get_call(tx, doc["serverCallId"])
        await self._finish(tx, call, doc, "StopRecording")
        await self._core.save(tx, call)

    async def call_ended(self, tx: StoreTx, call: Call) -> None:
        """The call ended: its recording stops with it (the caller saves the call)."""
        recording_id = call.media.get("recordingId")
        if recording_id is None:
            return
        doc = await tx.get_recording(recording_id)
        if doc is not None and doc["state"] != "stopped":
            await self._finish(tx, call, doc, "CallEnded")

    async def delete_files(self, tx: StoreTx, resource: CommunicationResource, recording_id: str) -> None:
        doc = await tx.get_recording(recording_id)
        if doc is None or doc["state"] != "stopped" or not self.belongs_to(doc, resource):
            raise NotFound(f"Recording '{recording_id}' has no files (unknown, still running or deleted).", code="8522")
        doc["state"] = "deleted"
        await tx.put_recording(recording_id, doc["serverCallId"], doc)
        plane = self._core.media_plane
        tx.after_commit(lambda: plane.delete_recording_file(recording_id))

    def describe(self, doc: dict[str, Any]) -> dict[str, Any]:
        return {"recordingId": doc["recordingId"], "recordingState": doc["state"], "recordingKind": RECORDING_KIND}

    def audio(self, doc: dict[str, Any]) -> bytes:
        if doc["state"] != "stopped":
            raise NotFound("The recording's file exists once the recording has stopped.", code="8522")
        data = self._core.media_plane.recording_file(doc["recordingId"])
        if data is not None:
            return data
        return wav_bytes(doc["durationMs"] / 1000.0, [(t[0], t[1]) for t in doc["tones"]])

    def metadata(self, doc: dict[str, Any]) -> dict[str, Any]:
        if doc["state"] != "stopped":
            raise NotFound("The recording's metadata exists once the recording has stopped.", code="8522")
        return {
            "resourceId": doc.get("resourceId", self._core.resources.default.immutable_id),
            "callId": doc["serverCallId"],
            "chunkDocumentId": doc["recordingId"],
            "chunkIndex": 0,
            "chunkStartTime": iso7(doc["startedAt"]),
            "chunkDuration": doc["durationMs"],
            "pauseResumeIntervals": [
                {"startTime": iso7(start), "duration": round((end - start) * 1000)} for start, end in doc["pauses"]
            ],
            "recordingInfo": {
                "contentType": doc["contentType"],
                "channelType": doc["channelType"],
                "format": doc["formatType"],
                "audioConfiguration": {"sampleRate": RECORDING_RATE, "bitRate": RECORDING_RATE * 16, "channels": 1},
            },
            "participants": [{"participantId": raw_id} for raw_id in doc["participants"]],
        }

    # ---- internals ----------------------------------------------------------------------------------

    async def _set_active(self, tx: StoreTx, recording_id: str, active: bool) -> None:
        doc = await self.get(tx, recording_id)
        state = "active" if active else "inactive"
        if doc["state"] == state:
            return
        call = await self._core.get_call(tx, doc["serverCallId"])
        now = self._core.clock.now()
        if active:
            doc["segments"].append([now, None])
        else:
            doc["segments"][-1][1] = now
        doc["state"] = state
        call.record(now, "recordingResumed" if active else "recordingPaused", recordingId=recording_id)
        plane = self._core.media_plane
        tx.after_commit(lambda: plane.set_recording_active(recording_id, active))
        await tx.put_recording(recording_id, doc["serverCallId"], doc)
        await self._state_changed(tx, call, doc)
        await self._core.save(tx, call)

    async def _finish(self, tx: StoreTx, call: Call, doc: dict[str, Any], reason: str) -> None:
        now = self._core.clock.now()
        was_active = doc["state"] == "active"
        if doc["segments"] and doc["segments"][-1][1] is None:
            doc["segments"][-1][1] = now
        # The file holds the recorded time only: segments are laid end to end.
        tones, offset = [], 0.0
        for start, end in doc["segments"]:
            for at, _, tone in call.media.get("toneLog", []):
                if start <= at < end:
                    tones.append([offset + at - start, tone])
            offset += end - start
        segments = doc["segments"]
        doc.update(
            state="stopped",
            stoppedAt=now,
            durationMs=round(offset * 1000),
            tones=tones,
            pauses=[[segments[i][1], segments[i + 1][0]] for i in range(len(segments) - 1)],
            participants=[p.raw_id for p in call.participants],
            sessionEndReason=reason,
        )
        call.media.pop("recordingId", None)
        call.record(now, "recordingStopped", recordingId=doc["recordingId"], reason=reason)
        plane, recording_id = self._core.media_plane, doc["recordingId"]
        format_type, content_type, seconds = doc["formatType"], doc["contentType"], offset
        tx.after_commit(lambda: plane.stop_recording(recording_id, format_type, content_type, seconds))
        await tx.put_recording(doc["recordingId"], doc["serverCallId"], doc)
        if was_active:
            doc_view = {**doc, "state": "inactive"}
            await self._state_changed(tx, call, doc_view)
        base = f"{doc['downloadBase']}/callgrid/v1/recordings/{doc['recordingId']}"
        data = {
            "recordingStorageInfo": {
                "recordingChunks": [
                    {
                        "documentId": doc["recordingId"],
                        "index": 0,
                        "endReason": "SessionEnded",
                        "contentLocation": base + "/content",
                        "metadataLocation": base + "/metadata",
                        "deleteLocation": base,
                    }
                ]
            },
            "recordingStartTime": iso7(doc["startedAt"]),
            "recordingDurationMs": doc["durationMs"],
            "sessionEndReason": reason,
            "recordingContentType": doc["contentType"],
            "recordingChannelType": doc["channelType"],
            "recordingFormatType": doc["formatType"],
        }
        # Microsoft's event reference names the call, its serverCallId and the recording; the call's id is
        # taken to be its correlationId (the GUID ACS calls a call's id), not the serverCallId beside it.
        subject = (
            f"/recording/call/{call.correlation_id}/serverCallId/{doc['serverCallId']}/recordingId/{doc['recordingId']}"
        )
        await self._core.sink.publish_system_event(
            tx, self._core.resource_of(call), event_type=FILE_STATUS_UPDATED, subject=subject, data=data
        )

    async def _state_changed(self, tx: StoreTx, call: Call, doc: dict[str, Any]) -> None:
        legs = [c for c in call.connections if c.state == ConnectionState.CONNECTED]
        url = doc["callbackUri"] or (legs[0].callback_uri if legs else None)
        if url is None or not legs:
            return
        await self._core.callback(
            tx,
            call,
            legs[0],
            RECORDING_STATE_CHANGED,
            extra={
                "recordingId": doc["recordingId"],
                "state": doc["state"],
                "startDateTime": iso7(doc["startedAt"]).replace("Z", "+00:00"),
                "recordingKind": RECORDING_KIND,
            },
            url=url,
            source=f"calling/recordings/{call.server_call_id}/recordingId/{doc['recordingId']}",
        )
