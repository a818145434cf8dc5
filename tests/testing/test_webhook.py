"""The kit's webhook (`WebhookReceiver`) as a sender sees it."""

from __future__ import annotations

import socket
import struct
import time
from urllib.parse import urlsplit

import pytest

from callgrid.testing import Received, WebhookReceiver


def test_a_sender_that_hangs_up_before_the_answer_prints_no_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    answered: list[float] = []

    def slow(item: Received) -> tuple[int, None]:
        time.sleep(0.3)  # longer than the sender waits
        answered.append(time.monotonic())
        return 200, None

    with WebhookReceiver(responder=slow) as hook:
        url = urlsplit(hook.url)
        with socket.create_connection((url.hostname, url.port)) as sock:
            sock.sendall(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            time.sleep(0.1)
            # A reset, as a sender that gave up on the answer and closed at once leaves it.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        deadline = time.monotonic() + 5
        while not answered and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)  # the write that fails comes just after the responder returns
        assert len(hook.received) == 1
    assert answered
    assert "Traceback" not in capfd.readouterr().err
