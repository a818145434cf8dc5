"""callgrid.testing without pytest's fixtures: the async context manager other runners use."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from azure.communication.identity.aio import CommunicationIdentityClient

from callgrid.testing import INCOMING_CALL, Received, WebhookReceiver, running


async def test_running_serves_the_sdks_and_delivers_events(tmp_path: Path) -> None:
    before = os.environ.get("SSL_CERT_FILE")
    async with running(tmp_path / "cg") as cg:
        assert os.environ["SSL_CERT_FILE"] != before  # its CA is trusted inside the block
        async with CommunicationIdentityClient.from_connection_string(
            cg.connection_string, connection_verify=cg.ca_bundle
        ) as identity:
            user = await identity.create_user()
        with WebhookReceiver() as hook:
            await asyncio.to_thread(cg.subscribe, hook.url)
            await asyncio.to_thread(cg.place_call, "+12065550123", user.properties["id"])
            offer = await asyncio.to_thread(hook.wait_for, INCOMING_CALL)
        assert offer["data"]["to"]["rawId"] == user.properties["id"]
        assert cg.proc is not None
    assert cg.proc is None  # stopped on the way out
    assert os.environ.get("SSL_CERT_FILE") == before


def test_wait_for_returns_each_event_once_and_says_what_came_instead() -> None:
    with WebhookReceiver() as hook:
        events = [{"id": str(i), "eventType": "A" if i < 2 else "B", "data": {"n": i}} for i in range(3)]
        hook.received.extend(_notification(e) for e in events)
        assert hook.wait_for("A")["id"] == "0"
        assert hook.wait_for("A")["id"] == "1"
        assert hook.wait_for("B", lambda e: e["data"]["n"] == 2)["id"] == "2"
        try:
            hook.wait_for("A", timeout=0.05)
        except AssertionError as exc:
            assert "no A event reached" in str(exc)
            assert "it received: ['A', 'A', 'B']" in str(exc)
        else:
            raise AssertionError("a third A was found")


def _notification(event: dict[str, object]) -> Received:
    return Received("POST", "/", {"aeg-event-type": "Notification"}, [event], b"")


def test_a_cloud_event_delivered_alone_is_an_event_too() -> None:
    with WebhookReceiver() as hook:
        event = {"id": "1", "type": INCOMING_CALL, "specversion": "1.0", "data": {"to": {"rawId": "4:+1"}}}
        hook.received.append(Received("POST", "/", {"aeg-event-type": "Notification"}, event, b""))
        assert hook.wait_for(INCOMING_CALL, timeout=0.1) == event
        assert hook.events(INCOMING_CALL) == [event]
