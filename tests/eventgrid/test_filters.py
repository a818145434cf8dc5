"""Event subscription filters: eventgrid.md §2.3, §3 (incl. every §3.8 vector) and §8 O1-O5, O11."""

from __future__ import annotations

import copy
import json
import random
from decimal import Decimal
from typing import Any

import pytest

from callgrid.eventgrid.filters import (
    MISSING,
    OPERATOR_TYPES,
    CompiledFilter,
    FilterOptions,
    InvalidFilter,
    compile_filter,
    fold,
    lookup,
)

# The same whatever store CALLGRID_TEST_STORE names (no server of the suite's, or stores named here):
# `make test-postgresql` leaves it out.
pytestmark = pytest.mark.store_independent

E1: dict[str, Any] = json.loads(
    """{"id":"ic-1",
 "topic":"/subscriptions/s1/resourcegroups/rg1/providers/microsoft.communication/communicationservices/acs1",
 "subject":"/caller/4:+14255550100/recipient/4:+18005551212",
 "eventType":"Microsoft.Communication.IncomingCall","eventTime":"2024-05-01T10:00:00.0000000Z",
 "dataVersion":"1.0","metadataVersion":"1",
 "data":{"to":{"kind":"phoneNumber","rawId":"4:+18005551212","phoneNumber":{"value":"+18005551212"}},
         "from":{"kind":"phoneNumber","rawId":"4:+14255550100","phoneNumber":{"value":"+14255550100"}},
         "serverCallId":"srv-1","callerDisplayName":"","incomingCallContext":"ctx",
         "correlationId":"c-1","customContext":{"sipHeaders":{"x-ms-client":"a"},"voipHeaders":{}}}}"""
)

E2: dict[str, Any] = json.loads(
    """{"id":"e2","topic":"/subscriptions/s1/resourceGroups/rg1/providers/Microsoft.EventGrid/topics/t1",
 "subject":"/orders/42","eventType":"Contoso.Order.Created","eventTime":"2024-05-01T10:00:00Z",
 "dataVersion":"2.0","metadataVersion":"1",
 "data":{"amount":150.5,"count":3,"priority":"High","isVip":true,"zero":0,"numStr":"5",
         "tags":["Red","green"],"scores":[10,20,30],"mixed":[5,"7",true],"items":[{"sku":"a"}],
         "nested":{"level2":{"level3":{"x":"deep"}}},"nothing":null}}"""
)

EVENTS = {"E1": E1, "E2": E2}


def adv(op: str, key: str, payload: Any = MISSING, *, single: bool | None = None) -> dict[str, Any]:
    """One advanced filter as ARM JSON; `value` for single-value operators, `values` for the rest."""
    item: dict[str, Any] = {"operatorType": op, "key": key}
    if payload is MISSING:
        return item
    if single is None:
        single = not isinstance(payload, list)
    item["value" if single else "values"] = payload
    return item


def adv_filter(*filters: dict[str, Any], arrays: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"advancedFilters": list(filters)}
    if arrays:
        spec["enableAdvancedFilteringOnArrays"] = True
    return spec


def match(spec: dict[str, Any] | None, event: dict[str, Any], options: FilterOptions | None = None) -> bool:
    compiled = compile_filter(spec) if options is None else compile_filter(spec, options)
    return compiled.matches(event)


# --------------------------------------------------------------------------- §3.8 worked examples

