"""A bounded schemathesis run over callgrid's own OpenAPI description: whatever it generates (in and out of
the schemas), signed like the CLI signs, nothing is answered with a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from callgrid.api.openapi import OPENAPI
from callgrid.security import sign_request
from callgrid.testing import CallgridServer

schema = schemathesis.openapi.from_dict(OPENAPI)
# Out of the schemas too: wrong types, missing fields, extra values.
schema.config.generation.update(modes=["positive", "negative"])


class _Hmac(requests.auth.AuthBase):
    def __init__(self, access_key: str) -> None:
        self.access_key = access_key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        parts = urlsplit(request.url or "")
        signed = sign_request(
            request.method or "GET", request.path_url, parts.netloc, body, self.access_key, datetime.now(UTC)
        )
        request.headers.update(signed)
        return request


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, callgrid_tls_dir: Path) -> Iterator[CallgridServer]:
    process = CallgridServer(tmp_path_factory.mktemp("fuzz"), tls_dir=callgrid_tls_dir).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def session(server: CallgridServer) -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.auth = _Hmac(server.access_key)
        s.verify = server.ca_bundle
        yield s


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_generated_request_gets_a_5xx(
    case: schemathesis.Case, server: CallgridServer, session: requests.Session
) -> None:
    response = case.call(base_url=server.endpoint, session=session, timeout=10)
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
    if response.status_code >= 400:
        assert {"code", "message"} <= set(response.json()["error"]), response.text
