"""The OpenAPI description of callgrid's own routes (`/callgrid/v1/openapi.json`)."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}


def _op(summary: str, status: str, body: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "security": [{"hmac": []}],
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


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "callgrid",
        "version": "1",
        "description": "callgrid's own API: own numbers, place calls, script simulated devices, inspect "
        "deliveries. Signed with the ACS HMAC scheme and the resource's access key.",
    },
    "components": {
        "securitySchemes": {
            "hmac": {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=...",
            }
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
            "Endpoint": {
                "type": "object",
                "properties": {
                    "onIncomingCall": {"enum": ["ring", "answer", "decline", "busy"]},
                    "answerDelayMs": {"type": "integer", "minimum": 0},
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
            "get": _op("List recent calls", "200"),
        },
        "/callgrid/v1/calls/{serverCallId}": {
            "get": _op("A call with participants and timeline", "200", parameters=[_path_param("serverCallId")]),
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
        "/callgrid/v1/deliveries": {"get": _op("Recent deliveries and their attempts", "200")},
        "/callgrid/v1/reset": {"post": _op("Forget all state but the resource itself", "204")},
        "/callgrid/v1/clock": {"get": _op("The server's clock", "200")},
        "/callgrid/v1/clock:advance": {
            "post": _op(
                "Move a virtual clock forward",
                "200",
                {"type": "object", "required": ["seconds"], "properties": {"seconds": {"type": "number"}}},
            )
        },
    },
}
