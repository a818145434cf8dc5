"""`make bench`: every benchmark in `benchmarks/`, each in a quick mode (fewer events, shorter phases, the
same measurement), one after another, in well under ten minutes on a 2-core machine.

Writes:
- `benchmarks/results/latest.json`: each benchmark's own JSON, its wall time and the load average around it;
- the summary table at the top of BENCHMARKS.md, between the `bench:summary` markers (the rest of the file
  is written by hand and left alone);
- `benchmarks/results/latency_vs_load.png`: latency (p50, p99) against offered load, for the routed story
  (route_latency.py --find-max's steps) and the IncomingCall (incoming_call_latency.py).

A benchmark that cannot run here (no PostgreSQL, no SIPp) or fails is reported as such in the table; the
others still run. Quick figures are noisier than the full runs recorded below the table.

Usage: python benchmarks/run_all.py [--only NAME,NAME] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
START, END = "<!-- bench:summary:start -->", "<!-- bench:summary:end -->"

NONE = "\N{EN DASH}"  # an empty cell
Row = tuple[str, str, str, str, str]  # headline, baseline (same run), ratio, target, met


@dataclass
class Benchmark:
    name: str
    args: list[str] = field(default_factory=list)
    # Quick mode of a script without options: its module constants, set before its main() runs.
    constants: dict[str, Any] = field(default_factory=dict)
    needs: str | None = None  # "postgresql" or "sipp"
    timeout: float = 180


BENCHMARKS = [
    Benchmark("filter_match", constants={"EVENTS": 2_000}),
    Benchmark("resource_auth"),
    Benchmark("route_dispatch", ["--requests", "5000"]),
    Benchmark("console_observer", constants={"ROUNDS": 5}),
    Benchmark(
        "delivery_throughput", constants={"RAW_POSTS": 4_000, "UNBATCHED_EVENTS": 3_000, "BATCHED_EVENTS": 20_000}
    ),
    Benchmark("delivery_client", ["--requests", "2000"]),
    Benchmark("postgres_driver", constants={"DELIVERIES": 4_000, "CALL_SAVES": 1_000, "ROUNDS": 1}, needs="postgresql"),
    Benchmark("multinode", constants={"EVENTS": 2_000}, needs="postgresql"),
    Benchmark("media", ["--calls", "20", "--seconds", "3"]),
    # Issue 13's whole pipeline: IncomingCall routed by a real `router serve`, the identity's device answers.
    Benchmark("sip_cps", ["--router", "--numbers", "10", "--rates", "50,100", "--seconds", "3"], needs="sipp"),
    Benchmark("fixture_overhead", ["--runs", "5"]),
    Benchmark("route_latency", ["--rate", "200", "--seconds", "3"]),
    Benchmark(
        "route_latency_find_max",
        ["--find-max", "--rates", "100,200,300,400,600,800,1000", "--seconds", "3", "--refine", "1"],
        timeout=240,
    ),
    # The same four hops with nothing done at them: what the routed story could reach on this machine at most.
    Benchmark(
        "route_floor", ["--rates", "100,200,300,400,600,800,1000", "--seconds", "3", "--refine", "1"], timeout=240
    ),
    Benchmark("incoming_call_latency", ["--rates", "50,200,1000", "--seconds", "3"]),
    Benchmark("cold_start", ["--runs", "3"]),
    Benchmark("rss", ["--calls", "20000"], timeout=240),
]


def _command(bench: Benchmark) -> list[str]:
    script = bench.name.removesuffix("_find_max")
    if not bench.constants:
        return [sys.executable, str(HERE / f"{script}.py"), *bench.args]
    run = (
        "import asyncio, inspect, sys\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        f"sys.argv = [{str(HERE / (script + '.py'))!r}]\n"
        f"import {script} as m\n"
        f"for k, v in {bench.constants!r}.items(): setattr(m, k, v)\n"
        "r = m.main()\n"
        "if inspect.iscoroutine(r): asyncio.run(r)\n"
    )
    return [sys.executable, "-c", run]


def _available(need: str | None) -> str | None:
    """Why a benchmark cannot run here, or None."""
    if need == "sipp" and shutil.which("sipp") is None:
        return "needs SIPp (Debian's sip-tester)"
    if need == "postgresql":
        try:
            import psycopg

            from callgrid.testing.stores import postgres_url

            psycopg.connect(postgres_url(), connect_timeout=3).close()
        except Exception as exc:
            return f"needs PostgreSQL ({type(exc).__name__})"
    return None


def run(bench: Benchmark) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    entry: dict[str, Any] = {"name": bench.name, "command": " ".join(bench.args) or None}
    if bench.constants:
        entry["quick_constants"] = bench.constants
    missing = _available(bench.needs)
    if missing is not None:
        return {**entry, "status": "skipped", "reason": missing}
    print(f"bench: {bench.name} ...", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(_command(bench), capture_output=True, text=True, timeout=bench.timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {**entry, "status": "failed", "reason": f"over {bench.timeout:g} s"}
    entry |= {"seconds": round(time.perf_counter() - started, 1), "load": [round(load_before, 2), _load()]}
    if done.returncode != 0:
        return {**entry, "status": "failed", "reason": done.stderr.strip().splitlines()[-1:] or ["no output"]}
    try:
        result = json.loads(done.stdout[done.stdout.index("{") :])
    except ValueError:
        return {**entry, "status": "failed", "reason": "no JSON on stdout"}
    return {**entry, "status": "ok", "result": result}


def _load() -> float:
    return round(os.getloadavg()[0], 2)


# ---------------------------------------------------------------------- the summary table


def _yes(ok: bool | None) -> str:
    return NONE if ok is None else ("yes" if ok else "**no**")


def _filter_match(r: dict[str, Any]) -> Row:
    us, ratio = r["us_per_event"]["100000"], r["ratio_vs_10"]["100000"]
    return (
        f"{us} µs/event at 100,000 subscriptions",
        f"{r['us_per_event']['10']} µs at 10",
        f"{ratio}",
        "≤ 20 µs, ≤ 2x",
        _yes(us <= 20 and ratio <= 2),
    )


def _resource_auth(r: dict[str, Any]) -> Row:
    last = r["results"][-1]
    return (
        f"{last['usPerRequest']} µs/request signed by the last of {last['resources']} resources",
        f"{r['baseline']['usPerRequest']} µs, 1 resource",
        f"{last['ratio']}",
        NONE,
        NONE,
    )


def _console_observer(r: dict[str, Any]) -> Row:
    us = r["us_per_event"]
    return (
        f"{us['observed']} µs/published event, console observing",
        f"{us['bare']} µs without",
        f"{r['ratio_observed_vs_bare']}",
        NONE,
        NONE,
    )


def _delivery_throughput(r: dict[str, Any]) -> Row:
    batched, ratio = r["batched"]["events_per_s"], r["unbatched_vs_raw"]
    return (
        f"{batched:,.0f} events/s batched, {r['unbatched']['events_per_s']:,.0f} unbatched",
        f"{r['raw_posts_per_s']:,} bare POSTs/s",
        f"{ratio} (unbatched/bare)",
        "≥ 5,000 batched; ≥ 0.5",
        _yes(batched >= 5000 and ratio >= 0.5),
    )


def _delivery_client(r: dict[str, Any]) -> Row:
    cpu = r["client_cpu_us_per_request"]
    return (
        f"{cpu['http1']['1_in_flight']} µs of client CPU per webhook POST (Http1Sender; "
        f"{cpu['http1']['8_in_flight']} with 8 in flight); aiohttp {cpu['aiohttp']['1_in_flight']} "
        f"({cpu['aiohttp']['8_in_flight']})",
        f"{cpu['floor']['1_in_flight']} µs, bare protocol ({cpu['floor']['8_in_flight']})",
        f"{r['http1_vs_floor']['1_in_flight']} (Http1Sender/bare)",
        NONE,
        NONE,
    )


def _postgres_driver(r: dict[str, Any]) -> Row:
    key = "claim_complete_deliveries_per_s"
    return (
        f"psycopg {r['psycopg'][key]:,.0f} deliveries/s claimed+completed",
        f"asyncpg {r['asyncpg'][key]:,.0f}",
        f"{r['asyncpg_over_psycopg_' + key]} (asyncpg/psycopg)",
        NONE,
        NONE,
    )


def _multinode(r: dict[str, Any]) -> Row:
    two, pg = r["two_nodes_vs_one"], r["postgresql_vs_sqlite"]
    return (
        f"{r['postgresql_two_nodes']['events_per_s']:,.0f} events/s, 2 nodes on PostgreSQL",
        f"{r['sqlite_one_node']['events_per_s']:,.0f}, 1 node on SQLite",
        f"{two} (2 vs 1 PG node); {pg} (PG vs SQLite)",
        "≥ 1.6; ≥ 0.7",
        _yes(two >= 1.6 and pg >= 0.7),
    )


def _media(r: dict[str, Any]) -> Row:
    cpu = r["cpu_ms_per_stream_second"]
    return (
        f"pacing p99 {r['pacing_ms']['p99']} ms, {r['frames_lost']} frames lost, {r['calls']} streams",
        f"bare pacing p99 {r['bare_pacing_ms']['p99']} ms",
        f"{cpu['ratio']} (CPU vs bare client)",
        NONE,
        NONE,
    )


def _sip_cps(r: dict[str, Any]) -> Row:
    top, base = r["callgrid"][-1], r["baseline_sipp_uas"][-1]
    cpu = f"callgrid {top['callgridCpuMsPerCall']}" + (
        f", router {top['routerCpuMsPerCall']}" if "routerCpuMsPerCall" in top else ""
    )
    return (
        f"{top['achievedCps']} {'routed ' if r.get('mode') == 'router' else ''}calls/s at {top['rate']} offered, "
        f"{top['failed']} failed, p99 {top['responseMs']['p99']} ms (CPU ms/call: {cpu})",
        f"SIPp UAS {base['achievedCps']} calls/s",
        f"{round(top['achievedCps'] / base['achievedCps'], 2) if base['achievedCps'] else NONE}",
        NONE,
        NONE,
    )


def _fixture_overhead(r: dict[str, Any]) -> Row:
    over = r["over_bare_ms"]["subscribed"]
    return (
        f"{r['subscribed']['p50']} ms per subscribed test (p50)",
        f"{r['bare']['p50']} ms bare round trip",
        f"+{over} ms",
        "≤ 50 ms over bare",
        _yes(over <= 50),
    )


def _route_latency(r: dict[str, Any]) -> Row:
    routed = r["routed"]
    return (
        f"routed p50 {routed['p50_ms']} / p99 {routed['p99_ms']} ms at {r['rate_per_s']:g}/s, lost {routed['lost']}",
        f"direct p50 {r['direct']['p50_ms']} ms",
        f"{r['ratio_routed_vs_direct_p50']} (routed/direct p50)",
        "p99 ≤ 25 ms",
        _yes(r["target"]["met"]),
    )


def _ceiling(best: float | None, cpu: dict[str, float] | None, what: str, steps: list[dict[str, Any]]) -> str:
    """A --find-max result: the highest rate held, with each process's CPU per call there."""
    if not best:
        return f"no rate held p99 ≤ 25 ms (lowest tried: {steps[0]['rate_per_s']:g}/s)"
    per = ", ".join(f"{k} {v}" for k, v in sorted((cpu or {}).items()))
    return f"{best:g} {what} at p99 ≤ 25 ms (CPU ms/call: {per})"


