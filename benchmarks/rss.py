"""Memory (issue 15): `callgrid serve`'s resident set idle, and over a 100,000-call run (flat within 10 %?).

One real `callgrid serve` (system clock, SQLite, default settings but calls that ring 5 s, not 30, before
they time out, so that the set of live calls stops growing within the warm-up) and
this driver: identities whose IncomingCalls go to a webhook here, and calls placed closed loop (a fixed
number in flight, each waiting for its IncomingCall) so that nothing queues. RSS (from /proc) is sampled
idle, then after each tenth of the calls; the first two tenths are the warm-up. Flatness is the spread of
the samples after the warm-up around the warm-up's figure; ratios are against idle from the same run.

Usage: python benchmarks/rss.py [--calls 100000] [--concurrency 16]
Prints JSON. Targets: idle <= 150 MB; flat within +-10 % over 100,000 calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from harness import Served, callgrid, identities, identities_webhook, load, rss_mb
from route_latency import _run_loop

RING_TIMEOUT_SECONDS = 5


async def _measure(served: Served, users: list[str], calls: int, concurrency: int) -> dict[str, Any]:
    await asyncio.sleep(2)  # idle: started, nothing asked of it yet
    idle = rss_mb(served.pid)
    samples: list[dict[str, float]] = []
    lost = refused = 0
    async with identities_webhook(served) as bench:
        started = time.perf_counter()
        placed = 0
        tenth = max(1, calls // 10)

        async def worker() -> None:
            nonlocal placed, lost
            while placed < calls:
                i = placed
                placed += 1
                if await bench.place(users[i % len(users)]) is None:
                    lost += 1
                if (i + 1) % tenth == 0:
                    samples.append({"calls": i + 1, "rss_mb": rss_mb(served.pid)})

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        refused = bench.refused
    final = rss_mb(served.pid)
    warm = samples[1]["rss_mb"] if len(samples) > 1 else final
    after = [s["rss_mb"] for s in samples[2:]] + [final]
    spread = (max(after) - min([*after, warm])) / warm if warm else 0.0
    return {
        "benchmark": "rss",
        "calls": calls,
        "ring_timeout_s": RING_TIMEOUT_SECONDS,
        "concurrency": concurrency,
        "calls_per_s": round(calls / elapsed, 1),
        "lost": lost - refused,
        "refused": refused,
        "idle_rss_mb": idle,
        "warm_rss_mb": warm,
        "final_rss_mb": final,
        "final_vs_idle": round(final / idle, 2),
        "max_after_warm_up_vs_warm": round(max(after) / warm, 3),
        "spread_after_warm_up": round(spread, 3),
        "flat_within_10_percent": spread <= 0.10,
        "samples": samples,
        "targets": {"idle_rss_mb": 150, "flat": 0.10},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--identities", type=int, default=50)
    args = parser.parse_args()
    load_before = load()
    with callgrid("--ring-timeout", str(RING_TIMEOUT_SECONDS)) as served:
        users = identities(served, args.identities)
        result = _run_loop(_measure(served, users, args.calls, args.concurrency))
    print(json.dumps({**result, "load_before_after": [load_before, load()]}, indent=2))


if __name__ == "__main__":
    main()
