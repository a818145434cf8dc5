"""The softphone: Chromium, its microphone a WAV file of someone saying "support", calls an app's number
through the console; the app answers with the official SDK, prompts, and recognises the spoken choice;
the browser hears the prompt."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from azure.communication.callautomation import (
    PhoneNumberIdentifier,
    RecognitionChoice,
    RecognizeInputType,
    TextSource,
)
from playwright.sync_api import expect

from callgrid.media import codecs
from callgrid.media.speech import synthesize_blocking
from callgrid.testing import CallgridServer, WebhookReceiver
from tests.console.conftest import launch, log_in, new_page
from tests.media.voice_support import callback, party_path, wait
from tests.platform.calling_support import ENTRY_NUMBER, PSTN_CALLER, make_world

# Hears or speaks in real time: runs in the suite's serial pass (see the Makefile), not beside other tests.
pytestmark = pytest.mark.realtime

MENU = [
    RecognitionChoice(label="Sales", phrases=["sales", "buy something"]),
    RecognitionChoice(label="Support", phrases=["support", "help"]),
]
RATE = 16000


@pytest.fixture(scope="module")
def microphone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A WAV Chromium plays as its microphone, over and over: "support", then a pause."""
    speech = synthesize_blocking("support")
    pause = np.zeros(RATE * 2, dtype=np.int16)
    path = tmp_path_factory.mktemp("mic") / "support.wav"
    path.write_bytes(codecs.encode_wav([pause[: RATE // 2], speech, pause], RATE))
    return path


@pytest.fixture
def phone_page(playwright: Any, microphone: Path, callgrid: CallgridServer) -> Iterator[Any]:
    browser = launch(
        playwright,
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}",
        "--autoplay-policy=no-user-gesture-required",
    )
    page = new_page(browser, callgrid)
    yield page
    browser.close()


def _heard_peak(page: Any) -> float:
    return float(page.locator("#softphone").get_attribute("data-heard-peak") or 0)


def test_the_browser_says_its_choice_and_hears_the_prompt(
    phone_page: Any, callgrid: CallgridServer, webhook: WebhookReceiver, artifacts: Path
) -> None:
    page = phone_page
    world = make_world(callgrid, webhook)
    log_in(page, callgrid)

    page.fill('#softphone-form input[name="from"]', PSTN_CALLER)
    page.fill('#softphone-form input[name="to"]', ENTRY_NUMBER)
    page.click("#softphone-call")
    expect(page.locator("#softphone")).to_have_attribute("data-state", "calling")

    # The app answers the IncomingCall; the browser's party is in the call, hearing silence so far.
    ccid = world.automation.answer_call(world.incoming(0).data["incomingCallContext"], world.callback_url)
    ccid = ccid.call_connection_id
    assert ccid is not None
    world.callbacks(ccid, 2)  # CallConnected, ParticipantsUpdated
    expect(page.locator("#softphone")).to_have_attribute("data-state", "inCall")
    page.wait_for_timeout(1000)
    assert _heard_peak(page) < 0.01

    # It asks, and listens: the browser hears the prompt, and its microphone says "support".
    connection = world.automation.get_call_connection(ccid)
    connection.start_recognizing_media(
        RecognizeInputType.CHOICES,
        PhoneNumberIdentifier(PSTN_CALLER),
        choices=MENU,
        play_prompt=TextSource(text="Please say sales or support.", voice_name="en-US-JennyNeural"),
        operation_context="menu",
    )
    wait(lambda: _heard_peak(page) > 0.02 or None, what="the prompt to reach the browser")
    page.screenshot(path=str(artifacts / "1-prompt-heard.png"), full_page=True)
    callgrid.advance(5)  # the prompt has played on the call's clock: the app listens now
    completed = callback(world, ccid, "RecognizeCompleted")
    assert completed["recognitionType"] == "choices"
    assert completed["choiceResult"]["label"] == "Support", completed  # type: ignore[index]

    # The callbacks the app received are listed with their attempts and the claims of their JWT.
    page.click('#tabs a[data-tab="callbacks"]')
    recognized = page.locator("tbody.delivery", has_text="Microsoft.Communication.RecognizeCompleted")
    expect(recognized.locator(".badge")).to_have_text("delivered")
    expect(recognized.locator("tr.attempt")).to_contain_text("200")
    expect(page.locator("details.claims pre")).to_contain_text(
        '"iss": "https://acscallautomation.communication.azure.com"'
    )
    page.click('#tabs a[data-tab="calls"]')

    # The keypad is the caller's DTMF; hanging up ends the browser's part of the call.
    page.click('#softphone button[data-key="5"]')
    call = page.locator("article.call").first
    expect(call.locator("ol.timeline")).to_contain_text("dtmfReceived")
    page.screenshot(path=str(artifacts / "2-in-call.png"), full_page=True)
    page.click("#softphone-hangup")
    expect(page.locator("#softphone")).to_have_attribute("data-state", "ended")
    wait(lambda: callback(world, ccid, "CallDisconnected"), what="the app to hear the hang-up")


def test_the_browser_rings_as_an_identity_answers_and_both_sides_hear(
    phone_page: Any, callgrid: CallgridServer, identity_client: Any, artifacts: Path
) -> None:
    page = phone_page
    user = identity_client.create_user().properties["id"]
    log_in(page, callgrid)
    page.fill('#softphone-form input[name="from"]', user)
    page.click("#softphone-register")
    softphone = page.locator("#softphone")
    expect(softphone).to_have_attribute("data-state", "waiting")

    # Someone on the public network calls the identity: the browser rings, says who, and answers.
    placed = callgrid.place_call(PSTN_CALLER, user)
    expect(softphone).to_have_attribute("data-state", "ringing")
    expect(page.locator("#softphone-caller")).to_have_text("4:" + PSTN_CALLER)
    page.screenshot(path=str(artifacts / "1-ringing.png"), full_page=True)
    page.click("#softphone-answer")
    expect(softphone).to_have_attribute("data-state", "inCall")
    assert callgrid.get_call(placed["serverCallId"])["state"] == "connected"

    # The caller speaks and the browser hears it; the browser's microphone reaches the caller.
    caller = party_path(placed["serverCallId"], "4:" + PSTN_CALLER)
    client = callgrid.client()
    client.request("POST", caller + ":say", {"text": "hello, this is your caller speaking"})
    wait(lambda: _heard_peak(page) > 0.02 or None, what="the caller's voice to reach the browser")

    def caller_heard_the_microphone() -> bool | None:
        audio = codecs.decode(client.download(caller + "/audio"))
        return np.count_nonzero(np.abs(audio) > 500) > RATE // 4 or None

    wait(caller_heard_the_microphone, what="the browser's microphone to reach the caller")
    page.screenshot(path=str(artifacts / "2-in-call.png"), full_page=True)

    page.click("#softphone-hangup")
    expect(softphone).to_have_attribute("data-state", "ended")
    wait(lambda: callgrid.get_call(placed["serverCallId"])["state"] == "disconnected" or None, what="the call to end")
