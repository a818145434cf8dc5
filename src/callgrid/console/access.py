"""Who may use the console: whoever holds the login token (printed by `callgrid serve` and `callgrid env`).

Logging in sets a session cookie derived from the token (HttpOnly, SameSite=Strict, Path=/console); pages
without it redirect to the login page, everything else answers 401. Actions also need the header
`X-Callgrid-Console` that only the console's own script sends: a page elsewhere cannot make the browser
send it without a CORS preflight, which callgrid never grants (no cross-site request forgery).
The server is bound to loopback by default (`Settings.host`), so the console is too.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

COOKIE = "callgrid_console"
ACTION_HEADER = "x-callgrid-console"

Handler = Callable[[Request], Awaitable[Response]]


def session_value(token: str) -> str:
    # The cookie is not the token itself: a leaked cookie does not reveal the token printed in the banner.
    return hmac.new(token.encode(), b"callgrid-console-session", hashlib.sha256).hexdigest()


def token_matches(token: str, given: str) -> bool:
    return hmac.compare_digest(token.encode(), given.encode())


def logged_in(request: Request) -> bool:
    token: str = request.app.state.node.console_token
    cookie = request.cookies.get(COOKIE, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), session_value(token).encode())


def unauthorized(message: str = "Log in to the console first: its token is printed by `callgrid env`.") -> Response:
    return JSONResponse(
        {"error": {"code": "Unauthorized", "message": message}},
        status_code=401,
        headers={"WWW-Authenticate": 'Cookie realm="callgrid console"'},
    )


def page(handler: Handler) -> Handler:
    """A page: without a session, to the login page (coming back here after)."""

    @functools.wraps(handler)
    async def guarded(request: Request) -> Response:
        if not logged_in(request):
            back = quote(request.url.path, safe="/")
            return RedirectResponse(f"/console/login?next={back}", status_code=303)
        return await handler(request)

    return guarded


def data(handler: Handler) -> Handler:
    """A live stream or a read: 401 without a session."""

    @functools.wraps(handler)
    async def guarded(request: Request) -> Response:
        if not logged_in(request):
            return unauthorized()
        return await handler(request)

    return guarded


def action(handler: Handler) -> Handler:
    """A change: 401 without a session, 403 without the console's header."""

    @functools.wraps(handler)
    async def guarded(request: Request) -> Response:
        if not logged_in(request):
            return unauthorized()
        if request.headers.get(ACTION_HEADER) != "1":
            return JSONResponse(
                {"error": {"code": "Forbidden", "message": f"Console actions need the header {ACTION_HEADER}: 1."}},
                status_code=403,
            )
        return await handler(request)

    return guarded
