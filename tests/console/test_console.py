"""The web console in Chromium: log in with the token, watch a call and its events arrive live, break a
webhook and watch its attempts and the dead letter, replay it; and nothing without the token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests
from azure.communication.callautomation import CallAutomationClient, PhoneNumberIdentifier
from playwright.sync_api import expect

from callgrid.testing import CallgridServer, WebhookReceiver
from tests.console.conftest import log_in

INCOMING_CALL = "Microsoft.Communication.IncomingCall"
CALLER = "+14255550100"
ROUTED = "+18005551212"  # the number the app answers (its subscription filters on it)
OTHER = "+18005550000"  # another app's number
FORWARD_TO = "+12065550123"  # a phone on the public network the app redirects to
DEAD_LETTER_ACCOUNT = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/deadacct"


def _tab(page: Any, name: str) -> None:
    page.click(f'#tabs a[data-tab="{name}"]')


def test_a_call_to_a_routed_number_appears_live_with_its_events_and_the_filter_that_said_no(
    page: Any,
    callgrid: CallgridServer,
    webhook: WebhookReceiver,
    call_automation_client: CallAutomationClient,
    artifacts: Path,
) -> None:
    callgrid.own_number(ROUTED)
    callgrid.subscribe(webhook.url + "/routed", name="routed-app", to=[ROUTED])
    callgrid.subscribe(webhook.url + "/other", name="other-app", to=[OTHER])
    log_in(page, callgrid)

    # Place the call from the console: a free PSTN caller to the owned number (offered in the picker).
    expect(page.locator('#parties option[value="' + ROUTED + '"]')).to_have_count(1)
    page.fill('#place-call input[name="from"]', CALLER)
    page.fill('#place-call input[name="to"]', ROUTED)
    page.click("#place-call button")
    expect(page.locator("#flash")).to_contain_text("Calling 4:" + ROUTED)

    call = page.locator("article.call").first
    expect(call.locator(".badge").first).to_have_text("ringing")
    expect(call.locator("li.offer.ringing")).to_contain_text("4:" + ROUTED)
    page.screenshot(path=str(artifacts / "1-ringing.png"), full_page=True)

    # The app's webhook gets the IncomingCall and redirects it; the console shows the second ring live.
    incoming = webhook.wait_for(INCOMING_CALL)
    call_automation_client.redirect_call(incoming["data"]["incomingCallContext"], PhoneNumberIdentifier(FORWARD_TO))
    expect(call.locator("li.offer.redirected")).to_contain_text("4:" + ROUTED)
    expect(call.locator("li.offer.ringing")).to_contain_text("4:" + FORWARD_TO)
    expect(call.locator("ol.timeline")).to_contain_text("callPlaced")

    # The events view: the IncomingCall reached routed-app; other-app's advanced filter said no, and why.
    _tab(page, "events")
    event = page.locator(f'tbody.event[data-event="{incoming["id"]}"]')
    expect(event).to_contain_text(INCOMING_CALL)
    expect(event.locator('tr.verdict.matched[data-subscription="routed-app"]')).to_have_count(1)
    refusal = event.locator('tr.verdict.refused[data-subscription="other-app"]')
    expect(refusal).to_contain_text("advancedFilters[0]")
    expect(refusal).to_contain_text("StringIn on 'data.to.phoneNumber.value'")
    expect(refusal).to_contain_text(f'"{OTHER}"')
    expect(refusal).to_contain_text(f'is "{ROUTED}"')
    page.screenshot(path=str(artifacts / "2-events.png"), full_page=True)

    # The forwarded-to phone answers from the console, then its person presses keys and hangs up.
    _tab(page, "calls")
    call.locator("li.offer.ringing button[value=answer]").click()
    expect(call.locator(".badge").first).to_have_text("connected")
    person = call.locator("ul.participants li", has_text="4:" + FORWARD_TO)
    person.locator('input[name="tones"]').fill("12#")
    person.locator("text=Send DTMF").click()
    expect(call.locator("ol.timeline")).to_contain_text("dtmfReceived")
    page.screenshot(path=str(artifacts / "3-connected.png"), full_page=True)
    call.locator("ul.participants li", has_text="4:" + CALLER).locator("text=Hang up").click()
    expect(call.locator(".badge").first).to_have_text("disconnected")
    state = callgrid.get_call(incoming["data"]["serverCallId"])
    assert state["state"] == "disconnected"
    assert [o["state"] for o in state["offers"]] == ["redirected", "answered"]


def test_a_broken_webhook_shows_its_attempts_and_dead_letter_and_the_replay_delivers(
    page: Any, callgrid: CallgridServer, webhook: WebhookReceiver, artifacts: Path
) -> None:
    broken = {"on": True}
    webhook.responder = lambda item: (503, None) if broken["on"] and item.path == "/broken" else (200, None)
    callgrid.own_number(ROUTED)
    log_in(page, callgrid)

    # Subscribe from the console, with few attempts and a dead-letter container.
    _tab(page, "subscriptions")
    form = page.locator("#subscribe-form")
    form.locator('input[name="name"]').fill("fragile-app")
    form.locator('input[name="endpointUrl"]').fill(webhook.url + "/broken")
    form.locator('input[name="maxDeliveryAttempts"]').fill("2")
    form.locator('input[name="deadLetterResourceId"]').fill(DEAD_LETTER_ACCOUNT)
    form.locator('input[name="deadLetterContainer"]').fill("dead-letters")
    form.locator("button").click()
    row = page.locator('table.subscriptions tr[data-subscription="fragile-app"]')
    expect(row.locator(".badge")).to_have_text("Succeeded")

    # A call raises an IncomingCall; the webhook answers 503: the first attempt and its retry time appear.
    _tab(page, "calls")
    page.fill('#place-call input[name="from"]', CALLER)
    page.fill('#place-call input[name="to"]', ROUTED)
    page.click("#place-call button")
    _tab(page, "deliveries")
    delivery = page.locator('tbody.delivery[data-subscription="fragile-app"]')
    expect(delivery.locator("tr.attempt")).to_have_count(1)
    expect(delivery.locator("tr.attempt").first).to_contain_text("503")
    expect(delivery.locator("time.next-retry")).to_have_count(1)
    expect(delivery.locator(".count")).to_have_text("1 / 2")
    page.screenshot(path=str(artifacts / "1-first-attempt.png"), full_page=True)

    # Time passes (from the console's clock): the second attempt fails too, and the event is dead-lettered.
    page.fill('#advance-form input[name="seconds"]', "60")
    page.click("#advance")
    expect(delivery.locator("tr.attempt")).to_have_count(2)
    expect(delivery.locator(".badge")).to_have_text("deadLettered")
    expect(delivery).to_contain_text("MaxDeliveryAttemptsExceeded")
    _tab(page, "deadletters")
    dead = page.locator('tr.deadletter[data-subscription="fragile-app"]')
    expect(dead).to_contain_text("MaxDeliveryAttemptsExceeded")
    expect(dead).to_contain_text(INCOMING_CALL)
    page.screenshot(path=str(artifacts / "2-dead-letter.png"), full_page=True)

    # The webhook is mended; replay from the console delivers the same event.
    broken["on"] = False
    event_id = webhook.wait_until(lambda: [r for r in webhook.notifications() if r.path == "/broken"])[0].body[0]["id"]
    delivered_before = len([r for r in webhook.notifications() if r.path == "/broken"])
    dead.locator("text=Replay").click()
    expect(dead.locator(".replayed")).to_have_count(1)
    replayed = webhook.wait_until(
        lambda: [r for r in webhook.notifications() if r.path == "/broken"][delivered_before:], timeout=15
    )
    assert replayed[0].body[0]["id"] == event_id
    _tab(page, "deliveries")
    expect(page.locator('tbody.delivery.status-delivered[data-subscription="fragile-app"]')).to_have_count(1)
    page.screenshot(path=str(artifacts / "3-replayed.png"), full_page=True)


def test_numbers_identities_and_bad_input_from_the_console(page: Any, callgrid: CallgridServer) -> None:
    log_in(page, callgrid)
    _tab(page, "directory")
    page.fill('#own-number input[name="phoneNumber"]', "+18005557777")
    page.click("#own-number button")
    expect(page.locator('ul.numbers li[data-number="+18005557777"]')).to_have_count(1)
    page.click("#create-identity button")
    expect(page.locator("ul.identities li[data-identity]")).to_have_count(1)
    identity = page.locator("ul.identities li[data-identity]").get_attribute("data-identity")
    assert identity is not None and identity.startswith("8:acs:")
    expect(page.locator(f'#parties option[value="{identity}"]')).to_have_count(1)

    # A filter ARM would refuse is refused with its reason, and nothing is created.
    _tab(page, "subscriptions")
    form = page.locator("#subscribe-form")
    form.locator('input[name="name"]').fill("bad-filter")
    form.locator('input[name="endpointUrl"]').fill("https://127.0.0.1:9/hook")
    form.locator('textarea[name="advancedFilters"]').fill(
        '[{"operatorType": "StringSoundsLike", "key": "data.x", "values": ["a"]}]'
    )
    form.locator("button").click()
    expect(page.locator("#flash.error")).to_contain_text(
        "'StringSoundsLike' is not a supported advanced filter operator"
    )
    expect(page.locator('table.subscriptions tr[data-subscription="bad-filter"]')).to_have_count(0)

    # Owning the same number twice is a 409 with ACS's code, shown as such.
    _tab(page, "directory")
    page.click("#own-number button")
    expect(page.locator("#flash.error")).to_contain_text("PhoneNumberAlreadyOwned")
    page.locator('ul.numbers li[data-number="+18005557777"] button').click()
    expect(page.locator('ul.numbers li[data-number="+18005557777"]')).to_have_count(0)


def test_nothing_without_the_token(callgrid: CallgridServer) -> None:
    base, verify = callgrid.endpoint, callgrid.ca_bundle
    anonymous = requests.Session()
    page = anonymous.get(base + "/console/", verify=verify, allow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/console/login")
    for path in ("/console/stream", "/console/panels/calls"):
        refused = anonymous.get(base + path, verify=verify)
        assert refused.status_code == 401, path
        assert refused.json()["error"]["code"] == "Unauthorized"
    action = anonymous.post(
        base + "/console/actions/numbers",
        json={"phoneNumber": "+18005556666"},
        headers={"X-Callgrid-Console": "1"},
        verify=verify,
    )
    assert action.status_code == 401
    wrong = anonymous.post(base + "/console/login", data={"token": "guess"}, verify=verify, allow_redirects=False)
    assert wrong.status_code == 401 and "callgrid_console" not in wrong.cookies

    # With the token: a cookie, then pages and streams; an action still needs the console's own header.
    session = requests.Session()
    token = callgrid.env["CALLGRID_CONSOLE_TOKEN"]
    assert f"console token      {token}" in callgrid.log_path.read_text()  # the banner printed it
    login = session.post(base + "/console/login", data={"token": token}, verify=verify, allow_redirects=False)
    assert login.status_code == 303
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" in cookie and "path=/console" in cookie
    assert token not in login.headers["set-cookie"]
    assert session.get(base + "/console/panels/calls", verify=verify).status_code == 200
    # The fixture's reset (POST /callgrid/v1/reset) also emptied the console's memory of events.
    assert "No events published" in session.get(base + "/console/panels/events", verify=verify).text
    forged = session.post(base + "/console/actions/numbers", json={"phoneNumber": "+18005556666"}, verify=verify)
    assert forged.status_code == 403
    made = session.post(
        base + "/console/actions/numbers",
        json={"phoneNumber": "+18005556666"},
        headers={"X-Callgrid-Console": "1"},
        verify=verify,
    )
    assert made.status_code == 201
    # The login link in the banner works once and redirects into the console only.
    link = requests.get(
        base + "/console/login",
        params={"token": token, "next": "https://evil.example/"},
        verify=verify,
        allow_redirects=False,
    )
    assert link.status_code == 303 and link.headers["location"] == "/console/"
