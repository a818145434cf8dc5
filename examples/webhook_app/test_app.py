"""The app's tests, against callgrid: the plugin's fixtures give a real server, SDK clients and a webhook."""

import threading
import time

import pytest
from app import create_app
from werkzeug.serving import make_server

SUPPORT_LINE = "+14255550100"
CUSTOMER = "+12065550123"


@pytest.fixture
def serve():
    """Run a Flask app on a free local port for the test; returns its base URL."""
    servers = []

    def start(app):
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()


def eventually(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return result


def test_the_app_answers_and_greets_the_caller(callgrid, acs_connection_string, serve, subscribe, place_call, clock):
    app = create_app(acs_connection_string)
    url = serve(app)
    subscribe(url + "/api/events", to=[SUPPORT_LINE])  # Event Grid's handshake: the app must consent
    call = place_call(CUSTOMER, SUPPORT_LINE)
    connected = callgrid.wait_for_call(call["serverCallId"], "connected")
    assert [p["rawId"] for p in connected["participants"]] == ["4:" + CUSTOMER, "4:" + SUPPORT_LINE]

    kinds = lambda: [e["type"].rsplit(".", 1)[1] for e in app.config["CALLBACKS"]]  # noqa: E731
    eventually(lambda: "PlayStarted" in kinds())
    clock.advance(10)  # the greeting plays on callgrid's virtual clock: no waiting in real time
    eventually(lambda: "PlayCompleted" in kinds())


def test_the_app_redirects_to_the_agent_over_cloud_events(
    acs_connection_string, identity_client, serve, subscribe, set_device, place_call, webhook, callgrid
):
    agent = identity_client.create_user().properties["id"]
    set_device(agent, "answer")
    url = serve(create_app(acs_connection_string, agent=agent))
    subscribe(url + "/api/events", to=[SUPPORT_LINE], schema="CloudEventSchemaV1_0")  # the OPTIONS handshake
    subscribe(webhook.url, to=[agent])  # watch the agent's phone ring
    call = place_call(CUSTOMER, SUPPORT_LINE)
    offer = webhook.wait_for("Microsoft.Communication.IncomingCall")
    assert offer["data"]["from"]["phoneNumber"]["value"] == CUSTOMER
    assert callgrid.wait_for_call(call["serverCallId"], "connected")


def test_an_app_failing_its_webhook_is_retried_by_event_grid(
    callgrid, acs_connection_string, serve, subscribe, place_call, faults, clock
):
    url = serve(create_app(acs_connection_string))
    subscribe(url + "/api/events", to=[SUPPORT_LINE])
    faults.fail_deliveries(url + "/api/events", 500, count=1)  # the app's first delivery fails
    call = place_call(CUSTOMER, SUPPORT_LINE)
    clock.advance(15)  # Event Grid retries after about 10 s
    assert callgrid.wait_for_call(call["serverCallId"], "connected")
