"""The router's ASGI app: the Event Grid webhook, the callback receiver, and the management API."""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote

import aiohttp
from azure.core.pipeline.transport import AioHttpTransport
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from callgrid.router import api, callbacks, webhook
from callgrid.router.automation import lean_client
from callgrid.router.callback_auth import CallbackVerifier
from callgrid.router.config import CALLBACK_PATH, WEBHOOK_PATH, RouterConfig
from callgrid.router.engine import Router
from callgrid.router.store import RouterStore, open_router_store
from callgrid.router.web import RouterState, state_of

log = logging.getLogger("callgrid.router")


def webhook_url(base_url: str, secret: str) -> str:
    return f"{base_url.rstrip('/')}{WEBHOOK_PATH}?secret={quote(secret, safe='')}"


def open_state(config: RouterConfig, store: RouterStore | None = None) -> RouterState:
    store = store or open_router_store(config.store or config.db)
    if config.webhook_secret:
        store.set_meta("webhook_secret", config.webhook_secret)
    if config.api_key:
        store.set_meta("api_key", config.api_key)
    if config.public_url:
        # `router subscribe` reads it, so the subscription points where this server is reachable.
        store.set_meta("public_url", config.public_url.rstrip("/"))
    return RouterState(
        config=config,
        store=store,
        webhook_secret=store.secret("webhook_secret"),
        api_key=store.secret("api_key"),
        verifier=CallbackVerifier(config.resolved_jwks_url, config.jwt_issuer, config.jwt_audience),
    )


async def health(request: Request) -> Response:
    state = state_of(request)
    return JSONResponse({"status": "ok", "assignments": state.store.count_assignments()})


class _DeliveriesFirst:
    """The webhook's POSTs (one per routed call) straight to their handler; all else through Starlette."""

    def __init__(self, app: Starlette, state: RouterState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == WEBHOOK_PATH:
            await webhook.post_asgi(self.state, scope, receive, send)
        else:
            await self.app(scope, receive, send)


def build_app(state: RouterState) -> ASGIApp:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # One TLS context for the life of the app: SSL_CERT_FILE / REQUESTS_CA_BUNDLE when set (an emulator's
        # CA), else the system's. The SDK client is built once, on a transport that keeps its connections.
        bundle = os.environ.get("SSL_CERT_FILE") or os.environ.get("REQUESTS_CA_BUNDLE")
        context = ssl.create_default_context(cafile=bundle) if bundle else ssl.create_default_context()
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=256))
        transport = AioHttpTransport(session=session, session_owner=False)
        automation = lean_client(state.config.connection_string, transport)
        state.store.start_checkpoints()
        try:
            async with session, automation:
                state.router = Router(state.store, automation, state.config.sdk_timeout_seconds)
                resumed = state.router.resume_pending()
                if resumed:
                    log.warning("resuming %d IncomingCall event(s) accepted before the last stop", resumed)
                yield
                await state.router.drain()
                state.router = None
        finally:
            state.store.stop_checkpoints()

    routes = [
        Route(WEBHOOK_PATH, webhook.post, methods=["POST"]),
        Route(WEBHOOK_PATH, webhook.options, methods=["OPTIONS"]),
        Route(CALLBACK_PATH, callbacks.post, methods=["POST"]),
        Route("/healthz", health, methods=["GET"]),
        Route("/api/assignments", api.list_assignments, methods=["GET"]),
        Route("/api/assignments:import", api.import_assignments, methods=["POST"]),
        Route("/api/assignments/{phoneNumber}", api.get_assignment, methods=["GET"]),
        Route("/api/assignments/{phoneNumber}", api.put_assignment, methods=["PUT"]),
        Route("/api/assignments/{phoneNumber}", api.delete_assignment, methods=["DELETE"]),
        Route("/api/rules", api.get_rules, methods=["GET"]),
        Route("/api/rules", api.put_rules, methods=["PUT"]),
        Route("/api/blocked", api.list_blocked, methods=["GET"]),
        Route("/api/blocked/{caller}", api.put_blocked, methods=["PUT"]),
        Route("/api/blocked/{caller}", api.delete_blocked, methods=["DELETE"]),
        Route("/api/decisions", api.list_decisions, methods=["GET"]),
        Route("/api/callbacks", api.list_callbacks, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.router = state
    return _DeliveriesFirst(app, state)
