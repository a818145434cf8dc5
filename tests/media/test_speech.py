"""The offline speech engines: espeak-ng speaks, PocketSphinx recognises what it said, the detector finds it."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("pocketsphinx")
pytest.importorskip("av")
if shutil.which("espeak-ng") is None:
    pytest.skip("espeak-ng is not installed", allow_module_level=True)

from callgrid.media import speech
from callgrid.media.speech import (
    SAMPLE_RATE,
    Recognizer,
    SpeechStarted,
    SpeechUnavailable,
    UtteranceDetector,
    UtteranceEnded,
    UtteranceEvent,
    resolve_voice,
    synthesize,
    synthesize_blocking,
)

# The same whatever store CALLGRID_TEST_STORE names (no server of the suite's, or stores named here):
# `make test-postgresql` leaves it out.
pytestmark = pytest.mark.store_independent

CHOICES = ["sales", "support", "billing"]


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    return Recognizer()  # loading the model takes about half a second: once for the module


@pytest.fixture
def fresh_cache() -> Iterator[None]:
    speech.clear_synthesis_cache()
    yield
    speech.clear_synthesis_cache()


def _speech_bounds(pcm: np.ndarray) -> tuple[float, float]:
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 200)
    return loud[0] / SAMPLE_RATE, (loud[-1] + 1) / SAMPLE_RATE


def _feed(detector: UtteranceDetector, pcm: np.ndarray) -> list[UtteranceEvent]:
    events: list[UtteranceEvent] = []
    for pos in range(0, len(pcm), 320):
        events.extend(detector.feed(pcm[pos : pos + 320]))
    return events


# -- text-to-speech ---------------------------------------------------------------------------------


async def test_synthesize_gives_16khz_int16_speech_and_caches(fresh_cache: None) -> None:
    pcm = await synthesize("Hello, and welcome to Contoso.")
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    assert 1.0 < len(pcm) / SAMPLE_RATE < 4.0
    assert np.abs(pcm.astype(np.int32)).max() > 3000
    assert await synthesize("Hello, and welcome to Contoso.") is pcm  # prompts repeat: served from the cache
    assert synthesize_blocking("Hello, and welcome to Contoso.") is pcm
    assert not pcm.flags.writeable  # shared, so nobody may change it


async def test_empty_text_is_no_audio() -> None:
    assert len(await synthesize("   ")) == 0


def test_voice_mapping() -> None:
    jenny = resolve_voice("en-US-JennyNeural")
    guy = resolve_voice("en-US-GuyNeural")
    assert jenny.name == guy.name == "en-us"
    assert jenny.variant != guy.variant  # female and male renderings
    assert resolve_voice("en-GB-SoniaNeural") == resolve_voice(None, "en-GB", "female")
    assert resolve_voice("en-GB-SoniaNeural").name == "en-gb"
    assert resolve_voice(None, "de-DE").name == "de"
    assert resolve_voice(None, "es-MX").name == "es-419"
    assert resolve_voice("en-US-AvaMultilingualNeural") == jenny
    assert resolve_voice("fr-FR") == resolve_voice(None, "fr-FR")  # a locale given as the voice


async def test_unknown_voice_falls_back_to_english(recognizer: Recognizer) -> None:
    assert resolve_voice("xx-YY-NobodyNeural").name == "en-us"
    assert resolve_voice(None, "tlh-QO").name == "en-us"
    pcm = await synthesize("support", voice="xx-YY-NobodyNeural")
    assert (await recognizer.recognize_async(pcm, CHOICES)).text == "support"


async def test_ssml_with_an_azure_voice_is_spoken(recognizer: Recognizer) -> None:
    ssml = '<speak version="1.0" xml:lang="en-US"><voice name="en-US-JennyNeural">Hello</voice></speak>'
    pcm = await synthesize(ssml, ssml=True)
    assert len(pcm) > SAMPLE_RATE // 4
    assert (await recognizer.recognize_async(pcm, ["hello", "goodbye"])).text == "hello"
    # Azure's voice element picks the espeak-ng voice, and espeak-ng reads the markup as SSML.
    args, markup = speech._espeak_command(ssml, None, None, True, None)
    assert resolve_voice("en-US-JennyNeural").args() == args[args.index("-v") : args.index("-v") + 4]
    assert "-m" in args and markup == b"<speak>Hello</speak>"


async def test_ssml_extensions_espeak_does_not_know_keep_their_text(recognizer: Recognizer) -> None:
    ssml = (
        '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xmlns:mstts="https://www.w3.org/2001/mstts"'
        ' xml:lang="en-US"><voice name="en-US-GuyNeural"><mstts:express-as style="cheerful">Say'
        ' <emphasis>sales</emphasis><mstts:silence type="Tailing" value="100ms"/></mstts:express-as>'
        '<bookmark mark="end"/></voice></speak>'
    )
    markup, voice, language = speech._ssml_for_espeak(ssml)
    assert (voice, language) == ("en-US-GuyNeural", "en-US")
    assert "mstts" not in markup and "voice" not in markup and "<emphasis>sales</emphasis>" in markup
    pcm = await synthesize(ssml, ssml=True)
    assert (await recognizer.recognize_async(pcm, CHOICES)).text == "sales"


async def test_invalid_ssml_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid SSML"):
        await synthesize("<speak>unclosed", ssml=True)


async def test_missing_espeak_is_reported(monkeypatch: pytest.MonkeyPatch, fresh_cache: None) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(SpeechUnavailable, match="espeak-ng is not installed"):
        await synthesize("anyone there?")
    with pytest.raises(SpeechUnavailable, match="espeak-ng is not installed"):
        synthesize_blocking("anyone there?")


async def test_failing_espeak_is_reported(monkeypatch: pytest.MonkeyPatch, fresh_cache: None) -> None:
    monkeypatch.setattr(speech, "resolve_voice", lambda *args: speech.EspeakVoice("nonexistentvoice"))
    with pytest.raises(SpeechUnavailable, match="espeak-ng failed"):
        await synthesize("anyone there?")


# -- recognition ------------------------------------------------------------------------------------


@pytest.mark.parametrize("voice", [None, "en-US-JennyNeural"])
async def test_choice_among_phrases(recognizer: Recognizer, voice: str | None) -> None:
    result = await recognizer.recognize_async(await synthesize("I want support", voice=voice), CHOICES)
    assert result.text == "support"
    assert 0.0 < result.confidence <= 1.0
    [(word, start, end)] = result.words
    assert word == "support" and 0.2 < start < end <= len(await synthesize("I want support", voice=voice)) / 16000


@pytest.mark.parametrize(
    ("said", "expected"),
    [("I want sales", "I want sales"), ("sales", "sales"), ("I want support", "support"), ("billing", "billing")],
)
async def test_choice_between_overlapping_phrases(recognizer: Recognizer, said: str, expected: str) -> None:
    phrases = ["Sales", "support", "billing", "I want sales"]
    result = await recognizer.recognize_async(await synthesize(said, voice="en-US-JennyNeural"), phrases)
    assert result.text.lower() == expected.lower()


async def test_phrases_outside_the_dictionary(recognizer: Recognizer) -> None:
    phrases = ["Fabrikam", "Contoso!", "24 hours"]
    assert (await recognizer.recognize_async(await synthesize("contoso"), phrases)).text == "Contoso!"
    assert (await recognizer.recognize_async(await synthesize("twenty four hours"), phrases)).text == "24 hours"


async def test_other_speech_matches_no_phrase(recognizer: Recognizer) -> None:
    result = await recognizer.recognize_async(await synthesize("what is the weather like"), CHOICES)
    assert result.text == "" and result.confidence == 0.0


async def test_free_dictation_brings_back_most_words(recognizer: Recognizer) -> None:
    sentences = ["I would like to speak to an agent about my bill", "what time do you open tomorrow"]
    said = heard = 0
    for sentence in sentences:
        result = await recognizer.recognize_async(await synthesize(sentence))
        words = speech.normalize_words(sentence)
        said += len(words)
        heard += sum(word in result.text.split() for word in words)
        assert 0.0 < result.confidence <= 1.0
        assert [w for w, _, _ in result.words] == result.text.split()
    assert heard / said >= 0.75


async def test_recognition_is_deterministic_and_concurrency_safe(recognizer: Recognizer) -> None:
    pcm = await synthesize("I would like to speak to an agent about my bill")
    results = await asyncio.gather(*(recognizer.recognize_async(pcm) for _ in range(3)))
    assert len({r.text for r in results}) == 1


def test_silence_is_nothing(recognizer: Recognizer) -> None:
    assert recognizer.recognize(np.zeros(SAMPLE_RATE, dtype=np.int16)) == speech.NOTHING
    assert recognizer.recognize(np.zeros(SAMPLE_RATE, dtype=np.int16), CHOICES).text == ""
    with pytest.raises(ValueError):
        recognizer.recognize(np.zeros(10, dtype=np.float32))


def test_ipa_to_arpabet() -> None:
    assert speech.ipa_to_arpabet("kəntˈoʊsoʊ") == "K AH N T OW S OW"  # noqa: RUF001
    assert speech.ipa_to_arpabet("twˈɛnti fˈoːɹ") == "T W EH N T IY F AO R"  # noqa: RUF001
    assert speech.ipa_to_arpabet("ʘ") is None


# -- utterance detection ----------------------------------------------------------------------------


@pytest.mark.parametrize("noise", [0.0, 30.0, 300.0])
async def test_detector_finds_one_utterance(recognizer: Recognizer, noise: float) -> None:
    said = await synthesize("I want support")
    first, last = _speech_bounds(said)
    audio = np.concatenate([np.zeros(SAMPLE_RATE), said, np.zeros(SAMPLE_RATE)])
    if noise:
        audio = audio + np.random.default_rng(7).normal(0.0, noise, len(audio))
    pcm = np.clip(audio, -32768, 32767).astype(np.int16)

    events = _feed(UtteranceDetector(), pcm)
    assert [e.kind for e in events] == ["speech_started", "utterance_ended"]
    started, ended = events
    assert isinstance(started, SpeechStarted) and isinstance(ended, UtteranceEnded)
    assert abs(started.start - (1.0 + first)) < 0.1
    assert abs(ended.start - started.start) < 1e-9 and abs(ended.end - (1.0 + last)) < 0.1
    assert not ended.truncated
    # Pre-roll before the onset and a short tail: the whole word is there to recognise.
    assert len(ended.pcm) / SAMPLE_RATE >= ended.end - ended.start + 0.3
    assert (await recognizer.recognize_async(ended.pcm, CHOICES)).text == "support"


def test_detector_ignores_silence_noise_and_clicks() -> None:
    detector = UtteranceDetector()
    assert _feed(detector, np.zeros(2 * SAMPLE_RATE, dtype=np.int16)) == []
    noise = np.random.default_rng(1).normal(0.0, 30.0, 2 * SAMPLE_RATE).astype(np.int16)
    assert _feed(detector, noise) == []
    click = np.zeros(SAMPLE_RATE, dtype=np.int16)
    click[16000 // 2 : 16000 // 2 + 320] = 20000
    assert _feed(detector, click) == []
    assert detector.flush() == []


def test_detector_waits_for_the_end_silence_and_cuts_long_speech() -> None:
    tone = (8000 * np.sin(np.arange(3 * SAMPLE_RATE) * 2 * np.pi * 300 / SAMPLE_RATE)).astype(np.int16)
    gap = np.zeros(int(0.4 * SAMPLE_RATE), dtype=np.int16)  # shorter than the 0.5 s end silence
    detector = UtteranceDetector(max_utterance=10.0)
    events = _feed(detector, np.concatenate([gap, tone[:8000], gap, tone[:8000], np.zeros(SAMPLE_RATE, np.int16)]))
    assert [e.kind for e in events] == ["speech_started", "utterance_ended"]  # one utterance across the pause

    detector = UtteranceDetector(max_utterance=1.0)
    events = _feed(detector, np.concatenate([gap, tone[: int(2.5 * SAMPLE_RATE)]]))
    assert [(e.kind, e.start) for e in events] == [
        ("speech_started", 0.4),
        ("utterance_ended", 0.4),
        ("speech_started", 1.4),
        ("utterance_ended", 1.4),
        ("speech_started", 2.4),
    ]
    cut = events[1]
    assert isinstance(cut, UtteranceEnded) and cut.truncated and cut.end == pytest.approx(1.4)
    assert len(cut.pcm) == int(1.3 * SAMPLE_RATE)  # 0.3 s of pre-roll, then the longest utterance allowed
    assert detector.in_speech
    [last] = detector.flush()
    assert isinstance(last, UtteranceEnded) and not last.truncated and last.end == pytest.approx(2.9)


def test_detector_accepts_any_chunking() -> None:
    tone = (8000 * np.sin(np.arange(SAMPLE_RATE) * 2 * np.pi * 300 / SAMPLE_RATE)).astype(np.int16)
    pcm = np.concatenate([np.zeros(SAMPLE_RATE, np.int16), tone, np.zeros(SAMPLE_RATE, np.int16)])
    by_frame = _feed(UtteranceDetector(), pcm)
    detector = UtteranceDetector()
    odd = [e for pos in range(0, len(pcm), 777) for e in detector.feed(pcm[pos : pos + 777])]
    assert [(e.kind, e.start) for e in odd] == [(e.kind, e.start) for e in by_frame]


def test_display_text_is_sentence_case_with_a_capital_i_and_a_period() -> None:
    assert speech.display_text("i think i'd like the balance") == "I think I'd like the balance."
    assert speech.display_text("hello") == "Hello."
    assert speech.display_text("is it open?") == "Is it open?"
    assert speech.display_text("  ") == ""
