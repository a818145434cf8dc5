"""Connections that never finish their request headers are closed (raw sockets, loopback, bounded)."""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from callgrid.testing import CallgridServer

HEADERS_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, callgrid_tls_dir: Path) -> Iterator[CallgridServer]:
    process = CallgridServer(
        tmp_path_factory.mktemp("connections"),
        tls_dir=callgrid_tls_dir,
        env={"CALLGRID_REQUEST_HEADERS_TIMEOUT_SECONDS": str(HEADERS_TIMEOUT)},
    ).start()
    yield process
    process.stop()


def _tls(server: CallgridServer) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=server.ca_bundle)
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    return context.wrap_socket(raw, server_hostname="localhost")


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1024) == b""
    except (ConnectionError, ssl.SSLError):
        return True
    except TimeoutError:
        return False


def test_connections_that_stall_in_their_headers_are_closed(server: CallgridServer) -> None:
    idle = [_tls(server) for _ in range(10)]  # TLS done, nothing sent
    partial = [_tls(server) for _ in range(30)]
    for sock in partial:
        sock.sendall(b"POST /callgrid/v1/phoneNumbers HTTP/1.1\r\nHost: localhost\r\nx-ms-date: Sat")
    began = time.monotonic()
    try:
        assert all(_closed_by_server(s, HEADERS_TIMEOUT + 5) for s in idle + partial)
        assert time.monotonic() - began < HEADERS_TIMEOUT + 5
    finally:
        for sock in idle + partial:
            sock.close()


def test_a_slowloris_trickle_does_not_keep_its_connection(server: CallgridServer) -> None:
    sock = _tls(server)
    try:
        sock.sendall(b"GET /calling/keys HTTP/1.1\r\n")
        began = time.monotonic()
        closed = False
        while time.monotonic() - began < HEADERS_TIMEOUT + 5 and not closed:
            try:
                sock.sendall(b"x-a: b\r\n")  # a header line every 0.2 s, never the blank line
            except (ConnectionError, ssl.SSLError):
                closed = True
                break
            closed = _closed_by_server(sock, 0.2)
        assert closed
    finally:
        sock.close()


def test_a_kept_alive_connection_still_serves_requests_in_time(server: CallgridServer) -> None:
    context = ssl.create_default_context(cafile=server.ca_bundle)
    conn = http.client.HTTPSConnection("localhost", server.port, context=context, timeout=5)
    try:
        for _ in range(3):
            conn.request("GET", "/calling/keys")
            response = conn.getresponse()
            assert response.status == 200 and b"keys" in response.read()
            time.sleep(HEADERS_TIMEOUT / 2)
        # The next request's first bytes start its own deadline.
        assert conn.sock is not None
        conn.sock.sendall(b"GET /calling/keys HTTP/1.1\r\n")
        assert _closed_by_server(conn.sock, HEADERS_TIMEOUT + 5)
    finally:
        conn.close()


def test_a_response_leaves_in_one_tls_record(server: CallgridServer) -> None:
    # Status line, headers and body in one write: one TLS record, so one read on the client's side
    # returns the whole answer (uvicorn alone writes the head and the body as two records).
    sock = _tls(server)
    try:
        for _ in range(3):  # and again on the kept-alive connection
            sock.sendall(b"GET /callgrid/v1/calls HTTP/1.1\r\nHost: localhost\r\n\r\n")  # unsigned: a 401
            first = sock.recv(65536)
            head, _, body = first.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            assert head.startswith(b"HTTP/1.1 401")
            assert len(body) == length > 0, f"the first read held {len(body)} of {length} body bytes"
    finally:
        sock.close()