VECTORS: list[Any] = [
    pytest.param(
        "E1",
        adv_filter(adv("StringBeginsWith", "data.to.PhoneNumber.Value", ["+18005551212"])),
        True,
        id="v01",
    ),
    pytest.param("E1", adv_filter(adv("StringIn", "data.to.kind", ["PHONENUMBER"])), True, id="v02"),
    pytest.param(
        "E1",
        adv_filter(adv("StringIn", "eventType", ["microsoft.communication.incomingcall"])),
        True,
        id="v03",
    ),
    pytest.param("E1", adv_filter(adv("StringContains", "subject", ["recipient/4:+1800"])), True, id="v04"),
    pytest.param("E1", adv_filter(adv("StringBeginsWith", "data.to.rawId", ["8:acs:"])), False, id="v05"),
    pytest.param("E1", adv_filter(adv("StringNotBeginsWith", "data.from.rawId", ["4:+1425"])), False, id="v06"),
    pytest.param("E1", adv_filter(adv("StringEndsWith", "subject", ["0000", "5551212"])), True, id="v07"),
    pytest.param(
        "E1",
        adv_filter(
            adv("StringBeginsWith", "data.to.rawId", ["4:"]),
            adv("StringIn", "data.from.kind", ["communicationUser"]),
        ),
        False,
        id="v08",
    ),
    pytest.param("E1", adv_filter(adv("IsNotNull", "data.customContext")), True, id="v09"),
    pytest.param("E1", adv_filter(adv("IsNullOrUndefined", "data.onBehalfOfCallee")), True, id="v10"),
    pytest.param("E1", adv_filter(adv("StringIn", "data.customContext.sipHeaders.X-MS-CLIENT", ["A"])), True, id="v11"),
    pytest.param(
        "E1",
        adv_filter(adv("StringBeginsWith", "topic", ["/subscriptions/s1/resourceGroups/RG1"])),
        True,
        id="v12",
    ),
    pytest.param("E2", adv_filter(adv("NumberGreaterThan", "data.amount", 150)), True, id="v13"),
    pytest.param("E2", adv_filter(adv("NumberGreaterThan", "data.amount", 150.5)), False, id="v14"),
    pytest.param("E2", adv_filter(adv("NumberGreaterThanOrEquals", "data.amount", 150.5)), True, id="v15"),
    pytest.param("E2", adv_filter(adv("NumberLessThan", "data.count", 3)), False, id="v16"),
    pytest.param("E2", adv_filter(adv("NumberLessThanOrEquals", "data.count", 3)), True, id="v17"),
    pytest.param("E2", adv_filter(adv("NumberIn", "data.count", [1, 3])), True, id="v18"),
    pytest.param("E2", adv_filter(adv("NumberIn", "data.count", [4])), False, id="v19"),
    pytest.param("E2", adv_filter(adv("NumberNotIn", "data.count", [4, 5])), True, id="v20"),
    pytest.param("E2", adv_filter(adv("NumberNotIn", "data.count", [3])), False, id="v21"),
    pytest.param("E2", adv_filter(adv("NumberInRange", "data.amount", [[100, 150.5]])), True, id="v22"),
    pytest.param("E2", adv_filter(adv("NumberInRange", "data.amount", [[0, 100], [200, 300]])), False, id="v23"),
    pytest.param("E2", adv_filter(adv("NumberNotInRange", "data.amount", [[0, 100]])), True, id="v24"),
    pytest.param("E2", adv_filter(adv("NumberNotInRange", "data.amount", [[150.5, 151]])), False, id="v25"),
    pytest.param("E2", adv_filter(adv("BoolEquals", "data.isVip", True)), True, id="v26"),
    pytest.param("E2", adv_filter(adv("BoolEquals", "data.isVip", False)), False, id="v27"),
    pytest.param("E2", adv_filter(adv("StringIn", "data.priority", ["high"])), True, id="v28"),
    pytest.param("E2", adv_filter(adv("StringNotIn", "data.priority", ["low", "medium"])), True, id="v29"),
    pytest.param("E2", adv_filter(adv("StringContains", "data.priority", ["IG"])), True, id="v30"),
    pytest.param("E2", adv_filter(adv("StringNotContains", "data.priority", ["ig"])), False, id="v31"),
    pytest.param("E2", adv_filter(adv("StringNotEndsWith", "data.priority", ["GH"])), False, id="v32"),
    pytest.param("E2", adv_filter(adv("NumberGreaterThan", "data.missing", 0)), False, id="v33"),
    pytest.param("E2", adv_filter(adv("NumberNotIn", "data.missing", [1])), True, id="v34"),
    pytest.param("E2", adv_filter(adv("StringNotIn", "data.missing", ["x"])), True, id="v35"),
    pytest.param("E2", adv_filter(adv("StringNotContains", "data.missing", ["x"])), False, id="v36"),
    pytest.param("E2", adv_filter(adv("StringNotBeginsWith", "data.missing", ["x"])), False, id="v37"),
    pytest.param("E2", adv_filter(adv("NumberNotInRange", "data.missing", [[0, 1]])), True, id="v38"),
    pytest.param("E2", adv_filter(adv("IsNullOrUndefined", "data.missing")), True, id="v39"),
    pytest.param("E2", adv_filter(adv("IsNotNull", "data.missing")), False, id="v40"),
    pytest.param("E2", {"subjectBeginsWith": "/ORDERS", "isSubjectCaseSensitive": False}, True, id="v71"),
    pytest.param("E2", {"subjectBeginsWith": "/ORDERS", "isSubjectCaseSensitive": True}, False, id="v72"),
    pytest.param("E2", {"subjectBeginsWith": "/orders", "subjectEndsWith": "/43"}, False, id="v73"),
    pytest.param("E2", {"includedEventTypes": ["Contoso.Order.Created"]}, True, id="v74"),
    pytest.param("E2", {"includedEventTypes": ["Contoso.Order.Deleted"]}, False, id="v75"),
    pytest.param("E2", {"includedEventTypes": None}, True, id="v76-null"),
    pytest.param("E2", {}, True, id="v76-absent"),
    pytest.param(
        "E2",
        {
            "includedEventTypes": ["Contoso.Order.Created"],
            "advancedFilters": [adv("NumberLessThan", "data.amount", 1)],
        },
        False,
        id="v77",
    ),
]


@pytest.mark.parametrize(("event_name", "spec", "expected"), VECTORS)
def test_spec_vectors(event_name: str, spec: dict[str, Any], expected: bool) -> None:
    assert match(spec, EVENTS[event_name]) is expected


def test_vector_38_is_configurable() -> None:
    spec = adv_filter(adv("NumberNotInRange", "data.missing", [[0, 1]]))
    assert match(spec, E2, FilterOptions(missing_key_number_not_in_range_matches=False)) is False


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(adv_filter(*[adv("IsNotNull", f"data.k{i}") for i in range(26)]), id="v78-26-filters"),
        pytest.param(
            adv_filter(
                adv("StringIn", "data.a", [f"a{i}" for i in range(13)]),
                adv("StringIn", "data.b", [f"b{i}" for i in range(13)]),
            ),
            id="v79-26-values",
        ),
        pytest.param(adv_filter(adv("StringIn", "data.a", ["x" * 513])), id="v80-513-chars"),
    ],
)
def test_spec_vectors_rejected_by_arm(spec: dict[str, Any]) -> None:
    with pytest.raises(InvalidFilter):
        compile_filter(spec)


def test_vector_events_are_not_mutated() -> None:
    before = copy.deepcopy(E2)
    match(adv_filter(adv("StringIn", "data.tags", ["red"]), arrays=True), E2)
    assert before == E2


# --------------------------------------------------------------------------- each operator, both ways


def event_with(value: Any) -> dict[str, Any]:
    return {"id": "x", "subject": "s", "eventType": "T", "dataVersion": "", "data": {"v": value}}


