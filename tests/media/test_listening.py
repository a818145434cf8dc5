"""Speech in calls through the official SDK: spoken prompts the caller hears, speech and spoken choices
recognised from what the caller says, barge-in."""

from __future__ import annotations

import numpy as np
import pytest
from azure.communication.callautomation import (
    PhoneNumberIdentifier,
    RecognitionChoice,
    RecognizeInputType,
    SsmlSource,
    TextSource,
)
from azure.communication.callautomation._generated.models import RecognizeCompleted

from callgrid.media.speech import Recognizer
from callgrid.testing import CallgridServer, WebhookReceiver
from tests.media.voice_support import (
    RATE,
    answer,
    callback,
    heard,
    say,
    wait,
    words_of,
)
from tests.platform.calling_support import PSTN_CALLER, World, make_world

# Hears or speaks in real time: runs in the suite's serial pass (see the Makefile), not beside other tests.
pytestmark = pytest.mark.realtime

MENU = [
    RecognitionChoice(label="Sales", phrases=["sales", "buy something"]),
    RecognitionChoice(label="Support", phrases=["support", "help"]),
]


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    return Recognizer()


@pytest.fixture
def world(fresh: CallgridServer, webhook: WebhookReceiver) -> World:
    return make_world(fresh, webhook)


def test_a_caller_says_a_choice_and_the_app_hears_it(world: World) -> None:
    server_call_id, ccid = answer(world)
    connection = world.automation.get_call_connection(ccid)
    connection.start_recognizing_media(
        RecognizeInputType.CHOICES,
        PhoneNumberIdentifier(PSTN_CALLER),
        choices=MENU,
        play_prompt=TextSource(text="Say sales or support.", voice_name="en-US-JennyNeural"),
        operation_context="menu",
    )
    world.server.advance(5)  # the prompt has played (on the call's clock); the app listens now
    say(world, server_call_id, "support")
    completed = callback(world, ccid, "RecognizeCompleted")
    model = RecognizeCompleted.deserialize(completed)
    assert model.recognition_type == "choices"
    assert model.choice_result is not None
    assert model.choice_result.label == "Support"
    assert model.choice_result.recognized_phrase == "support"
    assert model.choice_result.confidence is not None and 0 < model.choice_result.confidence <= 1
    assert model.result_information is not None and model.result_information.sub_code == 8545
    assert model.operation_context == "menu"


def test_free_speech_is_recognised(world: World) -> None:
    server_call_id, ccid = answer(world)
    connection = world.automation.get_call_connection(ccid)
    connection.start_recognizing_media(RecognizeInputType.SPEECH, PhoneNumberIdentifier(PSTN_CALLER))
    sentence = "I would like to pay my phone bill"
    say(world, server_call_id, sentence)
    completed = callback(world, ccid, "RecognizeCompleted")
    assert completed["recognitionType"] == "speech"
    assert completed["resultInformation"]["subCode"] == 8569  # type: ignore[index]
    speech = completed["speechResult"]["speech"]  # type: ignore[index]
    assert len(words_of(speech) & words_of(sentence)) >= 3, speech
    # Nothing more: the initial silence timeout no longer fires once the caller has spoken.
    world.server.advance(10)
    assert not [e for e in world.webhook.callbacks() if e["type"].endswith("RecognizeFailed")]


def test_a_wrong_spoken_choice_fails_as_acs_does(world: World) -> None:
    server_call_id, ccid = answer(world)
    connection = world.automation.get_call_connection(ccid)
    choices = [RecognitionChoice(label="Yes", phrases=["yes"]), RecognitionChoice(label="No", phrases=["no"])]
    connection.start_recognizing_media(RecognizeInputType.CHOICES, PhoneNumberIdentifier(PSTN_CALLER), choices=choices)
    say(world, server_call_id, "what is the weather like")
    failed = callback(world, ccid, "RecognizeFailed")
    # Heard, but no choice's phrase (8547), or nothing a grammar of the phrases could take (8563).
    assert failed["resultInformation"]["subCode"] in (8547, 8563)  # type: ignore[index]


def test_the_caller_hears_a_spoken_prompt(world: World, recognizer: Recognizer) -> None:
    server_call_id, ccid = answer(world)
    connection = world.automation.get_call_connection(ccid)
    text = "I would like to speak to an agent about my bill"
    connection.play_media_to_all([TextSource(text=text, source_locale="en-US", voice_name="en-US-JennyNeural")])
    assert callback(world, ccid, "PlayStarted")

    def loud_enough() -> np.ndarray | None:
        audio = heard(world, server_call_id)
        return audio if np.count_nonzero(np.abs(audio) > 500) > RATE else None

    wait(loud_enough, what="the prompt to be heard")
    wait(lambda: None if _still_talking(heard(world, server_call_id)) else True, what="the prompt to end")
    result = recognizer.recognize(heard(world, server_call_id), None)
    assert len(words_of(result.text) & words_of(text)) >= len(words_of(text)) // 2, result.text


def test_ssml_is_spoken_too(world: World) -> None:
    server_call_id, ccid = answer(world)
    connection = world.automation.get_call_connection(ccid)
    ssml = '<speak version="1.0" xml:lang="en-US"><voice name="en-US-JennyNeural">Goodbye now</voice></speak>'
    connection.play_media_to_all([SsmlSource(ssml_text=ssml)])
    assert callback(world, ccid, "PlayStarted")
    wait(lambda: np.count_nonzero(np.abs(heard(world, server_call_id)) > 500) > RATE // 4 or None, what="speech")


def test_barge_in_stops_the_prompt(world: World) -> None:
    server_call_id, ccid = answer(world)
    connection = world.automation.get_call_connection(ccid)
    long_prompt = "Please listen carefully as our menu options have changed. " * 4
    connection.start_recognizing_media(
        RecognizeInputType.SPEECH,
        PhoneNumberIdentifier(PSTN_CALLER),
        play_prompt=TextSource(text=long_prompt),
        interrupt_prompt=True,
    )
    wait(lambda: np.count_nonzero(np.abs(heard(world, server_call_id)) > 500) > 8000 or None, what="the prompt")
    say(world, server_call_id, "operator please")
    completed = callback(world, ccid, "RecognizeCompleted")
    assert completed["recognitionType"] == "speech"
    # The prompt stopped when the caller spoke: what the caller heard is far shorter than the prompt.
    prompt_seconds = len(long_prompt.split()) / 2.5
    audio = heard(world, server_call_id)
    assert np.count_nonzero(np.abs(audio) > 500) / RATE < prompt_seconds / 2


def _still_talking(audio: np.ndarray) -> bool:
    tail = audio[-RATE // 2 :]
    return bool(np.count_nonzero(np.abs(tail) > 500) > 100)
