"""Recording routes: ACS's `/calling/recordings` (what `CallAutomationClient.start_recording` and friends
call) and callgrid's own download routes for the finished files.

Files are fetched from callgrid's `contentLocation`: `GET /callgrid/v1/recordings/{id}/content` and
`.../metadata`, signed with the access key like every `/callgrid/v1` route. The SDK's `download_recording`
signs them so (before 1.6 for any host; from 1.6 only for Azure's recording hosts, which `recording_host`
in the settings stands in for).
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from callgrid import jsonio
from callgrid.api.auth import hmac_signed, node_of, resource_of
from callgrid.api.errors import field, read_object
from callgrid.api.repeatability import operation, repeatable
from callgrid.api.responses import JSONResponse
from callgrid.errors import InvalidRequest, NotFound


@hmac_signed
@repeatable
async def start_recording(request: Request) -> Response:
    node = node_of(request)
    body = await read_object(request)
    locator = field(body, "callLocator", dict, required=False) or {}
    server_call_id = locator.get("serverCallId")
    connection_id = field(body, "callConnectionId", str, required=False)
    if not isinstance(server_call_id, str) and connection_id is None:
        raise InvalidRequest(
            "callgrid records calls by callLocator.serverCallId or callConnectionId "
            "(group calls and rooms are not simulated).",
            code="8523",
        )
    state_callback_uri = field(body, "recordingStateCallbackUri", str, required=False)
    content_type = field(body, "recordingContentType", str, required=False) or "audio"
    channel_type = field(body, "recordingChannelType", str, required=False) or "mixed"
    format_type = field(body, "recordingFormatType", str, required=False) or "wav"
    async with operation(node) as op:
        if not isinstance(server_call_id, str):
            call, _ = await node.calls.connection(op.tx, str(connection_id), resource_of(request))
            server_call_id = call.server_call_id
        doc = await node.calls.recordings.start(
            op.tx,
            resource_of(request),
            server_call_id=server_call_id,
            download_base=node.settings.recording_base,
            state_callback_uri=state_callback_uri,
            content_type=content_type,
            channel_type=channel_type,
            format_type=format_type,
            pause_on_start=bool(body.get("pauseOnStart", False)),
        )
        return await op.respond(JSONResponse(node.calls.recordings.describe(doc), status_code=200))


@hmac_signed
async def get_recording(request: Request) -> Response:
    node = node_of(request)
    async with node.store.transaction() as tx:
        doc = await node.calls.recordings.get(tx, request.path_params["recordingId"], resource_of(request))
    return JSONResponse(node.calls.recordings.describe(doc))


@hmac_signed
async def stop_recording(request: Request) -> Response:
    node = node_of(request)
    async with node.store.transaction() as tx:
        await node.calls.recordings.stop(tx, resource_of(request), request.path_params["recordingId"])
    return Response(status_code=204)


@hmac_signed
async def recording_action(request: Request) -> Response:
    node = node_of(request)
    action = request.path_params["action"]
    recordings = node.calls.recordings
    if action not in ("pause", "resume"):
        raise NotFound(f"Recordings have no ':{action}' action.", code="8522")
    async with node.store.transaction() as tx:
        if action == "pause":
            await recordings.pause(tx, resource_of(request), request.path_params["recordingId"])
        else:
            await recordings.resume(tx, resource_of(request), request.path_params["recordingId"])
    return Response(status_code=202)


async def _stored(request: Request) -> dict[str, object]:
    node = node_of(request)
    recording_id = request.path_params["recordingId"]
    async with node.store.transaction() as tx:
        return await node.calls.recordings.stored(tx, resource_of(request), recording_id)


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def _ranged(request: Request, content: bytes, media_type: str) -> Response:
    """`content`, or the one byte range the request's Range header asks for (206): what the SDK's
    `download_recording(offset=, length=)` sends, `bytes=<offset>-` or `bytes=<offset>-<last, inclusive>`.
    A header that is not one range of bytes is ignored (the whole file, 200), as RFC 9110 allows; a range
    that starts past the end is 416, naming the size."""
    size = len(content)
    whole = {"Accept-Ranges": "bytes"}
    match = _RANGE.fullmatch(request.headers.get("range", "").strip())
    if match is None or match[1] == match[2] == "":
        return Response(content, media_type=media_type, headers=whole)
    if match[1] == "":  # the last N bytes
        start, end = max(0, size - int(match[2])), size - 1
    else:
        start = int(match[1])
        end = min(int(match[2]), size - 1) if match[2] else size - 1
        if match[2] and int(match[2]) < start:
            return Response(content, media_type=media_type, headers=whole)  # not a valid range: ignored
    if start >= size or size == 0:
        return JSONResponse(
            {"error": {"code": "InvalidRange", "message": f"The range starts past the end of the {size}-byte file."}},
            status_code=416,
            headers={"Content-Range": f"bytes */{size}"},
        )
    return Response(
        content[start : end + 1],
        status_code=206,
        media_type=media_type,
        headers={**whole, "Content-Range": f"bytes {start}-{end}/{size}"},
    )


@hmac_signed
async def download_content(request: Request) -> Response:
    doc = await _stored(request)
    audio = node_of(request).calls.recordings.audio(doc)
    media_types = {"wav": "audio/wav", "mp3": "audio/mpeg", "mp4": "video/mp4"}
    media_type = media_types.get(str(doc["formatType"]), "audio/wav")
    return _ranged(request, audio, media_type)


@hmac_signed
async def download_metadata(request: Request) -> Response:
    doc = await _stored(request)
    return _ranged(request, jsonio.dumpb(node_of(request).calls.recordings.metadata(doc)), "application/json")


@hmac_signed
async def delete_recording_files(request: Request) -> Response:
    """The chunk's deleteLocation: the files are gone afterwards (404). 200, not 204: the SDK's
    delete_recording takes 200 alone as success."""
    node = node_of(request)
    async with node.store.transaction() as tx:
        await node.calls.recordings.delete_files(tx, resource_of(request), request.path_params["recordingId"])
    return Response(status_code=200)


routes = [
    Route("/calling/recordings", start_recording, methods=["POST"]),
    Route("/calling/recordings/{recordingId}:{action}", recording_action, methods=["POST"]),
    Route("/calling/recordings/{recordingId}", get_recording, methods=["GET"]),
    Route("/calling/recordings/{recordingId}", stop_recording, methods=["DELETE"]),
    Route("/callgrid/v1/recordings/{recordingId}/content", download_content, methods=["GET"]),
    Route("/callgrid/v1/recordings/{recordingId}/metadata", download_metadata, methods=["GET"]),
    Route("/callgrid/v1/recordings/{recordingId}", delete_recording_files, methods=["DELETE"]),
]
