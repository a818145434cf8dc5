"""One mapping from failures to ACS's error body: `{"error": {"code", "message"}}`."""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from callgrid.api.body import ACS_BODY_LIMIT, close_if_unread, read_body
from callgrid.api.responses import JSONResponse
from callgrid.errors import CallgridError, InvalidRequest
from callgrid.jsonbody import loads
from callgrid.store import StoreUnavailable

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


async def on_callgrid_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CallgridError)
    return error_response(int(exc.kind), exc.code, exc.message, headers=close_if_unread(request))


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(404, "NotFound", f"No route for {request.method} {request.url.path}.")
    if exc.status_code == 405:
        return error_response(405, "MethodNotAllowed", f"{request.method} is not allowed on {request.url.path}.")
    return error_response(exc.status_code, "Error", str(exc.detail))


async def on_store_unavailable(request: Request, exc: Exception) -> Response:
    # ACS answers 503 ServiceUnavailable with Retry-After while a dependency is down; the SDKs' retry
    # policy retries it. Nothing was written: the transaction did not commit.
    log.warning("store unavailable on %s %s: %s", request.method, request.url.path, exc)
    return error_response(
        503,
        "ServiceUnavailable",
        f"The service is temporarily unavailable ({exc}). Retry the request.",
        headers={"Retry-After": "1", **(close_if_unread(request) or {})},
    )


async def on_unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, "InternalError", f"callgrid failed unexpectedly: {type(exc).__name__}: {exc}")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    CallgridError: on_callgrid_error,
    HTTPException: on_http_error,
    StoreUnavailable: on_store_unavailable,
    Exception: on_unexpected_error,
}


async def read_json(
    request: Request, *, allow_empty: bool = False, code: str | None = None, limit: int = ACS_BODY_LIMIT
) -> Any:
    """The request's JSON body, at most `limit` bytes; `code` is the error code of a refusal (ARM says
    InvalidRequestContent)."""
    body = await read_body(request, limit)
    if not body.strip():
        if allow_empty:
            return None
        raise InvalidRequest("The request body is empty; a JSON object was expected.", code=code)
    try:
        return loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}.", code=code) from None


async def read_object(request: Request, *, allow_empty: bool = False, limit: int = ACS_BODY_LIMIT) -> dict[str, Any]:
    value = await read_json(request, allow_empty=allow_empty, limit=limit)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return value


def field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], *, required: bool = True) -> Any:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"'{name}' is required.")
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise InvalidRequest(f"'{name}' must be of type {_json_type(expected)}.")
    return value


def string_list(body: dict[str, Any], name: str, *, required: bool = True, code: str | None = None) -> Any:
    """An array of strings (or None when absent and not required)."""
    value = field(body, name, list, required=required)
    if value is not None and not all(isinstance(item, str) for item in value):
        raise InvalidRequest(f"'{name}' must be an array of strings.", code=code)
    return value


def _json_type(python_name: str) -> str:
    return {"str": "string", "dict": "object", "list": "array", "int": "integer", "bool": "boolean"}.get(
        python_name, python_name
    )
