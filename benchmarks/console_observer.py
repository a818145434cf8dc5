"""What the console's event journal costs publishing (issue 14): µs per published IncomingCall, each in its
own store transaction (SQLite, WAL, in a temporary directory), with 10 subscriptions on the topic, with and
without the console's observer (`console.journal.Journal.observe`, registered on every server). Short
rounds alternate, and each variant keeps its best round: on a shared machine the load swings more than
the difference measured. Prints JSON with the ratio of observed to bare.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path

from callgrid.clock import VirtualClock
from callgrid.console.journal import Journal
from callgrid.eventgrid.subscriptions import SubscriptionService
from callgrid.eventgrid.topics import EventPublisher, SubscriptionTable
from callgrid.store import open_store

TOPIC = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Communication/CommunicationServices/acs"
EVENTS = 200  # per round; rounds alternate between the two, and each keeps its best round
ROUNDS = 25
SUBSCRIPTIONS = 10


async def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as directory:
        clock = VirtualClock(1_800_000_000.0)
        store = await open_store(f"sqlite:///{Path(directory) / 'callgrid.db'}")
        service = SubscriptionService(clock)
        async with store.transaction() as tx:
            for i in range(SUBSCRIPTIONS):
                number = f"+1800555{i:04d}"
                body = {
                    "properties": {
                        "destination": {"endpointType": "WebHook", "properties": {"endpointUrl": "https://h/x"}},
                        "filter": {
                            "advancedFilters": [
                                {"operatorType": "StringIn", "key": "data.to.phoneNumber.value", "values": [number]}
                            ]
                        },
                    }
                }
                doc, _ = await service.put(
                    tx,
                    arm_id=f"{TOPIC}/providers/Microsoft.EventGrid/eventSubscriptions/sub-{i}",
                    name=f"sub-{i}",
                    topic=TOPIC,
                    resource_type="Microsoft.EventGrid/eventSubscriptions",
                    body=body,
                )
                doc["properties"]["provisioningState"] = "Succeeded"
                await tx.put_subscription(doc["id"].lower(), doc)
        table = SubscriptionTable()
        bare = EventPublisher(clock, table)
        observed = EventPublisher(clock, table)
        observed.observers.append(Journal(clock).observe)
        best = {"bare": float("inf"), "observed": float("inf")}
        for _ in range(ROUNDS):
            for name, publisher in (("bare", bare), ("observed", observed)):
                start = time.perf_counter()
                for i in range(EVENTS):
                    async with store.transaction() as tx:
                        await publisher.publish_system_event(
                            tx,
                            topic=TOPIC,
                            event_type="Microsoft.Communication.IncomingCall",
                            subject="/phoneCall/caller/+14255550100/recipient/+18005550001",
                            data={"to": {"rawId": "4:+18005550001", "phoneNumber": {"value": f"+1800555{i % 20:04d}"}}},
                        )
                best[name] = min(best[name], (time.perf_counter() - start) / EVENTS * 1e6)
        await store.close()
        # The observer's own work per event (what the end-to-end ratio hides in the store's noise).
        journal = Journal(clock)
        event = {"id": "e", "eventType": "Microsoft.Communication.IncomingCall", "subject": "/s", "data": {}}
        start = time.perf_counter()
        for _ in range(100_000):
            journal.observe("event", TOPIC, event, ["sub-1"])
        best["observe_alone"] = (time.perf_counter() - start) / 100_000 * 1e6
        return best


def main() -> None:
    best = asyncio.run(run())
    print(
        json.dumps(
            {
                "benchmark": "console_observer",
                "events_per_round": EVENTS,
                "rounds": ROUNDS,
                "subscriptions": SUBSCRIPTIONS,
                "us_per_event": {k: round(v, 1) for k, v in best.items()},
                "ratio_observed_vs_bare": round(best["observed"] / best["bare"], 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