OPERATOR_CASES: list[Any] = [
    ("NumberIn", [1, 2.5], 2.5, True),
    ("NumberIn", [1, 2.5], 2, False),
    ("NumberNotIn", [1, 2.5], 2, True),
    ("NumberNotIn", [1, 2.5], 1, False),
    ("NumberLessThan", 10, 9.99, True),
    ("NumberLessThan", 10, 10, False),
    ("NumberGreaterThan", -1, 0, True),
    ("NumberGreaterThan", -1, -1, False),
    ("NumberLessThanOrEquals", 10, 10, True),
    ("NumberLessThanOrEquals", 10, 10.01, False),
    ("NumberGreaterThanOrEquals", 10, 10, True),
    ("NumberGreaterThanOrEquals", 10, 9.5, False),
    ("NumberInRange", [[1, 2], [5, 6]], 5.5, True),
    ("NumberInRange", [[1, 2], [5, 6]], 3, False),
    ("NumberInRange", [[1, 2]], 1, True),
    ("NumberNotInRange", [[1, 2], [5, 6]], 3, True),
    ("NumberNotInRange", [[1, 2], [5, 6]], 6, False),
    ("BoolEquals", False, False, True),
    ("BoolEquals", False, True, False),
    ("StringIn", ["Alpha", "beta"], "ALPHA", True),
    ("StringIn", ["Alpha", "beta"], "alph", False),
    ("StringNotIn", ["Alpha", "beta"], "gamma", True),
    ("StringNotIn", ["Alpha", "beta"], "BETA", False),
    ("StringBeginsWith", ["ab", "xy"], "XYZ", True),
    ("StringBeginsWith", ["ab", "xy"], "zab", False),
    ("StringNotBeginsWith", ["ab", "xy"], "zab", True),
    ("StringNotBeginsWith", ["ab", "xy"], "Abc", False),
    ("StringEndsWith", ["ab", "xy"], "zzXY", True),
    ("StringEndsWith", ["ab", "xy"], "abz", False),
    ("StringNotEndsWith", ["ab", "xy"], "abz", True),
    ("StringNotEndsWith", ["ab", "xy"], "zAB", False),
    ("StringContains", ["mid"], "aMIDb", True),
    ("StringContains", ["mid"], "m-i-d", False),
    ("StringNotContains", ["mid"], "m-i-d", True),
    ("StringNotContains", ["mid"], "xmidx", False),
    ("IsNullOrUndefined", MISSING, None, True),
    ("IsNullOrUndefined", MISSING, "", False),
    ("IsNotNull", MISSING, "", True),
    ("IsNotNull", MISSING, None, False),
]


@pytest.mark.parametrize(
    ("op", "payload", "value", "expected"),
    [pytest.param(*case, id=f"{case[0]}-{'pos' if case[3] else 'neg'}-{i}") for i, case in enumerate(OPERATOR_CASES)],
)
def test_operator(op: str, payload: Any, value: Any, expected: bool) -> None:
    assert match(adv_filter(adv(op, "data.v", payload)), event_with(value)) is expected


def test_every_operator_has_a_positive_and_negative_case() -> None:
    covered = {(case[0], case[3]) for case in OPERATOR_CASES}
    for op in OPERATOR_TYPES:
        assert (op, True) in covered and (op, False) in covered, op


def test_operator_type_and_property_names_are_case_insensitive() -> None:
    spec = {"AdvancedFilters": [{"OperatorType": "stringin", "Key": "data.v", "Values": ["a"]}]}
    assert match(spec, event_with("A")) is True
    assert match(spec, event_with("b")) is False


def test_same_key_in_several_filters_is_anded() -> None:
    spec = adv_filter(adv("NumberGreaterThan", "data.v", 1), adv("NumberLessThan", "data.v", 3))
    assert match(spec, event_with(2)) is True
    assert match(spec, event_with(3)) is False


def test_empty_string_values() -> None:
    assert match(adv_filter(adv("StringBeginsWith", "data.v", [""])), event_with("anything")) is True
    assert match(adv_filter(adv("StringIn", "data.v", [""])), event_with("")) is True
    assert match(adv_filter(adv("StringIn", "data.v", [""])), event_with("x")) is False


# --------------------------------------------------------------------------- missing keys (§3.4)

MISSING_EXPECTED = {
    "NumberIn": False,
    "NumberNotIn": True,
    "NumberLessThan": False,
    "NumberGreaterThan": False,
    "NumberLessThanOrEquals": False,
    "NumberGreaterThanOrEquals": False,
    "NumberInRange": False,
    "NumberNotInRange": True,
    "BoolEquals": False,
    "StringIn": False,
    "StringNotIn": True,
    "StringBeginsWith": False,
    "StringNotBeginsWith": False,
    "StringEndsWith": False,
    "StringNotEndsWith": False,
    "StringContains": False,
    "StringNotContains": False,
    "IsNullOrUndefined": True,
    "IsNotNull": False,
}

SAMPLE_PAYLOAD: dict[str, Any] = {
    "NumberIn": [1],
    "NumberNotIn": [1],
    "NumberLessThan": 1,
    "NumberGreaterThan": 1,
    "NumberLessThanOrEquals": 1,
    "NumberGreaterThanOrEquals": 1,
    "NumberInRange": [[0, 1]],
    "NumberNotInRange": [[0, 1]],
    "BoolEquals": True,
    "StringIn": ["x"],
    "StringNotIn": ["x"],
    "StringBeginsWith": ["x"],
    "StringNotBeginsWith": ["x"],
    "StringEndsWith": ["x"],
    "StringNotEndsWith": ["x"],
    "StringContains": ["x"],
    "StringNotContains": ["x"],
    "IsNullOrUndefined": MISSING,
    "IsNotNull": MISSING,
}

NEGATED = {
    "NumberNotIn",
    "NumberNotInRange",
    "StringNotIn",
    "StringNotBeginsWith",
    "StringNotEndsWith",
    "StringNotContains",
}
VALUE_OPS = [op for op in OPERATOR_TYPES if op not in ("IsNullOrUndefined", "IsNotNull")]


def test_tables_cover_all_operators() -> None:
    assert set(MISSING_EXPECTED) == set(OPERATOR_TYPES) == set(SAMPLE_PAYLOAD)


@pytest.mark.parametrize("op", OPERATOR_TYPES)
def test_missing_key(op: str) -> None:
    spec = adv_filter(adv(op, "data.absent.deeper", SAMPLE_PAYLOAD[op]))
    assert match(spec, E2) is MISSING_EXPECTED[op]


@pytest.mark.parametrize("op", OPERATOR_TYPES)
def test_path_through_a_non_object_is_missing(op: str) -> None:
    # data.priority is a string, so data.priority.x does not exist (§3.3).
    spec = adv_filter(adv(op, "data.priority.x", SAMPLE_PAYLOAD[op]))
    assert match(spec, E2) is MISSING_EXPECTED[op]


def test_missing_data_object() -> None:
    event = {"id": "x", "subject": "s", "eventType": "T"}
    assert match(adv_filter(adv("StringNotIn", "data.a", ["x"])), event) is True
    assert match(adv_filter(adv("StringIn", "data.a", ["x"])), event) is False


# ----------------------------------------------------------------- null and type mismatch (§3.5, O2, O3)


