"""Event Grid's retry rules (eventgrid.md 4.5), as a small pluggable policy."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# Delay before each retry, in seconds: 10 s, 30 s, 1 min, 5 min, 10 min, 30 min, 1 h, 3 h, 6 h, then 12 h.
STANDARD_SCHEDULE = (10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 10800.0, 21600.0)
LATER_DELAY = 43200.0

# Statuses that are never retried (Feb 2026 docs; eventgrid.md O10): webhooks, and Azure resources
# (an AzureFunction destination), which retry 401 after a while instead.
WEBHOOK_NO_RETRY = frozenset({400, 401, 403, 413})
AZURE_RESOURCE_NO_RETRY = frozenset({400, 403, 413})
# Minimum delays for some statuses; 401 and 404 only for Azure-resource destinations.
MINIMUM_DELAY = {408: 120.0, 503: 30.0}
AZURE_RESOURCE_MINIMUM_DELAY = {**MINIMUM_DELAY, 401: 300.0, 404: 300.0}


@dataclass
class RetryPolicy:
    jitter_fraction: float = 0.1
    rng: random.Random = field(default_factory=random.Random)

    def should_retry(self, status: int | None, *, azure_resource: bool = False) -> bool:
        no_retry = AZURE_RESOURCE_NO_RETRY if azure_resource else WEBHOOK_NO_RETRY
        return status is None or status not in no_retry

    def delay(self, attempts_done: int, status: int | None, *, azure_resource: bool = False) -> float:
        """Seconds to wait after the `attempts_done`-th failed attempt (1-based), jitter included."""
        index = attempts_done - 1
        base = STANDARD_SCHEDULE[index] if index < len(STANDARD_SCHEDULE) else LATER_DELAY
        if status is not None:
            minimums = AZURE_RESOURCE_MINIMUM_DELAY if azure_resource else MINIMUM_DELAY
            base = max(base, minimums.get(status, 0.0))
        return base * (1.0 + self.rng.uniform(0.0, self.jitter_fraction))
