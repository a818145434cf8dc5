"""The one way request and response bodies from the network are parsed as JSON.

A parser alone can let a hostile body through in three ways: thousands of nested brackets (the standard
library raises RecursionError: a 500, not a 400), `NaN`/`Infinity` (the standard library accepts them
although JSON has no such values), and a deep but parseable document that breaks whatever walks it later.
orjson refuses the first two itself; the depth is checked here. Azure's services parse with .NET, whose
readers stop at 64 levels (System.Text.Json's and Json.NET's default MaxDepth); callgrid does the same.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["MAX_DEPTH", "JsonRejected", "loads"]

MAX_DEPTH = 64
_BOM = b"\xef\xbb\xbf"


class JsonRejected(ValueError):
    """Not JSON callgrid accepts; the message says why, in words fit for an error body."""


def loads(text: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse `text`; raise :class:`ValueError` (a :class:`JsonRejected` for the cases above) if it is refused."""
    if isinstance(text, bytes) and text.startswith(_BOM):
        text = text[len(_BOM) :]  # the standard library took one; a .NET reader skips it too
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        # orjson refuses NaN, Infinity and numbers past a double's range itself, and stops at 1,024 levels.
        if "depth limit" in str(exc):
            raise JsonRejected(f"it is nested deeper than {max_depth} levels") from None
        raise
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
