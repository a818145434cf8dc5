"""Hypothesis properties: the compiled filter engine and the subscription index answer as a straightforward
reference evaluator, written here from eventgrid.md §3 and §8 (the defaults of FilterOptions), does.

The reference walks the event naively for every filter: no compilation, no folding ahead of time, no
float shortcuts (numbers compare as exact decimals of their JSON text), no index. Events and filters are
drawn from small pools so that keys exist, values collide, cases differ and types clash often.
Example counts are bounded so the module runs in seconds, and the examples are the same on every run;
CALLGRID_HYPOTHESIS_EXAMPLES raises the counts, CALLGRID_HYPOTHESIS_RANDOM=1 draws new examples each run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callgrid.eventgrid.events import FilterViews, to_cloud_event
from callgrid.eventgrid.filters import OPERATOR_TYPES, compile_filter
from callgrid.eventgrid.index import SubscriptionIndex
from callgrid.eventgrid.subscriptions import ActiveSubscription

# The same whatever store CALLGRID_TEST_STORE names (no server of the suite's, or stores named here):
# `make test-postgresql` leaves it out.
pytestmark = pytest.mark.store_independent

EXAMPLES = int(os.environ.get("CALLGRID_HYPOTHESIS_EXAMPLES", "150"))
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # nothing written into the repository; failures print their example
    derandomize=not os.environ.get("CALLGRID_HYPOTHESIS_RANDOM"),  # the same examples on every CI run
    suppress_health_check=[HealthCheck.too_slow],
)

# ----------------------------------------------------------------------------------- the reference

MISSING = object()

NUMBER_SETS = {"NumberIn": False, "NumberNotIn": True}
NUMBER_COMPARE: dict[str, Callable[[Decimal, Decimal], bool]] = {
    "NumberLessThan": lambda v, x: v < x,
    "NumberGreaterThan": lambda v, x: v > x,
    "NumberLessThanOrEquals": lambda v, x: v <= x,
    "NumberGreaterThanOrEquals": lambda v, x: v >= x,
}
NUMBER_RANGES = {"NumberInRange": False, "NumberNotInRange": True}
STRING_TESTS: dict[str, tuple[bool, Callable[[str, str], bool]]] = {
    "StringIn": (False, lambda v, x: v == x),
    "StringNotIn": (True, lambda v, x: v == x),
    "StringBeginsWith": (False, lambda v, x: v.startswith(x)),
    "StringNotBeginsWith": (True, lambda v, x: v.startswith(x)),
    "StringEndsWith": (False, lambda v, x: v.endswith(x)),
    "StringNotEndsWith": (True, lambda v, x: v.endswith(x)),
    "StringContains": (False, lambda v, x: x in v),
    "StringNotContains": (True, lambda v, x: x in v),
}
# §3.4 (and O1 for NumberNotInRange): a missing key matches only these.
MATCH_WHEN_MISSING = {"NumberNotIn", "StringNotIn", "NumberNotInRange", "IsNullOrUndefined"}


def ref_lookup(event: Any, key: str) -> Any:
    """§3.3: dotted steps, names compared ignoring case; an exact lower-case spelling wins, else the first."""
    node = event
    for step in key.lower().split("."):
        if not isinstance(node, dict):
            return MISSING
        if step in node:
            node = node[step]
            continue
        same = [name for name in node if name.lower() == step]
        if not same:
            return MISSING
        node = node[same[0]]
    return node


def exact(number: int | float) -> Decimal:
    return Decimal(number) if isinstance(number, int) else Decimal(repr(number))


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def ref_hit(op: str, spec: Mapping[str, Any], value: Any) -> bool | None:
    """Whether one scalar hits the operator's values (the positive test); None if its type does not fit."""
    if op in NUMBER_SETS:
        return exact(value) in {exact(x) for x in spec["values"]} if is_number(value) else None
    if op in NUMBER_COMPARE:
        return NUMBER_COMPARE[op](exact(value), exact(spec["value"])) if is_number(value) else None
    if op in NUMBER_RANGES:
        if not is_number(value):
            return None
        return any(exact(low) <= exact(value) <= exact(high) for low, high in spec["values"])
    if op == "BoolEquals":
        return value is spec["value"] if isinstance(value, bool) else None
    if not isinstance(value, str):
        return None
    test = STRING_TESTS[op][1]
    return any(test(value.lower(), x.lower()) for x in spec["values"])


