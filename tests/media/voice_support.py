"""What the voice tests share: an answered PSTN call, what its caller says and hears, and audio checks."""

from __future__ import annotations

import base64
import io
import threading
import time
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from callgrid.media import codecs
from tests.platform.calling_support import ENTRY_NUMBER, PSTN_CALLER, World, phone

CALLER = phone(PSTN_CALLER)
RATE = 16000


def party_path(server_call_id: str, raw_id: str = CALLER) -> str:
    return f"/callgrid/v1/calls/{server_call_id}/participants/{raw_id.replace('+', '%2B')}"


def answer(world: World, **options: Any) -> tuple[str, str]:
    """A PSTN caller rings the app's number; the app answers with `options`; returns (serverCallId, ccid)."""
    placed = world.place_call(PSTN_CALLER, ENTRY_NUMBER)
    context = world.incoming(0).data["incomingCallContext"]
    ccid = world.automation.answer_call(context, world.callback_url, **options).call_connection_id
    assert ccid is not None
    world.callbacks(ccid, 2)  # CallConnected, ParticipantsUpdated
    return placed["serverCallId"], ccid


def callback(world: World, ccid: str, name: str, index: int = 0) -> dict[str, object]:
    def found() -> dict[str, object] | None:
        hits = [
            e
            for e in sorted(world.webhook.callbacks(), key=lambda e: e["time"])
            if e["data"]["callConnectionId"] == ccid and e["type"] == "Microsoft.Communication." + name
        ]
        return dict(hits[index]["data"]) if len(hits) > index else None

    try:
        return world.webhook.wait_until(found, timeout=30)  # type: ignore[no-any-return]
    except AssertionError as exc:
        # What the call went through, and the server's last words: a missing callback says little alone.
        timeline = world.client.request("GET", "/callgrid/v1/calls?limit=5")
        log = world.server.log_path.read_text(errors="replace").splitlines()[-40:]
        raise AssertionError(
            f"no {name} for {ccid}: {exc}\ncalls: {timeline}\nserver log:\n" + "\n".join(log)
        ) from None


def say(world: World, server_call_id: str, text: str, raw_id: str = CALLER) -> float:
    """The caller says `text`; returns how many seconds of speech that is."""
    spoken = world.client.request("POST", party_path(server_call_id, raw_id) + ":say", {"text": text})
    return float(spoken["durationMs"]) / 1000.0


def play(world: World, server_call_id: str, pcm: np.ndarray, raw_id: str = CALLER) -> None:
    audio = base64.b64encode(codecs.encode_wav([pcm.astype(np.int16)], RATE)).decode()
    world.client.request("POST", party_path(server_call_id, raw_id) + ":play", {"audio": audio})


def heard(world: World, server_call_id: str, raw_id: str = CALLER) -> np.ndarray:
    data = world.client.download(party_path(server_call_id, raw_id) + "/audio")
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (RATE, 1, 2)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)


def wait(predicate: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value is not None and value is not False:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def chirp(seconds: float = 1.0, low: float = 300.0, high: float = 3000.0) -> np.ndarray:
    """A rising tone: unlike itself shifted, so correlation finds exactly where it is."""
    t = np.arange(int(seconds * RATE)) / RATE
    phase = 2 * np.pi * (low * t + (high - low) * t * t / (2 * seconds))
    return (8000 * np.sin(phase)).astype(np.int16)


def find(signal: np.ndarray, within: np.ndarray) -> tuple[int, float]:
    """Where `signal` is in `within` (sample offset) and how alike it is there (normalised, 0..1)."""
    a = signal.astype(np.float64)
    b = within.astype(np.float64)
    if len(b) < len(a):
        return -1, 0.0
    n = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    corr = np.fft.irfft(np.fft.rfft(b, n) * np.conj(np.fft.rfft(a, n)), n)[: len(b) - len(a) + 1]
    at = int(np.argmax(corr))
    window = b[at : at + len(a)]
    norm = float(np.sqrt(np.sum(a * a) * np.sum(window * window))) or 1.0
    return at, float(corr[at] / norm)


def words_of(text: str) -> set[str]:
    return {w for w in "".join(c if c.isalnum() else " " for c in text.lower()).split() if w}


class FileServer:
    """Prompt files over HTTP, as an app's web server serves them."""

    def __init__(self, files: dict[str, bytes]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_port}{path}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
