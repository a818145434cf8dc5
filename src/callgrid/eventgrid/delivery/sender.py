"""How outgoing deliveries (Event Grid webhooks, handshakes, callbacks) are sent, and what is told of them.

The `Sender` protocol is the seam the delivery engine, handshakes and fault injection (`faults.py`) use;
`http1.Http1Sender` is the HTTP client behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SendResult:
    status: int | None  # HTTP status, or None when no response came
    outcome: str  # Event Grid's lastDeliveryOutcome vocabulary
    body: bytes = b""
    headers: dict[str, str] | None = None
    error: str | None = None
    truncated: bool = False  # the answer was longer than MAX_RESPONSE_BYTES; `body` is its beginning

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status <= 204


_OUTCOMES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    408: "TimedOut",
    413: "PayloadTooLarge",
    429: "Busy",
    503: "Busy",
}


def outcome_for(status: int) -> str:
    if 200 <= status <= 204:
        return "Succeeded"
    return _OUTCOMES.get(status, "GenericError")


# What is read of an answer (after decompression): a handshake's {"validationResponse": ...} is tens of
# bytes and a delivery's answer is only looked at for its status. The bound keeps a gzip bomb from being
# inflated whole.
MAX_RESPONSE_BYTES = 64 * 1024


class Sender(Protocol):
    async def send(
        self, method: str, url: str, *, body: bytes, headers: dict[str, str], timeout: float
    ) -> SendResult: ...

    async def close(self) -> None: ...
