"""Fetching a play source: the whole file is measured, however it arrives."""

from __future__ import annotations

import asyncio

from callgrid.platform.audio import wav_bytes
from callgrid.platform.audio_fetch import probe_file


async def test_a_file_sent_in_pieces_is_measured_whole() -> None:
    body = wav_bytes(2.5)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nContent-Type: audio/wav\r\n\r\n"
        writer.write(head.encode() + body[:1000])
        await writer.drain()
        await asyncio.sleep(0.2)  # the rest comes later, as over a busy network
        writer.write(body[1000:])
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        probe = await probe_file(f"http://127.0.0.1:{port}/prompt.wav")
    assert probe.duration == 2.5, probe
