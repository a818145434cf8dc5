"""A call app's webhook in one file: Event Grid's handshakes, then every IncomingCall to one number redirected.

It is a plain user of Azure Communication Services: the official SDK, a connection string, nothing of
callgrid. Against callgrid, `eval "$(callgrid env)"` first (the connection string and the CA to trust); against
Azure, export your resource's connection string as CALLGRID_CONNECTION_STRING and reach the app through a
tunnel.

    python examples/redirect_app.py --port 8000 --number +14255550123 --to 8:acs:...

Then subscribe it to the resource's IncomingCall events (e.g. `callgrid subscriptions create my-app
--endpoint http://127.0.0.1:8000/api/incoming --to-number +14255550123`) and call the number.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from azure.communication.callautomation import (
    CallAutomationClient,
    CommunicationIdentifier,
    CommunicationUserIdentifier,
    PhoneNumberIdentifier,
)
from azure.core.exceptions import HttpResponseError

INCOMING_CALL = "Microsoft.Communication.IncomingCall"
VALIDATION = "Microsoft.EventGrid.SubscriptionValidationEvent"


def target_of(raw: str) -> CommunicationIdentifier:
    """An identity's raw id (8:acs:...) or a phone number (+1425... or 4:+1425...)."""
    number = raw.removeprefix("4:")
    return PhoneNumberIdentifier(number) if number.startswith("+") else CommunicationUserIdentifier(raw)


class App:
    def __init__(self, automation: CallAutomationClient, number: str, target: str) -> None:
        self.automation = automation
        self.number = number
        self.target = target

    def on_event(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """One event, in either schema (Event Grid: eventType/data; CloudEvents: type/data)."""
        kind = event.get("eventType") or event.get("type")
        data = event.get("data") or {}
        if kind == VALIDATION:  # Event Grid's handshake: echo the code
            return {"validationResponse": data["validationCode"]}
        if kind == INCOMING_CALL and data["to"]["rawId"] == "4:" + self.number:
            caller = data["from"]["rawId"]
            try:
                self.automation.redirect_call(data["incomingCallContext"], target_of(self.target))
                log(f"IncomingCall from {caller} to {self.number}: redirected to {self.target}")
            except HttpResponseError as exc:  # e.g. the caller hung up meanwhile, or the context expired
                log(f"IncomingCall from {caller}: redirect failed: {exc.status_code} {exc.message}")
        return None


def log(line: str) -> None:
    print(line, flush=True)


def handler_for(app: App) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_OPTIONS(self) -> None:  # the CloudEvents handshake (abuse protection)
            self.send_response(200)
            self.send_header("WebHook-Allowed-Origin", self.headers.get("WebHook-Request-Origin", "*"))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"[]")
            answers = [app.on_event(event) for event in (body if isinstance(body, list) else [body])]
            answer = next((json.dumps(a).encode() for a in answers if a is not None), b"")
            # Answer at once: Event Grid counts a slow answer as a failure and delivers again.
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the app logs what it does
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--number", required=True, help="The owned number whose calls this app routes (E.164).")
    parser.add_argument("--to", required=True, help="Where they go: an identity's raw id or a phone number.")
    args = parser.parse_args()
    connection_string = os.environ.get("CALLGRID_CONNECTION_STRING")
    if not connection_string:
        sys.exit('CALLGRID_CONNECTION_STRING is not set: run `eval "$(callgrid env)"` first.')
    app = App(CallAutomationClient.from_connection_string(connection_string), args.number, args.to)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(app))
    log(f"listening on http://127.0.0.1:{args.port}/api/incoming: calls to {args.number} go to {args.to}")
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
