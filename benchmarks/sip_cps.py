"""SIP calls per second through the whole pipeline, signalling only.

Processes on this machine: `callgrid serve --sip-port` (system clock, SQLite) with a webhook subscribed
to its IncomingCall events (this script's process), and SIPp as the carrier's SBC. Each call: INVITE to
an owned number -> IncomingCall published and delivered, the number's scripted device answers -> 100,
180, 200 with SDP -> ACK -> BYE -> 200; the call ends. SIPp places calls at rising rates for a fixed
time at each; per rate: calls attempted, successful and failed, the INVITE -> 200 response time
distribution (SIPp's own measure) and callgrid's CPU per call.

Baseline in the same run: the same SIPp scenario against a second SIPp acting as a bare UAS (answers
at once, no platform behind it), at the same rates: what the machine and SIPp themselves cost.
Prints JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from route_latency import _cpu_seconds, _pct

from callgrid.testing import CallgridServer, WebhookReceiver

NUMBER = "+14255551212"
CALLER = "+12065550100"

UAC = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="cps">
  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]T[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
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
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0
]]></send>
  <send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]T[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
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


def _sipp_run(workdir: Path, remote: str, rate: int, seconds: float) -> dict[str, Any]:
    """One SIPp run at `rate` calls/s for `seconds`: its counts and response times (ms)."""
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    xml = run_dir / "uac.xml"
    xml.write_text(UAC)
    calls = int(rate * seconds)
    args = [
        "sipp", remote, "-sf", str(xml), "-s", NUMBER, "-i", "127.0.0.1", "-p", str(_free_port()),
        "-mp", str(_free_port()), "-r", str(rate), "-m", str(calls), "-l", str(max(50, rate * 4)),
        "-nostdin", "-trace_rtt", "-rtt_freq", "1", "-trace_stat", "-fd", "1",
        "-timeout", f"{int(seconds * 4 + 30)}s", "-timeout_error", "-max_socket", "1000",
    ]  # fmt: skip
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
    for path in run_dir.glob("*_.csv"):
        rows = [r.split(";") for r in path.read_text().splitlines() if r.strip()]
        if len(rows) >= 2:
            header, last = rows[0], rows[-1]
            successful = int(last[header.index("SuccessfulCall(C)")])
            failed = int(last[header.index("FailedCall(C)")])
    if successful == 0 and failed == 0:
        match = re.search(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", proc.stdout)
        successful = int(match.group(1)) if match else 0
        failed = calls - successful
    return {
        "rate": rate,
        "attempted": calls,
        "successful": successful,
        "failed": failed,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", default="25,50,100,200,300,400")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--no-webhook", action="store_true", help="publish IncomingCall with no subscriber")
    args = parser.parse_args()
    if shutil.which("sipp") is None:
        raise SystemExit("sipp (Debian's sip-tester) is required")
    rates = [int(r) for r in args.rates.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="sip-cps-"))
    out: dict[str, Any] = {"seconds_per_rate": args.seconds, "callgrid": [], "baseline_sipp_uas": []}

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
    with server, WebhookReceiver() as hook:
        server.own_number(NUMBER)
        server.set_device("4:" + NUMBER, "answer")
        if not args.no_webhook:
            server.subscribe(hook.url, name="cps")
        assert server.proc is not None
        for rate in rates:
            cpu = _cpu_seconds(server.proc.pid)
            result = _sipp_run(workdir, f"127.0.0.1:{sip_port}", rate, args.seconds)
            used = _cpu_seconds(server.proc.pid) - cpu
            result["callgridCpuMsPerCall"] = round(1000 * used / max(1, result["successful"]), 2)
            out["callgrid"].append(result)
            time.sleep(2)  # let deliveries drain between rates
        out["incomingCallsDelivered"] = len(hook.events("Microsoft.Communication.IncomingCall"))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