def negated(op: str) -> bool:
    return op in ("NumberNotIn", "NumberNotInRange") or STRING_TESTS.get(op, (False,))[0]


def ref_advanced(spec: Mapping[str, Any], event: Any, arrays: bool) -> bool:
    op = spec["operatorType"]
    value = ref_lookup(event, spec["key"])
    if op in ("IsNullOrUndefined", "IsNotNull"):
        absent = value is MISSING or value is None
        return absent if op == "IsNullOrUndefined" else not absent
    if value is MISSING:
        return op in MATCH_WHEN_MISSING
    if value is None:  # O3: null is a type mismatch; O2: only the Not* operators then match
        return negated(op)
    if isinstance(value, list):
        if not arrays:  # O4: an array without the flag fails every value operator
            return False
        hits = [ref_hit(op, spec, element) for element in value]  # elements of another type: None, skipped
        return not any(hits) if negated(op) else any(hits)
    hit = ref_hit(op, spec, value)
    if hit is None:
        return negated(op)
    return not hit if negated(op) else hit


def ref_matches(spec: Mapping[str, Any], event: Mapping[str, Any], *, cloud_events: bool = False) -> bool:
    """§3.1: event type AND subject AND every advanced filter."""
    types = spec.get("includedEventTypes")
    if types and not (len(types) == 1 and types[0].lower() == "all"):
        event_type = ref_lookup(event, "type" if cloud_events else "eventType")
        if not isinstance(event_type, str) or event_type.lower() not in {t.lower() for t in types}:
            return False
    begins, ends = spec.get("subjectBeginsWith") or "", spec.get("subjectEndsWith") or ""
    if begins or ends:
        subject = ref_lookup(event, "subject")
        if not isinstance(subject, str):
            return False
        if not spec.get("isSubjectCaseSensitive"):
            subject, begins, ends = subject.lower(), begins.lower(), ends.lower()
        if not (subject.startswith(begins) and subject.endswith(ends)):
            return False
    arrays = bool(spec.get("enableAdvancedFilteringOnArrays"))
    return all(ref_advanced(f, event, arrays) for f in spec.get("advancedFilters", []))


# ----------------------------------------------------------------------------------- generators

# Letters whose lower and upper case are one character each, so case-insensitivity has one meaning.
WORDS = ("red", "Red", "RED", "green", "gr", "een", "", "a", "A", "é", "É", "blue sky", "5", "1.5", "true")
NUMBERS = (0, 1, -1, 5, 3, 1.5, 0.1, 0.3, 0.30000000000000004, 1e16, 10**17 + 1, -2.5, 150.5, 2**53 + 1)
FIELDS = ("amount", "Amount", "tags", "kind", "flag", "nested", "missing")
TYPES = ("Order.Created", "order.created", "ORDER.DELETED", "Call.Incoming")
SUBJECTS = ("/orders/42", "/Orders/7", "/invoices/1", "", "/orders/")

words = st.sampled_from(WORDS)
numbers = st.sampled_from(NUMBERS) | st.integers(-10, 10) | st.floats(-10, 10, allow_nan=False, width=32)
scalars = st.one_of(words, numbers, st.booleans(), st.none())
values = st.one_of(
    scalars,
    st.lists(words, max_size=3),
    st.lists(numbers, max_size=3),
    st.lists(st.booleans(), max_size=2),
    st.lists(scalars, max_size=3),  # mixed: elements of another type are skipped
)


