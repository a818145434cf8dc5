"""JSON text of callgrid's own making: stored documents, events, response bodies.

orjson, because a routed call encodes and decodes a few dozen documents: encoding a call document takes
~1.2 µs against the standard library's ~20 µs, decoding ~2.8 µs against ~9 µs (`benchmarks/json_codec.py`,
BENCHMARKS.md "JSON").
Output is compact UTF-8. What orjson refuses to encode (keys that are not strings, integers past 64 bits)
goes through the standard library, so nothing that encoded before fails now.

Bodies from the network are parsed by :mod:`callgrid.jsonbody`, which adds the limits hostile input needs.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["dumpb", "dumps", "loads"]

loads = orjson.loads


def dumpb(value: Any) -> bytes:
    """`value` as compact UTF-8 JSON bytes."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def dumps(value: Any) -> str:
    """`value` as compact JSON text."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
