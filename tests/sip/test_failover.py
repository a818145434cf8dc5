"""Trunk failover and calls out over TCP: a server that places its calls to the trunks over TCP, with a
short T1 (100 ms) so that a trunk which never answers times out in 6.4 s (64 x T1) instead of 32.

As Azure documents it, a call tries the routes that match its number in order, the trunks of a route in
random order, and goes on to the next trunk when one answers 408, 503 or 504, or cannot be reached; not
once a trunk has rung (a 1xx beyond 100). SIPp stands for each SBC, listening on TCP."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.communication.callautomation import CallAutomationClient, PhoneNumberIdentifier
from azure.communication.phonenumbers.siprouting import SipTrunk, SipTrunkRoute

from callgrid.platform import sip_routing
from callgrid.testing import CallgridServer, WebhookReceiver
from callgrid.testing.server import free_port
from tests.sip.conftest import _free_udp_and_tcp_port, sip_metric
from tests.sip.sipp import Sipp, scenario, uas_answer, uas_refuse, uas_reply

OWNED = "+14255551212"
TARGET = "+14255550177"


@pytest.fixture(scope="module")
def sip_server(tmp_path_factory: pytest.TempPathFactory, callgrid_tls_dir: Path) -> Iterator[CallgridServer]:
    port = _free_udp_and_tcp_port()
    server = CallgridServer(
        tmp_path_factory.mktemp("callgrid-sip-tcp"),
        tls_dir=callgrid_tls_dir,
        extra_args=["--sip-port", str(port), "--sip-allow", "127.0.0.1/32", "--sip-transport", "tcp"],
        env={"CALLGRID_SIP_T1_MS": "100"},
    )
    server.sip_port = port  # type: ignore[attr-defined]
    server.start()
    yield server
    server.stop()


def _two_routes(sip_routing: Any, first_port: int, second_port: int) -> None:
    """Two routes for the same numbers, one trunk each: the order is the routes' (no shuffle within)."""
    sip_routing.set_trunks(
        [
            SipTrunk(fqdn="sbc1.localhost", sip_signaling_port=first_port),
            SipTrunk(fqdn="sbc2.localhost", sip_signaling_port=second_port),
        ]
    )
    sip_routing.set_routes(
        [
            SipTrunkRoute(name="primary", number_pattern=r"\+1\d{10}", trunks=["sbc1.localhost"]),
            SipTrunkRoute(name="backup", number_pattern=r"\+1\d{10}", trunks=["sbc2.localhost"]),
        ]
    )


def _create(automation: CallAutomationClient, app: WebhookReceiver) -> str:
    created = automation.create_call(
        PhoneNumberIdentifier(TARGET), app.url + "/callbacks", source_caller_id_number=PhoneNumberIdentifier(OWNED)
    )
    ccid = created.call_connection_id
    assert ccid is not None
    return ccid


def _connected_then_hung_up(automation: CallAutomationClient, app: WebhookReceiver, ccid: str) -> None:
    app.wait_for("Microsoft.Communication.CallConnected", lambda e: e["data"]["callConnectionId"] == ccid, timeout=30)
    automation.get_call_connection(ccid).hang_up(is_for_everyone=True)


def _silent() -> str:
    """An SBC that takes the INVITE and never answers it."""
    return scenario("uas-silent", '\n  <recv request="INVITE"/>', '\n  <pause milliseconds="8000"/>')


def _ring_then(status: str) -> str:
    """An SBC that rings (180), then fails with `status`."""
    return scenario(
        "uas-ring-then-fail",
        '\n  <recv request="INVITE"/>',
        uas_reply("180 Ringing", tag=True),
        '\n  <pause milliseconds="300"/>',
        uas_reply(status, tag=True),
        '\n  <recv request="ACK"/>',
    )


@pytest.mark.parametrize("first", ["503 Service Unavailable", "504 Server Time-out", "408 Request Timeout"])
def test_a_trunk_that_fails_hands_the_call_to_the_next(
    sip: CallgridServer,
    sip_routing: Any,
    automation: CallAutomationClient,
    app: WebhookReceiver,
    tmp_path: Path,
    first: str,
) -> None:
    sip.own_number(OWNED)
    failing = Sipp(tmp_path, "sbc1", uas_refuse(first, ring=False), remote=None, transport="t1")
    answering = Sipp(tmp_path, "sbc2", uas_answer(), remote=None, transport="t1")
    _two_routes(sip_routing, failing.port, answering.port)
    before = sip_metric(sip, "trunk_failover")
    failing.start()
    answering.start()
    try:
        ccid = _create(automation, app)
        _connected_then_hung_up(automation, app, ccid)
        for sbc in (failing, answering):
            run = sbc.wait()
            assert run.returncode == 0, run.out + run.trace
        # Both INVITEs came over TCP, to each trunk's FQDN.
        assert "Via: SIP/2.0/TCP" in failing.trace() and "Via: SIP/2.0/TCP" in answering.trace()
        assert f"INVITE sip:{TARGET}@sbc2.localhost:" in answering.trace()
        assert sip_metric(sip, "trunk_failover") == before + 1
    finally:
        failing.stop()
        answering.stop()