def _find_max(r: dict[str, Any]) -> Row:
    best = r["max_routed_calls_per_s"]
    figure = _ceiling(best, r["cpu_ms_per_routed_call_at_max"], "routed calls/s", r["steps"])
    woken = r.get("machine", {}).get("round_trip_after_idle_ms", {}).get("0.1s")
    return (
        figure,
        f"{r['bare_http_round_trips_per_s']:,} bare HTTP round trips/s"
        + (f"; {woken} ms for one after 0.1 s idle" if woken is not None else ""),
        f"{r['max_routed_vs_bare_round_trips'] or NONE}",
        "1,000/s",
        _yes((best or 0) >= 1000),
    )


def _route_dispatch(r: dict[str, Any]) -> Row:
    hot = [v for k, v in r["requests"].items() if k.startswith("POST")]
    indexed, scan = sum(v["indexed_us"] for v in hot), sum(v["starlette_scan_us"] for v in hot)
    return (
        f"{indexed:.1f} µs to route a routed call's two requests ({r['routes']} routes)",
        f"{scan:.1f} µs, Starlette's scan",
        f"{indexed / scan:.3f}",
        NONE,
        NONE,
    )


def _route_floor(r: dict[str, Any]) -> Row:
    what = "calls/s, the routed story's hops doing nothing,"
    figure = _ceiling(r["max_floor_calls_per_s"], r["cpu_ms_per_call_at_floor"], what, r["steps"])
    ratio = r["max_floor_vs_bare_round_trips"] or NONE
    return figure, f"{r['bare_http_round_trips_per_s']:,} bare HTTP round trips/s", f"{ratio}", NONE, NONE