@st.composite
def data_objects(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(FIELDS[:-1]), min_size=1 if depth else 2, max_size=4, unique=True))
    out: dict[str, Any] = {}
    for name in names:
        if name == "nested" and depth < 2:
            out[name] = draw(data_objects(depth + 1))
        else:
            out[name] = draw(values)
    return out


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": "e-1",
        "topic": "/t/a",
        "subject": draw(st.sampled_from(SUBJECTS)),
        "eventType": draw(st.sampled_from(TYPES)),
        "eventTime": "2026-11-29T05:00:00Z",
        "dataVersion": draw(st.sampled_from(("1.0", "2"))),
        "metadataVersion": "1",
        "data": draw(data_objects()),
    }
    return event


keys = st.one_of(
    st.sampled_from(("subject", "Subject", "eventType", "id", "dataVersion", "type", "source", "data")),
    st.builds(
        lambda path, name: ".".join(["data", *path, name]),
        st.lists(st.sampled_from(("nested", "NESTED")), max_size=2),
        st.sampled_from((*FIELDS, "AMOUNT", "Tags")),
    ),
)


def leaves(node: Any, path: str = "") -> list[tuple[str, Any]]:
    """(dotted path, value) of every property of an event, nested objects included."""
    out: list[tuple[str, Any]] = []
    for name, value in node.items():
        here = f"{path}.{name}" if path else name
        out.append((here, value))
        if isinstance(value, dict):
            out.extend(leaves(value, here))
    return out


def _recase(draw: st.DrawFn, text: str) -> str:
    return str(draw(st.sampled_from((text, text.lower(), text.upper(), text.swapcase()))))


def _near(draw: st.DrawFn, found: Any, kind: str) -> list[Any]:
    """Filter values that the event's own value often hits: the value, its elements, bits of its text."""
    pool = [found, *found] if isinstance(found, list) else [found]
    if kind == "number":
        pool = [v for v in pool if isinstance(v, int | float) and not isinstance(v, bool)]
        pool += [v + 1 for v in pool] + [v - 1 for v in pool]
    else:
        pool = [v for v in pool if isinstance(v, str)]
        pool += [v[:2] for v in pool] + [v[-2:] for v in pool]
        pool = [_recase(draw, v) for v in pool]
    return pool


def _fitting(found: Any) -> tuple[str, ...]:
    """Operators whose type fits the value (or its first element), so that they can hit."""
    sample = found[0] if isinstance(found, list) and found else found
    if isinstance(sample, bool):
        return ("BoolEquals",)
    if isinstance(sample, int | float):
        return (*NUMBER_SETS, *NUMBER_COMPARE, *NUMBER_RANGES)
    if isinstance(sample, str):
        return tuple(STRING_TESTS)
    # Nulls, objects, empty arrays: what the presence operators are about.
    return ("IsNullOrUndefined", "IsNotNull")


@st.composite
def advanced_filters(draw: st.DrawFn, event: dict[str, Any] | None = None, op: str | None = None) -> dict[str, Any]:
    """A filter on `event`'s own keys most of the time (values near its own), of operator `op` if given."""
    found: Any = MISSING
    if event is not None and draw(st.integers(0, 9)) < 8:
        everything = leaves(event)
        fitting = [leaf for leaf in everything if op is None or op in _fitting(leaf[1])]
        in_data = [leaf for leaf in everything if leaf[0].startswith("data.")]
        choice = draw(st.integers(0, 3))
        pool = fitting if fitting and choice >= 2 else in_data if in_data and choice == 1 else everything
        path, found = draw(st.sampled_from(pool))
        key = ".".join(_recase(draw, step) for step in path.split("."))
    else:
        key = draw(keys)
    if op is None:
        op = draw(st.sampled_from(OPERATOR_TYPES))
    spec: dict[str, Any] = {"operatorType": op, "key": key}
    near_numbers = st.sampled_from(_near(draw, found, "number") or [0])
    near_words = st.sampled_from(_near(draw, found, "string") or [""])
    some_numbers = st.one_of(near_numbers, numbers)
    some_words = st.one_of(near_words, words)
    if op in NUMBER_SETS:
        spec["values"] = draw(st.lists(some_numbers, min_size=1, max_size=3))
    elif op in NUMBER_COMPARE:
        spec["value"] = draw(some_numbers)
    elif op in NUMBER_RANGES:
        pairs = draw(st.lists(st.tuples(some_numbers, some_numbers), min_size=1, max_size=2))
        spec["values"] = [sorted(pair, key=exact) for pair in pairs]
    elif op == "BoolEquals":
        spec["value"] = draw(st.booleans())
    elif op in STRING_TESTS:
        spec["values"] = draw(st.lists(some_words, min_size=1, max_size=3))
    return spec


