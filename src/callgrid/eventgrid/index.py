"""An index in front of many subscriptions' filters, so matching one event costs about the same with 10
subscriptions as with 100,000 (issue 3).

Subscriptions are grouped by event source, then by included event type (or "any type"); inside a
group, a subscription with StringIn filters is filed under one of them, (key, value) -> subscriptions.
An event only visits the groups of its source and its folded event type, looks up the values at the
few keys the group indexes, and runs the full `CompiledFilter.matches` on those candidates and on
the group's unindexed subscriptions. The index relies only on the necessary conditions documented
on `CompiledFilter` (filters.py), so it never changes an answer, only how many filters are asked.

Subscriptions that receive CloudEvents read the event as a CloudEvent (events.FilterViews): they are
indexed apart, and asked about that view.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from callgrid.eventgrid.events import FilterViews
from callgrid.eventgrid.filters import fold, lookup
from callgrid.eventgrid.subscriptions import ActiveSubscription


class _Group:
    """Subscriptions sharing a source and an event-type slot."""

    __slots__ = ("by_key", "rest")

    def __init__(self) -> None:
        # folded key -> folded value -> subscriptions filed under that StringIn value
        self.by_key: dict[str, dict[str, list[ActiveSubscription]]] = {}
        self.rest: list[ActiveSubscription] = []

    def add(self, sub: ActiveSubscription) -> None:
        keys = sub.filter.equality_keys()
        if not keys:
            self.rest.append(sub)
            return
        # File under a key the group already indexes when possible: fewer lookups per event.
        key, values = next(((k, v) for k, v in keys if k in self.by_key), keys[0])
        table = self.by_key.setdefault(key, {})
        for value in values:
            table.setdefault(value, []).append(sub)

    def candidates(self, event: dict[str, Any], out: dict[str, ActiveSubscription]) -> None:
        for sub in self.rest:
            out[sub.id] = sub
        for key, table in self.by_key.items():
            value = lookup(event, key)
            if isinstance(value, str):
                for sub in table.get(fold(value), ()):
                    out[sub.id] = sub
            elif isinstance(value, list):
                # Only subscriptions with arrays enabled can match; `matches` decides that.
                for element in value:
                    if isinstance(element, str):
                        for sub in table.get(fold(element), ()):
                            out[sub.id] = sub


class _SourceIndex:
    __slots__ = ("any_type", "by_type", "event_type_key")

    def __init__(self, event_type_key: str) -> None:
        self.by_type: dict[str, _Group] = {}
        self.any_type = _Group()
        self.event_type_key = event_type_key

    def add(self, sub: ActiveSubscription) -> None:
        types = sub.filter.included_event_types
        if types is None:
            self.any_type.add(sub)
            return
        for event_type in types:
            self.by_type.setdefault(event_type, _Group()).add(sub)


class SubscriptionIndex:
    """Immutable once built; rebuild (cheaply, see topics.SubscriptionTable) when subscriptions change."""

    def __init__(self, subscriptions: Iterable[ActiveSubscription]) -> None:
        # (source, reads CloudEvents) -> index
        self._sources: dict[tuple[str, bool], _SourceIndex] = {}
        self.size = 0
        for sub in subscriptions:
            key = (sub.source, sub.filter.cloud_events)
            index = self._sources.get(key)
            if index is None:
                index = self._sources[key] = _SourceIndex(sub.filter.event_type_key)
            index.add(sub)
            self.size += 1

    def match(
        self, source: str, event: dict[str, Any] | FilterViews, now: float | None = None
    ) -> list[ActiveSubscription]:
        """Subscriptions of `source` (lower-cased) whose filter passes `event`, each seeing it in the schema
        it receives (a bare event is taken as published)."""
        views = event if isinstance(event, FilterViews) else FilterViews(event)
        matched: list[ActiveSubscription] = []
        for cloud_events in (False, True):
            index = self._sources.get((source, cloud_events))
            if index is not None:
                matched.extend(_match(index, views.view(cloud_events), now))
        return matched


def _match(index: _SourceIndex, event: dict[str, Any], now: float | None) -> list[ActiveSubscription]:
    candidates: dict[str, ActiveSubscription] = {}
    event_type = event.get(index.event_type_key)
    if event_type is None:
        event_type = lookup(event, index.event_type_key)
    if isinstance(event_type, str) and index.by_type:
        group = index.by_type.get(fold(event_type))
        if group is not None:
            group.candidates(event, candidates)
    index.any_type.candidates(event, candidates)
    return [
        sub
        for sub in candidates.values()
        if (now is None or sub.expires_at is None or now < sub.expires_at) and sub.filter.matches(event)
    ]
