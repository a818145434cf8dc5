"""A real HTTP endpoint on loopback that records what it receives: an app's webhook, a callback URI.

It consents to Event Grid's validation handshake and to the CloudEvents abuse-protection handshake
(unless told not to), answers 200 to the rest (or what `responder` says), and lets a test wait for an
event by type.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


class _Server(ThreadingHTTPServer):
    # The default backlog (5) drops connections when a delivery engine opens hundreds at once.
    request_queue_size = 1024
    daemon_threads = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A sender that hung up before the answer (a delivery timed out, or its sender closed) is what a
        # webhook sees in ordinary life, not an error worth a traceback in the user's test output.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Kept-alive connections end with the server: a closed webhook must stop answering, as an app's
        server that stopped does."""
        with self._open_lock:
            live = list(self._open)
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


# (status, payload) or (status, payload, extra response headers); a payload is sent as JSON, bytes as they are
Responder = Callable[[Received], tuple[int, Any] | tuple[int, Any, dict[str, str]]]


@dataclass
class WebhookReceiver:
    """Answers Event Grid's validation handshake like a well-behaved app unless told otherwise."""

    validate: bool = True
    responder: Responder | None = None
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            # Keeps connections alive, as the web servers apps run on do: Event Grid's deliveries reuse them.
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                item = Received(self.command, self.path, dict(self.headers.items()), body, raw)
                with receiver._lock:
                    receiver.received.append(item)
                    receiver._lock.notify_all()
                answer = receiver._respond(item)
                status, payload = answer[0], answer[1]
                # bytes are sent as they are (an answer that is not JSON); anything else as JSON.
                out = (
                    payload if isinstance(payload, bytes) else b"" if payload is None else json.dumps(payload).encode()
                )
                self.send_response(status)
                for name, value in (answer[2] if len(answer) > 2 else {}).items():  # type: ignore[misc]
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_POST = do_GET = do_OPTIONS = do_PUT = _handle

            def log_message(self, *args: Any) -> None:
                pass

        # A condition, so that a waiting test wakes when a request arrives instead of on its next poll.
        self._lock = threading.Condition()
        self._returned: set[tuple[Any, str]] = set()
        self._server = _Server(("127.0.0.1", 0), Handler)
        # A short poll: close() waits for serve_forever to notice, up to one interval (0.5 s by default).
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    def _respond(self, item: Received) -> tuple[int, Any] | tuple[int, Any, dict[str, str]]:
        if item.header("aeg-event-type") == "SubscriptionValidation" and self.validate:
            return 200, {"validationResponse": item.body[0]["data"]["validationCode"]}
        if item.method == "OPTIONS" and item.header("WebHook-Request-Origin") and self.validate:
            # CloudEvents abuse protection (eventgrid.md 4.2): consent in the answer.
            return 200, None, {"WebHook-Allowed-Origin": item.header("WebHook-Request-Origin") or "*"}
        if self.responder is not None:
            return self.responder(item)
        return 200, None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def notifications(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.header("aeg-event-type") == "Notification"]

    def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        """Every Event Grid event received in notifications (either schema), in arrival order."""
        return [e for r in self.notifications() for e in _events_in(r.body) if event_type in (None, _type_of(e))]

    def callbacks(self) -> list[dict[str, Any]]:
        """Every CloudEvent POSTed as a Call Automation callback (JSON arrays without aeg headers)."""
        with self._lock:
            items = [r for r in self.received if r.method == "POST" and r.header("aeg-event-type") is None]
        return [event for r in items for event in _events_in(r.body)]

    def all_events(self) -> list[dict[str, Any]]:
        """Every event received, in arrival order: Event Grid notifications (Event Grid or CloudEvents
        schema) and Call Automation callbacks (CloudEvents)."""
        with self._lock:
            items = [
                r
                for r in self.received
                if r.method == "POST" and r.header("aeg-event-type") != "SubscriptionValidation"
            ]
        return [e for r in items for e in _events_in(r.body)]

    def wait_for(
        self,
        event_type: str,
        predicate: Callable[[dict[str, Any]], Any] | None = None,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """The next event of `event_type` (Event Grid's `eventType` or a CloudEvent's `type`) for which
        `predicate` is true, waiting up to `timeout` real seconds. Each event is returned once: waiting
        twice for IncomingCall gives the first call's, then the second's."""
        __tracebackhide__ = True  # a failure points at the test's line, not at this helper's insides

        def find() -> dict[str, Any] | None:
            for event in self.all_events():
                key = (event.get("id"), event_type)
                if (
                    _type_of(event) == event_type
                    and key not in self._returned
                    and (predicate is None or predicate(event))
                ):
                    self._returned.add(key)
                    return event
            return None

        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                count = len(self.received)
            found = find()
            if found is not None:
                return found
            if time.monotonic() >= deadline:
                seen = [_type_of(e) for e in self.all_events()]
                raise AssertionError(
                    f"no {event_type} event{' matching the predicate' if predicate else ''} reached {self.url} "
                    f"within {timeout:g} s; it received: {seen or 'nothing'}"
                )
            with self._lock:
                if len(self.received) == count:  # nothing new since find() looked: sleep until something is
                    self._lock.wait(min(0.05, max(0.0, deadline - time.monotonic())))

    def wait_until(self, condition: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Poll `condition` until it returns something truthy, and return that."""
        __tracebackhide__ = True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = condition()
            if result:
                return result
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout}s; received: {[(r.method, r.path) for r in self.received]}")

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()


def _events_in(body: Any) -> list[dict[str, Any]]:
    """The events of a request's body: an array (Event Grid schema, batches, callbacks), or one object (a
    CloudEvent delivered alone, as Event Grid does without batching)."""
    items = body if isinstance(body, list) else [body]
    return [e for e in items if isinstance(e, dict)]


def _type_of(event: dict[str, Any]) -> str | None:
    kind = event.get("eventType", event.get("type"))
    return kind if isinstance(kind, str) else None