@pytest.mark.parametrize("op", VALUE_OPS)
def test_null_is_a_type_mismatch_by_default(op: str) -> None:
    spec = adv_filter(adv(op, "data.nothing", SAMPLE_PAYLOAD[op]))
    assert match(spec, E2) is (op in NEGATED)


@pytest.mark.parametrize("op", VALUE_OPS)
def test_null_as_missing_option(op: str) -> None:
    spec = adv_filter(adv(op, "data.nothing", SAMPLE_PAYLOAD[op]))
    assert match(spec, E2, FilterOptions(null_is_type_mismatch=False)) is MISSING_EXPECTED[op]


def test_null_with_presence_operators() -> None:
    assert match(adv_filter(adv("IsNullOrUndefined", "data.nothing")), E2) is True
    assert match(adv_filter(adv("IsNotNull", "data.nothing")), E2) is False
    assert match(adv_filter(adv("IsNotNull", "data.zero")), E2) is True
    assert match(adv_filter(adv("IsNullOrUndefined", "data.zero")), E2) is False


MISMATCHED_VALUE = {"number": "5", "range": "5", "bool": "true", "string": 5}


def operand_family(op: str) -> str:
    if op == "BoolEquals":
        return "bool"
    if op.startswith("String"):
        return "string"
    return "number"


@pytest.mark.parametrize("op", VALUE_OPS)
def test_scalar_type_mismatch_default(op: str) -> None:
    spec = adv_filter(adv(op, "data.v", SAMPLE_PAYLOAD[op]))
    assert match(spec, event_with(MISMATCHED_VALUE[operand_family(op)])) is (op in NEGATED)


@pytest.mark.parametrize("op", sorted(NEGATED))
def test_scalar_type_mismatch_negated_option(op: str) -> None:
    spec = adv_filter(adv(op, "data.v", SAMPLE_PAYLOAD[op]))
    options = FilterOptions(type_mismatch_negated_matches=False)
    assert match(spec, event_with(MISMATCHED_VALUE[operand_family(op)]), options) is False


@pytest.mark.parametrize("value", [True, {"a": 1}, "1"], ids=["bool", "object", "string"])
def test_numbers_never_match_non_numbers(value: Any) -> None:
    # JSON true is not the number 1, even though Python's bool is an int.
    assert match(adv_filter(adv("NumberIn", "data.v", [1])), event_with(value)) is False
    assert match(adv_filter(adv("NumberGreaterThanOrEquals", "data.v", 1)), event_with(value)) is False


def test_bool_equals_does_not_accept_numbers() -> None:
    assert match(adv_filter(adv("BoolEquals", "data.v", True)), event_with(1)) is False


def test_stringify_numbers_option() -> None:
    spec = adv_filter(adv("StringBeginsWith", "data.v", ["5", "1"]))
    assert match(spec, event_with(5)) is False
    options = FilterOptions(stringify_numbers_for_string_ops=True)
    assert match(spec, event_with(5), options) is True
    assert match(spec, event_with(5.0), options) is True
    assert match(spec, event_with(True), options) is False
    assert match(adv_filter(adv("StringIn", "data.v", ["2.5"])), event_with(2.5), options) is True


def test_non_finite_event_number_is_a_mismatch() -> None:
    assert match(adv_filter(adv("NumberLessThan", "data.v", 1)), event_with(float("-inf"))) is False
    assert match(adv_filter(adv("NumberNotIn", "data.v", [1])), event_with(float("nan"))) is True


# --------------------------------------------------------------------------- arrays (§3.6, O4)


@pytest.mark.parametrize(
    ("op", "key", "payload", "expected"),
    [
        ("StringIn", "data.tags", ["RED"], True),
        ("StringIn", "data.tags", ["blue"], False),
        ("StringNotIn", "data.tags", ["blue"], True),
        ("StringNotIn", "data.tags", ["green"], False),
        ("StringContains", "data.tags", ["ree"], True),
        ("StringNotContains", "data.tags", ["e"], False),
        ("StringBeginsWith", "data.tags", ["gr"], True),
        ("StringNotBeginsWith", "data.tags", ["x"], True),
        ("StringEndsWith", "data.tags", ["D"], True),
        ("StringNotEndsWith", "data.tags", ["n"], False),
        ("NumberIn", "data.scores", [20], True),
        ("NumberIn", "data.scores", [25], False),
        ("NumberNotIn", "data.scores", [25, 35], True),
        ("NumberNotIn", "data.scores", [30], False),
        ("NumberGreaterThan", "data.scores", 29, True),
        ("NumberGreaterThan", "data.scores", 30, False),
        ("NumberLessThan", "data.scores", 11, True),
        ("NumberLessThanOrEquals", "data.scores", 9, False),
        ("NumberGreaterThanOrEquals", "data.scores", 30, True),
        ("NumberInRange", "data.scores", [[11, 19], [25, 35]], True),
        ("NumberInRange", "data.scores", [[11, 19]], False),
        ("NumberNotInRange", "data.scores", [[11, 19]], True),
        ("NumberNotInRange", "data.scores", [[15, 25]], False),
        # Elements of another type are ignored (E2 data.mixed is [5, "7", true]).
        ("NumberIn", "data.mixed", [7], False),
        ("NumberIn", "data.mixed", [5], True),
        ("NumberNotIn", "data.mixed", [7], True),
        ("StringIn", "data.mixed", ["7"], True),
        ("StringIn", "data.mixed", ["5"], False),
        ("BoolEquals", "data.mixed", True, True),
        ("BoolEquals", "data.mixed", False, False),
        # Arrays of objects cannot be filtered.
        ("StringIn", "data.items", ["a"], False),
        ("StringNotIn", "data.items", ["a"], True),
        ("IsNotNull", "data.items", MISSING, True),
    ],
)
def test_arrays_enabled(op: str, key: str, payload: Any, expected: bool) -> None:
    assert match(adv_filter(adv(op, key, payload), arrays=True), E2) is expected


@pytest.mark.parametrize("op", VALUE_OPS)
def test_arrays_disabled_never_match(op: str) -> None:
    key = "data.tags" if op.startswith("String") else "data.scores"
    payload = SAMPLE_PAYLOAD[op]
    assert match(adv_filter(adv(op, key, payload)), E2) is False


