"""`CompiledFilter.explain`: which part of a filter said no to an event, and why; it agrees with `matches`."""

from __future__ import annotations

from typing import Any

import pytest

from callgrid.eventgrid.filters import compile_filter
from tests.eventgrid.test_filters import E1, E2, EVENTS, OPERATOR_CASES, VECTORS, adv, adv_filter, event_with

# The same whatever store CALLGRID_TEST_STORE names (no server of the suite's, or stores named here):
# `make test-postgresql` leaves it out.
pytestmark = pytest.mark.store_independent


def _values(param: Any) -> tuple[Any, ...]:
    return tuple(param.values) if hasattr(param, "values") else tuple(param)


@pytest.mark.parametrize("case", [_values(v) for v in VECTORS])
def test_explain_agrees_with_matches_on_every_vector(case: tuple[Any, ...]) -> None:
    event_name, spec, expected = case[0], case[1], case[2]
    compiled = compile_filter(spec)
    event = EVENTS[event_name]
    assert compiled.matches(event) is expected
    assert (compiled.explain(event) is None) is expected


@pytest.mark.parametrize("case", OPERATOR_CASES)
def test_explain_agrees_with_matches_for_every_operator(case: tuple[Any, ...]) -> None:
    op, payload, value, expected = case
    compiled = compile_filter(adv_filter(adv(op, "data.v", payload)))
    refusal = compiled.explain(event_with(value))
    assert (refusal is None) is expected
    if refusal is not None:
        assert refusal.part == "advancedFilters" and refusal.index == 0
        assert op in refusal.reason and "'data.v'" in refusal.reason


def test_the_advanced_filter_that_said_no_is_named_with_the_value_it_saw() -> None:
    spec = {
        "includedEventTypes": ["Microsoft.Communication.IncomingCall"],
        "advancedFilters": [
            {"operatorType": "StringBeginsWith", "key": "data.to.rawId", "values": ["4:"]},
            {"operatorType": "StringIn", "key": "data.to.phoneNumber.value", "values": ["+18005550000"]},
        ],
    }
    refusal = compile_filter(spec).explain(E1)
    assert refusal is not None
    assert (refusal.part, refusal.index, refusal.where) == ("advancedFilters", 1, "advancedFilters[1]")
    assert refusal.reason == (
        "StringIn on 'data.to.phoneNumber.value' [\"+18005550000\"]: 'data.to.phoneNumber.value' is \"+18005551212\""
    )


def test_event_type_and_subject_refusals() -> None:
    types = compile_filter({"includedEventTypes": ["Contoso.Order.Deleted"]}).explain(E2)
    assert types is not None and types.part == "includedEventTypes" and types.index is None
    assert "'Contoso.Order.Created' is not one of ['contoso.order.deleted']" in types.reason

    begins = compile_filter({"subjectBeginsWith": "/ORDERS", "isSubjectCaseSensitive": True}).explain(E2)
    assert begins is not None and begins.part == "subjectBeginsWith"
    assert begins.reason == "subject '/orders/42' does not begin with '/ORDERS' (case-sensitive)"

    ends = compile_filter({"subjectBeginsWith": "/orders", "subjectEndsWith": "/43"}).explain(E2)
    assert ends is not None and ends.part == "subjectEndsWith" and "does not end with '/43'" in ends.reason


@pytest.mark.parametrize(
    ("spec", "event", "says"),
    [
        (adv_filter(adv("IsNotNull", "data.missing")), E2, "the event has no 'data.missing'"),
        (adv_filter(adv("StringIn", "data.nothing", ["x"])), E2, "'data.nothing' is null"),
        (adv_filter(adv("StringIn", "data.tags", ["blue"])), E2, "enableAdvancedFilteringOnArrays is off"),
        (adv_filter(adv("StringIn", "data.tags", ["blue"]), arrays=True), E2, "no element hits"),
        (adv_filter(adv("NumberIn", "data.numStr", [5])), E2, "a string, which NumberIn does not compare"),
    ],
)
def test_reasons_say_what_the_event_held(spec: dict[str, Any], event: dict[str, Any], says: str) -> None:
    refusal = compile_filter(spec).explain(event)
    assert refusal is not None and says in refusal.reason


def test_a_passing_filter_has_no_refusal() -> None:
    assert compile_filter(None).explain(E1) is None
    assert compile_filter({"subjectEndsWith": "5551212"}).explain(E1) is None
