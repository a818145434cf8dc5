"""Memory stays bounded whatever is sent: bodies are refused by their headers before they are read, oversized
ones while they stream in (413), and a webhook's compressed answer is not inflated whole."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from callgrid.security import sign_request
from callgrid.testing import CallgridServer
from tests.eventgrid.mgmt import create_topic, topic_key
from tests.support.arm import arm_headers, put_subscription, subscription_url

MB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, callgrid_tls_dir: Path) -> Iterator[CallgridServer]:
    process = CallgridServer(tmp_path_factory.mktemp("limits"), tls_dir=callgrid_tls_dir).start()
    yield process
    process.stop()


def _peak_rss_mb(server: CallgridServer) -> float:
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _tls(server: CallgridServer) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=server.ca_bundle)
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return context.wrap_socket(raw, server_hostname="localhost")


def _head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _answer(sock: ssl.SSLSocket) -> tuple[int, dict[str, str], dict[str, Any]]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk
        rest += chunk
    return int(status_line.split()[1]), headers, json.loads(rest[:length]) if length else {}


def _stream_until_refused(sock: ssl.SSLSocket, total: int) -> int:
    """Send up to `total` bytes of body; returns how many went before the server stopped taking them."""
    block = b"0" * (256 * 1024)
    sent = 0
    try:
        while sent < total:
            sock.sendall(block)
            sent += len(block)
    except (ConnectionError, ssl.SSLError, TimeoutError):
        pass
    return sent


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/identities?api-version=2023-10-01", {}),
        ("/identities?api-version=2023-10-01", {"Authorization": "HMAC-SHA256 SignedHeaders=x&Signature=y"}),
        ("/callgrid/v1/phoneNumbers", {"Authorization": "Bearer abc"}),
        ("/subscriptions/x/resourceGroups/y/providers/Microsoft.EventGrid/topics/t?api-version=2025-02-15", {}),
        ("/eventgrid/topics/limits-topic/api/events", {"aeg-sas-key": "wrong"}),
    ],
)
def test_unauthenticated_bodies_are_refused_before_they_are_read(
    server: CallgridServer, path: str, headers: dict[str, str]
) -> None:
    create_topic(server, "limits-topic")
    before = _peak_rss_mb(server)
    socks = [_tls(server) for _ in range(5)]
    try:
        for sock in socks:
            sock.sendall(_head("POST", path, {**headers, "Content-Length": str(200 * MB)}))
            sock.sendall(b"[" * 4096)
        for sock in socks:
            status, response_headers, body = _answer(sock)
            assert status == 401, body
            assert set(body["error"]) >= {"code", "message"}
            assert response_headers.get("connection") == "close"
        # Whatever more of the bodies comes is discarded as it arrives (over TLS the server waits up to 30 s
        # for the client's close_notify before it drops the connection), never held.
        for sock in socks:
            _stream_until_refused(sock, 40 * MB)
    finally:
        for sock in socks:
            sock.close()
    assert _peak_rss_mb(server) - before < 50


def _signed(server: CallgridServer, method: str, path: str, body: bytes) -> dict[str, str]:
    return sign_request(method, path, f"localhost:{server.port}", body, server.access_key, datetime.now(UTC))


def test_a_signed_body_over_the_acs_limit_is_413(server: CallgridServer) -> None:
    path = "/identities?api-version=2023-10-01"
    body = json.dumps({"createTokenWithScopes": ["chat"], "pad": "x" * (10 * MB)}).encode()
    sock = _tls(server)
    try:
        # Declared: refused before a byte of it is read.
        sock.sendall(_head("POST", path, {**_signed(server, "POST", path, body), "Content-Length": str(len(body))}))
        status, headers, error = _answer(sock)
        assert status == 413 and error["error"]["code"] == "PayloadTooLarge", error
        assert headers.get("connection") == "close"
    finally:
        sock.close()
    sock = _tls(server)
    try:
        # Chunked, no length: refused once the bytes so far pass the limit.
        sock.sendall(_head("POST", path, {**_signed(server, "POST", path, body), "Transfer-Encoding": "chunked"}))
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            for start in range(0, len(body), 64 * 1024):
                piece = body[start : start + 64 * 1024]
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        status, headers, error = _answer(sock)
        assert status == 413 and "262144" in error["error"]["message"], error
    finally:
        sock.close()


def test_an_arm_body_over_the_arm_limit_is_413(server: CallgridServer) -> None:
    url = subscription_url(server, "big")
    path = url.removeprefix(server.endpoint)
    sock = _tls(server)
    try:
        sock.sendall(_head("PUT", path, {**arm_headers(server), "Content-Length": str(5 * MB)}))
        status, _, error = _answer(sock)
        assert status == 413 and error["error"]["code"] == "PayloadTooLarge", error
    finally:
        sock.close()


def test_a_publish_over_one_megabyte_is_413_before_it_is_read(server: CallgridServer) -> None:
    topic = create_topic(server, "limits-topic")
    path = topic.endpoint.removeprefix(server.endpoint)
    sock = _tls(server)
    try:
        key = topic_key(server, "limits-topic")
        sock.sendall(_head("POST", path, {"aeg-sas-key": key, "Content-Length": str(1024 * 1024 + 1)}))
        status, headers, error = _answer(sock)
        assert status == 413 and error["error"]["code"] == "PayloadTooLarge", error
        assert headers.get("connection") == "close"
    finally:
        sock.close()


class _BombServer(ThreadingHTTPServer):
    daemon_threads = True


def _gzip_bomb(megabytes: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    block = b'{"validationResponse": "' + b" " * (MB - 30)
    parts = [compressor.compress(block)]
    zeros = b" " * MB
    parts += [compressor.compress(zeros) for _ in range(megabytes - 1)]
    parts.append(compressor.compress(b'"}') + compressor.flush())
    return b"".join(parts)


def test_a_gzip_bombed_handshake_answer_is_not_inflated(server: CallgridServer) -> None:
    bomb = _gzip_bomb(400)  # 400 MB inflated, ~400 KB on the wire

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(bomb)))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(bomb)

        def log_message(self, *args: Any) -> None:
            pass

    endpoint = _BombServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=endpoint.serve_forever, daemon=True)
    thread.start()
    try:
        before = _peak_rss_mb(server)
        began = time.monotonic()
        doc = put_subscription(server, "bombed", f"http://127.0.0.1:{endpoint.server_address[1]}/hook")
        assert doc["properties"]["provisioningState"] == "Failed"
        assert _peak_rss_mb(server) - before < 50
        assert time.monotonic() - began < 10
    finally:
        endpoint.shutdown()
        endpoint.server_close()
