"""Filter matching cost per event against 10, 1,000 and 100,000 subscriptions (issue 3).

Each subscription has one advanced filter, StringIn on data.to.PhoneNumber.Value with its own
number, all on the Communication resource's topic: the index in eventgrid/index.py should make
matching cost about the same at every size. The table is built in memory (no server, no store).
Prints JSON: microseconds per event per size, and each size's ratio to the 10-subscription figure.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from callgrid.eventgrid.filters import compile_filter
from callgrid.eventgrid.index import SubscriptionIndex
from callgrid.eventgrid.subscriptions import ActiveSubscription

TOPIC = "/subscriptions/s1/resourcegroups/rg1/providers/microsoft.communication/communicationservices/acs1"
SIZES = (10, 1_000, 100_000)
EVENTS = 20_000


def number(i: int) -> str:
    return f"+1800{i:07d}"


def subscription(i: int) -> ActiveSubscription:
    spec = {
        "advancedFilters": [{"operatorType": "StringIn", "key": "data.to.PhoneNumber.Value", "values": [number(i)]}]
    }
    return ActiveSubscription(
        id=f"{TOPIC}/providers/microsoft.eventgrid/eventsubscriptions/sub-{i}",
        name=f"sub-{i}",
        topic=TOPIC,
        source=TOPIC,
        filter=compile_filter(spec),
        endpoint_url=f"http://127.0.0.1:9/{i}",
        delivery_schema="EventGridSchema",
        max_delivery_attempts=30,
        event_ttl_minutes=1440,
        expires_at=None,
        doc={},
    )


def incoming_call(to: str) -> dict[str, Any]:
    return {
        "id": "ic-1",
        "topic": TOPIC,
        "subject": f"/caller/4:+14255550100/recipient/4:{to}",
        "eventType": "Microsoft.Communication.IncomingCall",
        "eventTime": "2024-05-01T10:00:00.0000000Z",
        "dataVersion": "1.0",
        "metadataVersion": "1",
        "data": {
            "to": {"kind": "phoneNumber", "rawId": f"4:{to}", "phoneNumber": {"value": to}},
            "from": {"kind": "phoneNumber", "rawId": "4:+14255550100", "phoneNumber": {"value": "+14255550100"}},
            "serverCallId": "srv-1",
            "incomingCallContext": "ctx",
            "correlationId": "c-1",
        },
    }


def measure(size: int, rng: random.Random) -> float:
    index = SubscriptionIndex(subscription(i) for i in range(size))
    # Every event matches exactly one subscription (a call to an owned number).
    events = [incoming_call(number(rng.randrange(size))) for _ in range(EVENTS)]
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for event in events:
            matched = index.match(TOPIC, event)
            assert len(matched) == 1
        best = min(best, (time.perf_counter() - start) / len(events))
    return best * 1e6


def main() -> None:
    rng = random.Random(7)
    results = {size: measure(size, rng) for size in SIZES}
    baseline = results[SIZES[0]]
    print(
        json.dumps(
            {
                "benchmark": "filter_match",
                "events_per_run": EVENTS,
                "us_per_event": {str(k): round(v, 2) for k, v in results.items()},
                "ratio_vs_10": {str(k): round(v / baseline, 2) for k, v in results.items()},
                "target": "<= 20 us per event at 100000 and within 2x of 10",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