def _incoming_call_latency(r: dict[str, Any]) -> Row:
    cells = "; ".join(
        f"{x['rate_per_s']:g}/s {x['p50_ms']}/{x['p99_ms']}/{x['p999_ms']}"
        + (f" ({x['refused']} refused)" if x["refused"] else "")
        for x in r["rates"]
    )
    at_200 = next((x for x in r["rates"] if x["rate_per_s"] == 200), None)
    return (
        f"p50/p99/p999 ms: {cells}",
        f"signed round trip p50 {r['baseline_signed_round_trip_at_50_per_s']['p50_ms']} ms",
        f"{at_200['p50_vs_baseline'] if at_200 else NONE} (p50 at 200/s)",
        "p50 ≤ 3, p99 ≤ 15 at 200/s",
        _yes(r["target_at_200"]["met"]),
    )


def _cold_start(r: dict[str, Any]) -> Row:
    used, new = r["callgrid_serve_used_data_dir"], r["callgrid_serve_new_data_dir"]
    return (
        f"{used['median_s']} s (used data dir), {new['median_s']} s (new)",
        f"{r['baseline_starlette_uvicorn_tls']['median_s']} s bare Starlette+uvicorn",
        f"{used['ratio_vs_baseline']}",
        "≤ 1.5 s",
        _yes(used["median_s"] <= 1.5),
    )


