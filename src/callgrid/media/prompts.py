"""Prompts: audio an app plays, fetched or synthesised once and kept by source, as ACS caches them.

Loading happens outside any store transaction (a fetch or a synthesis takes time); what the call core
stores is the prompt's key and duration, and the media plane looks the audio up by key when it plays.
"""

from __future__ import annotations

import collections
import hashlib

import numpy as np

from callgrid.media import codecs, speech
from callgrid.media.codecs import Pcm
from callgrid.platform.audio import Probe, UnsupportedAudio, duration_of

RATE = speech.SAMPLE_RATE
MAX_FILE_BYTES = 50 * 1024 * 1024
FETCH_TIMEOUT_SECONDS = 15.0
CACHE_BYTES = 256 * 1024 * 1024


class PromptCache:
    """Decoded prompts by key, least recently used first out once over `limit_bytes`."""

    def __init__(self, limit_bytes: int = CACHE_BYTES) -> None:
        self._items: collections.OrderedDict[str, Pcm] = collections.OrderedDict()
        self._bytes = 0
        self._limit = limit_bytes

    def put(self, key: str, pcm: Pcm) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= old.nbytes
        self._items[key] = pcm
        self._bytes += pcm.nbytes
        while self._bytes > self._limit and len(self._items) > 1:
            _, evicted = self._items.popitem(last=False)
            self._bytes -= evicted.nbytes

    def get(self, key: str) -> Pcm:
        """The prompt's audio; silence if it was evicted since (its duration is known by the caller)."""
        pcm = self._items.get(key)
        if pcm is None:
            return np.zeros(0, dtype=np.int16)
        self._items.move_to_end(key)
        return pcm

    def __contains__(self, key: str) -> bool:
        return key in self._items


class PromptLoader:
    def __init__(self, cache: PromptCache) -> None:
        self.cache = cache

    async def file(self, url: str, cache_id: str | None = None) -> Probe:
        """Fetch a file source whole, decode it, and measure it. Certificates are not verified: local
        prompt servers are often self-signed, as webhooks are."""
        key = "file:" + (cache_id or url)
        if key in self.cache:
            pcm = self.cache.get(key)
            return Probe(duration=len(pcm) / RATE, key=key)
        if not url.lower().startswith(("http://", "https://")):
            return Probe(sub_code=8536, message=f"Action failed, file could not be downloaded: '{url}' is not http(s).")
        import aiohttp  # on first use: importing it is a large share of the server's start

        try:
            timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_SECONDS)
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url, ssl=False) as response:
                if response.status != 200:
                    return Probe(
                        sub_code=8536,
                        message=f"Action failed, file could not be downloaded: {url} answered {response.status}.",
                    )
                # Read to the end: one read() returns only what has arrived so far.
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_chunked(65536):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > MAX_FILE_BYTES:
                        return Probe(
                            sub_code=8535, message="Action failed, invalid file format: the file is larger than 50 MB."
                        )
                data = b"".join(chunks)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Probe(
                sub_code=8536, message=f"Action failed, file could not be downloaded: {type(exc).__name__}: {exc}."
            )
        try:
            duration_of(data)  # ACS's own format rules (WAV: mono 16-bit PCM at 16 kHz; or MP3)
            pcm = codecs.decode(data, rate=RATE)
        except (UnsupportedAudio, codecs.UnsupportedAudio) as exc:
            return Probe(sub_code=8535, message=f"Action failed, invalid file format: {exc}.")
        self.cache.put(key, pcm)
        return Probe(duration=len(pcm) / RATE, key=key)

    async def text(
        self, text: str, *, voice: str | None, language: str | None, ssml: bool, voice_kind: str | None = None
    ) -> Probe:
        digest = hashlib.sha256(f"{voice}|{language}|{voice_kind}|{ssml}|{text}".encode()).hexdigest()[:32]
        key = "tts:" + digest
        if key not in self.cache:
            try:
                pcm = await speech.synthesize(text, voice=voice, language=language, ssml=ssml, voice_kind=voice_kind)
            except speech.SpeechUnavailable as exc:
                return Probe(sub_code=8565, message=f"Action failed, text-to-speech failed: {exc}")
            self.cache.put(key, pcm)
        return Probe(duration=max(len(self.cache.get(key)) / RATE, 0.02), key=key)