@pytest.mark.parametrize("op", VALUE_OPS)
def test_arrays_disabled_as_type_mismatch_option(op: str) -> None:
    key = "data.tags" if op.startswith("String") else "data.scores"
    options = FilterOptions(array_without_flag_is_type_mismatch=True)
    assert match(adv_filter(adv(op, key, SAMPLE_PAYLOAD[op])), E2, options) is (op in NEGATED)


def test_arrays_disabled_presence_operators_still_work() -> None:
    assert match(adv_filter(adv("IsNotNull", "data.tags")), E2) is True
    assert match(adv_filter(adv("IsNullOrUndefined", "data.tags")), E2) is False


@pytest.mark.parametrize("op", VALUE_OPS)
def test_empty_array(op: str) -> None:
    spec = adv_filter(adv(op, "data.v", SAMPLE_PAYLOAD[op]), arrays=True)
    assert match(spec, event_with([])) is (op in NEGATED)


def test_scalar_with_arrays_enabled_behaves_as_scalar() -> None:
    assert match(adv_filter(adv("StringIn", "data.priority", ["HIGH"]), arrays=True), E2) is True
    assert match(adv_filter(adv("NumberIn", "data.numStr", [5]), arrays=True), E2) is False


# --------------------------------------------------------------------------- keys and values, case


@pytest.mark.parametrize(
    "key", ["Data.Priority", "DATA.PRIORITY", "data.priority", "dAtA.pRiOrItY"], ids=lambda k: str(k)
)
def test_keys_are_case_insensitive(key: str) -> None:
    assert match(adv_filter(adv("StringIn", key, ["High"])), E2) is True


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("ID", "e2"),
        ("Topic", E2["topic"]),
        ("Subject", "/orders/42"),
        ("EventType", "Contoso.Order.Created"),
        ("DataVersion", "2.0"),
        ("eventtime", "2024-05-01T10:00:00Z"),
    ],
)
def test_envelope_keys(key: str, expected: str) -> None:
    assert match(adv_filter(adv("StringIn", key, [expected.upper()])), E2) is True


def test_deep_key() -> None:
    assert match(adv_filter(adv("StringIn", "data.Nested.Level2.LEVEL3.x", ["DEEP"])), E2) is True


def test_values_are_case_insensitive() -> None:
    assert match(adv_filter(adv("StringEndsWith", "data.priority", ["IGH"])), E2) is True
    assert match(adv_filter(adv("StringNotIn", "data.priority", ["hIgH"])), E2) is False


def test_colliding_property_names_prefer_lower_case_spelling() -> None:
    event = {"data": {"Kind": "upper", "kind": "lower"}}
    assert lookup(event, "data.KIND") == "lower"
    assert match(adv_filter(adv("StringIn", "data.Kind", ["lower"])), event) is True


def test_lookup() -> None:
    assert lookup(E1, "data.to.PhoneNumber.Value") == "+18005551212"
    assert lookup(E1, "EVENTTYPE") == "Microsoft.Communication.IncomingCall"
    assert lookup(E2, "data.nothing") is None
    assert lookup(E2, "data.absent") is MISSING
    assert lookup(E2, "data.priority.x") is MISSING
    assert lookup(E2, "data.tags.0") is MISSING
    assert lookup(E2, "data") is E2["data"]
    assert lookup({"data": {"straße": 1}}, "DATA.STRASSE") is MISSING
    assert lookup({"data": {"Ärger": 1}}, "data.ärger") == 1
    assert not MISSING
    assert repr(MISSING) == "MISSING"


def test_lookup_on_a_cloud_event_shape() -> None:
    # The matcher addresses whatever mapping it is given; CE extension attributes are plain keys.
    e3 = {
        "specversion": "1.0",
        "id": "e3",
        "type": "T",
        "comexampleothervalue": 5,
        "data": {"to": {"rawId": "u"}},
    }
    assert match(adv_filter(adv("NumberIn", "ComExampleOtherValue", [5])), e3) is True


def test_fold() -> None:
    assert fold("Microsoft.Communication.IncomingCall") == "microsoft.communication.incomingcall"


# --------------------------------------------------------------------------- subject filters


@pytest.mark.parametrize(
    ("spec", "subject", "expected"),
    [
        ({"subjectBeginsWith": "/Orders/"}, "/orders/42", True),
        ({"subjectBeginsWith": "/Orders/", "isSubjectCaseSensitive": True}, "/orders/42", False),
        ({"subjectBeginsWith": "/Orders/", "isSubjectCaseSensitive": True}, "/Orders/42", True),
        ({"subjectEndsWith": ".JPG"}, "/a/b.jpg", True),
        ({"subjectEndsWith": ".JPG", "isSubjectCaseSensitive": True}, "/a/b.jpg", False),
        ({"subjectEndsWith": ".jpg", "isSubjectCaseSensitive": True}, "/a/b.jpg", True),
        ({"subjectBeginsWith": "/a/", "subjectEndsWith": ".jpg"}, "/a/b.jpg", True),
        ({"subjectBeginsWith": "/a/", "subjectEndsWith": ".png"}, "/a/b.jpg", False),
        ({"subjectBeginsWith": "/b/", "subjectEndsWith": ".jpg"}, "/a/b.jpg", False),
        ({"subjectBeginsWith": "", "subjectEndsWith": None}, "/a/b.jpg", True),
        ({"subjectBeginsWith": "/a"}, "", False),
        ({"subjectBeginsWith": "/orders/42/"}, "/orders/42", False),
    ],
)
def test_subject_filters(spec: dict[str, Any], subject: str, expected: bool) -> None:
    assert match(spec, {"subject": subject, "eventType": "T"}) is expected


def test_subject_filter_without_subject() -> None:
    assert match({"subjectBeginsWith": "/a"}, {"eventType": "T"}) is False
    assert match({"subjectBeginsWith": "/a"}, {"eventType": "T", "subject": None}) is False
    assert match({}, {"eventType": "T"}) is True


