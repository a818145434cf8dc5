"""Media streaming and live transcription of a call connection, as Call Automation offers them.

Options come with create / answer / connect (`mediaStreamingOptions`, `transcriptionOptions`) and are
kept on the call per connection; `startMediaStreaming` / `startTranscription` in the options start them
when the leg connects, the actions start, stop and update them later. The sockets themselves live in
the media plane; what happened to them comes back as `StreamStarted` / `StreamFailed` and is told to
the app as `MediaStreamingStarted` / `Failed` (or `Transcription...`), with the subscription's state in
the connection's properties.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from callgrid.errors import InvalidRequest
from callgrid.platform.calls.models import Call, CallConnection, CallState, ConnectionState
from callgrid.platform.calls.results import SUCCESS, Result
from callgrid.platform.media_port import MediaEvent, StreamFailed, StreamOptions, StreamStarted
from callgrid.store import StoreTx

if TYPE_CHECKING:
    from callgrid.platform.calls.service import CallService

MEDIA_STREAMING = "mediaStreaming"
TRANSCRIPTION = "transcription"
_AUDIO_FORMATS = {"pcm16kmono": "Pcm16KMono", "pcm24kmono": "Pcm24KMono"}
_NAMES = {MEDIA_STREAMING: "MediaStreaming", TRANSCRIPTION: "Transcription"}
NOT_CONFIGURED = 8522  # ACS: the action needs options given when the call was created or answered
# What ACS reports when the app's WebSocket cannot be opened or breaks (media: captured payloads;
# transcription: the documented code table).
_WEBSOCKET_FAILED: dict[str, Result] = {
    MEDIA_STREAMING: (500, 8603, "Action failed, not able to establish websocket connection."),
    TRANSCRIPTION: (500, 8578, "Action failed, not able to establish websocket connection."),
}


def parse_options(kind: str, value: Any) -> dict[str, Any] | None:
    """Validate the options of create / answer / connect; what is kept on the connection."""
    if value is None:
        return None
    what = f"{kind}Options"
    if not isinstance(value, dict):
        raise InvalidRequest(f"{what} must be an object.", code="8523")
    transport = str(value.get("transportType", "websocket")).lower()
    if transport != "websocket":
        raise InvalidRequest(f"{what}.transportType must be 'websocket'.", code="8523")
    url = value.get("transportUrl")
    if not isinstance(url, str) or not url.lower().startswith(("ws://", "wss://")):
        raise InvalidRequest(f"{what}.transportUrl must be a ws:// or wss:// URL.", code="8523")
    if kind == MEDIA_STREAMING:
        channel = str(value.get("audioChannelType", "mixed")).lower()
        if channel not in ("mixed", "unmixed"):
            raise InvalidRequest(f"{what}.audioChannelType must be 'mixed' or 'unmixed'.", code="8523")
        content = str(value.get("contentType", "audio")).lower()
        if content != "audio":
            raise InvalidRequest(f"{what}.contentType must be 'audio'.", code="8523")
        audio_format = value.get("audioFormat")
        if audio_format is not None and str(audio_format).lower() not in _AUDIO_FORMATS:
            raise InvalidRequest(f"{what}.audioFormat must be 'pcm16KMono' or 'pcm24KMono'.", code="8523")
        return {
            "transportUrl": url,
            "audioChannelType": channel,
            "contentType": content,
            "audioFormat": _AUDIO_FORMATS[str(audio_format or "pcm16kmono").lower()],
            "start": bool(value.get("startMediaStreaming", False)),
            "bidirectional": bool(value.get("enableBidirectional", False)),
            "enableDtmfTones": bool(value.get("enableDtmfTones", False)),
        }
    locale = value.get("locale", "en-US")
    if not isinstance(locale, str) or not locale:
        raise InvalidRequest(f"{what}.locale must be a locale such as 'en-US'.", code="8523")
    return {
        "transportUrl": url,
        "locale": locale,
        "start": bool(value.get("startTranscription", False)),
        "intermediateResults": bool(value.get("enableIntermediateResults", False)),
        "speechModelEndpointId": value.get("speechModelEndpointId"),
    }


class StreamingService:
    def __init__(self, core: CallService) -> None:
        self._core = core

    def configure(
        self, call: Call, connection: CallConnection, media: dict[str, Any] | None, transcription: dict[str, Any] | None
    ) -> None:
        """Keep the options a leg was created, answered or connected with (validated by `parse_options`)."""
        streams = call.media.setdefault("streams", {})
        entry: dict[str, Any] = {}
        if media is not None:
            entry[MEDIA_STREAMING] = {**media, "id": str(uuid.uuid4()), "state": "inactive"}
        if transcription is not None:
            entry[TRANSCRIPTION] = {**transcription, "id": str(uuid.uuid4()), "state": "inactive"}
        if entry:
            streams[connection.call_connection_id] = entry

    async def connected(self, tx: StoreTx, call: Call, connection: CallConnection) -> None:
        """The leg connected: start what its options say to start at once."""
        entry = call.media.get("streams", {}).get(connection.call_connection_id, {})
        for kind in (MEDIA_STREAMING, TRANSCRIPTION):
            sub = entry.get(kind)
            if sub is not None and sub["start"] and sub["state"] == "inactive":
                self._open(tx, call, connection, kind, sub, None, None)

    async def start(
        self,
        tx: StoreTx,
        call_connection_id: str,
        kind: str,
        *,
        operation_context: str | None,
        callback_uri: str | None,
        locale: str | None = None,
        speech_model_endpoint_id: str | None = None,
    ) -> None:
        call, connection = await self._core.active_connection(tx, call_connection_id)
        sub = self._subscription(call, connection, kind)
        if sub["state"] == "active" or sub.get("pending"):
            raise InvalidRequest(f"{_NAMES[kind]} is already running on this call connection.", code="8583")
        if locale is not None:
            sub["locale"] = locale
        if speech_model_endpoint_id is not None:
            sub["speechModelEndpointId"] = speech_model_endpoint_id
        self._open(tx, call, connection, kind, sub, operation_context, callback_uri)
        await self._core.save(tx, call)

    async def stop(
        self,
        tx: StoreTx,
        call_connection_id: str,
        kind: str,
        *,
        operation_context: str | None,
        callback_uri: str | None,
    ) -> None:
        call, connection = await self._core.active_connection(tx, call_connection_id)
        sub = self._subscription(call, connection, kind)
        if sub["state"] != "active" and not sub.get("pending"):
            raise InvalidRequest(f"{_NAMES[kind]} is not running on this call connection.", code="8583")
        sub.update(state="inactive", pending=False)
        plane, server_call_id, ccid = self._core.media_plane, call.server_call_id, connection.call_connection_id
        tx.after_commit(lambda: plane.stop_stream(server_call_id, kind, ccid))
        await self._tell(
            tx, call, connection, kind, "Stopped", SUCCESS, "subscriptionStopped", operation_context, callback_uri
        )
        await self._core.save(tx, call)

    async def update_transcription(
        self,
        tx: StoreTx,
        call_connection_id: str,
        *,
        locale: str,
        operation_context: str | None,
        callback_uri: str | None,
    ) -> None:
        call, connection = await self._core.active_connection(tx, call_connection_id)
        sub = self._subscription(call, connection, TRANSCRIPTION)
        if sub["state"] != "active":
            raise InvalidRequest("Transcription is not running on this call connection.", code="8583")
        sub["locale"] = locale
        plane, server_call_id, ccid = self._core.media_plane, call.server_call_id, connection.call_connection_id
        tx.after_commit(lambda: plane.update_transcription(server_call_id, ccid, locale))
        await self._tell(
            tx,
            call,
            connection,
            TRANSCRIPTION,
            "Updated",
            SUCCESS,
            "transcriptionLocaleUpdated",
            operation_context,
            callback_uri,
        )
        await self._core.save(tx, call)

    def properties(self, call: Call, connection: CallConnection) -> dict[str, Any]:
        """mediaStreamingSubscription / transcriptionSubscription of the connection's properties."""
        entry = call.media.get("streams", {}).get(connection.call_connection_id, {})
        props: dict[str, Any] = {}
        media = entry.get(MEDIA_STREAMING)
        if media is not None:
            props["mediaStreamingSubscription"] = {
                "id": media["id"],
                "state": media["state"],
                "subscribedContentTypes": ["audio"],
            }
        transcription = entry.get(TRANSCRIPTION)
        if transcription is not None:
            props["transcriptionSubscription"] = {
                "id": transcription["id"],
                "state": transcription["state"],
                "subscribedResultTypes": ["final", *(["intermediate"] if transcription["intermediateResults"] else [])],
                "locale": transcription["locale"],
            }
        return props

    async def on_media_event(self, tx: StoreTx, event: MediaEvent) -> None:
        if not isinstance(event, StreamStarted | StreamFailed):
            return
        call = await self._core.get_call(tx, event.server_call_id)
        connection = call.connection(event.call_connection_id)
        sub = call.media.get("streams", {}).get(event.call_connection_id, {}).get(event.kind)
        if connection is None or sub is None or call.state != CallState.CONNECTED:
            return
        if connection.state != ConnectionState.CONNECTED or (not sub.get("pending") and sub["state"] != "active"):
            return  # stopped meanwhile
        context, url = sub.get("operationContext"), sub.get("callbackUri")
        if isinstance(event, StreamStarted):
            sub.update(state="active", pending=False)
            await self._tell(tx, call, connection, event.kind, "Started", SUCCESS, "subscriptionStarted", context, url)
        else:
            sub.update(state="inactive", pending=False)
            details = "streamConnectionInterrupted" if event.connected else "streamConnectionUnsuccessful"
            code, sub_code, message = _WEBSOCKET_FAILED[event.kind]
            failure = (code, sub_code, f"{message} {event.message}")
            await self._tell(tx, call, connection, event.kind, "Failed", failure, details, context, url)
        await self._core.save(tx, call)

    # ---- internals ----------------------------------------------------------------------------------

    def _subscription(self, call: Call, connection: CallConnection, kind: str) -> dict[str, Any]:
        sub: dict[str, Any] | None = call.media.get("streams", {}).get(connection.call_connection_id, {}).get(kind)
        if sub is None:
            raise InvalidRequest(
                f"{_NAMES[kind]} needs {kind}Options (a transportUrl) given when the call was created, answered "
                "or connected.",
                code=str(NOT_CONFIGURED),
            )
        return sub

    def _open(
        self,
        tx: StoreTx,
        call: Call,
        connection: CallConnection,
        kind: str,
        sub: dict[str, Any],
        operation_context: str | None,
        callback_uri: str | None,
    ) -> None:
        sub.update(pending=True, operationContext=operation_context, callbackUri=callback_uri)
        options = StreamOptions(
            kind=kind,
            transport_url=sub["transportUrl"],
            subscription_id=sub["id"],
            call_connection_id=connection.call_connection_id,
            server_call_id=call.server_call_id,
            correlation_id=call.correlation_id,
            audio_channel_type=sub.get("audioChannelType", "mixed"),
            audio_format=sub.get("audioFormat", "Pcm16KMono"),
            bidirectional=bool(sub.get("bidirectional", False)),
            locale=sub.get("locale", "en-US"),
            intermediate_results=bool(sub.get("intermediateResults", False)),
            extra={
                "enableDtmfTones": bool(sub.get("enableDtmfTones", False)),
                "speechModelEndpointId": sub.get("speechModelEndpointId"),
            },
        )
        plane = self._core.media_plane
        tx.after_commit(lambda: plane.start_stream(options))

    async def _tell(
        self,
        tx: StoreTx,
        call: Call,
        connection: CallConnection,
        kind: str,
        what: str,
        result: Result,
        details: str,
        operation_context: str | None,
        callback_uri: str | None,
    ) -> None:
        status = kind + what  # mediaStreamingStarted, transcriptionUpdated, ...
        update: dict[str, Any]
        if kind == MEDIA_STREAMING:
            update = {
                "mediaStreamingUpdate": {
                    "contentType": "Audio",
                    "mediaStreamingStatus": status,
                    "mediaStreamingStatusDetails": details,
                }
            }
        else:
            update = {"transcriptionUpdate": {"transcriptionStatus": status, "transcriptionStatusDetails": details}}
        await self._core.callback(
            tx,
            call,
            connection,
            _NAMES[kind] + what,
            operation_context=operation_context,
            result=result,
            extra=update,
            url=callback_uri,
        )
