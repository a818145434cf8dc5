"""Offline speech for the media plane: espeak-ng speaks, PocketSphinx listens.

Why this exists: Azure turns TextSource/SsmlSource prompts into audio and recognises what callers say
(`recognize` with speech or choices). callgrid runs on one machine with no network and no cloud keys, so it
does both locally with engines that are small, deterministic and need no downloads at run time: espeak-ng
(a Debian package, run as a subprocess) and PocketSphinx (its wheel ships a US-English model).

Everything here is 16 kHz mono signed 16-bit PCM in numpy int16 arrays, the format of the media plane.

Measured choices worth knowing before changing them:

* PocketSphinx all but fails on audio containing digital silence (runs of exact zeros, which espeak-ng and
  callgrid's own silent frames produce): free dictation of espeak speech fell from about 0.9 to 0.3 of the
  words. The recogniser therefore adds a faint, seeded noise floor (1 % of the speech level) before decoding.
* PocketSphinx carries state from one utterance to the next (the same audio decoded differently after
  other audio), so the feature extraction is reset before each utterance: the same audio, the same answer.
* espeak-ng's Klatt voices are recognised far better than its default or `+f3` voices (0.9 of dictated words
  against 0.3 to 0.7), so prompts are spoken with `+klatt` (male) and `+klatt4` at a higher pitch (female).
* A grammar of the phrases alone picks among short phrases reliably for about 1 % of real time, but a phrase
  inside a longer answer ("I want support" when "I want sales" is also a choice) can be forced onto the wrong
  phrase. When the grammar's answer looks doubtful the recogniser also dictates freely (about 40 % of real
  time) and prefers a phrase found in what was dictated, by words and then by sound; speech that matches no
  phrase then gives no phrase rather than the grammar's forced guess.
"""

# ruff: noqa: RUF001  # the IPA table below is meant to hold look-alike letters
from __future__ import annotations

import asyncio
import functools
import re
import shutil
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections import OrderedDict, deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

PCM: TypeAlias = npt.NDArray[np.int16]

SAMPLE_RATE: Final = 16_000
FRAME_SAMPLES: Final = 320  # 20 ms
# ACS's "Gather user input with Recognize action" documents 0.5 s as the default end-of-speech silence
# (endSilenceTimeout) of speech recognition; the Speech SDK's single-utterance recognition stops after
# "a maximum of about 30 seconds of audio".
DEFAULT_END_SILENCE: Final = 0.5
DEFAULT_MAX_UTTERANCE: Final = 30.0

_ESPEAK_TIMEOUT: Final = 60.0
_SYNTH_CACHE_ENTRIES: Final = 64


class SpeechUnavailable(Exception):
    """The offline speech engine (espeak-ng or PocketSphinx) is missing or failed."""


# --------------------------------------------------------------------------------------------------
# Text-to-speech
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EspeakVoice:
    """How espeak-ng is asked to speak: its voice (a language), a variant and a pitch (0..99)."""

    name: str
    variant: str | None = None
    pitch: int | None = None

    def args(self) -> list[str]:
        voice = f"{self.name}+{self.variant}" if self.variant else self.name
        return ["-v", voice] if self.pitch is None else ["-v", voice, "-p", str(self.pitch)]


_MALE: Final = EspeakVoice("", "klatt")
_FEMALE: Final = EspeakVoice("", "klatt4", 70)
_FALLBACK_VOICE: Final = "en-us"

# Azure locales whose espeak-ng voice is not simply the locale or its language.
_LOCALE_VOICES: Final[dict[str, str]] = {
    "en-us": "en-us",
    "en-ca": "en-us",
    "en-ph": "en-us",
    "zh-cn": "cmn",
    "zh-tw": "cmn",
    "zh-hk": "yue",
    "yue-cn": "yue",
    "wuu-cn": "cmn",
    "fr-ca": "fr-fr",
    "no-no": "nb",
    "nn-no": "nb",
    "fil-ph": "en-us",
    "iw-il": "he",
}

# Given names of Azure neural voices, by gender, for the locales callgrid is most used with.
_FEMALE_NAMES_TEXT: Final = """
    jenny aria sara jane nancy amber ashley cora elizabeth michelle monica emma ava ana serena evelyn
    sonia libby mia abbi bella hollie olivia maisie natasha annette carly elsie freya joanne kim tina
    clara neerja aashi ananya kavya emily imani leah luna molly
    katja amala louisa maja tanja elke gisela klarissa seraphina ingrid leni
    denise brigitte celeste coralie eloise jacqueline josephine yvette vivienne sylvie ariane charline
    elvira abril estrella irene laia lia triana vera ximena dalia beatriz candela carlota larissa marina
    renata nuria
    isabella elsa fabiola fiamma giuseppina irma palmira pierina
    francisca brenda elza giovanna leila leticia manuela thalita yara raquel fernanda
    xiaoxiao xiaoyi xiaochen xiaohan xiaomeng xiaomo xiaoqiu xiaorui xiaoshuang xiaoxuan xiaoyan xiaoyou
    xiaozhen hiugaai hiumaan hsiaochen hsiaoyu
    nanami aoi mayu shiori sunhi jimin seoyeon yujin
    colette fenna hanna sofie christel pernille iselin zofia agnieszka svetlana dariya polina
"""
_MALE_NAMES_TEXT: Final = """
    guy davis tony jason brandon christopher eric jacob andrew brian roger steffan adam derek dustin
    kai ryan alfie elliot ethan noah oliver thomas william darren duncan ken liam connor mitchell
    prabhat aarav kunal rehaan chilemba luke wayan
    conrad bernd christoph kasper killian klaus ralf florian jan
    henri alain claude jerome maurice yves remy antoine jean thierry gerard lucien
    alvaro arnau dario elias nil saul teo jorge cecilio gerardo liberto luciano pelayo yago
    diego benigno calimero cataldo gianni lisandro rinaldo giuseppe
    duarte antonio donato fabio humberto julio nicolau valerio macerio
    yunxi yunjian yunyang yunfeng yunhao yunjie yunye yunze wanlung yunjhe
    keita daichi naoki injoon bongjin gookmin hyunsu
    maarten arnaud finn jeppe christian mattias marek alexey dmitry ostap
"""
_FEMALE_NAMES: Final = frozenset(_FEMALE_NAMES_TEXT.split())
_MALE_NAMES: Final = frozenset(_MALE_NAMES_TEXT.split())


