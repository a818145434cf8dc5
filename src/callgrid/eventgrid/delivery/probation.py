"""Probation (eventgrid.md 4.5): after repeated failures an endpoint's deliveries wait a while.

Event Grid delays retries *and new deliveries* to an endpoint that keeps failing; how long depends
on the last outcome. Kept in memory: it is a best-effort health view, rebuilt after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Seconds of probation by the last delivery outcome.
PROBATION_SECONDS = {
    "Busy": 10.0,
    "TimedOut": 10.0,
    "SocketError": 30.0,
    "NotFound": 300.0,
    "ResolutionError": 300.0,
    "Disabled": 300.0,
    "Full": 300.0,
    "Unauthorized": 300.0,
    "Forbidden": 300.0,
    "InvalidAzureFunctionDestination": 600.0,
}
DEFAULT_PROBATION_SECONDS = 10.0


@dataclass
class _Health:
    failures: int = 0
    until: float = 0.0


@dataclass
class Probation:
    failure_threshold: int = 10
    _endpoints: dict[str, _Health] = field(default_factory=dict)

    def until(self, endpoint: str, now: float) -> float | None:
        """When the endpoint's probation ends, or None if it is not on probation now."""
        health = self._endpoints.get(endpoint)
        if health is None or health.until <= now:
            return None
        return health.until

    def record(self, endpoint: str, ok: bool, outcome: str, now: float) -> None:
        if ok:
            self._endpoints.pop(endpoint, None)
            return
        health = self._endpoints.setdefault(endpoint, _Health())
        health.failures += 1
        if self.failure_threshold > 0 and health.failures >= self.failure_threshold:
            health.until = max(health.until, now + PROBATION_SECONDS.get(outcome, DEFAULT_PROBATION_SECONDS))

    def on_probation(self) -> dict[str, float]:
        return {e: h.until for e, h in self._endpoints.items() if h.until > 0}
