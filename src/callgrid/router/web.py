"""What the router's HTTP handlers share: its state on the app, ACS-shaped errors, constant-time checks."""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse

from callgrid.router.callback_auth import CallbackVerifier
from callgrid.router.config import RouterConfig
from callgrid.router.engine import Router
from callgrid.router.store import RouterStore

MAX_BODY = 1024 * 1024  # Event Grid's own limit for one delivery


@dataclass
class RouterState:
    config: RouterConfig
    store: RouterStore
    webhook_secret: str
    api_key: str
    verifier: CallbackVerifier
    router: Router | None = None  # set by the lifespan (the SDK's async client needs the running loop)


def state_of(request: Request) -> RouterState:
    state: RouterState = request.app.state.router
    return state


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(code, message, **extra), status_code=status)


def loads(raw: bytes) -> Any:
    """JSON as json.loads reads it: orjson's parser (several times faster) for what it reads, the standard
    library's for the rest (UTF-16 or 32, NaN, integers past 64 bits), so nothing accepted before is refused."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def dumps(content: Any) -> bytes:
    """The bytes JSONResponse would send (compact, UTF-8, not ASCII-escaped), made by orjson."""
    return orjson.dumps(content)


def same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


async def read_json(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise BadRequest(413, "PayloadTooLarge", f"the body is larger than {MAX_BODY} bytes.")
    try:
        return loads(raw)
    except ValueError:
        raise BadRequest(400, "BadRequest", "the body is not JSON.") from None


class BadRequest(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
