"""The one way request and response bodies from the network are parsed as JSON.

`json.loads` alone lets a hostile body through in three ways: thousands of nested brackets raise
RecursionError (a 500, not a 400), `NaN`/`Infinity` are accepted although JSON has no such values, and a
deep but parseable document breaks whatever walks it later. Azure's services parse with .NET, whose
readers stop at 64 levels (System.Text.Json's and Json.NET's default MaxDepth); callgrid does the same.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["MAX_DEPTH", "JsonRejected", "loads"]

MAX_DEPTH = 64


class JsonRejected(ValueError):
    """Not JSON callgrid accepts; the message says why, in words fit for an error body."""


def _no_constant(name: str) -> Any:
    raise JsonRejected(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise JsonRejected(f"the number {text[:40]} is out of range")
    return value


def loads(text: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse `text`; raise :class:`ValueError` (a :class:`JsonRejected` for the cases above) if it is refused."""
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise JsonRejected(f"it is nested deeper than {max_depth} levels") from None
    if _deeper_than(value, max_depth):
        raise JsonRejected(f"it is nested deeper than {max_depth} levels")
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    # Iterative: a recursive walk would fail on the very documents it is meant to catch.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
