"""The router as tests run it: the real ASGI app under uvicorn on a free port, in a thread of the test process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import uvicorn

from callgrid.router.app import build_app, open_state, webhook_url
from callgrid.router.config import RouterConfig
from callgrid.router.models import DecisionRecord
from callgrid.router.store import RouterStore
from callgrid.router.subscribe import Scope, StaticToken, Subscriber, SubscriptionPlan
from callgrid.testing import CallgridServer, free_port


class RouterServer:
    def __init__(self, callgrid: CallgridServer, db: Path, **config: Any) -> None:
        self.callgrid = callgrid
        self.port = free_port()
        self.config = RouterConfig(
            connection_string=callgrid.connection_string,
            db=db,
            port=self.port,
            jwt_audience=callgrid.env["CALLGRID_IMMUTABLE_RESOURCE_ID"],
            **config,
        )
        self.state = open_state(self.config)
        self.store: RouterStore = self.state.store
        server_config = uvicorn.Config(build_app(self.state), host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(server_config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> RouterServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the router did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def webhook_url(self) -> str:
        return webhook_url(self.url, self.state.webhook_secret)

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.state.api_key}", **kwargs.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=10, **kwargs)

    def subscriber(self, prefix: str = "router") -> Subscriber:
        return Subscriber(
            resource_id=self.callgrid.resource_id,
            arm_endpoint=self.callgrid.endpoint,
            credential=StaticToken(self.callgrid.arm_token),
            prefix=prefix,
            polling_interval=0.02,
        )

    def subscribe(self, scope: Scope = Scope.ASSIGNED, prefix: str = "router") -> SubscriptionPlan:
        return self.subscriber(prefix).sync(self.store.assigned_numbers(), scope=scope, webhook_url=self.webhook_url)

    def decision(self, server_call_id: str, *, rule: str | None = None, timeout: float = 10.0) -> DecisionRecord:
        """The finished decision for the call's first IncomingCall (or the one whose rule is `rule`)."""
        return wait_for(
            lambda: next(
                (
                    d
                    for d in reversed(self.store.decisions(server_call_id=server_call_id, limit=10))
                    if d.state == "done" and (rule is None or d.rule == rule)
                ),
                None,
            ),
            timeout,
        )


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s")
        time.sleep(0.02)
