"""A small signed client for callgrid's own routes (used by the CLI; stdlib only, so it works anywhere)."""

from __future__ import annotations

import functools
import json
import os
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from callgrid.security import sign_request


class CallgridHttpError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class CallgridUnreachable(OSError):
    """No answer at all: nothing listens on the endpoint, the connection failed or timed out. An OSError, as
    urllib's own errors were, so callers that caught those still do."""

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(f"cannot reach {endpoint}: {reason}")
        self.endpoint = endpoint
        self.reason = reason


def _tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """One context per CA file (read again if the file changes): loading a bundle with certifi's roots takes
    tens of milliseconds, more than the request it is for."""
    if ca_file is None:
        return _cached_context(None, 0)
    return _cached_context(str(ca_file), os.stat(ca_file).st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _cached_context(ca_file: str | None, _version: int) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


@dataclass
class CallgridClient:
    endpoint: str
    access_key: str
    ca_file: Path | None = None
    timeout: float = 30.0

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """An HMAC-signed request to an ACS or callgrid route."""
        data = b"" if body is None else json.dumps(body).encode()
        headers = sign_request(method, path, urlsplit(self.endpoint).netloc, data, self.access_key, datetime.now(UTC))
        return self._send(method, path, data, headers, json_body=body is not None)

    def arm(self, method: str, path: str, body: Any = None, *, token: str) -> Any:
        """A request to an Azure Resource Manager route, with callgrid's bearer token."""
        data = b"" if body is None else json.dumps(body).encode()
        return self._send(method, path, data, {"Authorization": f"Bearer {token}"}, json_body=body is not None)

    def download(self, path: str) -> bytes:
        """A signed GET whose answer is a file (a recording's audio), returned as bytes."""
        headers = sign_request("GET", path, urlsplit(self.endpoint).netloc, b"", self.access_key, datetime.now(UTC))
        content: bytes = self._send("GET", path, b"", headers, json_body=False, as_bytes=True)
        return content

    def _send(
        self, method: str, path: str, data: bytes, headers: dict[str, str], *, json_body: bool, as_bytes: bool = False
    ) -> Any:
        if json_body:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.endpoint + path, data=data or None, method=method, headers=headers)
        context = _tls_context(self.ca_file) if urlsplit(self.endpoint).scheme == "https" else None
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=context) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                error = json.loads(raw)["error"]
                raise CallgridHttpError(exc.code, error.get("code", ""), error.get("message", "")) from None
            except (ValueError, KeyError, TypeError):
                raise CallgridHttpError(exc.code, "", raw.decode(errors="replace")) from None
        except urllib.error.URLError as exc:
            reason = exc.reason.strerror if isinstance(exc.reason, OSError) and exc.reason.strerror else exc.reason
            raise CallgridUnreachable(self.endpoint, str(reason).lower()) from None
        except (TimeoutError, ConnectionError) as exc:
            raise CallgridUnreachable(self.endpoint, str(exc) or type(exc).__name__) from None
        if as_bytes:
            return raw
        return json.loads(raw) if raw else None

    # callgrid/v1
    def own_number(self, number: str) -> Any:
        return self.request("POST", "/callgrid/v1/phoneNumbers", {"phoneNumber": number})

    def list_numbers(self) -> Any:
        return self.request("GET", "/callgrid/v1/phoneNumbers")

    def release_number(self, number: str) -> None:
        self.request("DELETE", "/callgrid/v1/phoneNumbers/" + quote(number, safe=""))

    def place_call(self, source: str, target: str, display_name: str | None = None) -> Any:
        body: dict[str, Any] = {"from": source, "to": target}
        if display_name:
            body["callerDisplayName"] = display_name
        return self.request("POST", "/callgrid/v1/calls", body)

    def get_call(self, server_call_id: str) -> Any:
        return self.request("GET", "/callgrid/v1/calls/" + quote(server_call_id, safe=""))

    def set_endpoint(self, raw_id: str, on_incoming_call: str, answer_delay_ms: int = 0) -> Any:
        return self.request(
            "PUT",
            "/callgrid/v1/endpoints/" + quote(raw_id, safe=""),
            {"onIncomingCall": on_incoming_call, "answerDelayMs": answer_delay_ms},
        )

    def deliveries(self, limit: int = 50, *, subscription_id: str | None = None, status: str | None = None) -> Any:
        query = {"limit": str(limit), "subscriptionId": subscription_id, "status": status}
        return self.request("GET", "/callgrid/v1/deliveries?" + urlencode({k: v for k, v in query.items() if v}))

    def dead_letters(self, limit: int = 50, *, subscription_id: str | None = None) -> Any:
        query = {"limit": str(limit), "subscriptionId": subscription_id}
        return self.request("GET", "/callgrid/v1/deadLetters?" + urlencode({k: v for k, v in query.items() if v}))

    def replay_dead_letter(self, dead_letter_id: str) -> Any:
        return self.request("POST", f"/callgrid/v1/deadLetters/{quote(dead_letter_id, safe='')}:replay")
