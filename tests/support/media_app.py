"""An app's WebSocket endpoint for media streaming and transcription, as a voice app would run one:
it records every frame ACS (callgrid) sends and, in echo mode, plays the call's audio straight back
over bidirectional streaming."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web


class MediaApp:
    def __init__(
        self,
        *,
        echo: bool = False,
        reply: Callable[[dict[str, Any]], str | None] | None = None,
        stall: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.echo = echo
        self.tls = tls  # serve wss:// (on localhost) with this context
        self.stall = stall  # accept the socket, then never read from it: a consumer slower than real time
        self.reply = reply
        self.frames: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.connections = 0
        self.headers: list[dict[str, str]] = []
        self._open: set[web.WebSocketResponse] = set()
        self._stalled: list[asyncio.BaseTransport] = []
        self._closing = asyncio.Event()
        self.closes: list[int | None] = []  # close codes of sockets callgrid closed
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/ws", self._ws)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        listener = socket.create_server(("127.0.0.1", 0))
        if self.stall:
            # A small receive window (inherited by accepted sockets) so the sender's buffers fill in seconds.
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        site = web.SockSite(self._runner, listener, ssl_context=self.tls)
        self._loop.run_until_complete(site.start())
        self.port = listener.getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._open.add(ws)
        with self._lock:
            self.connections += 1
            self.headers.append(dict(request.headers))
        if self.stall:
            assert request.transport is not None
            request.transport.pause_reading()
            self._open.discard(ws)
            self._stalled.append(request.transport)
            await self._closing.wait()  # held open, unread, until the app closes
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            frame = json.loads(message.data)
            with self._lock:
                self.raw.append(message.data)
                self.frames.append(frame)
            if self.echo and frame.get("kind") == "AudioData" and not frame["audioData"].get("silent", True):
                data = frame["audioData"]["data"]
                # The form Microsoft's Python samples send.
                await ws.send_str(json.dumps({"Kind": "AudioData", "AudioData": {"Data": data}, "StopAudio": None}))
            if self.reply is not None:
                answer = self.reply(frame)
                if answer is not None:
                    await ws.send_str(answer)
        if ws in self._open:
            self.closes.append(ws.close_code)
        self._open.discard(ws)
        return ws

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"wss://localhost:{self.port}/ws"
        return f"ws://127.0.0.1:{self.port}/ws"

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [f for f in self.frames if f.get("kind") == kind]

    def audio(self) -> np.ndarray:
        """The call audio received so far, in order, as int16 samples."""
        chunks = [base64.b64decode(f["audioData"]["data"]) for f in self.of_kind("AudioData")]
        return np.frombuffer(b"".join(chunks), dtype="<i2")

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s; {len(self.frames)} frames received")

    def close(self) -> None:
        async def stop() -> None:
            # The app hangs up its sockets first: callgrid would stream into them for as long as the call lasts.
            for ws in list(self._open):
                await ws.close()
            self._closing.set()
            for transport in self._stalled:
                transport.close()  # a stalled app reads no closing handshake: it just drops the connection
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