def test_case_sensitive_flag_does_not_affect_advanced_filters() -> None:
    spec = {"isSubjectCaseSensitive": True, "advancedFilters": [adv("StringIn", "subject", ["/ORDERS/42"])]}
    assert match(spec, E2) is True


# --------------------------------------------------------------------------- includedEventTypes (O5)


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        (["contoso.order.created"], True),
        (["CONTOSO.ORDER.CREATED", "Other"], True),
        (["Contoso.Order"], False),
        (["All"], True),
        ([], True),
    ],
)
def test_included_event_types(types: list[str], expected: bool) -> None:
    assert match({"includedEventTypes": types}, E2) is expected


def test_included_event_types_case_sensitive_option() -> None:
    options = FilterOptions(event_types_case_sensitive=True)
    assert match({"includedEventTypes": ["contoso.order.created"]}, E2, options) is False
    assert match({"includedEventTypes": ["Contoso.Order.Created"]}, E2, options) is True
    compiled = compile_filter({"includedEventTypes": ["Contoso.Order.Created"]}, options)
    assert compiled.included_event_types == frozenset({"contoso.order.created"})


def test_legacy_all_option() -> None:
    options = FilterOptions(legacy_all_event_types=False)
    assert match({"includedEventTypes": ["All"]}, E2, options) is False
    assert compile_filter({"includedEventTypes": ["all"]}).included_event_types is None


def test_event_without_event_type() -> None:
    assert match({"includedEventTypes": ["T"]}, {"subject": "s"}) is False
    assert match({"includedEventTypes": ["T"]}, {"EVENTTYPE": "t"}) is True


# --------------------------------------------------------------------------- exact decimals


@pytest.mark.parametrize(
    ("op", "payload", "value", "expected"),
    [
        ("NumberIn", [0.3], 0.3, True),
        ("NumberIn", [0.3], 0.1 + 0.2, False),  # 0.30000000000000004 is not 0.3
        ("NumberIn", [0.3], Decimal("0.3"), True),
        ("NumberIn", [3], 3.0, True),
        ("NumberIn", [3.0], 3, True),
        ("NumberIn", [1e2], 100, True),
        ("NumberLessThanOrEquals", 0.3, 0.3, True),
        ("NumberGreaterThan", 0.3, 0.3, False),
        ("NumberInRange", [[0.1, 0.3]], 0.3, True),
        ("NumberNotInRange", [[0.1, 0.3]], 0.3, False),
        # Beyond float precision (2**53 + 1): a float comparison would call these equal.
        ("NumberIn", [9007199254740993], 9007199254740992, False),
        ("NumberIn", [9007199254740993], 9007199254740993, True),
        ("NumberGreaterThan", 9007199254740992, 9007199254740993, True),
        ("NumberLessThan", 10**30 + 1, 10**30, True),
        (
            "NumberIn",
            [Decimal("12345678901234567890.123456789")],
            Decimal("12345678901234567890.123456789"),
            True,
        ),
        ("NumberIn", [-0.0], 0, True),
    ],
)
def test_exact_decimals(op: str, payload: Any, value: Any, expected: bool) -> None:
    assert match(adv_filter(adv(op, "data.v", payload)), event_with(value)) is expected


def test_exact_decimals_from_json_text() -> None:
    spec = json.loads(
        '{"advancedFilters":[{"operatorType":"NumberIn","key":"data.v","values":[0.3, 123456789012345678901]}]}'
    )
    assert match(spec, json.loads('{"data":{"v":0.3}}')) is True
    assert match(spec, json.loads('{"data":{"v":123456789012345678901}}')) is True
    assert match(spec, json.loads('{"data":{"v":123456789012345678900}}')) is False


# --------------------------------------------------------------------------- validation (ARM 400)


