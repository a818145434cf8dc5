"""Fetching a play source over HTTP(S) and measuring it, outside any store transaction."""

from __future__ import annotations

import aiohttp

from callgrid.platform.audio import Probe, UnsupportedAudio, duration_of

MAX_FILE_BYTES = 50 * 1024 * 1024
FETCH_TIMEOUT_SECONDS = 15.0


async def probe_file(url: str) -> Probe:
    """Fetch a play source over HTTP(S) and measure it. Runs outside any store transaction.

    Certificates are not verified: local file servers are often self-signed, as with webhooks.
    """
    if not url.lower().startswith(("http://", "https://")):
        return Probe(sub_code=8536, message=f"Action failed, file could not be downloaded: '{url}' is not http(s).")
    try:
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url, ssl=False) as response:
            if response.status != 200:
                return Probe(
                    sub_code=8536,
                    message=f"Action failed, file could not be downloaded: {url} answered {response.status}.",
                )
            data = await _read_body(response, MAX_FILE_BYTES + 1)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return Probe(
            sub_code=8536, message=f"Action failed, file could not be downloaded: {type(exc).__name__}: {exc}."
        )
    if len(data) > MAX_FILE_BYTES:
        return Probe(sub_code=8535, message="Action failed, invalid file format: the file is larger than 50 MB.")
    try:
        return Probe(duration=duration_of(data))
    except UnsupportedAudio as exc:
        return Probe(sub_code=8535, message=f"Action failed, invalid file format: {exc}.")


async def _read_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body up to `limit` bytes. Not `content.read(limit)`: that returns what has arrived so far, so a
    file sent in several TCP segments was measured short (a prompt that ended early, under load)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)
