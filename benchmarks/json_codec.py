"""JSON encoding and decoding of callgrid's own documents: the standard library against orjson (issue 15).

A routed call encodes and decodes a few dozen JSON documents (its call document at every change, each
event, each response). Measured in process on the shapes callgrid writes: a ringing call's document and
an IncomingCall event in the Event Grid schema. Prints JSON: microseconds per operation, best of 7 runs,
and orjson's figure as a ratio of the standard library's (the baseline, same run).
Usage: python benchmarks/json_codec.py [--number 20000]
"""

from __future__ import annotations

import argparse
import json
import timeit
from typing import Any

import orjson

PSTN = {"rawId": "4:+12065550100", "kind": "phoneNumber", "phoneNumber": {"value": "+12065550100"}}
OWNED = {"rawId": "4:+14255551212", "kind": "phoneNumber", "phoneNumber": {"value": "+14255551212"}}
STAMP = "2026-11-29T13:00:00.1234567Z"

CALL: dict[str, Any] = {
    "server_call_id": "aHR0cHM6Ly9hcGkuZmxpZ2h0cHJveHkuc2t5cGUuY29tL2FwaS92Mi9jcC9jb252LXVzZWEyLTAxLmNvbnYvYWJj",
    "resource_id": "default",
    "state": "ringing",
    "source": PSTN,
    "targets": [OWNED],
    "offers": [
        {
            "offer_id": "01938a2b-7c1d-4e5f-8a9b-0c1d2e3f4a5b",
            "target": OWNED["rawId"],
            "state": "ringing",
            "created_at": 1764421200.123,
            "expires_at": 1764421230.123,
            "incoming_call_event_id": "01938a2b-7c1d-4e5f-8a9b-0c1d2e3f4a5c",
            "custom_context": {"sipHeaders": {"X-Ticket": "1234"}, "voipHeaders": {}},
        }
    ],
    "participants": [{"identifier": PSTN, "isMuted": False, "isOnHold": False}],
    "connections": [],
    "history": [{"at": 1764421200.123, "what": "ringing", "target": OWNED["rawId"], "incomingCall": True}],
}

EVENT: dict[str, Any] = {
    "id": "01938a2b-7c1d-4e5f-8a9b-0c1d2e3f4a5c",
    "topic": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/callgrid/providers/"
    "Microsoft.Communication/communicationServices/callgrid",
    "subject": "/phonenumber/14255551212",
    "eventType": "Microsoft.Communication.IncomingCall",
    "eventTime": STAMP,
    "dataVersion": "1.0",
    "metadataVersion": "1",
    "data": {
        "to": {"kind": "phoneNumber", "rawId": "4:+14255551212", "phoneNumber": {"value": "+14255551212"}},
        "from": {"kind": "phoneNumber", "rawId": "4:+12065550100", "phoneNumber": {"value": "+12065550100"}},
        "serverCallId": CALL["server_call_id"],
        "callerDisplayName": "",
        "customContext": {"sipHeaders": {"X-Ticket": "1234"}, "voipHeaders": {}},
        "incomingCallContext": "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + "x" * 400 + ".",
        "correlationId": "01938a2b-7c1d-4e5f-8a9b-0c1d2e3f4a5d",
    },
}


def _best_us(fn: Any, number: int) -> float:
    return round(min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--number", type=int, default=20_000)
    n = parser.parse_args().number
    out: dict[str, Any] = {"benchmark": "json_codec", "number": n, "documents": {}}
    for name, doc in (("call", CALL), ("incomingCall", EVENT)):
        text = json.dumps(doc, separators=(",", ":"))
        figures = {
            "bytes": len(text),
            "encode_us": {
                "stdlib": _best_us(lambda d=doc: json.dumps(d, separators=(",", ":")), n),
                "orjson": _best_us(lambda d=doc: orjson.dumps(d).decode(), n),
            },
            "decode_us": {
                "stdlib": _best_us(lambda t=text: json.loads(t), n),
                "orjson": _best_us(lambda t=text: orjson.loads(t), n),
            },
        }
        for op in ("encode_us", "decode_us"):
            f = figures[op]
            f["ratio_orjson_vs_stdlib"] = round(f["orjson"] / f["stdlib"], 3)
        out["documents"][name] = figures
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