def _rss(r: dict[str, Any]) -> Row:
    return (
        f"idle {r['idle_rss_mb']} MB; {r['final_rss_mb']} MB after {r['calls']:,} calls "
        f"(spread {r['spread_after_warm_up']:.1%})",
        f"idle {r['idle_rss_mb']} MB",
        f"{r['final_vs_idle']} (final/idle)",
        "idle ≤ 150 MB, ±10 %",
        _yes(r["idle_rss_mb"] <= 150 and r["flat_within_10_percent"]),
    )


SUMMARIES: dict[str, Callable[[dict[str, Any]], Row]] = {
    "filter_match": _filter_match,
    "resource_auth": _resource_auth,
    "console_observer": _console_observer,
    "delivery_throughput": _delivery_throughput,
    "postgres_driver": _postgres_driver,
    "multinode": _multinode,
    "media": _media,
    "sip_cps": _sip_cps,
    "fixture_overhead": _fixture_overhead,
    "delivery_client": _delivery_client,
    "route_latency": _route_latency,
    "route_latency_find_max": _find_max,
    "route_floor": _route_floor,
    "route_dispatch": _route_dispatch,
    "incoming_call_latency": _incoming_call_latency,
    "cold_start": _cold_start,
    "rss": _rss,
}


def table(entries: list[dict[str, Any]], total_seconds: float, stamp: str) -> str:
    lines = [
        START,
        f"## Summary (`make bench`, quick modes; generated {stamp}, {total_seconds:.0f} s in all)",
        "",
        "Written by `benchmarks/run_all.py`; figures below the table are full runs, written by hand. Quick modes",
        "are short and noisy: read the sections below for what a figure means. Load: 1-minute load average",
        f"before/after each benchmark on this {os.cpu_count()}-core machine.",
        "",
        "| Benchmark | Figure | Baseline (same run) | Ratio | Target | Met | s | Load |",
        "|---|---|---|---|---|---|---:|---|",
    ]
    for e in entries:
        name = f"`{e['name']}`"
        if e["status"] != "ok":
            reason = e["reason"] if isinstance(e["reason"], str) else " ".join(e["reason"])
            lines.append(f"| {name} | {e['status']}: {reason.replace('|', '/')} | | | | | | |")
            continue
        try:
            cells = SUMMARIES[e["name"]](e["result"])
        except (KeyError, TypeError, IndexError, ZeroDivisionError) as exc:
            cells = (f"see results/latest.json ({type(exc).__name__})", "", "", "", "")
        load = "/".join(f"{x:g}" for x in e["load"])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {e['seconds']:g} | {load} |")
    lines += ["", "![Latency against offered load](benchmarks/results/latency_vs_load.png)"]
    return "\n".join([*lines, "", END])


