"""IncomingCall latency (issue 15): a PSTN call placed (signed POST /callgrid/v1/calls) -> the identity's
IncomingCall received by a webhook, p50 / p99 / p999 at 50, 200 and 1,000 calls per second, open loop.

Two real processes: `callgrid serve` (system clock, SQLite, default settings: the throttle's bound too)
and this driver (caller and webhook, one event loop). Baseline from the same run: a signed request's
round trip to the same server (`GET /callgrid/v1/clock`) at 50 per second; each rate's p50 and p99 are
also given as ratios to it. Calls answered 429 past capacity are counted as refused, not lost.

Each rate is measured after `--warmup` seconds at that rate, not counted (route_latency.py says why).

Usage: python benchmarks/incoming_call_latency.py [--rates 50,200,1000] [--seconds 10] [--warmup 1]
Prints JSON. Targets: p50 <= 3 ms and p99 <= 15 ms at 200 calls per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from harness import Served, callgrid, identities, identities_webhook, load, percentiles
from route_latency import _run_loop


async def _measure(
    served: Served, users: list[str], rates: list[float], seconds: float, warmup: float
) -> dict[str, Any]:
    async with identities_webhook(served) as bench:
        for i in range(40):  # warm up connections and the store
            await bench.place(users[i % len(users)])
        hops, sent = await bench.steady(50, min(seconds, 4), lambda i: bench.hop("callgrid"))
        baseline = percentiles(hops)
        results = []
        for rate in rates:
            load_before = load()
            values, sent = await bench.steady(
                rate, seconds, lambda i: bench.place(users[i % len(users)]), warmup=warmup
            )
            summary = percentiles(values)
            refused = bench.last_refused
            results.append(
                {
                    "rate_per_s": rate,
                    **summary,
                    "lost": sent - summary["n"] - refused,
                    "refused": refused,
                    "p50_vs_baseline": _ratio(summary["p50_ms"], baseline["p50_ms"]),
                    "p99_vs_baseline": _ratio(summary["p99_ms"], baseline["p99_ms"]),
                    "cpu_ms_per_call": bench.last_cpu_ms_per_op,
                    "load_before_after": [load_before, load()],
                }
            )
            await asyncio.sleep(2)  # what an overloaded rate left queued drains before the next
    at_200 = next((r for r in results if r["rate_per_s"] == 200), None)
    return {
        "benchmark": "incoming_call_latency",
        "seconds_per_rate": seconds,
        "warmup_seconds_per_rate": warmup,
        "baseline_signed_round_trip_at_50_per_s": baseline,
        "rates": results,
        "target_at_200": {
            "p50_ms": 3,
            "p99_ms": 15,
            "met": None if at_200 is None else bool(at_200["p50_ms"] <= 3 and at_200["p99_ms"] <= 15),
        },
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="50,200,1000")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--identities", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds at each rate before measuring")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    with callgrid("--ring-timeout", "600") as served:
        users = identities(served, args.identities)
        result = _run_loop(_measure(served, users, rates, args.seconds, args.warmup))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