def error_for(spec: Any, options: FilterOptions | None = None) -> str:
    with pytest.raises(InvalidFilter) as caught:
        compile_filter(spec) if options is None else compile_filter(spec, options)
    assert isinstance(caught.value, ValueError)
    assert caught.value.message == str(caught.value)
    return str(caught.value)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        pytest.param([1], "JSON object", id="filter-not-object"),
        pytest.param({"includedEventTypes": "T"}, "includedEventTypes", id="event-types-not-array"),
        pytest.param({"includedEventTypes": ["T", 1]}, "includedEventTypes[1]", id="event-type-not-string"),
        pytest.param({"includedEventTypes": [""]}, "includedEventTypes[0]", id="event-type-empty"),
        pytest.param({"subjectBeginsWith": 1}, "subjectBeginsWith", id="subject-begins-not-string"),
        pytest.param({"subjectEndsWith": ["x"]}, "subjectEndsWith", id="subject-ends-not-string"),
        pytest.param({"isSubjectCaseSensitive": "true"}, "isSubjectCaseSensitive", id="case-flag-not-bool"),
        pytest.param(
            {"enableAdvancedFilteringOnArrays": 1},
            "enableAdvancedFilteringOnArrays",
            id="arrays-flag-not-bool",
        ),
        pytest.param({"advancedFilters": {}}, "advancedFilters", id="advanced-not-array"),
        pytest.param({"advancedFilters": ["x"]}, "advancedFilters[0]", id="advanced-item-not-object"),
        pytest.param({"advancedFilters": [{"key": "data.a", "values": ["x"]}]}, "operatorType", id="no-operator"),
        pytest.param(adv_filter(adv("StringLike", "data.a", ["x"])), "StringLike", id="unknown-operator"),
        pytest.param(adv_filter({"operatorType": 5, "key": "data.a"}), "operatorType", id="operator-not-string"),
        pytest.param(adv_filter({"operatorType": "StringIn", "values": ["x"]}), "no 'key'", id="missing-key"),
        pytest.param(
            adv_filter({"operatorType": "StringIn", "key": 5, "values": ["x"]}),
            "'key' must be a string",
            id="key-not-string",
        ),
        pytest.param(adv_filter(adv("StringIn", "", ["x"])), "empty", id="key-empty"),
        pytest.param(adv_filter(adv("StringIn", "data..a", ["x"])), "empty step", id="key-double-dot"),
        pytest.param(adv_filter(adv("StringIn", "data.a.", ["x"])), "empty step", id="key-trailing-dot"),
        pytest.param(adv_filter(adv("StringIn", "data.a")), "no 'values'", id="values-missing"),
        pytest.param(adv_filter(adv("StringIn", "data.a", None, single=False)), "no 'values'", id="values-null"),
        pytest.param(adv_filter(adv("StringContains", "data.a", "x")), "not a single 'value'", id="value-for-multi"),
        pytest.param(adv_filter(adv("NumberLessThan", "data.a", [1])), "not 'values'", id="values-for-single"),
        pytest.param(adv_filter(adv("StringIn", "data.a", "x", single=False)), "must be an array", id="values-str"),
        pytest.param(adv_filter(adv("StringIn", "data.a", [])), "empty", id="values-empty"),
        pytest.param(adv_filter(adv("StringIn", "data.a", ["x", 1])), "value 2 must be a string", id="string-type"),
        pytest.param(adv_filter(adv("StringIn", "data.a", [None])), "value 1 must be a string", id="string-null"),
        pytest.param(adv_filter(adv("NumberIn", "data.a", ["1"])), "must be a number", id="number-is-string"),
        pytest.param(adv_filter(adv("NumberIn", "data.a", [True])), "must be a number", id="number-is-bool"),
        pytest.param(adv_filter(adv("NumberLessThan", "data.a", "1")), "must be a number", id="single-number"),
        pytest.param(adv_filter(adv("NumberLessThan", "data.a", float("nan"))), "finite", id="number-nan"),
        pytest.param(adv_filter(adv("NumberIn", "data.a", [float("inf")])), "finite", id="number-inf"),
        pytest.param(adv_filter(adv("NumberInRange", "data.a", [1, 2])), "pair", id="range-not-pair"),
        pytest.param(adv_filter(adv("NumberInRange", "data.a", [[1, 2, 3]])), "pair", id="range-three"),
        pytest.param(adv_filter(adv("NumberInRange", "data.a", [[1, "2"]])), "high bound", id="range-bound-type"),
        pytest.param(adv_filter(adv("NumberNotInRange", "data.a", [[2, 1]])), "greater than", id="range-inverted"),
        pytest.param(adv_filter(adv("BoolEquals", "data.a", "true")), "true or false", id="bool-is-string"),
        pytest.param(adv_filter(adv("BoolEquals", "data.a", 1)), "true or false", id="bool-is-number"),
        pytest.param(adv_filter(adv("BoolEquals", "data.a")), "no 'value'", id="bool-missing"),
        pytest.param(
            {"advancedFilters": [{"operatorType": "StringIn", "key": "a", "Key": "b", "values": ["x"]}]},
            "twice",
            id="duplicate-property",
        ),
        pytest.param(
            adv_filter(*[adv("IsNotNull", f"data.k{i}") for i in range(26)]),
            "26 advanced filters",
            id="26-filters",
        ),
        pytest.param(adv_filter(adv("StringIn", "data.a", [str(i) for i in range(26)])), "26 values", id="26-in-one"),
        pytest.param(
            adv_filter(
                *[adv("NumberLessThan", f"data.k{i}", i) for i in range(13)],
                adv("NumberIn", "data.z", [1] * 13),
            ),
            "26 values",
            id="single-values-count",
        ),
        pytest.param(
            adv_filter(adv("NumberInRange", "data.a", [[i, i + 1] for i in range(26)])),
            "26 values",
            id="ranges-count",
        ),
        pytest.param(adv_filter(adv("StringBeginsWith", "data.a", ["ok", "y" * 513])), "513 characters", id="513"),
    ],
)
def test_validation_errors(spec: Any, fragment: str) -> None:
    assert fragment in error_for(spec)


def test_unknown_operator_message_lists_supported_ones() -> None:
    message = error_for(adv_filter(adv("StringLike", "data.a", ["x"])))
    assert "advancedFilters[0]" in message
    assert "StringNotContains" in message and "IsNotNull" in message


def test_error_messages_name_filter_and_key() -> None:
    message = error_for(adv_filter(adv("IsNotNull", "data.ok"), adv("NumberIn", "data.count", ["x"])))
    assert "advancedFilters[1]" in message and "NumberIn" in message and "data.count" in message


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(None, id="none"),
        pytest.param({}, id="empty"),
        pytest.param(adv_filter(*[adv("IsNotNull", f"data.k{i}") for i in range(25)]), id="25-filters"),
        pytest.param(
            adv_filter(
                adv("StringIn", "data.a", [f"a{i}" for i in range(12)]),
                adv("StringIn", "data.b", [f"b{i}" for i in range(13)]),
            ),
            id="25-values",
        ),
        pytest.param(adv_filter(adv("StringIn", "data.a", ["x" * 512])), id="512-chars"),
        pytest.param(adv_filter(*[adv("IsNullOrUndefined", f"d.k{i}") for i in range(25)]), id="presence-no-values"),
        pytest.param(adv_filter(adv("NumberInRange", "data.a", [[1, 1]])), id="degenerate-range"),
        pytest.param(adv_filter(adv("StringIn", "data." + ".".join(["x"] * 40), ["v"])), id="deep-key"),
        pytest.param({"advancedFilters": None, "includedEventTypes": None, "unknownProperty": 1}, id="nulls-extra"),
        pytest.param(adv_filter(adv("IsNotNull", "data.a") | {"values": ["ignored"]}), id="extra-values"),
    ],
)
def test_valid_filters(spec: Any) -> None:
    assert isinstance(compile_filter(spec), CompiledFilter)


def test_limit_options() -> None:
    options = FilterOptions(max_advanced_filters=2, max_total_values=3, max_string_value_length=4, max_key_depth=2)
    assert "3 advanced filters" in error_for(adv_filter(*[adv("IsNotNull", "data.a")] * 3), options)
    assert "4 values" in error_for(adv_filter(adv("StringIn", "data.a", ["a", "b", "c", "d"])), options)
    assert "5 characters" in error_for(adv_filter(adv("StringIn", "data.a", ["abcde"])), options)
    assert "3 levels" in error_for(adv_filter(adv("StringIn", "data.a.b", ["x"])), options)
    compile_filter(adv_filter(adv("StringIn", "data.a", ["abcd"])), options)


