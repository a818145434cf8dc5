"""The console's routes: login, the page, the live stream, the actions, the static files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from importlib.resources import files
from urllib.parse import parse_qs

from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from callgrid.api.body import read_body
from callgrid.console import actions, render
from callgrid.console.access import COOKIE, data, page, session_value, token_matches
from callgrid.console.journal import Journal
from callgrid.console.router_link import RouterLink
from callgrid.console.softphone import Softphones
from callgrid.node import Node

LOGIN_BODY_LIMIT = 4096
TICK_SECONDS = 0.5  # how often a live stream looks for changes nobody announced (deliveries, timers)
_NO_STORE = {"Cache-Control": "no-store"}


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


def _journal(request: Request) -> Journal:
    journal: Journal = request.app.state.console_journal
    return journal


def _router(request: Request) -> RouterLink:
    router: RouterLink = request.app.state.console_router
    return router


def _next(value: str | None) -> str:
    # Only back into the console: never an open redirect.
    return value if value and value.startswith("/console/") else "/console/"


async def login_form(request: Request) -> Response:
    token = request.query_params.get("token")
    if token is not None:
        # The login link the banner prints: check it, set the cookie, and drop the token from the address bar.
        return _login(request, token, _next(request.query_params.get("next")))
    html = render.page("login.html", next=_next(request.query_params.get("next")), error=None)
    return HTMLResponse(html, headers=_NO_STORE)


async def login(request: Request) -> Response:
    body = await read_body(request, LOGIN_BODY_LIMIT)
    form = parse_qs(body.decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0]
    return _login(request, token, _next((form.get("next") or [""])[0]))


def _login(request: Request, token: str, next_path: str) -> Response:
    expected = _node(request).console_token
    if not token or not token_matches(expected, token.strip()):
        html = render.page("login.html", next=next_path, error="That is not the console token.")
        return HTMLResponse(html, status_code=401, headers=_NO_STORE)
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        COOKIE,
        session_value(expected),
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def logout(request: Request) -> Response:
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


@page
async def console_page(request: Request) -> Response:
    panels = await render.panels(_node(request), _journal(request), _router(request))
    html = render.page("console.html", panels=panels, tabs=render.TABS)
    return HTMLResponse(html, headers=_NO_STORE)


def _sse(name: str, html: str) -> str:
    lines = "".join(f"data: {line}\n" for line in html.split("\n"))
    return f"event: {name}\n{lines}\n"


@data
async def stream(request: Request) -> Response:
    """Server-sent events: each panel's HTML when it changes (all of them first), and a heartbeat."""
    node, journal, router = _node(request), _journal(request), _router(request)

    async def events() -> AsyncIterator[str]:
        sent: dict[str, str] = {}
        yield "retry: 1000\n\n"
        while True:
            panels = await render.panels(node, journal, router)
            changed = False
            for name, html in panels.items():
                if sent.get(name) != html:
                    sent[name] = html
                    changed = True
                    yield _sse(name, html)
            if not changed:
                yield ": idle\n\n"
            await journal.wait(TICK_SECONDS)

    headers = {**_NO_STORE, "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


@data
async def panel(request: Request) -> Response:
    """One panel's HTML (what the stream sends), for scripts and for a page that lost its stream."""
    panels = await render.panels(_node(request), _journal(request), _router(request))
    name = request.path_params["name"]
    if name not in panels:
        return HTMLResponse("no such panel", status_code=404)
    return HTMLResponse(panels[name], headers=_NO_STORE)


def install(state: State, node: Node) -> None:
    """The console's parts for `node` on the app's state: its memory of events (fed from now on, before
    the node starts) and its softphone sessions."""
    journal = Journal(node.clock)
    node.event_observers.append(journal.observe)
    state.console_journal = journal
    state.console_softphones = Softphones(node)
    state.console_router = RouterLink(node)


async def shutdown(state: State) -> None:
    """Before the node stops: softphone calls hang up and their connections close."""
    await state.console_softphones.close_all()


def mount() -> BaseRoute:
    """The console's routes under /console; the app's state holds `node` and `console_journal`."""
    static = StaticFiles(directory=str(files("callgrid.console") / "static"))
    routes = [
        Route("/", console_page, methods=["GET"]),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/stream", stream, methods=["GET"]),
        Route("/panels/{name}", panel, methods=["GET"]),
        Mount("/static", static, name="console-static"),
        Route("/actions/calls", actions.place_call, methods=["POST"]),
        Route("/actions/calls/{serverCallId}/device", actions.device, methods=["POST"]),
        Route("/actions/calls/{serverCallId}/hangUp", actions.hang_up, methods=["POST"]),
        Route("/actions/calls/{serverCallId}/dtmf", actions.send_dtmf, methods=["POST"]),
        Route("/actions/numbers", actions.own_number, methods=["POST"]),
        Route("/actions/numbers/{phoneNumber}/release", actions.release_number, methods=["POST"]),
        Route("/actions/identities", actions.create_identity, methods=["POST"]),
        Route("/actions/subscriptions", actions.put_subscription, methods=["POST"]),
        Route("/actions/subscriptions/delete", actions.delete_subscription, methods=["POST"]),
        Route("/actions/deadLetters/{id}/replay", actions.replay_dead_letter, methods=["POST"]),
        Route("/actions/clock", actions.advance_clock, methods=["POST"]),
        Route("/actions/router", actions.attach_router, methods=["POST"]),
        Route("/actions/router/detach", actions.detach_router, methods=["POST"]),
        Route("/softphone/calls", actions.softphone_call, methods=["POST"]),
        Route("/softphone/register", actions.softphone_register, methods=["POST"]),
        Route("/softphone/{id}", actions.softphone_status, methods=["GET"]),
        Route("/softphone/{id}/answer", actions.softphone_answer, methods=["POST"]),
        Route("/softphone/{id}/decline", actions.softphone_decline, methods=["POST"]),
        Route("/softphone/{id}/dtmf", actions.softphone_dtmf, methods=["POST"]),
        Route("/softphone/{id}/hangUp", actions.softphone_hang_up, methods=["POST"]),
    ]
    return Mount("/console", routes=routes)
