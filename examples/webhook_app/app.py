"""A call app's webhook, ready to copy: Event Grid posts IncomingCall here, Call Automation posts callbacks.

It consents to both subscription handshakes (Event Grid's SubscriptionValidation event and the CloudEvents
OPTIONS request), answers each IncomingCall and greets the caller, or redirects it to an agent when
AGENT_ID is set. It uses only Microsoft's SDK, so it runs unchanged against Azure or against callgrid.

    ACS_CONNECTION_STRING="endpoint=...;accesskey=..." python app.py     # listens on :8080

Behind a proxy that changes the scheme or host, set PUBLIC_URL to the URL Event Grid posts to.
"""

from __future__ import annotations

import os
from typing import Any

from azure.communication.callautomation import CallAutomationClient, CommunicationUserIdentifier, TextSource
from flask import Flask, Response, jsonify, request

INCOMING_CALL = "Microsoft.Communication.IncomingCall"
VALIDATION = "Microsoft.EventGrid.SubscriptionValidationEvent"


def create_app(connection_string: str, *, agent: str | None = None, public_url: str | None = None) -> Flask:
    """`agent`: an identity's raw id (8:acs:...) to redirect calls to. `public_url`: where Azure (or callgrid)
    reaches this app, for the callback URL; by default, the URL the events arrive at."""
    app = Flask(__name__)
    calls = CallAutomationClient.from_connection_string(connection_string)
    app.config["CALLBACKS"] = callbacks = []  # what Call Automation told us, newest last

    @app.route("/api/events", methods=["OPTIONS"])
    def cloud_events_handshake() -> Response:
        # CloudEvents webhooks consent by echoing the origin that asks.
        response = Response(status=200)
        response.headers["WebHook-Allowed-Origin"] = request.headers.get("WebHook-Request-Origin", "*")
        return response

    @app.route("/api/events", methods=["POST"])
    def events() -> Any:
        body = request.get_json(force=True)
        for event in body if isinstance(body, list) else [body]:
            kind = event.get("eventType") or event.get("type")  # Event Grid schema or CloudEvents
            if kind == VALIDATION:
                return jsonify(validationResponse=event["data"]["validationCode"])
            if kind == INCOMING_CALL:
                context = event["data"]["incomingCallContext"]
                if agent:
                    calls.redirect_call(context, CommunicationUserIdentifier(agent))
                else:
                    base = public_url or request.url_root.rstrip("/")
                    calls.answer_call(context, callback_url=f"{base}/api/callbacks")
        return "", 200

    @app.route("/api/callbacks", methods=["POST"])
    def call_automation_callbacks() -> Any:
        for event in request.get_json(force=True):
            callbacks.append(event)
            if event["type"] == "Microsoft.Communication.CallConnected":
                connection = calls.get_call_connection(event["data"]["callConnectionId"])
                connection.play_media_to_all([TextSource(text="Thanks for calling. Please hold.")])
        return "", 200

    return app


if __name__ == "__main__":
    app = create_app(
        os.environ["ACS_CONNECTION_STRING"], agent=os.environ.get("AGENT_ID"), public_url=os.environ.get("PUBLIC_URL")
    )
    app.run(port=int(os.environ.get("PORT", "8080")))