def test_a_trunk_that_never_answers_times_out_and_the_next_takes_the_call(
    sip: CallgridServer, sip_routing: Any, automation: CallAutomationClient, app: WebhookReceiver, tmp_path: Path
) -> None:
    sip.own_number(OWNED)
    silent = Sipp(tmp_path, "sbc1", _silent(), remote=None, transport="t1")
    answering = Sipp(tmp_path, "sbc2", uas_answer(), remote=None, transport="t1")
    _two_routes(sip_routing, silent.port, answering.port)
    before = sip_metric(sip, "outbound_timeout")
    silent.start()
    answering.start()
    try:
        ccid = _create(automation, app)
        _connected_then_hung_up(automation, app, ccid)
        run = answering.wait()
        assert run.returncode == 0, run.out + run.trace
        assert "INVITE sip:" in silent.trace()
        assert sip_metric(sip, "outbound_timeout") == before + 1
    finally:
        silent.stop()
        answering.stop()


def test_a_trunk_that_refuses_the_connection_is_skipped(
    sip: CallgridServer, sip_routing: Any, automation: CallAutomationClient, app: WebhookReceiver, tmp_path: Path
) -> None:
    sip.own_number(OWNED)
    answering = Sipp(tmp_path, "sbc2", uas_answer(), remote=None, transport="t1")
    _two_routes(sip_routing, free_port(), answering.port)  # nothing listens on the first
    before = sip_metric(sip, "trunk_unreachable")
    answering.start()
    try:
        ccid = _create(automation, app)
        _connected_then_hung_up(automation, app, ccid)
        run = answering.wait()
        assert run.returncode == 0, run.out + run.trace
        assert sip_metric(sip, "trunk_unreachable") == before + 1
    finally:
        answering.stop()


def test_a_trunk_that_rang_before_failing_does_not_fail_over(
    sip: CallgridServer, sip_routing: Any, automation: CallAutomationClient, app: WebhookReceiver, tmp_path: Path
) -> None:
    sip.own_number(OWNED)
    rang = Sipp(tmp_path, "sbc1", _ring_then("503 Service Unavailable"), remote=None, transport="t1")
    spare = Sipp(tmp_path, "sbc2", uas_answer(), remote=None, transport="t1")
    _two_routes(sip_routing, rang.port, spare.port)
    rang.start()
    spare.start()
    try:
        ccid = _create(automation, app)
        failed = app.wait_for(
            "Microsoft.Communication.CreateCallFailed", lambda e: e["data"]["callConnectionId"] == ccid, timeout=30
        )
        assert failed["data"]["resultInformation"]["code"] != 200
        run = rang.wait()
        assert run.returncode == 0, run.out + run.trace
        assert "INVITE" not in spare.trace()  # a second phone must not ring
    finally:
        rang.stop()
        spare.stop()


def test_the_last_trunks_failure_reaches_the_app(
    sip: CallgridServer, sip_routing: Any, automation: CallAutomationClient, app: WebhookReceiver, tmp_path: Path
) -> None:
    sip.own_number(OWNED)
    refusing = uas_refuse("503 Service Unavailable", ring=False)
    first = Sipp(tmp_path, "sbc1", refusing, remote=None, transport="t1")
    second = Sipp(tmp_path, "sbc2", refusing, remote=None, transport="t1")
    _two_routes(sip_routing, first.port, second.port)
    first.start()
    second.start()
    try:
        ccid = _create(automation, app)
        failed = app.wait_for(
            "Microsoft.Communication.CreateCallFailed", lambda e: e["data"]["callConnectionId"] == ccid, timeout=30
        )
        assert failed["data"]["resultInformation"]["code"] != 200
        for sbc in (first, second):
            run = sbc.wait()
            assert run.returncode == 0, run.out + run.trace
    finally:
        first.stop()
        second.stop()


async def test_routes_are_tried_in_order_and_a_routes_trunks_in_random_order(tmp_path: Path) -> None:
    from callgrid.store import open_store

    store = await open_store(f"sqlite:///{tmp_path / 'routes.db'}")
    try:
        async with store.transaction() as tx:
            await sip_routing.update(
                tx,
                {
                    "trunks": {
                        name: {"sipSignalingPort": 5060 + i} for i, name in enumerate(["a.x", "b.x", "c.x", "d.x"])
                    },
                    "routes": [
                        {"name": "uk", "numberPattern": r"\+44\d+", "trunks": ["d.x"]},
                        {"name": "us", "numberPattern": r"\+1\d+", "trunks": ["a.x", "b.x"]},
                        {"name": "any", "numberPattern": r"\+\d+", "trunks": ["c.x", "a.x"]},
                    ],
                },
            )
            orders = set()
            rng = random.Random(7)
            for _ in range(40):
                trunks = await sip_routing.trunks_for(tx, "+14255550100", rng)
                orders.add(tuple(t.fqdn for t in trunks))
            uk = await sip_routing.trunks_for(tx, "+447700900123", rng)
            nothing = await sip_routing.trunks_for(tx, "12345", rng)
    finally:
        await store.close()
    # The first matching route's trunks first, in either order; a trunk named again is tried once.
    assert orders == {("a.x", "b.x", "c.x"), ("b.x", "a.x", "c.x")}
    assert [t.fqdn for t in uk] == ["d.x", "c.x", "a.x"] or [t.fqdn for t in uk] == ["d.x", "a.x", "c.x"]
    assert nothing == []
