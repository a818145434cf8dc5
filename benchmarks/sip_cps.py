"""SIP calls per second through the whole pipeline, signalling only.

Processes on this machine: `callgrid serve --sip-port` (system clock, SQLite) with a webhook subscribed
to its IncomingCall events (this script's process), and SIPp as the carrier's SBC. Each call: INVITE to
an owned number -> IncomingCall published and delivered, the number's scripted device answers -> 100,
180, 200 with SDP -> ACK -> BYE -> 200; the call ends. SIPp places calls at rising rates for a fixed
time at each; per rate: calls attempted, successful and failed, the INVITE -> 200 response time
distribution (SIPp's own measure) and callgrid's CPU per call.

`--router`: the routed story instead of a plain webhook. A real `callgrid router serve` (its own SQLite,
`--numbers` numbers each assigned to an identity, subscribed with `callgrid router subscribe`) receives
the IncomingCall and redirects the call to the number's identity, whose scripted device answers; SIPp
dials the numbers in turn. Reported besides: the router's CPU per call.

Baseline in the same run: the same SIPp scenario against a second SIPp acting as a bare UAS (answers
at once, no platform behind it), at the same rates: what the machine and SIPp themselves cost.
Prints JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from route_latency import _cpu_seconds, _pct, _wait, stop

from callgrid.testing import CallgridServer, WebhookReceiver

NUMBER = "+14255551212"
CALLER = "+12065550100"

UAC = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="cps">
  <send retrans="500"><![CDATA[
INVITE sip:{callee}@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]T[call_number]
To: <sip:{callee}@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:{caller}@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=- 1 1 IN IP4 [local_ip]
s=-
c=IN IP4 [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true" rrs="true"/>
  <send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]T[call_number]
To: <sip:{callee}@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0
]]></send>
  <send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]T[call_number]
To: <sip:{callee}@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
Max-Forwards: 70
Content-Length: 0
]]></send>
  <recv response="200" crlf="true"/>
  <ResponseTimeRepartition value="5, 10, 20, 50, 100, 200, 500, 1000"/>
</scenario>
""".replace("{caller}", CALLER)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sipp_run(
    workdir: Path, remote: str, rate: int, seconds: float, numbers: list[str] | None = None
) -> dict[str, Any]:
    """One SIPp run at `rate` calls/s for `seconds`: its counts and response times (ms). With `numbers`, the
    calls go to them in turn (an injection file); else all to NUMBER."""
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    xml = run_dir / "uac.xml"
    xml.write_text(UAC.replace("{callee}", "[field0]" if numbers else "[service]"))
    calls = int(rate * seconds)
    args = [
        "sipp", remote, "-sf", str(xml), "-s", NUMBER, "-i", "127.0.0.1", "-p", str(_free_port()),
        "-mp", str(_free_port()), "-r", str(rate), "-m", str(calls), "-l", str(max(50, rate * 4)),
        "-nostdin", "-trace_rtt", "-rtt_freq", "1", "-trace_stat", "-fd", "1",
        "-timeout", f"{int(seconds * 4 + 30)}s", "-timeout_error", "-max_socket", "1000",
    ]  # fmt: skip
    if numbers:
        injection = run_dir / "numbers.csv"
        injection.write_text("SEQUENTIAL\n" + "".join(f"{n};\n" for n in numbers))
        args += ["-inf", str(injection)]
    started = time.monotonic()
    proc = subprocess.run(args, cwd=run_dir, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    rtts: list[float] = []
    for path in run_dir.glob("*_rtt.csv"):
        for line in path.read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 2:
                with contextlib.suppress(ValueError):
                    rtts.append(float(parts[1]))
    successful = failed = 0
    why: dict[str, int] = {}  # SIPp's failure counters (FailedUnexpectedMessage: a 503 or 480 instead of 200)
    for path in run_dir.glob("*_.csv"):
        rows = [r.split(";") for r in path.read_text().splitlines() if r.strip()]
        if len(rows) >= 2:
            header, last = rows[0], rows[-1]
            successful = int(last[header.index("SuccessfulCall(C)")])
            failed = int(last[header.index("FailedCall(C)")])
            why = {
                name.removesuffix("(C)"): int(value)
                for name, value in zip(header, last, strict=False)
                if name.startswith("Failed") and name.endswith("(C)") and name != "FailedCall(C)" and value != "0"
            }
    if successful == 0 and failed == 0:
        match = re.search(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", proc.stdout)
        successful = int(match.group(1)) if match else 0
        failed = calls - successful
    return {
        "rate": rate,
        "attempted": calls,
        "successful": successful,
        "failed": failed,
        **({"sippFailures": why} if why else {}),
        "seconds": round(elapsed, 2),
        "achievedCps": round(successful / elapsed, 1) if elapsed else 0.0,
        "responseMs": {
            "p50": _pct(rtts, 50),
            "p90": _pct(rtts, 90),
            "p99": _pct(rtts, 99),
            "max": max(rtts, default=0),
        },
        "sippExit": proc.returncode,
    }


def _sip_counters(server: CallgridServer) -> dict[str, float]:
    """callgrid's SIP counters from /metrics (callgrid_sip_*)."""
    counters = {}
    for line in server.client().download("/metrics").decode().splitlines():
        if line.startswith("callgrid_sip_"):
            name, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                counters[name.removeprefix("callgrid_sip_")] = float(value)
    return counters


def _python(*args: str, env: dict[str, str]) -> str:
    return subprocess.run(
        [sys.executable, "-m", "callgrid", *args], check=True, capture_output=True, text=True, env=env
    ).stdout


@contextlib.contextmanager
def _router(server: CallgridServer, workdir: Path, count: int) -> Iterator[tuple[list[str], subprocess.Popen[bytes]]]:
    """`count` owned numbers, each assigned to an identity whose scripted device answers, and a real
    `callgrid router serve` subscribed to their IncomingCall (as benchmarks/route_latency.py sets it up).
    Yields the numbers and the router's process."""
    from azure.communication.identity import CommunicationIdentityClient
    from azure.core.pipeline.transport import RequestsTransport

    env = {**os.environ, **server.env}
    transport = RequestsTransport(connection_verify=server.ca_bundle)
    identity = CommunicationIdentityClient.from_connection_string(server.connection_string, transport=transport)
    users = [str(identity.create_user().properties["id"]) for _ in range(count)]
    transport.close()
    numbers = [f"+1425556{i:04d}" for i in range(count)]
    for number, user in zip(numbers, users, strict=True):
        server.own_number(number)  # its device rings (the default): only the router's redirect answers it
        server.set_device(user, "answer")
    db, csv = workdir / "router.db", workdir / "assignments.csv"
    csv.write_text("".join(f"{n},{u}\n" for n, u in zip(numbers, users, strict=True)))
    _python("router", "import", str(csv), "--db", str(db), env=env)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (workdir / "router.log").open("wb")
    router = subprocess.Popen(
        [sys.executable, "-m", "callgrid", "router", "serve", "--db", str(db), "--port", str(port),
         "--public-url", url, "--log-level", "warning"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait(url + "/healthz", None)
        _python("router", "subscribe", "--db", str(db), "--public-url", url, env=env)
        yield numbers, router
    finally:
        stop(router)
        log.close()


def _profile(where: Path, pids: dict[str, int], rate: int, seconds: float) -> list[subprocess.Popen[bytes]]:
    """py-spy sampling each process for the run's duration (py-spy from the interpreter's bin or PATH)."""
    spy = Path(sys.executable).with_name("py-spy")
    where.mkdir(parents=True, exist_ok=True)
    command = [str(spy) if spy.exists() else "py-spy", "record", "-f", "raw", "-r", "100", "-d", str(int(seconds))]
    return [
        subprocess.Popen(
            [*command, "-p", str(pid), "-o", str(where / f"{name}-{rate}.txt")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", default="25,50,100,200,300,400")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--no-webhook", action="store_true", help="publish IncomingCall with no subscriber")
    parser.add_argument("--router", action="store_true", help="the router redirects each call to an identity")
    parser.add_argument("--numbers", type=int, default=50, help="with --router: assigned numbers (one identity each)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the SIPp-to-SIPp baseline")
    parser.add_argument(
        "--profile", type=Path, help="py-spy (raw, folded stacks) of each server process at the last rate, here"
    )
    args = parser.parse_args()
    if shutil.which("sipp") is None:
        raise SystemExit("sipp (Debian's sip-tester) is required")
    rates = [int(r) for r in args.rates.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="sip-cps-"))
    out: dict[str, Any] = {
        "mode": "router" if args.router else ("no-webhook" if args.no_webhook else "webhook"),
        "seconds_per_rate": args.seconds,
        "callgrid": [],
        "baseline_sipp_uas": [],
    }

    if not args.no_baseline:
        # Baseline: SIPp's own UAS on loopback, no platform.
        uas_port = _free_port()
        uas = subprocess.Popen(
            ["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(uas_port), "-nostdin"],
            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(3)  # SIPp's UAS up before the first call (a loaded machine starts it slowly)
        try:
            for rate in rates:
                out["baseline_sipp_uas"].append(_sipp_run(workdir, f"127.0.0.1:{uas_port}", rate, args.seconds))
        finally:
            uas.terminate()
            uas.wait(timeout=10)

    sip_port = _free_port()
    server = CallgridServer(workdir / "callgrid", clock="system", extra_args=["--sip-port", str(sip_port)])
    with contextlib.ExitStack() as stack:
        stack.enter_context(server)
        assert server.proc is not None
        pids = {"callgrid": server.proc.pid}
        numbers: list[str] | None = None
        hook: WebhookReceiver | None = None
        if args.router:
            numbers, router = stack.enter_context(_router(server, workdir, args.numbers))
            pids["router"] = router.pid
            # Warm-up, not reported: the router's SDK client, both stores, SIPp's first sockets.
            warm = _sipp_run(workdir, f"127.0.0.1:{sip_port}", 10, 2, numbers)
            if warm["failed"] or not warm["successful"]:
                raise SystemExit(f"sip_cps --router: the warm-up calls failed ({warm}); logs in {workdir}")
            time.sleep(1)
        else:
            hook = stack.enter_context(WebhookReceiver())
            server.own_number(NUMBER)
            server.set_device("4:" + NUMBER, "answer")
            if not args.no_webhook:
                server.subscribe(hook.url, name="cps")
        for rate in rates:
            spies = _profile(args.profile, pids, rate, args.seconds) if args.profile and rate == rates[-1] else []
            cpu = {name: _cpu_seconds(pid) for name, pid in pids.items()}
            counters = _sip_counters(server)
            result = _sipp_run(workdir, f"127.0.0.1:{sip_port}", rate, args.seconds, numbers)
            for spy in spies:
                spy.wait(timeout=60)
            for name, pid in pids.items():
                used = _cpu_seconds(pid) - cpu[name]
                result[f"{name}CpuMsPerCall"] = round(1000 * used / max(1, result["successful"]), 2)
            # How callgrid turned calls away or lost them, if it did (503 past MAX_SETTING_UP, no ACK, ...).
            after = _sip_counters(server)
            shed = ("overloaded", "ack_timeout", "answer_undeliverable", "internal_error", "refused", "unknown_number")
            shed_counts = {name: int(after.get(name, 0) - counters.get(name, 0)) for name in shed}
            result["callgridSip"] = {name: n for name, n in shed_counts.items() if n}
            out["callgrid"].append(result)
            time.sleep(2)  # let deliveries drain between rates
        if hook is not None:
            out["incomingCallsDelivered"] = len(hook.events("Microsoft.Communication.IncomingCall"))
    print(json.dumps(out, indent=2))
    shutil.rmtree(workdir, ignore_errors=True)  # stores and logs: kept only when the run did not finish


if __name__ == "__main__":
    main()
