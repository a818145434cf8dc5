"""The OpenAPI description of callgrid's own routes (`/callgrid/v1/openapi.json`)."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}


def _op(summary: str, status: str, body: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "security": [{"hmac": []}, {"bearer": []}],
        "responses": {
            status: {"description": "Success"},
            "400": {"description": "Bad request", "content": {"application/json": {"schema": _ERROR}}},
            "401": {
                "description": "Unsigned or badly signed",
                "content": {"application/json": {"schema": _ERROR}},
            },
        },
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    op.update(extra)
    return op


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


_LIMIT = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "callgrid",
        "version": "1",
        "description": "callgrid's own API: own numbers, place calls, script simulated devices, inspect "
        "deliveries. Signed with the ACS HMAC scheme and a resource's access key (the key says which resource "
        "a request is for), or with a bearer token from `callgrid token`.",
    },
    "components": {
        "securitySchemes": {
            "hmac": {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=...",
            },
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "A token from `callgrid token` (audience https://communication.azure.com).",
            },
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                    }
                },
            },
            "OwnNumber": {
                "type": "object",
                "required": ["phoneNumber"],
                "properties": {"phoneNumber": {"type": "string", "example": "+14255551212"}},
            },
            "PlaceCall": {
                "type": "object",
                "required": ["from", "to"],
                "properties": {
                    "from": {"type": "string", "description": "rawId or E.164"},
                    "to": {"type": "string", "description": "rawId or E.164"},
                    "callerDisplayName": {"type": "string"},
                    "customContext": {
                        "type": "object",
                        "properties": {
                            "sipHeaders": {"type": "object", "additionalProperties": {"type": "string"}},
                            "voipHeaders": {"type": "object", "additionalProperties": {"type": "string"}},
                        },
                    },
                },
            },
            "CreateResource": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {
                        "type": "string",
                        "pattern": "^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$",
                        "example": "team-b",
                    },
                    "subscriptionId": {"type": "string", "description": "default: the server's"},
                    "resourceGroup": {"type": "string", "description": "default: the server's"},
                },
            },
            "RegenerateKey": {
                "type": "object",
                "required": ["keyType"],
                "properties": {"keyType": {"enum": ["primary", "secondary"]}},
            },
            "Endpoint": {
                "type": "object",
                "properties": {
                    "onIncomingCall": {"enum": ["ring", "answer", "decline", "busy", "unreachable"]},
                    "answerDelayMs": {"type": "integer", "minimum": 0},
                    "connectDelayMs": {"type": "integer", "minimum": 0, "maximum": 600000},
                },
            },
        },
    },
    "paths": {
        "/callgrid/v1/phoneNumbers": {
            "post": _op("Own a phone number", "201", {"$ref": "#/components/schemas/OwnNumber"}),
            "get": _op("List owned numbers", "200"),
        },
        "/callgrid/v1/phoneNumbers/{phoneNumber}": {
            "delete": _op("Release an owned number", "204", parameters=[_path_param("phoneNumber")]),
        },
        "/callgrid/v1/calls": {
            "post": _op("Place a call (raises IncomingCall)", "201", {"$ref": "#/components/schemas/PlaceCall"}),
            "get": _op("Recent calls, last changed first", "200", parameters=[_LIMIT]),
        },
        "/callgrid/v1/identities": {
            "get": _op("The resource's identities, newest first", "200", parameters=[_LIMIT]),
        },
        "/callgrid/v1/endpoints": {
            "get": _op("The scripted simulated devices (any other one rings until the ring timeout)", "200"),
        },
        "/callgrid/v1/calls/{serverCallId}": {
            "get": _op("A call with participants and timeline", "200", parameters=[_path_param("serverCallId")]),
        },
        "/callgrid/v1/calls/{serverCallId}:hangUp": {
            "post": _op(
                "A simulated party hangs up (the caller by default: a ringing call is abandoned)",
                "200",
                {"type": "object", "properties": {"participant": {"type": "string", "description": "rawId"}}},
                parameters=[_path_param("serverCallId")],
            )
        },
        "/callgrid/v1/calls/{serverCallId}/participants/{rawId}:hangUp": {
            "post": _op(
                "A simulated participant leaves the call",
                "200",
                parameters=[_path_param("serverCallId"), _path_param("rawId")],
            )
        },
        "/callgrid/v1/calls/{serverCallId}/participants/{rawId}:sendDtmf": {
            "post": _op(
                "A simulated participant presses keys (heard by recognize and continuous DTMF)",
                "200",
                {
                    "type": "object",
                    "required": ["tones"],
                    "properties": {
                        "tones": {
                            "oneOf": [
                                {"type": "string", "example": "1234#"},
                                {"type": "array", "items": {"type": "string", "example": "pound"}},
                            ]
                        }
                    },
                },
                parameters=[_path_param("serverCallId"), _path_param("rawId")],
            )
        },
        "/callgrid/v1/calls/{serverCallId}/participants/{rawId}:say": {
            "post": _op(
                "A simulated participant says something (synthesised speech; heard by the call, recognizers, "
                "streams, transcription and recordings)",
                "202",
                {
                    "type": "object",
                    "required": ["text"],
                    "properties": {
                        "text": {"type": "string", "minLength": 1, "example": "I want sales"},
                        "voice": {"type": "string", "example": "en-US-JennyNeural"},
                    },
                },
                parameters=[_path_param("serverCallId"), _path_param("rawId")],
            )
        },
        "/callgrid/v1/calls/{serverCallId}/participants/{rawId}:play": {
            "post": _op(
                "A simulated participant plays audio as its voice: a URL, or a base64 WAV or MP3",
                "202",
                {
                    "type": "object",
                    "properties": {
                        "url": {"type": "string", "format": "uri"},
                        "audio": {"type": "string", "contentEncoding": "base64"},
                    },
                },
                parameters=[_path_param("serverCallId"), _path_param("rawId")],
            )
        },
        "/callgrid/v1/calls/{serverCallId}/participants/{rawId}/audio": {
            "get": _op(
                "What a simulated participant has heard since joining (audio/wav, 16 kHz mono)",
                "200",
                parameters=[_path_param("serverCallId"), _path_param("rawId")],
            )
        },
        "/callgrid/v1/recordings/{recordingId}/content": {
            "get": _op(
                "A stopped recording's file (audio/wav, audio/mpeg or video/mp4)",
                "200",
                parameters=[_path_param("recordingId")],
            ),
        },
        "/callgrid/v1/recordings/{recordingId}/metadata": {
            "get": _op("A stopped recording's metadata JSON", "200", parameters=[_path_param("recordingId")]),
        },
        "/callgrid/v1/recordings/{recordingId}": {
            "delete": _op("Delete a stopped recording's files", "204", parameters=[_path_param("recordingId")]),
        },
        "/callgrid/v1/endpoints/{rawId}": {
            "put": _op(
                "Script the simulated device of an identity or number",
                "200",
                {"$ref": "#/components/schemas/Endpoint"},
                parameters=[_path_param("rawId")],
            ),
            "get": _op("Read a simulated device's script", "200", parameters=[_path_param("rawId")]),
        },
        "/callgrid/v1/deliveries": {
            "get": _op(
                "Recent deliveries, newest first, each with its attempt history",
                "200",
                parameters=[
                    {"name": "subscriptionId", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {"enum": ["pending", "delivered", "dropped", "deadLettered"]},
                    },
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                ],
            )
        },
        "/callgrid/v1/deadLetters": {
            "get": _op(
                "Dead-lettered events, newest first, with where they were written",
                "200",
                parameters=[
                    {"name": "subscriptionId", "in": "query", "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                ],
            )
        },
        "/callgrid/v1/deadLetters/{id}:replay": {
            "post": _op(
                "Queue a dead-lettered event again to its subscription, as a new delivery",
                "202",
                parameters=[_path_param("id")],
            )
        },
        "/callgrid/v1/faults": {
            "post": _op(
                "Inject a fault: deliveries to a URL fail or time out, a device is busy or unreachable, "
                "a Call Automation operation fails with an ACS error",
                "201",
                {
                    "type": "object",
                    "required": ["kind"],
                    "properties": {
                        "kind": {"type": "string", "enum": ["delivery", "device", "operation"]},
                        "url": {"type": "string", "description": "delivery: URLs starting with this"},
                        "status": {"type": "integer", "description": "delivery: the answer; operation: error"},
                        "timeout": {"type": "boolean", "description": "delivery: no answer at all"},
                        "rawId": {"type": "string", "description": "device: whose device"},
                        "behaviour": {"type": "string", "enum": ["busy", "unreachable"]},
                        "operation": {"type": "string", "description": "answerCall, redirectCall, play, ..."},
                        "code": {"type": "string", "description": "operation: ACS error code"},
                        "message": {"type": "string"},
                        "count": {"type": "integer", "description": "applies this many times (default: until removed)"},
                    },
                },
            ),
            "get": _op("List the injected faults", "200"),
            "delete": _op("Remove every injected fault", "204"),
        },
        "/callgrid/v1/faults/{faultId}": {
            "delete": _op("Remove one injected fault", "204", parameters=[_path_param("faultId")])
        },
        "/callgrid/v1/health": {"get": _op("Whether the server is up (unsigned): status, version, clock", "200")},
        "/callgrid/v1/reset": {
            "post": _op("Forget all state but the default resource itself (the default resource's key only)", "204")
        },
        "/callgrid/v1/resources": {
            "get": _op("The server's Communication resources, the default one first (default key only)", "200"),
            "post": _op(
                "Create a Communication resource with its own keys, identities, numbers and system topic; "
                "answers its keys and connection strings (default key only)",
                "201",
                {"$ref": "#/components/schemas/CreateResource"},
            ),
        },
        "/callgrid/v1/resources/{name}": {
            "get": _op("A resource with its keys and connection strings", "200", parameters=[_path_param("name")]),
            "delete": _op(
                "Delete a resource and all that is its: identities, numbers, system topic, event subscriptions",
                "204",
                parameters=[_path_param("name")],
            ),
        },
        "/callgrid/v1/resources/{name}:regenerateKey": {
            "post": _op(
                "Replace a resource's primary or secondary key; the old key stops working at once",
                "200",
                {"$ref": "#/components/schemas/RegenerateKey"},
                parameters=[_path_param("name")],
            )
        },
        "/callgrid/v1/clock": {"get": _op("The server's clock", "200")},
        "/callgrid/v1/clock:advance": {
            "post": _op(
                "Move a virtual clock forward, doing each piece of work due on the way at its own time",
                "200",
                {
                    "type": "object",
                    "required": ["seconds"],
                    "properties": {
                        "seconds": {"type": "number"},
                        "patienceSeconds": {
                            "type": "number",
                            "description": "Real seconds to wait for a webhook's answer before the clock runs "
                            "on towards its response time limit (default: the server's setting, 1 s).",
                        },
                    },
                },
            )
        },
    },
}