def write_summary(markdown: Path, block: str) -> None:
    text = markdown.read_text()
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END) :]
    else:  # first time: under the title and its one-line introduction
        head, _, rest = text.partition("\n\n")
        intro, _, rest = rest.partition("\n\n")
        text = f"{head}\n\n{intro}\n\n{block}\n\n{rest}"
    markdown.write_text(text)


def plot(entries: list[dict[str, Any]], path: Path, label: str = "quick mode") -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_name = {e["name"]: e.get("result") for e in entries if e["status"] == "ok"}
    series: list[tuple[str, list[dict[str, Any]]]] = []
    if by_name.get("route_latency_find_max"):
        steps = sorted(by_name["route_latency_find_max"]["steps"], key=lambda s: s["rate_per_s"])
        series.append(("routed (PSTN → router → identity)", steps))
    if by_name.get("route_floor"):
        steps = sorted(by_name["route_floor"]["steps"], key=lambda s: s["rate_per_s"])
        series.append(("the routed hops doing nothing (route_floor)", steps))
    if by_name.get("incoming_call_latency"):
        series.append(("IncomingCall (PSTN → identity)", by_name["incoming_call_latency"]["rates"]))
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    for (story, points), color in zip(series, ("tab:blue", "tab:green", "tab:orange"), strict=False):
        rates = [p["rate_per_s"] for p in points]
        ax.plot(rates, [p["p50_ms"] for p in points], "o--", color=color, label=f"{story} p50")
        ax.plot(rates, [p["p99_ms"] for p in points], "o-", color=color, label=f"{story} p99")
    ax.axhline(25, color="grey", linewidth=0.8, linestyle=":", label="25 ms (routed p99 target)")
    ax.set_xlabel("offered load (calls per second, open loop)")
    ax.set_ylabel("latency, placed → webhook received (ms, log scale)")
    ax.set_yscale("log")
    ax.set_title(f"callgrid latency against offered load ({os.cpu_count()} cores, SQLite, {label})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated names")
    parser.add_argument("--no-write", action="store_true", help="print the table; write no files")
    args = parser.parse_args()
    chosen = [b for b in BENCHMARKS if not args.only or b.name in args.only.split(",")]
    started = time.perf_counter()
    entries = []
    for bench in chosen:
        entry = run(bench)
        entries.append(entry)
        if entry["status"] != "ok":
            print(f"bench: {bench.name} {entry['status']}: {entry['reason']}", file=sys.stderr)
    total = time.perf_counter() - started
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = table(entries, total, stamp)
    print(block)
    if args.no_write:
        return
    RESULTS.mkdir(exist_ok=True)
    record = {"generated": stamp, "seconds": round(total, 1), "benchmarks": entries}
    (RESULTS / "latest.json").write_text(json.dumps(record, indent=2))
    plot(entries, RESULTS / "latency_vs_load.png")
    write_summary(ROOT / "BENCHMARKS.md", block)
    print(f"bench: {total:.0f} s; BENCHMARKS.md's summary, {RESULTS.relative_to(ROOT)}/", file=sys.stderr)


if __name__ == "__main__":
    main()
