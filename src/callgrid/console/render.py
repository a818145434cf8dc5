"""Templates: the page and each live panel rendered on the server (Jinja2, autoescaped)."""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING, Any

from callgrid.clock import to_datetime
from callgrid.console import views
from callgrid.console.journal import Journal
from callgrid.console.router_link import RouterLink
from callgrid.node import Node

if TYPE_CHECKING:
    from jinja2 import Environment


def _time(ts: float | None) -> str:
    if ts is None:
        return ""
    dt = to_datetime(ts)
    return dt.strftime("%H:%M:%S.") + f"{dt.microsecond // 1000:03d}"


def _iso(ts: float | None) -> str:
    if ts is None:
        return ""
    dt = to_datetime(ts)
    return dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _short(text: Any, size: int = 16) -> str:
    value = "" if text is None else str(text)
    return value if len(value) <= size else value[: size - 1] + "…"


@functools.cache
def _templates() -> Environment:
    # Built on the console's first page, not at import: Jinja2 is a large share of the server's start.
    from jinja2 import Environment, PackageLoader, select_autoescape

    templates = Environment(
        loader=PackageLoader("callgrid.console", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    templates.filters.update(t=_time, iso=_iso, short=_short)
    return templates


TABS = [
    ("calls", "Calls"),
    ("events", "Events"),
    ("deliveries", "Deliveries"),
    ("deadletters", "Dead letters"),
    ("callbacks", "Callbacks"),
    ("directory", "Numbers & identities"),
    ("subscriptions", "Subscriptions"),
    ("router", "Router"),
]


def page(name: str, **context: Any) -> str:
    return _templates().get_template(name).render(**context)


async def panels(node: Node, journal: Journal, router: RouterLink) -> dict[str, str]:
    """Every live panel's HTML, from one consistent look at the domain per panel."""
    calls, events, deliveries, callbacks, dead, directory, subscriptions, routing = await asyncio.gather(
        views.calls_view(node),
        views.events_view(node, journal),
        views.deliveries_view(node, journal, "eventgrid"),
        views.deliveries_view(node, journal, "callback"),
        views.dead_letters_view(node),
        views.directory_view(node),
        views.subscriptions_view(node),
        router.view(),
    )
    return {
        "clock": page("_clock.html", clock=views.clock_view(node)),
        "parties": page("_parties.html", directory=directory),
        "calls": page("_calls.html", calls=calls),
        "events": page("_events.html", events=events),
        "deliveries": page("_deliveries.html", deliveries=deliveries),
        "callbacks": page("_callbacks.html", callbacks=callbacks, claims=views.callback_claims(node)),
        "deadletters": page("_deadletters.html", dead_letters=dead),
        "directory": page("_directory.html", directory=directory),
        "subscriptions": page("_subscriptions.html", subscriptions=subscriptions),
        "router": page("_router.html", router=routing),
    }
