"""RFC 4028 session timers: how a call whose far end has vanished (a UDP peer gone, a TCP caller whose
connection dropped and never came back) is noticed. One side, the refresher, sends a re-INVITE or UPDATE
every half interval; the other ends the call with BYE when none came before the session expires.

What is here has no I/O: the headers read and written (Session-Expires, Min-SE, the `timer` option tag),
what a UAS answers to a request (RFC 4028 section 9), what a UAC takes from a 2xx (section 7.2), and
`Deadlines`, one task that waits on the injected clock for the earliest of the legs' next steps (so a
virtual clock runs a half-hour interval in milliseconds). The trunk sends and ends.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from callgrid.clock import Clock
from callgrid.sip.message import Message, SipParseError, parse_params

log = logging.getLogger(__name__)

TIMER = "timer"  # the option tag (Supported / Require)
MIN_SE_FLOOR = 90  # RFC 4028 4: no session interval may be below 90 seconds
DEFAULT_SESSION_EXPIRES = 1800  # RFC 4028 4's recommendation
UAC, UAS = "uac", "uas"


@dataclass(frozen=True)
class SessionExpires:
    seconds: int
    refresher: str | None  # "uac" | "uas" | None (not said)

    def __str__(self) -> str:
        return f"{self.seconds};refresher={self.refresher}" if self.refresher else str(self.seconds)


@dataclass(frozen=True)
class Session:
    """A negotiated session timer: its interval, and who refreshes, as the transaction's roles say."""

    interval: int
    refresher: str  # "uac" | "uas"


@dataclass(frozen=True)
class TooSmall:
    """The request's interval is below our Min-SE: 422 with this Min-SE (RFC 4028 6)."""

    min_se: int


def _delta_seconds(text: str) -> int:
    text = text.strip()
    if not text.isdigit() or len(text) > 10:
        raise SipParseError("bad delta-seconds")
    return int(text)


def parse_session_expires(value: str) -> SessionExpires:
    """`1800;refresher=uac` (RFC 4028 4). Raises SipParseError; an unknown refresher value is none."""
    seconds, _, params = value.partition(";")
    refresher = (parse_params(params).get("refresher") or "").lower()
    return SessionExpires(_delta_seconds(seconds), refresher if refresher in (UAC, UAS) else None)


def parse_min_se(value: str) -> int:
    """`90` (RFC 4028 5; generic parameters allowed and ignored). Raises SipParseError."""
    return _delta_seconds(value.partition(";")[0])


def option_tags(message: Message, header: str) -> set[str]:
    """The option tags of Supported, Require or Unsupported, lowercased."""
    return {tag.strip().lower() for tag in message.get_all(header) if tag.strip()}


def supports_timer(message: Message) -> bool:
    return TIMER in option_tags(message, "Supported") or TIMER in option_tags(message, "Require")


def _min_se_of(message: Message) -> int:
    raw = message.get("Min-SE")
    if raw is None:
        return 0
    try:
        return parse_min_se(raw)
    except SipParseError:
        return 0


def session_expires_of(message: Message) -> SessionExpires | None:
    """The message's Session-Expires; one that does not parse is as none (the extension is optional)."""
    raw = message.get("Session-Expires")
    if raw is None:
        return None
    try:
        return parse_session_expires(raw)
    except SipParseError:
        return None


def answer_request(request: Message, *, min_se: int, default: int) -> Session | TooSmall | None:
    """What a UAS with this Min-SE and this longest interval (`default`, 0: no session timers) answers to
    an INVITE, re-INVITE or UPDATE (RFC 4028 9); None: no session timer (a peer without the extension)."""
    if default <= 0:
        return None
    supported = supports_timer(request)
    asked = session_expires_of(request)
    their_min_se = _min_se_of(request)
    if asked is None:
        if not supported:
            return None
        # The UAC can refresh but asked for no interval: the UAS may choose one (and the UAC refreshes).
        return Session(max(default, min_se, their_min_se), UAC)
    interval = asked.seconds
    if interval < min_se:
        if supported:
            return TooSmall(max(min_se, their_min_se))
        # A proxy asked for a UAC that cannot retry after a 422: raise it instead (as RFC 4028 8.1 does).
        interval = min_se
    # The UAS may shorten a long interval (RFC 4028 9): a vanished peer is noticed within `default`.
    interval = max(min(interval, default), min_se, their_min_se)
    if not supported:
        return Session(interval, UAS)  # only we can refresh
    return Session(interval, asked.refresher or UAC)


def answer_of_response(response: Message, *, min_se: int) -> Session | None:
    """The session timer a 2xx to our INVITE / refresh sets (RFC 4028 7.2): none without Session-Expires;
    a 2xx that does not say who refreshes leaves it to us; never below the Min-SE we asked for."""
    said = session_expires_of(response)
    if said is None:
        return None
    return Session(max(said.seconds, min_se), said.refresher or UAC)


def expiry_margin(interval: float) -> float:
    """How long before the session expires the side that does not refresh gives up (RFC 4028 10): the
    refresh is due at the half interval, and may take a transaction's time to arrive."""
    return min(32.0, interval / 3)


K = TypeVar("K", bound=Hashable)


class Deadlines(Generic[K]):
    """Keys due at times of the injected clock, and one task that waits for the earliest and hands each
    key that falls due to `on_due` (a late `set` moves a key's time; `cancel` forgets it)."""

    def __init__(self, clock: Clock, on_due: Callable[[K], None], *, count: Callable[[str], None]) -> None:
        self.clock = clock
        self._on_due = on_due
        self._count = count
        self._due: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._due)

    def set(self, key: K, when: float) -> None:
        self._due[key] = when
        heapq.heappush(self._heap, (when, next(self._seq), key))
        self._wake.set()

    def cancel(self, key: K) -> None:
        self._due.pop(key, None)

    def clear(self) -> None:
        self._due.clear()
        self._heap.clear()

    def next_due(self) -> float | None:
        heap = self._heap
        while heap and self._due.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)  # cancelled, or moved to another time
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> list[K]:
        due: list[K] = []
        while (when := self.next_due()) is not None and when <= now:
            _, _, key = heapq.heappop(self._heap)
            del self._due[key]
            due.append(key)
        return due

    async def run(self) -> None:
        while True:
            self._wake.clear()
            when = self.next_due()
            if when is None:
                await self._wake.wait()
                continue
            await self.clock.sleep_until(when, self._wake)
            for key in self.pop_due(self.clock.now()):
                try:
                    self._on_due(key)
                except Exception:
                    # One leg's failure must not stop the others' timers.
                    self._count("internalError")
                    log.exception("a SIP session timer failed")


__all__ = [
    "DEFAULT_SESSION_EXPIRES",
    "MIN_SE_FLOOR",
    "TIMER",
    "Deadlines",
    "Session",
    "SessionExpires",
    "TooSmall",
    "answer_of_response",
    "answer_request",
    "expiry_margin",
    "option_tags",
    "parse_min_se",
    "parse_session_expires",
    "session_expires_of",
    "supports_timer",
]
