"""What the router's HTTP handlers share: its state on the app, ACS-shaped errors, constant-time checks."""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any

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


def error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status_code=status)


def same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


async def read_json(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise BadRequest(413, "PayloadTooLarge", f"the body is larger than {MAX_BODY} bytes.")
    try:
        return json.loads(raw)
    except ValueError:
        raise BadRequest(400, "BadRequest", "the body is not JSON.") from None


class BadRequest(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
