"""Direct Routing's SIP configuration: the trunks (SBC FQDNs and their signalling ports) and the routes
that send calls to public numbers over them, as `SipRoutingClient` reads and merge-patches it
(`GET`/`PATCH /sip`, api-version 2023-03-01).

Kept as one document in the store's resource metadata, so both stores hold it without a migration. The
rules are the service's: a trunk used by a route cannot be removed, a route naming an unknown trunk is
refused (422 UnprocessableConfiguration), `routes` is replaced as a whole, `trunks` merged by FQDN
(null removes one). Routes are tried in order, those whose numberPattern matches the whole number; a
route's trunks in random order. The call goes to the first; the trunk fails over to the next when one
answers 408, 503 or 504, never answers or cannot be reached (`sip/trunk.py`).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Any

from callgrid.errors import InvalidRequest, Unprocessable
from callgrid.store import StoreTx

META_KEY = "sip.configuration"
MAX_TRUNKS = 250
MAX_ROUTES = 250
MAX_PATTERN = 1000
_FQDN = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


@dataclass(frozen=True)
class Trunk:
    fqdn: str
    sip_signaling_port: int


def empty() -> dict[str, Any]:
    return {"trunks": {}, "routes": []}


async def get(tx: StoreTx) -> dict[str, Any]:
    raw = await tx.get_meta(META_KEY)
    if not raw:
        return empty()
    doc: dict[str, Any] = json.loads(raw)
    return doc


async def reset(tx: StoreTx) -> None:
    await tx.set_meta(META_KEY, json.dumps(empty()))


async def update(tx: StoreTx, patch: Any) -> dict[str, Any]:
    """Apply a merge-patch of the configuration; returns the whole configuration after it."""
    if patch is None:
        patch = {}
    if not isinstance(patch, dict):
        raise InvalidRequest("The body must be a SIP configuration object.", code="InvalidRequest")
    unknown = set(patch) - {"trunks", "routes"}
    if unknown:
        raise InvalidRequest(f"Unknown properties: {', '.join(sorted(unknown))}.", code="InvalidRequest")
    config = await get(tx)
    trunks: dict[str, Any] = dict(config["trunks"])
    if "trunks" in patch and patch["trunks"] is not None:
        if not isinstance(patch["trunks"], dict):
            raise InvalidRequest("'trunks' must be an object keyed by FQDN.", code="InvalidRequest")
        for fqdn, value in patch["trunks"].items():
            key = fqdn.lower()
            if value is None:
                trunks.pop(key, None)
                continue
            if not _FQDN.match(fqdn):
                raise InvalidRequest(f"'{fqdn}' is not a valid trunk FQDN.", code="InvalidRequest")
            port = value.get("sipSignalingPort") if isinstance(value, dict) else None
            if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
                raise InvalidRequest(
                    f"Trunk '{fqdn}': sipSignalingPort must be an integer from 1 to 65535.", code="InvalidRequest"
                )
            trunks[key] = {"sipSignalingPort": port}
        if len(trunks) > MAX_TRUNKS:
            raise Unprocessable(f"At most {MAX_TRUNKS} trunks can be configured.")
    routes = config["routes"]
    if "routes" in patch and patch["routes"] is not None:
        routes = [_route(r) for r in _list(patch["routes"])]
        names = [r["name"] for r in routes]
        if len(set(names)) != len(names):
            raise Unprocessable("Route names must be unique.")
    for route in routes:
        for fqdn in route["trunks"]:
            if fqdn.lower() not in trunks:
                raise Unprocessable(
                    f"Route '{route['name']}' uses trunk '{fqdn}', which is not configured (MissingTrunk)."
                )
    config = {"trunks": trunks, "routes": routes}
    await tx.set_meta(META_KEY, json.dumps(config))
    return config


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidRequest("'routes' must be an array.", code="InvalidRequest")
    if len(value) > MAX_ROUTES:
        raise Unprocessable(f"At most {MAX_ROUTES} routes can be configured.")
    return value


_QUANTIFIER = re.compile(r"[*+?]|\{\d+(,\d*)?\}")


def python_pattern(pattern: str) -> str:
    """A numberPattern (.NET regex, as the service reads it) as Python's `re` reads it. .NET lets an anchor
    be quantified (`^+1...`: what a JavaScript string literal leaves of "^\\+1..." in Microsoft's own
    quickstart), Python refuses "nothing to repeat"; a group around the anchor means the same to both."""
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            # A ']' first in a class (after an optional '^') is a literal, not its end.
            j = i + 1 + (pattern[i + 1 : i + 2] == "^")
            if pattern[j : j + 1] == "]":
                out.append(pattern[i : j + 1])
                i = j + 1
                continue
        elif c in "^$" and _QUANTIFIER.match(pattern, i + 1):
            out.append(f"(?:{c})")
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _route(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest("Each route must be an object.", code="InvalidRequest")
    name, pattern = value.get("name"), value.get("numberPattern")
    description, trunks = value.get("description"), value.get("trunks") or []
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest("Each route needs a 'name'.", code="InvalidRequest")
    if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN:
        raise InvalidRequest(f"Route '{name}': 'numberPattern' must be a regular expression.", code="InvalidRequest")
    try:
        re.compile(python_pattern(pattern))
    except (re.error, RecursionError, OverflowError):
        raise InvalidRequest(
            f"Route '{name}': numberPattern '{pattern}' is not a valid regular expression.", code="InvalidRequest"
        ) from None
    if description is not None and not isinstance(description, str):
        raise InvalidRequest(f"Route '{name}': 'description' must be a string.", code="InvalidRequest")
    if not isinstance(trunks, list) or not all(isinstance(t, str) for t in trunks):
        raise InvalidRequest(f"Route '{name}': 'trunks' must be an array of FQDNs.", code="InvalidRequest")
    route: dict[str, Any] = {"name": name, "numberPattern": pattern, "trunks": list(trunks)}
    if description is not None:
        route["description"] = description
    return route


async def trunks_for(tx: StoreTx, number: str, rng: random.Random | None = None) -> list[Trunk]:
    """The trunks a call to `number` (E.164, with +) may leave over, in the order they are tried: route by
    route as listed, for each route that matches the number whole, its trunks in random order (the
    service's documented rule); a trunk named by two routes is tried once, at its first place."""
    config = await get(tx)
    shuffle = (rng or random).shuffle
    out: list[Trunk] = []
    for route in config["routes"]:
        try:
            matched = re.fullmatch(python_pattern(route["numberPattern"]), number) is not None
        except re.error:
            matched = False
        if not matched:
            continue
        fqdns = [fqdn.lower() for fqdn in route["trunks"]]
        shuffle(fqdns)
        for fqdn in fqdns:
            trunk = config["trunks"].get(fqdn)
            if trunk is not None and all(t.fqdn != fqdn for t in out):
                out.append(Trunk(fqdn, int(trunk["sipSignalingPort"])))
    return out


def wire(config: dict[str, Any]) -> dict[str, Any]:
    """The configuration as the service returns it."""
    return {"trunks": config["trunks"], "routes": config["routes"]}