@st.composite
def filters(draw: st.DrawFn, event: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if draw(st.booleans()):
        spec["includedEventTypes"] = draw(st.lists(st.sampled_from((*TYPES, "All", "Other")), max_size=3))
    if draw(st.booleans()):
        spec["subjectBeginsWith"] = draw(st.sampled_from(("/orders", "/ORDERS/", "/inv", "")))
    if draw(st.booleans()):
        spec["subjectEndsWith"] = draw(st.sampled_from(("42", "/", "7", "")))
    spec["isSubjectCaseSensitive"] = draw(st.booleans())
    spec["enableAdvancedFilteringOnArrays"] = draw(st.booleans())
    spec["advancedFilters"] = draw(st.lists(advanced_filters(event), max_size=3))
    return spec


def subscription(i: int, spec: dict[str, Any], *, cloud_events: bool = False) -> ActiveSubscription:
    return ActiveSubscription(
        id=f"/t/a/s{i}",
        name=f"s{i}",
        topic="/t/a",
        source="/t/a",
        filter=compile_filter(spec, cloud_events=cloud_events),
        endpoint_url="http://127.0.0.1:9",
        delivery_schema="CloudEventSchemaV1_0" if cloud_events else "EventGridSchema",
        max_delivery_attempts=30,
        event_ttl_minutes=1440,
        expires_at=None,
        doc={},
    )


# ----------------------------------------------------------------------------------- the properties


@pytest.mark.parametrize("op", OPERATOR_TYPES)
def test_each_operator_agrees_with_the_reference(op: str) -> None:
    outcomes: set[bool] = set()

    @settings(PROPERTY, max_examples=max(EXAMPLES // 3, 20))
    @given(st.data(), st.booleans())
    def check(data: st.DataObject, arrays: bool) -> None:
        event = data.draw(events())
        spec = data.draw(advanced_filters(event, op))
        expected = ref_advanced(spec, event, arrays)
        compiled = compile_filter({"advancedFilters": [spec], "enableAdvancedFilteringOnArrays": arrays})
        assert compiled.matches(event) == expected
        outcomes.add(expected)

    check()
    # The property is only as good as what it saw: the operator must both match and not match.
    assert outcomes == {True, False}


@PROPERTY
@given(st.data())
def test_whole_filters_agree_with_the_reference(data: st.DataObject) -> None:
    event = data.draw(events())
    spec = data.draw(filters(event))
    assert compile_filter(spec).matches(event) == ref_matches(spec, event)


@PROPERTY
@given(st.data())
def test_cloud_event_filters_read_the_cloud_event(data: st.DataObject) -> None:
    cloud = to_cloud_event(data.draw(events()))
    spec = data.draw(filters(cloud))
    assert compile_filter(spec, cloud_events=True).matches(cloud) == ref_matches(spec, cloud, cloud_events=True)


@settings(PROPERTY, max_examples=max(EXAMPLES // 3, 20))
@given(st.data())
def test_the_index_answers_as_the_reference(data: st.DataObject) -> None:
    batch = data.draw(st.lists(events(), min_size=1, max_size=3))
    specs = data.draw(
        st.lists(st.tuples(filters(data.draw(st.sampled_from(batch))), st.booleans()), min_size=1, max_size=10)
    )
    subs = [subscription(i, spec, cloud_events=ce) for i, (spec, ce) in enumerate(specs)]
    index = SubscriptionIndex(subs)
    for event in batch:
        cloud = to_cloud_event(event)
        expected = sorted(
            f"/t/a/s{i}"
            for i, (spec, ce) in enumerate(specs)
            if ref_matches(spec, cloud if ce else event, cloud_events=ce)
        )
        assert sorted(s.id for s in index.match("/t/a", FilterViews(event))) == expected