@functools.cache
def _installed_voices() -> frozenset[str]:
    """Lower-case espeak-ng voice names (languages and voice files) installed here; empty if unknown."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return frozenset()
    try:
        listing = subprocess.run([exe, "--voices"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    names: set[str] = set()
    for line in listing.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5:
            names.add(cols[1].lower())
            names.add(cols[4].rsplit("/", 1)[-1].lower())
    return frozenset(names)


def _voice_for_locale(locale: str) -> str:
    installed = _installed_voices()
    locale = locale.replace("_", "-").lower()
    language, _, region = locale.partition("-")
    candidates = [locale, _LOCALE_VOICES.get(locale, "")]
    if language == "en":
        candidates.append("en-us" if region in ("", "us") else "en-gb")
    elif language == "es" and region not in ("", "es"):
        candidates.append("es-419")  # espeak-ng has Spain and Latin America
    elif language == "pt":
        candidates.append("pt-br" if region == "br" else "pt")
    candidates.append(language)
    for candidate in filter(None, candidates):
        if candidate in installed or (not installed and candidate in _LOCALE_VOICES.values()):
            return candidate
    return _FALLBACK_VOICE


def resolve_voice(voice: str | None, language: str | None = None, voice_kind: str | None = None) -> EspeakVoice:
    """The espeak-ng voice for an Azure voice name (`en-US-JennyNeural`) and/or locale (`de-DE`).

    Unknown names and locales fall back to US English; the gender comes from `voice_kind` ("male"/"female",
    as in ACS's TextSource) or from the voice's given name when it is a known Azure voice.
    """
    locale = language
    given = ""
    if voice:
        bare = voice.split(":", 1)[0].strip()
        if bare.lower() in _installed_voices() and not any(c.isupper() for c in bare):
            return EspeakVoice(bare)  # already an espeak-ng voice ("en-gb"): the caller knows best
        parts = bare.split("-")
        if len(parts) == 2 and re.fullmatch(r"[a-zA-Z]{2,3}-[a-zA-Z]{2,4}", bare):  # a locale given as the voice
            locale = locale or bare
        elif len(parts) >= 3:  # <language>-<REGION>[-...]-<Name>[Multilingual]Neural
            locale = locale or "-".join(parts[:-1])
            match = re.match(r"[A-Z][a-z]+", parts[-1])
            given = match.group(0).lower() if match else ""
    kind = (voice_kind or "").lower()
    if kind not in ("male", "female"):
        kind = "female" if given in _FEMALE_NAMES else "male" if given in _MALE_NAMES else ""
    style = _FEMALE if kind == "female" else _MALE
    return EspeakVoice(_voice_for_locale(locale or "en-US"), style.variant, style.pitch)


# SSML elements espeak-ng understands (kept); everything else is unwrapped to its text, or dropped.
_SSML_KEEP: Final = frozenset({"prosody", "break", "emphasis", "say-as", "sub", "p", "s", "paragraph", "sentence"})
_SSML_DROP: Final = frozenset({"bookmark", "lexicon", "silence", "backgroundaudio", "viseme", "audioduration"})


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].lower()


def _ssml_for_espeak(ssml: str) -> tuple[str, str | None, str | None]:
    """Azure SSML rewritten for espeak-ng: (markup, first voice name, xml:lang of the document).

    espeak-ng's SSML knows the W3C basics but not Azure's voice names or its mstts extensions, so <voice>
    is dropped (its name picks the espeak voice instead) and unknown elements keep only their text.
    """
    try:
        root = ET.fromstring(ssml)
    except ET.ParseError as exc:
        raise ValueError(f"invalid SSML: {exc}") from exc
    xml_lang = "{http://www.w3.org/XML/1998/namespace}lang"
    language = root.get(xml_lang)
    voice_name: str | None = None
    out = ET.Element("speak")

    def append_text(parent: ET.Element, text: str | None) -> None:
        if not text:
            return
        if len(parent):
            parent[-1].tail = (parent[-1].tail or "") + text
        else:
            parent.text = (parent.text or "") + text

    def copy(src: ET.Element, dst: ET.Element) -> None:
        nonlocal voice_name
        append_text(dst, src.text)
        for child in src:
            name = _local(child.tag)
            if name == "voice" and voice_name is None:
                voice_name = child.get("name")
            if name in _SSML_KEEP:
                attrs = {_local(k): v for k, v in child.attrib.items()}
                copy(child, ET.SubElement(dst, name, attrs))
            elif name not in _SSML_DROP:
                copy(child, dst)  # voice, lang, mstts:express-as, phoneme, audio (its fallback text)...
            append_text(dst, child.tail)

    copy(root, out)
    return ET.tostring(out, encoding="unicode"), voice_name, language


class _LRU:
    """A small thread-safe LRU of synthesised prompts (IVR prompts repeat)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[tuple[Any, ...], PCM] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> PCM | None:
        with self._lock:
            pcm = self._items.get(key)
            if pcm is not None:
                self._items.move_to_end(key)
            return pcm

    def put(self, key: tuple[Any, ...], pcm: PCM) -> None:
        with self._lock:
            self._items[key] = pcm
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_SYNTH_CACHE: Final = _LRU(_SYNTH_CACHE_ENTRIES)


def clear_synthesis_cache() -> None:
    _SYNTH_CACHE.clear()


def _espeak_command(
    text: str, voice: str | None, language: str | None, ssml: bool, voice_kind: str | None
) -> tuple[list[str], bytes]:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SpeechUnavailable(
            "espeak-ng is not installed (or not on PATH): text-to-speech needs it, e.g. `apt-get install espeak-ng`"
        )
    body = text
    if ssml:
        body, ssml_voice, ssml_language = _ssml_for_espeak(text)
        voice = voice or ssml_voice
        language = language or ssml_language
    # Text goes through stdin so that nothing in it can be read as an option.
    args = [exe, "--stdout", "--stdin", *resolve_voice(voice, language, voice_kind).args()]
    if ssml:
        args.append("-m")
    return args, body.encode()


def _parse_wav(data: bytes) -> tuple[npt.NDArray[np.int16], int]:
    """PCM and rate of espeak-ng's WAV; its sizes are placeholders when it writes to a pipe, so trust the bytes."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise SpeechUnavailable("espeak-ng produced no WAV audio")
    rate = 0
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = pos + 8
        if chunk == b"fmt ":
            channels = int.from_bytes(data[body + 2 : body + 4], "little")
            rate = int.from_bytes(data[body + 4 : body + 8], "little")
            bits = int.from_bytes(data[body + 14 : body + 16], "little")
            if channels != 1 or bits != 16:
                raise SpeechUnavailable(f"espeak-ng produced {channels} channel(s) of {bits}-bit audio")
        elif chunk == b"data":
            raw = data[body : min(len(data), body + size)]
            raw = raw[: len(raw) // 2 * 2]
            if not rate:
                break
            return np.frombuffer(raw, dtype="<i2").astype(np.int16), rate
        pos = body + size + (size & 1)
    raise SpeechUnavailable("espeak-ng produced a WAV without audio data")


def resample(pcm: PCM, rate: int, target: int = SAMPLE_RATE) -> PCM:
    """Mono int16 PCM from `rate` to `target` Hz (libswresample through PyAV: band-limited, not interpolated)."""
    if rate == target or len(pcm) == 0:
        return pcm
    try:
        import av
    except ImportError as exc:
        raise SpeechUnavailable("PyAV (av) is needed to resample speech") from exc
    resampler = av.AudioResampler(format="s16", layout="mono", rate=target)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm).reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    frames = resampler.resample(frame) + resampler.resample(None)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16)


def _finish(stdout: bytes, stderr: bytes, returncode: int | None) -> PCM:
    if returncode != 0:
        detail = stderr.decode(errors="replace").strip() or f"exit status {returncode}"
        raise SpeechUnavailable(f"espeak-ng failed: {detail}")
    pcm, rate = _parse_wav(stdout)
    out = resample(pcm, rate)
    out.flags.writeable = False  # shared through the cache
    return out


def _cache_key(
    text: str, voice: str | None, language: str | None, ssml: bool, voice_kind: str | None
) -> tuple[Any, ...]:
    return (text, voice, language, ssml, voice_kind)


_EMPTY: Final[PCM] = np.zeros(0, dtype=np.int16)


async def synthesize(
    text: str,
    *,
    voice: str | None = None,
    language: str | None = None,
    ssml: bool = False,
    voice_kind: str | None = None,
) -> PCM:
    """Speak `text` (or SSML) as 16 kHz mono int16 PCM. The result is read-only and may be shared."""
    if not text.strip():
        return _EMPTY
    key = _cache_key(text, voice, language, ssml, voice_kind)
    cached = _SYNTH_CACHE.get(key)
    if cached is not None:
        return cached
    args, data = _espeak_command(text, voice, language, ssml, voice_kind)
    try:
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except OSError as exc:
        raise SpeechUnavailable(f"cannot run espeak-ng: {exc}") from exc
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(data), _ESPEAK_TIMEOUT)
    except BaseException as exc:  # timeout or cancellation: do not leave espeak-ng behind
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if isinstance(exc, TimeoutError):
            raise SpeechUnavailable(f"espeak-ng took more than {_ESPEAK_TIMEOUT:.0f} s") from exc
        raise
    pcm = _finish(stdout, stderr, proc.returncode)
    _SYNTH_CACHE.put(key, pcm)
    return pcm


def synthesize_blocking(
    text: str,
    *,
    voice: str | None = None,
    language: str | None = None,
    ssml: bool = False,
    voice_kind: str | None = None,
) -> PCM:
    """`synthesize` for threads and scripts (shares its cache)."""
    if not text.strip():
        return _EMPTY
    key = _cache_key(text, voice, language, ssml, voice_kind)
    cached = _SYNTH_CACHE.get(key)
    if cached is not None:
        return cached
    args, data = _espeak_command(text, voice, language, ssml, voice_kind)
    try:
        done = subprocess.run(args, input=data, capture_output=True, timeout=_ESPEAK_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise SpeechUnavailable(f"espeak-ng took more than {_ESPEAK_TIMEOUT:.0f} s") from exc
    except OSError as exc:
        raise SpeechUnavailable(f"cannot run espeak-ng: {exc}") from exc
    pcm = _finish(done.stdout, done.stderr, done.returncode)
    _SYNTH_CACHE.put(key, pcm)
    return pcm


# --------------------------------------------------------------------------------------------------
# Speech recognition
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recognition:
    """What was recognised: the text (with phrases: the phrase chosen, as given; "" for nothing),
    a confidence in 0..1, and each word with its start and end in seconds from the start of the audio."""

    text: str
    confidence: float
    words: list[tuple[str, float, float]] = field(default_factory=list)


NOTHING: Final = Recognition("", 0.0, [])

_PAD_SECONDS: Final = 0.25  # silence around the audio: PocketSphinx wants some before and after speech
_FRAME_RATE: Final = 100  # PocketSphinx frames per second
# When a grammar's answer gets a dictation cross-check (see Recognizer._doubtful): speech longer than 0.08 s
# a phone plus 0.25 s (espeak-ng's phrases take 0.07 s a phone plus up to 0.2 s), or 0.3 s the phrase leaves
# unexplained.
_SECONDS_PER_PHONE: Final = 0.08
_SPEECH_SLACK: Final = 0.25
_UNEXPLAINED_FRAMES: Final = 30
_DITHER: Final = 0.01  # noise floor, relative to the speech level: 40 dB below it
_DITHER_PERCENTILE: Final = 90  # the frame level taken as "the speech level"
_SOUNDS_LIKE: Final = 0.65  # phone similarity from which dictation's words are taken to be a phrase
_GRAMMAR_CACHE: Final = 32

# ARPAbet for espeak-ng's IPA, longest symbols first: pronunciations of words missing from CMUdict.
_IPA_TO_ARPABET: Final[dict[str, str]] = {
    "aɪɚ": "AY ER",
    "aɪə": "AY AH",
    "aʊɚ": "AW ER",
    "ɑːɹ": "AA R",
    "ɔːɹ": "AO R",
    "oːɹ": "AO R",
    "ɛɹ": "EH R",
    "ɪɹ": "IH R",
    "ʊɹ": "UH R",
    "iə": "IY AH",
    "eə": "EH R",
    "ʊə": "UH R",
    "aɪ": "AY",
    "aʊ": "AW",
    "eɪ": "EY",
    "oʊ": "OW",
    "əʊ": "OW",
    "ɔɪ": "OY",
    "tʃ": "CH",
    "dʒ": "JH",
    "iː": "IY",
    "uː": "UW",
    "ɑː": "AA",
    "ɔː": "AO",
    "oː": "AO",
    "ɜː": "ER",
    "n̩": "AH N",
    "l̩": "AH L",
    "m̩": "AH M",
    "i": "IY",
    "ɪ": "IH",
    "ᵻ": "IH",
    "e": "EH",
    "ɛ": "EH",
    "æ": "AE",
    "a": "AE",
    "ɐ": "AH",
    "ʌ": "AH",
    "ə": "AH",
    "ɚ": "ER",
    "ɝ": "ER",
    "ɜ": "ER",
    "ɑ": "AA",
    "ɒ": "AA",
    "ɔ": "AO",
    "o": "OW",
    "u": "UW",
    "ʊ": "UH",
    "p": "P",
    "b": "B",
    "t": "T",
    "d": "D",
    "k": "K",
    "g": "G",
    "ɡ": "G",
    "f": "F",
    "v": "V",
    "θ": "TH",
    "ð": "DH",
    "s": "S",
    "z": "Z",
    "ʃ": "SH",
    "ʒ": "ZH",
    "h": "HH",
    "m": "M",
    "n": "N",
    "ŋ": "NG",
    "l": "L",
    "ɫ": "L",
    "ɹ": "R",
    "r": "R",
    "j": "Y",
    "w": "W",
    "ʍ": "W",
    "ɾ": "T",
    "ʔ": "T",
    "x": "K",
    "ç": "HH",
}
_IPA_IGNORED: Final = frozenset("ˈˌː‿͡-ˑ̃ ")
_IPA_KEYS: Final = sorted(_IPA_TO_ARPABET, key=len, reverse=True)


def ipa_to_arpabet(ipa: str) -> str | None:
    """ARPAbet phones for espeak-ng's IPA of one word, or None if it uses a sound with no ARPAbet phone."""
    phones: list[str] = []
    i = 0
    while i < len(ipa):
        if ipa[i] in _IPA_IGNORED:
            i += 1
            continue
        for key in _IPA_KEYS:
            if ipa.startswith(key, i):
                phones.append(_IPA_TO_ARPABET[key])
                i += len(key)
                break
        else:
            return None
    return " ".join(phones) or None


def _espeak_ipa(words: Sequence[str]) -> list[str | None]:
    """espeak-ng's US-English IPA for each word (one per line), None where it gives nothing."""
    exe = shutil.which("espeak-ng")
    if exe is None or not words:
        return [None] * len(words)
    try:
        done = subprocess.run(
            [exe, "-q", "--ipa", "-v", "en-us", "--stdin"],
            input="\n".join(words) + "\n",
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return [None] * len(words)
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    if len(lines) != len(words):  # espeak joined or split lines: ask word by word
        if len(words) == 1:
            return [" ".join(lines) or None]
        return [_espeak_ipa([w])[0] for w in words]
    return list(lines)


def normalize_words(text: str) -> list[str]:
    """Lower-case words without punctuation (apostrophes inside words kept: "I'd" -> "i'd")."""
    text = text.lower().replace("&", " and ").replace("\u2019", "'")
    return [w.strip("'") for w in re.split(r"[^\w']+", text) if w.strip("'_")]


def display_text(text: str) -> str:
    """Dictation's lexical words as display text: the first letter and the pronoun "I" in capitals and a
    final period ("i think so" -> "I think so."). No other punctuation is guessed."""
    words = text.split()
    if not words:
        return ""
    words = ["I" + w[1:] if w == "i" or w.startswith("i'") else w for w in words]
    sentence = " ".join(words)
    sentence = sentence[0].upper() + sentence[1:]
    return sentence if sentence[-1] in ".?!" else sentence + "."


def _is_subsequence(needle: Sequence[str], haystack: Sequence[str]) -> bool:
    it = iter(haystack)
    return all(word in it for word in needle)


def _phone_similarity(phrase: Sequence[str], heard: Sequence[str]) -> float:
    """1 - the edit distance from `phrase` to the closest stretch of `heard`, per phone of the phrase."""
    if not phrase:
        return 0.0
    row = [0] * (len(heard) + 1)  # a match may start anywhere in what was heard
    for i, phone in enumerate(phrase, 1):
        prev, row[0] = row[0], i
        for j, other in enumerate(heard, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (phone != other))
    return max(0.0, 1.0 - min(row) / len(phrase))


def _dither(pcm: PCM) -> PCM:
    """Pad with silence and add a faint seeded noise floor (1 % of the speech level): see the module docstring."""
    pad = np.zeros(int(_PAD_SECONDS * SAMPLE_RATE), dtype=np.float64)
    signal = np.concatenate([pad, pcm.astype(np.float64), pad])
    usable = len(signal) // 160 * 160
    levels = np.sqrt(np.mean(signal[:usable].reshape(-1, 160) ** 2, axis=1)) if usable else np.zeros(1)
    sigma = max(2.0, _DITHER * float(np.percentile(levels, _DITHER_PERCENTILE)))
    noise = np.random.default_rng(0).normal(0.0, sigma, len(signal))
    return np.clip(np.rint(signal + noise), -32768, 32767).astype(np.int16)


def _speech_extent(padded: PCM) -> tuple[int, int] | None:
    """First and last 10 ms frame that is clearly louder than the quietest part of the audio."""
    usable = len(padded) // 160 * 160
    if not usable:
        return None
    frames = padded[:usable].astype(np.float64).reshape(-1, 160)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1.0)
    threshold = max(float(np.percentile(level, 10)) + 12.0, float(level.max()) - 35.0)
    loud = np.flatnonzero(level > threshold)
    return (int(loud[0]), int(loud[-1])) if len(loud) else None


@dataclass
class _Decoded:
    words: list[tuple[str, int, int]]  # (word, first frame, last frame) without fillers, in padded frames
    probs: list[float]  # each word's posterior probability (lattice), when the search gives one
    phones: list[list[str]]  # each word's pronunciation as decoded

    @property
    def tokens(self) -> list[str]:
        return [w for w, _, _ in self.words]


def _pocketsphinx() -> Any:
    try:
        import pocketsphinx  # type: ignore[import-untyped]  # the wheel ships no type information
    except ImportError as exc:
        raise SpeechUnavailable("PocketSphinx is not installed: `pip install pocketsphinx`") from exc
    return pocketsphinx


class Recognizer:
    """PocketSphinx, US English, 16 kHz: free dictation, or a choice among phrases.

    Creating one loads the model (about half a second): make one and keep it. Calls are serialised by a
    lock because a PocketSphinx decoder is not thread-safe; `recognize_async` runs them on a single shared
    worker thread so that decoding never blocks the event loop.
    """

    _executor: ClassVar[ThreadPoolExecutor | None] = None
    _executor_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, model_dir: str | Path | None = None) -> None:
        ps = _pocketsphinx()
        base = Path(model_dir) if model_dir is not None else Path(ps.get_model_path()) / "en-us"
        try:
            self._decoder: Any = ps.Decoder(
                hmm=str(base / "en-us"),
                lm=str(base / "en-us.lm.bin"),
                dict=str(base / "cmudict-en-us.dict"),
                samprate=SAMPLE_RATE,
                loglevel="FATAL",  # its errors surface as exceptions; its chatter would fill the log
            )
        except (ValueError, RuntimeError) as exc:
            raise SpeechUnavailable(f"cannot load the PocketSphinx model from {base}: {exc}") from exc
        self._lock = threading.Lock()
        self._grammars: OrderedDict[tuple[tuple[str, ...], ...], str] = OrderedDict()
        self._unpronounceable: set[str] = set()  # words neither CMUdict nor espeak-ng could give phones for
        self._serial = 0

    @classmethod
    async def create(cls, model_dir: str | Path | None = None) -> Recognizer:
        """Load the model on the speech thread rather than the event loop."""
        return await asyncio.get_running_loop().run_in_executor(cls._speech_thread(), cls, model_dir)

    @classmethod
    def _speech_thread(cls) -> ThreadPoolExecutor:
        with cls._executor_lock:
            if cls._executor is None:
                cls._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="callgrid-speech")
            return cls._executor

    async def recognize_async(self, pcm: PCM, phrases: Sequence[str] | None = None) -> Recognition:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._speech_thread(), self.recognize, pcm, phrases)

    def recognize(self, pcm: PCM, phrases: Sequence[str] | None = None) -> Recognition:
        """Recognise one utterance; with `phrases`, say which of them was said (or "" when none fits)."""
        samples = np.asarray(pcm)
        if samples.dtype != np.int16 or samples.ndim != 1:
            raise ValueError("recognize wants 1-D int16 PCM at 16 kHz")
        if not len(samples) or not np.any(samples):
            return NOTHING
        padded = _dither(samples)
        with self._lock:
            if phrases is None:
                return self._dictation(padded)
            return self._choose(padded, phrases)

    # -- decoding ----------------------------------------------------------------------------------

    def _decode(self, padded: PCM, search: str | None) -> _Decoded:
        d = self._decoder
        d.activate_search(search)
        d.reinit_feat()  # forget the last utterance's cepstral mean: the same audio must give the same answer
        d.start_utt()
        d.process_raw(padded.tobytes(), full_utt=True)
        d.end_utt()
        decoded = _Decoded([], [], [])
        for seg in d.seg() or ():
            word = re.sub(r"\(\d+\)$", "", seg.word)
            if word and word[0] not in "<[+":  # <s>, <sil>, [NOISE], ++BREATH++: not words
                decoded.words.append((word, int(seg.start_frame), int(seg.end_frame)))
                decoded.probs.append(float(seg.prob))
                decoded.phones.append((d.lookup_word(seg.word) or "").split())
        return decoded

    @staticmethod
    def _timed(words: Sequence[tuple[str, int, int]]) -> list[tuple[str, float, float]]:
        def at(frame: int) -> float:
            return round(max(0.0, frame / _FRAME_RATE - _PAD_SECONDS), 3)

        return [(w, at(start), at(end + 1)) for w, start, end in words]

    def _dictation(self, padded: PCM) -> Recognition:
        decoded = self._decode(padded, None)
        if not decoded.words:
            return NOTHING
        # Word posteriors from the lattice (bestpath is on by default) make the confidence.
        confidence = float(np.clip(np.mean(decoded.probs), 0.0, 1.0))
        return Recognition(" ".join(decoded.tokens), round(confidence, 3), self._timed(decoded.words))

    # -- phrases -----------------------------------------------------------------------------------

    def _prepare(self, phrases: Sequence[str]) -> dict[tuple[str, ...], str]:
        """Normalised words of each usable phrase -> the phrase as given (first one wins on duplicates)."""
        d = self._decoder
        choices: dict[tuple[str, ...], str] = {}
        wanted = [(phrase, normalize_words(phrase)) for phrase in phrases]
        unknown = self._unpronounceable
        missing = sorted({w for _, words in wanted for w in words if w not in unknown and d.lookup_word(w) is None})
        found: list[tuple[str, str]] = []
        for word, ipa in zip(missing, _espeak_ipa(missing), strict=True):
            phones = ipa_to_arpabet(ipa) if ipa else None  # "24" comes back as two words: one pronunciation
            if phones is None:
                unknown.add(word)
            else:
                found.append((word, phones))
        for i, (word, phones) in enumerate(found, 1):
            d.add_word(word, phones, i == len(found))  # rebuilding the search costs ~0.1 s: once, at the end
        for phrase, words in wanted:
            key = tuple(w for w in words if w not in unknown)
            if key and key not in choices:
                choices[key] = phrase
        return choices

    def _grammar(self, choices: Sequence[tuple[str, ...]]) -> str:
        key = tuple(sorted(choices))
        name = self._grammars.get(key)
        if name is not None:
            self._grammars.move_to_end(key)
            return name
        self._serial += 1
        name = f"phrases{self._serial}"
        alternatives = " | ".join("( " + " ".join(words) + " )" for words in key)
        self._decoder.add_jsgf_string(name, f"#JSGF V1.0;\ngrammar phrases;\npublic <choice> = {alternatives};\n")
        self._grammars[key] = name
        while len(self._grammars) > _GRAMMAR_CACHE:
            _, old = self._grammars.popitem(last=False)
            self._decoder.remove_search(old)
        return name

    def _choose(self, padded: PCM, phrases: Sequence[str]) -> Recognition:
        choices = self._prepare(phrases)
        if not choices:
            raise ValueError("none of the phrases has a word the recogniser can pronounce")
        grammar = self._decode(padded, self._grammar(list(choices)))
        tokens = tuple(grammar.tokens)
        complete = tokens in choices
        if complete and not self._doubtful(padded, grammar, tokens, choices):
            return Recognition(choices[tokens], 0.85, self._timed(grammar.words))

        # Doubtful: dictate freely, then look for the phrases in what was said, by words and then by sound.
        dictated = self._decode(padded, None)
        heard = dictated.tokens
        found = [words for words in choices if _is_subsequence(words, heard)]
        if found:
            best = max(found, key=lambda words: (len(words), words == tokens))
            confidence = 0.9 if best == tokens else 0.75
            return Recognition(choices[best], confidence, self._timed(self._matched(dictated.words, best)))
        heard_phones = self._phones(heard)
        similarity = {words: _phone_similarity(self._phones(words), heard_phones) for words in choices}
        best = max(similarity, key=lambda words: (similarity[words], words == tokens))
        if complete and similarity[tokens] >= similarity[best] - 0.05:
            best = tokens  # the grammar's answer sounds as close as any
        if similarity[best] >= _SOUNDS_LIKE:
            words = grammar.words if best == tokens else self._matched(dictated.words, best)
            return Recognition(choices[best], round(0.7 * similarity[best], 3), self._timed(words))
        if not complete or len(heard) > len(tokens) + 2:
            return NOTHING  # something else was said
        longer = len(heard_phones) > len(self._phones(tokens)) + 2
        if longer and similarity[tokens] < 0.55 and float(np.mean(dictated.probs)) >= 0.7:
            return NOTHING  # dictation is sure it heard other, longer words
        # Dictation heard nothing better (short words often defeat it): keep the grammar's guess.
        return Recognition(choices[tokens], 0.4, self._timed(grammar.words))

    def _phones(self, words: Sequence[str]) -> list[str]:
        phones: list[str] = []
        for word in words:
            phones.extend((self._decoder.lookup_word(word) or "").split())
        return phones

    @staticmethod
    def _doubtful(padded: PCM, grammar: _Decoded, tokens: tuple[str, ...], choices: dict[tuple[str, ...], str]) -> bool:
        """Whether the grammar's complete answer needs checking by dictation: another phrase shares its words,
        or the speech is longer than the phrase could plausibly take, or parts of it are left unexplained
        (all signs of a phrase said inside a longer answer, which a grammar forces onto some phrase)."""
        if any(other != tokens and set(other) & set(tokens) for other in choices):
            return True
        extent = _speech_extent(padded)
        if extent is None:
            return False
        n_phones = sum(len(phones) for phones in grammar.phones)
        if (extent[1] - extent[0] + 1) / _FRAME_RATE > _SECONDS_PER_PHONE * n_phones + _SPEECH_SLACK:
            return True
        first, last = grammar.words[0][1], grammar.words[-1][2]
        uncovered = max(0, first - extent[0]) + max(0, extent[1] - last)
        gaps = max((b[1] - a[2] - 1 for a, b in zip(grammar.words, grammar.words[1:], strict=False)), default=0)
        return uncovered > _UNEXPLAINED_FRAMES or gaps > _UNEXPLAINED_FRAMES

    @staticmethod
    def _matched(words: Sequence[tuple[str, int, int]], phrase: Sequence[str]) -> list[tuple[str, int, int]]:
        """The decoded words that spell `phrase`, matched in order."""
        out: list[tuple[str, int, int]] = []
        it = iter(words)
        for wanted in phrase:
            for word in it:
                if word[0] == wanted:
                    out.append(word)
                    break
        return out