def test_pascal_case_top_level_properties() -> None:
    spec = {"IncludedEventTypes": ["T"], "SubjectBeginsWith": "/A", "IsSubjectCaseSensitive": True}
    compiled = compile_filter(spec)
    assert compiled.matches({"eventType": "t", "subject": "/A/b"}) is True
    assert compiled.matches({"eventType": "t", "subject": "/a/b"}) is False


# --------------------------------------------------------------------------- index helpers


def test_included_event_types_output() -> None:
    compiled = compile_filter({"includedEventTypes": ["Microsoft.Communication.IncomingCall", "A.B"]})
    assert compiled.included_event_types == frozenset({"microsoft.communication.incomingcall", "a.b"})
    assert compile_filter(None).included_event_types is None
    assert compile_filter({"includedEventTypes": None}).included_event_types is None


def test_equality_keys_output() -> None:
    compiled = compile_filter(
        adv_filter(
            adv("StringIn", "Data.To.RawId", ["4:+18005551212", "8:ACS:u1"]),
            adv("StringNotIn", "data.x", ["a"]),
            adv("StringBeginsWith", "data.y", ["a"]),
            adv("NumberIn", "data.z", [1]),
            adv("StringIn", "EventType", ["X.Y"]),
        )
    )
    assert compiled.equality_keys() == [
        ("data.to.rawid", frozenset({"4:+18005551212", "8:acs:u1"})),
        ("eventtype", frozenset({"x.y"})),
    ]
    assert compile_filter(None).equality_keys() == []


def test_equality_keys_with_stringify_option_are_withheld() -> None:
    options = FilterOptions(stringify_numbers_for_string_ops=True)
    assert compile_filter(adv_filter(adv("StringIn", "data.a", ["5"])), options).equality_keys() == []


def test_equality_keys_are_a_necessary_condition() -> None:
    # What an index would do: look the key up, fold, and test membership; never prune a real match.
    specs = [
        adv_filter(adv("StringIn", "data.to.kind", ["PhoneNumber"])),
        adv_filter(adv("StringIn", "DATA.TO.KIND", ["communicationUser"])),
        adv_filter(adv("StringIn", "data.tags", ["red"]), arrays=True),
        adv_filter(adv("StringIn", "data.tags", ["red"])),
        adv_filter(adv("StringIn", "data.missing", ["x"])),
    ]
    for spec in specs:
        compiled = compile_filter(spec)
        for event in (E1, E2):
            if not compiled.matches(event):
                continue
            for key, values in compiled.equality_keys():
                value = lookup(event, key)
                candidates = value if compiled.arrays_enabled and isinstance(value, list) else [value]
                assert any(isinstance(v, str) and fold(v) in values for v in candidates)


def test_compiled_filter_attributes() -> None:
    compiled = compile_filter(
        {"subjectBeginsWith": "/A", "subjectEndsWith": "z", "isSubjectCaseSensitive": True}
        | adv_filter(adv("IsNotNull", "data"), arrays=True)
    )
    assert compiled.subject_begins_with == "/A"
    assert compiled.subject_ends_with == "z"
    assert compiled.is_subject_case_sensitive is True
    assert compiled.arrays_enabled is True
    assert compiled.matches_everything is False
    assert compile_filter({}).matches_everything is True
    assert "IsNotNull" in repr(compiled)


def test_compile_once_match_many() -> None:
    compiled = compile_filter(
        {
            "includedEventTypes": ["Microsoft.Communication.IncomingCall"],
            "advancedFilters": [adv("StringIn", "data.to.rawId", ["4:+18005551212"])],
        }
    )
    other = copy.deepcopy(E1)
    other["data"]["to"]["rawId"] = "4:+10000000000"
    results = [compiled.matches(e) for e in (E1, other, E1, E2)]
    assert results == [True, False, True, False]


@pytest.mark.parametrize(
    ("op", "payload", "value", "expected"),
    [
        # Filter values with more digits than a float holds: float(D) == 0.3, yet 0.3 != D.
        ("NumberIn", [Decimal("0.30000000000000001")], 0.3, False),
        ("NumberLessThan", Decimal("0.30000000000000001"), 0.3, True),
        ("NumberGreaterThanOrEquals", Decimal("0.30000000000000001"), 0.3, False),
        ("NumberInRange", [[Decimal("0.30000000000000001"), 1]], 0.3, False),
        ("NumberInRange", [[0, Decimal("0.29999999999999999")]], 0.3, False),
        ("NumberNotInRange", [[Decimal("0.30000000000000001"), 1]], 0.3, True),
    ],
)
def test_float_event_values_against_precise_filter_values(op: str, payload: Any, value: Any, expected: bool) -> None:
    assert match(adv_filter(adv(op, "data.v", payload)), event_with(value)) is expected


def test_float_fast_path_agrees_with_decimal_reference() -> None:
    # Event floats mean their shortest decimal text; check the float shortcut against that reading.
    rng = random.Random(20240501)
    bounds = [
        Decimal("0.3"),
        Decimal("0.30000000000000001"),
        Decimal("150.5"),
        Decimal(2**53 + 1),
        Decimal("-1e-7"),
    ]
    floats = [0.3, 0.1 + 0.2, 150.5, float(2**53), 2.0**53 + 2, -1e-7, -1.0000000000000002e-7, 0.0]
    floats += [rng.uniform(-200, 200) for _ in range(200)]
    for bound in bounds:
        compiled = {
            op: compile_filter(adv_filter(adv(op, "data.v", bound))) for op in ("NumberLessThan", "NumberGreaterThan")
        }
        in_set = compile_filter(adv_filter(adv("NumberIn", "data.v", [bound])))
        in_range = compile_filter(adv_filter(adv("NumberInRange", "data.v", [[bound, bound + 1]])))
        for f in floats:
            d = Decimal(repr(f))
            event = event_with(f)
            assert compiled["NumberLessThan"].matches(event) is (d < bound), (f, bound)
            assert compiled["NumberGreaterThan"].matches(event) is (d > bound), (f, bound)
            assert in_set.matches(event) is (d == bound), (f, bound)
            assert in_range.matches(event) is (bound <= d <= bound + 1), (f, bound)
