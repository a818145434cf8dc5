"""File prompts are fetched whole and play for their whole length, however slowly their server sends them."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from azure.communication.callautomation import FileSource

from callgrid.media import codecs
from callgrid.media.prompts import PromptCache, PromptLoader
from callgrid.platform.audio import wav_bytes
from callgrid.testing import CallgridServer, WebhookReceiver
from tests.media.voice_support import RATE, answer
from tests.platform.calling_support import World, make_world

LONG = codecs.encode_wav([(1000 * np.sin(2 * np.pi * 300 * np.arange(int(9.8 * RATE)) / RATE)).astype(np.int16)])


class SlowServer:
    """Sends the file in 16 KB pieces with a pause between: a single read() sees only the first."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(LONG)))
                self.end_headers()
                for i in range(0, len(LONG), 16384):
                    self.wfile.write(LONG[i : i + 16384])
                    self.wfile.flush()
                    time.sleep(0.01)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/long.wav"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def slow() -> Iterator[SlowServer]:
    server = SlowServer()
    yield server
    server.close()


def test_a_slowly_served_prompt_plays_for_its_whole_length(
    fresh: CallgridServer, webhook: WebhookReceiver, slow: SlowServer
) -> None:
    world: World = make_world(fresh, webhook)
    _, ccid = answer(world)
    world.automation.get_call_connection(ccid).play_media_to_all([FileSource(slow.url)])
    assert world.callback_types(ccid, 3)[2] == "PlayStarted"
    world.server.advance(9.7)
    assert len(world.webhook.callbacks()) == 3
    world.server.advance(0.2)
    assert world.callback_types(ccid, 4)[3] == "PlayCompleted"


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
        probe = await PromptLoader(PromptCache()).file(f"http://127.0.0.1:{port}/prompt.wav")
    assert probe.duration == 2.5, probe
