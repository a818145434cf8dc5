"""File prompts play for their whole length, however slowly their server sends them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from azure.communication.callautomation import FileSource

from callgrid.media import codecs
from tests.media.voice_support import RATE, answer
from tests.platform.calling_support import World, make_world
from tests.support.server import CallgridProcess
from tests.support.webhook import WebhookReceiver

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
    fresh: CallgridProcess, webhook: WebhookReceiver, slow: SlowServer
) -> None:
    world: World = make_world(fresh, webhook)
    _, ccid = answer(world)
    world.automation.get_call_connection(ccid).play_media_to_all([FileSource(slow.url)])
    assert world.callback_types(ccid, 3)[2] == "PlayStarted"
    world.server.advance(9.7)
    assert len(world.webhook.callbacks()) == 3
    world.server.advance(0.2)
    assert world.callback_types(ccid, 4)[3] == "PlayCompleted"