_SHARED: Recognizer | None = None
_SHARED_LOCK: Final = threading.Lock()


def shared_recognizer() -> Recognizer:
    """The process's recogniser, loaded on first use (blocking: call it from the speech thread or at start)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = Recognizer()
        return _SHARED


async def shared_recognizer_async() -> Recognizer:
    """`shared_recognizer` without blocking the event loop while the model loads."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(Recognizer._speech_thread(), shared_recognizer)


# --------------------------------------------------------------------------------------------------
# Utterance detection
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeechStarted:
    """Speech began `start` seconds after the detector's first sample."""

    start: float
    kind: ClassVar[Literal["speech_started"]] = "speech_started"


@dataclass(frozen=True)
class UtteranceEnded:
    """An utterance: its audio (with a little pre-roll and tail), where its speech began and ended (seconds
    from the detector's first sample), and whether it was cut at the maximum length."""

    pcm: PCM = field(repr=False)
    start: float
    end: float
    truncated: bool = False
    kind: ClassVar[Literal["utterance_ended"]] = "utterance_ended"


UtteranceEvent: TypeAlias = SpeechStarted | UtteranceEnded


class UtteranceDetector:
    """Energy-based voice activity detection over 20 ms frames, with an adaptive noise floor.

    A frame is speech when it is `margin_db` above the noise floor and above `min_level_dbfs` (so digital
    silence and faint line noise never count). The floor is the quietest frame of the last `floor_window`
    seconds (minimum statistics): it follows steady noise up or down and is not raised by speech, which
    always pauses somewhere in a few seconds (audio that begins mid-speech is heard from its first pause).
    Speech starts after `onset` seconds of speech frames and ends after `end_silence` seconds without them;
    the utterance keeps `pre_roll` seconds before the onset so the first phoneme is not cut, and a short
    tail after the last speech frame. `feed` takes audio in any chunks; events carry times in seconds from
    the first sample fed.
    """

    def __init__(
        self,
        *,
        end_silence: float = DEFAULT_END_SILENCE,
        max_utterance: float = DEFAULT_MAX_UTTERANCE,
        pre_roll: float = 0.3,
        tail: float = 0.2,
        onset: float = 0.06,
        margin_db: float = 12.0,
        min_level_dbfs: float = -50.0,
        floor_window: float = 3.0,
    ) -> None:
        if end_silence <= 0 or max_utterance <= 0:
            raise ValueError("end_silence and max_utterance must be positive")
        self._end_frames = max(1, round(end_silence * SAMPLE_RATE / FRAME_SAMPLES))
        self._max_samples = int(max_utterance * SAMPLE_RATE)
        self._pre_frames = max(0, round(pre_roll * SAMPLE_RATE / FRAME_SAMPLES))
        self._tail_frames = min(self._end_frames, max(0, round(tail * SAMPLE_RATE / FRAME_SAMPLES)))
        self._onset_frames = max(1, round(onset * SAMPLE_RATE / FRAME_SAMPLES))
        self._margin = margin_db
        self._min_level = min_level_dbfs
        self._floor_frames = max(1, round(floor_window * SAMPLE_RATE / FRAME_SAMPLES))
        self.reset()

    def reset(self) -> None:
        self._pending = np.zeros(0, dtype=np.int16)
        self._frame_index = 0  # frames consumed so far
        self._quietest: deque[tuple[int, float]] = deque()  # (frame, level), levels increasing: window minimum
        self._history: list[PCM] = []  # recent frames before speech (pre-roll and onset)
        self._voiced_run = 0
        self._in_speech = False
        self._utterance: list[PCM] = []
        self._start_frame = 0
        self._last_voiced = 0
        self._silent_run = 0

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    def feed(self, frame: PCM) -> list[UtteranceEvent]:
        """Process audio (ideally one 20 ms frame); returns the events it caused, in order."""
        samples = np.asarray(frame)
        if samples.dtype != np.int16:
            raise ValueError("UtteranceDetector wants int16 PCM")
        data = np.concatenate([self._pending, samples.reshape(-1)]) if len(self._pending) else samples.reshape(-1)
        events: list[UtteranceEvent] = []
        whole = len(data) // FRAME_SAMPLES * FRAME_SAMPLES
        for pos in range(0, whole, FRAME_SAMPLES):
            events.extend(self._frame(data[pos : pos + FRAME_SAMPLES]))
        self._pending = data[whole:].copy()
        return events

    def flush(self) -> list[UtteranceEvent]:
        """End the current utterance now (the caller hung up, or recognition was stopped)."""
        if not self._in_speech:
            return []
        return [self._end(truncated=False)]

    @staticmethod
    def _level(frame: PCM) -> float:
        energy = float(np.mean(frame.astype(np.float64) ** 2))
        return 10 * np.log10(energy / 32768.0**2) if energy > 0 else -120.0

    def _floor(self, index: int, level: float) -> float:
        quietest = self._quietest
        while quietest and quietest[-1][1] >= level:
            quietest.pop()
        quietest.append((index, level))
        while quietest[0][0] <= index - self._floor_frames:
            quietest.popleft()
        return quietest[0][1]

    def _frame(self, frame: PCM) -> list[UtteranceEvent]:
        level = self._level(frame)
        index = self._frame_index
        self._frame_index += 1
        threshold = max(self._floor(index, level) + self._margin, self._min_level)
        if self._in_speech:
            self._utterance.append(frame.copy())
            if level > threshold - 3.0:  # a little hysteresis inside speech
                self._last_voiced = index
                self._silent_run = 0
            else:
                self._silent_run += 1
            if self._silent_run >= self._end_frames:
                return [self._end(truncated=False)]
            if (index + 1 - self._start_frame) * FRAME_SAMPLES >= self._max_samples:
                self._last_voiced = index
                return [self._end(truncated=True)]
            return []

        self._history.append(frame.copy())
        del self._history[: -(self._pre_frames + self._onset_frames)]
        self._voiced_run = self._voiced_run + 1 if level > threshold else 0
        if self._voiced_run < self._onset_frames:
            return []
        self._in_speech = True
        self._start_frame = index - self._onset_frames + 1
        self._last_voiced = index
        self._silent_run = 0
        self._utterance = list(self._history)
        self._history = []
        self._voiced_run = 0
        return [SpeechStarted(self._start_frame * FRAME_SAMPLES / SAMPLE_RATE)]

    def _end(self, *, truncated: bool) -> UtteranceEnded:
        first_kept = self._frame_index - len(self._utterance)  # frame index of the utterance's first frame
        keep = min(len(self._utterance), self._last_voiced + 1 + self._tail_frames - first_kept)
        pcm = np.concatenate(self._utterance[:keep]) if keep > 0 else np.zeros(0, dtype=np.int16)
        event = UtteranceEnded(
            pcm=pcm,
            start=self._start_frame * FRAME_SAMPLES / SAMPLE_RATE,
            end=(self._last_voiced + 1) * FRAME_SAMPLES / SAMPLE_RATE,
            truncated=truncated,
        )
        self._in_speech = False
        self._utterance = []
        self._silent_run = 0
        self._history = []
        return event
