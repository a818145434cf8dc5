"""Event subscription filters: ARM-style validation, then a matcher compiled once per subscription.

Contract: eventgrid.md §2.3 (the `filter` object), §3 (semantics, limits, vectors) and §8 (O1-O5, O11).
Points the spec leaves OPEN are settings of `FilterOptions`, whose defaults are its recommendations.

The matcher works on one event in the schema its subscription receives: Event Grid schema (`id`, `topic`,
`subject`, `eventType`, `dataVersion`, `data`, ...) or, compiled with `cloud_events`, a CloudEvent
(`type` is then the event type; every other key is looked up as written). See events.FilterViews.

Case-insensitive comparison everywhere uses `fold` (``str.lower``): an index built beside the
matcher must fold with the same function to agree with it.
"""

from __future__ import annotations

import functools
import json
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

__all__ = [
    "DEFAULT_OPTIONS",
    "MISSING",
    "OPERATOR_TYPES",
    "CompiledFilter",
    "FilterOptions",
    "InvalidFilter",
    "Refusal",
    "compile_filter",
    "fold",
    "lookup",
]


class InvalidFilter(ValueError):
    """The `filter` of an event subscription is not one ARM would accept (surfaced as HTTP 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class FilterOptions:
    """Behaviour the spec leaves open (§3, §8) plus the ARM limits (§3.7); defaults follow the spec."""

    # O1: a missing key with NumberNotInRange matches, mirroring NumberNotIn.
    missing_key_number_not_in_range_matches: bool = True
    # O2: a scalar of the wrong type (e.g. NumberIn against "5") never satisfies a positive operator;
    # for the Not* operators it counts as "hit no value", i.e. matched. False = not matched either.
    type_mismatch_negated_matches: bool = True
    # O3: JSON null under a value operator is a type mismatch (O2). False = treat it as a missing key (§3.4).
    null_is_type_mismatch: bool = True
    # O4: an array while enableAdvancedFilteringOnArrays is off fails every value operator.
    # True = treat it as a scalar type mismatch instead (so Not* operators follow O2).
    array_without_flag_is_type_mismatch: bool = False
    # O5: includedEventTypes compares case-insensitively.
    event_types_case_sensitive: bool = False
    # §3.5 caveat: string operators see numbers as their decimal text (e.g. 5 -> "5"). Off by default.
    stringify_numbers_for_string_ops: bool = False
    # §2.3: the legacy includedEventTypes value ["All"] means every event type.
    legacy_all_event_types: bool = True
    # §3.7 limits (ARM 400 when exceeded); O11 says what counts as one value.
    max_advanced_filters: int = 25
    max_total_values: int = 25
    max_string_value_length: int = 512
    # §3.3: keys nest to any depth; set a number to restore the historic limit.
    max_key_depth: int | None = None


DEFAULT_OPTIONS: Final = FilterOptions()


class _Missing:
    """Marker for "no such key" (distinct from JSON null, which is None)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final[Any] = _Missing()
# Private marker: a value of a type the operator cannot compare with.
_MISMATCH: Final[Any] = object()


def fold(text: str) -> str:
    """The case folding used for keys, event types, subjects and string values."""
    return text.lower()


# --------------------------------------------------------------------------- key lookup

_Path = tuple[str, ...]


@functools.lru_cache(maxsize=4096)
def _split_key(key: str) -> _Path:
    return tuple(fold(key).split("."))


def _scan(node: Mapping[Any, Any], segment: str) -> Any:
    size = len(segment)
    for name, value in node.items():
        # The length test skips most lower() calls; non-ASCII names may change length when folded.
        if isinstance(name, str) and (len(name) == size or not name.isascii()) and fold(name) == segment:
            return value
    return MISSING


def _lookup_path(event: Any, path: _Path) -> Any:
    # Segments are already folded. The exact folded spelling wins, otherwise the first property equal
    # ignoring case: the result depends only on the folded key, so matcher and index always agree.
    node = event
    for segment in path:
        # `type(...) is dict` first: the ABC isinstance check costs ~10x more and events are dicts.
        if type(node) is not dict and not isinstance(node, Mapping):
            return MISSING
        found = node.get(segment, MISSING)
        if found is MISSING:
            found = _scan(node, segment)
            if found is MISSING:
                return MISSING
        node = found
    return node


def lookup(event: Mapping[str, Any], key: str) -> Any:
    """Value at a dotted filter key (`data.to.rawId`), matching property names case-insensitively.

    Returns `MISSING` when any step is absent or runs into a non-object; JSON null comes back as None.
    When an object has several properties equal ignoring case, the one spelled exactly like the
    lower-cased segment wins, otherwise the first in document order.
    """
    return _lookup_path(event, _split_key(key))


# --------------------------------------------------------------------------- operand coercion


def _event_number(value: Any) -> Any:
    # Python compares int and Decimal exactly, so ints stay ints. Floats stay floats too: the number
    # filters compare them in float space when that is provably exact and otherwise as
    # Decimal(repr(f)), i.e. the JSON text 0.3 rather than its binary approximation (`_as_decimal`).
    kind = type(value)
    if kind is int:
        return value
    if kind is float:
        return value if math.isfinite(value) else _MISMATCH
    if kind is Decimal:
        return value if value.is_finite() else _MISMATCH
    if kind is bool:
        return _MISMATCH
    if isinstance(value, int):
        return int(value)
    return _MISMATCH


def _as_decimal(value: float) -> Decimal:
    # repr is the shortest text that round-trips, i.e. the number as JSON wrote it.
    return Decimal(repr(value))


def _nearest_float(value: Decimal) -> float:
    # Rounding to the nearest float is monotonic, so for a float f whose shortest decimal is d:
    # f < float(D) implies d < D, and f > float(D) implies d > D. Only f == float(D) needs Decimal.
    return float(value)


def _number_text(value: Any) -> str:
    # Integral floats print without ".0" so that 5.0 reads "5", as a JSON number 5 would.
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)
    return str(value)


def _event_string(value: Any) -> Any:
    return fold(value) if isinstance(value, str) else _MISMATCH


def _event_string_or_number(value: Any) -> Any:
    if isinstance(value, str):
        return fold(value)
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        if _event_number(value) is _MISMATCH:
            return _MISMATCH
        return fold(_number_text(value))
    return _MISMATCH


def _event_bool(value: Any) -> Any:
    return value if type(value) is bool else _MISMATCH


# --------------------------------------------------------------------------- compiled advanced filters


def _shown(value: Any, limit: int = 120) -> str:
    """A value as JSON, cut short: for explanations people read."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except ValueError:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Advanced:
    """One compiled advanced filter."""

    __slots__ = ("key", "operator_type", "path", "wants")

    def __init__(self, key: str, operator_type: str, path: _Path) -> None:
        self.key = key
        self.operator_type = operator_type
        self.path = path
        self.wants = ""  # the filter's value(s) as given, for explanations

    def test(self, event: Any) -> bool:
        raise NotImplementedError

    def why_not(self, event: Any) -> str:
        """In words, why `test(event)` is false (called only when it is)."""
        value = _lookup_path(event, self.path)
        head = f"{self.operator_type} on '{self.key}'" + (f" {self.wants}" if self.wants else "")
        if value is MISSING:
            return f"{head}: the event has no '{self.key}'"
        if value is None:
            return f"{head}: '{self.key}' is null"
        return f"{head}: '{self.key}' is {_shown(value)}{self._found_note(value)}"

    def _found_note(self, value: Any) -> str:
        return ""

    def __repr__(self) -> str:
        return f"<{self.operator_type} {self.key!r}>"


class _PresenceFilter(_Advanced):
    """IsNullOrUndefined / IsNotNull: only presence matters, so arrays and types are irrelevant."""

    __slots__ = ("want_absent",)

    def __init__(self, key: str, operator_type: str, path: _Path, want_absent: bool) -> None:
        super().__init__(key, operator_type, path)
        self.want_absent = want_absent

    def test(self, event: Any) -> bool:
        value = _lookup_path(event, self.path)
        absent = value is MISSING or value is None
        return absent is self.want_absent


class _ValueFilter(_Advanced):
    """An operator comparing the key's value with filter values: `hit` is the positive test.

    For the Not* operators `negated` is set and the result is inverted, so one `hit` serves both.
    """

    __slots__ = ("arrays", "coerce", "negated", "on_array_off", "on_mismatch", "on_missing", "on_null")

    def __init__(
        self,
        key: str,
        operator_type: str,
        path: _Path,
        *,
        negated: bool,
        coerce: Callable[[Any], Any],
        arrays: bool,
        on_missing: bool,
        options: FilterOptions,
    ) -> None:
        super().__init__(key, operator_type, path)
        self.negated = negated
        self.coerce = coerce
        self.arrays = arrays
        self.on_missing = on_missing
        self.on_mismatch = negated and options.type_mismatch_negated_matches
        self.on_null = self.on_mismatch if options.null_is_type_mismatch else on_missing
        self.on_array_off = self.on_mismatch if options.array_without_flag_is_type_mismatch else False

    def hit(self, operand: Any) -> bool:
        raise NotImplementedError

    def _found_note(self, value: Any) -> str:
        if isinstance(value, list | tuple):
            if not self.arrays:
                return " (an array, and enableAdvancedFilteringOnArrays is off)"
            return " (an array: " + ("an element hits)" if self.negated else "no element hits)")
        if self.coerce(value) is _MISMATCH:
            return f" (a {_json_type(value)}, which {self.operator_type} does not compare)"
        return ""

    def test(self, event: Any) -> bool:
        value = _lookup_path(event, self.path)
        if value is MISSING:
            return self.on_missing
        if value is None:
            return self.on_null
        if isinstance(value, list | tuple):
            if not self.arrays:
                return self.on_array_off
            # Positive: any element hits. Not*: no element may hit. Elements of another type are skipped.
            coerce = self.coerce
            for element in value:
                operand = coerce(element)
                if operand is not _MISMATCH and self.hit(operand):
                    return not self.negated
            return self.negated
        operand = self.coerce(value)
        if operand is _MISMATCH:
            return self.on_mismatch
        return self.hit(operand) is not self.negated


class _NumberSet(_ValueFilter):
    __slots__ = ("floats", "values")
    values: frozenset[Decimal]
    floats: frozenset[float]

    def set_values(self, values: frozenset[Decimal]) -> None:
        self.values = values
        self.floats = frozenset(_nearest_float(v) for v in values)

    def hit(self, operand: Any) -> bool:
        if type(operand) is float:
            # A float equals D only if it is float(D); most misses end here without a Decimal.
            if operand not in self.floats:
                return False
            operand = _as_decimal(operand)
        # int, Decimal and equal Decimal hash alike, so set membership is exact.
        return operand in self.values


class _NumberCompare(_ValueFilter):
    __slots__ = ("compare", "value", "value_float")
    compare: Callable[[Any, Any], bool]
    value: Decimal
    value_float: float

    def set_value(self, compare: Callable[[Any, Any], bool], value: Decimal) -> None:
        self.compare = compare
        self.value = value
        self.value_float = _nearest_float(value)

    def hit(self, operand: Any) -> bool:
        if type(operand) is float:
            if operand != self.value_float:
                return self.compare(operand, self.value_float)
            operand = _as_decimal(operand)
        return self.compare(operand, self.value)


class _NumberRange(_ValueFilter):
    __slots__ = ("bound_floats", "float_ranges", "ranges")
    ranges: tuple[tuple[Decimal, Decimal], ...]
    float_ranges: tuple[tuple[float, float], ...]
    bound_floats: frozenset[float]

    def set_ranges(self, ranges: tuple[tuple[Decimal, Decimal], ...]) -> None:
        self.ranges = ranges
        self.float_ranges = tuple((_nearest_float(lo), _nearest_float(hi)) for lo, hi in ranges)
        self.bound_floats = frozenset(bound for pair in self.float_ranges for bound in pair)

    def hit(self, operand: Any) -> bool:
        if type(operand) is float:
            if operand not in self.bound_floats:
                return any(low <= operand <= high for low, high in self.float_ranges)
            operand = _as_decimal(operand)
        return any(low <= operand <= high for low, high in self.ranges)


class _BoolEquals(_ValueFilter):
    __slots__ = ("value",)
    value: bool

    def hit(self, operand: Any) -> bool:
        return operand is self.value


class _StringIn(_ValueFilter):
    __slots__ = ("values",)
    values: frozenset[str]

    def hit(self, operand: Any) -> bool:
        return operand in self.values


class _StringBeginsWith(_ValueFilter):
    __slots__ = ("values",)
    values: tuple[str, ...]

    def hit(self, operand: Any) -> bool:
        return bool(operand.startswith(self.values))


class _StringEndsWith(_ValueFilter):
    __slots__ = ("values",)
    values: tuple[str, ...]

    def hit(self, operand: Any) -> bool:
        return bool(operand.endswith(self.values))


class _StringContains(_ValueFilter):
    __slots__ = ("values",)
    values: tuple[str, ...]

    def hit(self, operand: Any) -> bool:
        return any(value in operand for value in self.values)


# --------------------------------------------------------------------------- operator table

_SINGLE, _MULTI, _NONE = "value", "values", "none"
_NUMBER, _RANGE, _BOOL, _STRING = "number", "range", "bool", "string"


@dataclass(frozen=True)
class _OperatorSpec:
    name: str
    payload: str  # _SINGLE | _MULTI | _NONE
    operand: str | None  # _NUMBER | _RANGE | _BOOL | _STRING
    negated: bool = False
    # §3.4: result when the key is absent (None = decided by FilterOptions, O1).
    on_missing: bool | None = False


_OPERATOR_SPECS: Final[tuple[_OperatorSpec, ...]] = (
    _OperatorSpec("NumberIn", _MULTI, _NUMBER),
    _OperatorSpec("NumberNotIn", _MULTI, _NUMBER, negated=True, on_missing=True),
    _OperatorSpec("NumberLessThan", _SINGLE, _NUMBER),
    _OperatorSpec("NumberGreaterThan", _SINGLE, _NUMBER),
    _OperatorSpec("NumberLessThanOrEquals", _SINGLE, _NUMBER),
    _OperatorSpec("NumberGreaterThanOrEquals", _SINGLE, _NUMBER),
    _OperatorSpec("NumberInRange", _MULTI, _RANGE),
    _OperatorSpec("NumberNotInRange", _MULTI, _RANGE, negated=True, on_missing=None),
    _OperatorSpec("BoolEquals", _SINGLE, _BOOL),
    _OperatorSpec("StringIn", _MULTI, _STRING),
    _OperatorSpec("StringNotIn", _MULTI, _STRING, negated=True, on_missing=True),
    _OperatorSpec("StringBeginsWith", _MULTI, _STRING),
    _OperatorSpec("StringNotBeginsWith", _MULTI, _STRING, negated=True),
    _OperatorSpec("StringEndsWith", _MULTI, _STRING),
    _OperatorSpec("StringNotEndsWith", _MULTI, _STRING, negated=True),
    _OperatorSpec("StringContains", _MULTI, _STRING),
    _OperatorSpec("StringNotContains", _MULTI, _STRING, negated=True),
    _OperatorSpec("IsNullOrUndefined", _NONE, None),
    _OperatorSpec("IsNotNull", _NONE, None),
)
_OPERATORS_BY_FOLDED: Final = {spec.name.lower(): spec for spec in _OPERATOR_SPECS}
OPERATOR_TYPES: Final[tuple[str, ...]] = tuple(spec.name for spec in _OPERATOR_SPECS)

_COMPARATORS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "NumberLessThan": operator.lt,
    "NumberGreaterThan": operator.gt,
    "NumberLessThanOrEquals": operator.le,
    "NumberGreaterThanOrEquals": operator.ge,
}
_STRING_CLASSES: Final[dict[str, type[_ValueFilter]]] = {
    "StringIn": _StringIn,
    "StringNotIn": _StringIn,
    "StringBeginsWith": _StringBeginsWith,
    "StringNotBeginsWith": _StringBeginsWith,
    "StringEndsWith": _StringEndsWith,
    "StringNotEndsWith": _StringEndsWith,
    "StringContains": _StringContains,
    "StringNotContains": _StringContains,
}


# --------------------------------------------------------------------------- the compiled filter


@dataclass(frozen=True)
class Refusal:
    """Which part of a filter said no to an event, and why, in words (for people: the console)."""

    part: str  # includedEventTypes | subjectBeginsWith | subjectEndsWith | advancedFilters
    index: int | None  # the advanced filter's position (0-based) when part is advancedFilters
    reason: str

    @property
    def where(self) -> str:
        return self.part if self.index is None else f"{self.part}[{self.index}]"


class CompiledFilter:
    """A subscription's filter, validated and compiled once; `matches` decides one event.

    What an index in front of many subscriptions may rely on (all are necessary conditions; the
    index narrows the candidates, then `matches` decides):

    * `included_event_types`: None means every event type. Otherwise the subscription can only match
      an event whose ``fold(eventType)`` is in the set (the set is folded even when
      `FilterOptions.event_types_case_sensitive` is on; `matches` then checks the exact spelling).
    * `equality_keys()`: for each StringIn filter, ``(folded key, folded values)``. The subscription can
      only match an event if, for every such pair, ``lookup(event, key)`` is a string whose `fold` is
      in the set, or, when `arrays_enabled` and the value is a list, some string element's `fold` is.
      (Empty when `stringify_numbers_for_string_ops` is on, since numbers can then satisfy StringIn.)
    """

    __slots__ = (
        "_advanced",
        "_event_types_exact",
        "_subject_begins",
        "_subject_ends",
        "_subject_folded",
        "arrays_enabled",
        "cloud_events",
        "event_type_key",
        "included_event_types",
        "is_subject_case_sensitive",
        "subject_begins_with",
        "subject_ends_with",
    )

    def __init__(
        self,
        *,
        included_event_types: Sequence[str] | None,
        subject_begins_with: str,
        subject_ends_with: str,
        is_subject_case_sensitive: bool,
        arrays_enabled: bool,
        advanced: Sequence[_Advanced],
        options: FilterOptions,
        cloud_events: bool = False,
    ) -> None:
        self.cloud_events = cloud_events
        # The attribute includedEventTypes reads: a CloudEvent's type is `type`.
        self.event_type_key = "type" if cloud_events else "eventType"
        self.included_event_types: frozenset[str] | None = (
            None if included_event_types is None else frozenset(fold(t) for t in included_event_types)
        )
        self._event_types_exact: frozenset[str] | None = (
            frozenset(included_event_types)
            if included_event_types is not None and options.event_types_case_sensitive
            else None
        )
        self.subject_begins_with = subject_begins_with
        self.subject_ends_with = subject_ends_with
        self.is_subject_case_sensitive = is_subject_case_sensitive
        self.arrays_enabled = arrays_enabled
        self._subject_folded = not is_subject_case_sensitive
        self._subject_begins = subject_begins_with if is_subject_case_sensitive else fold(subject_begins_with)
        self._subject_ends = subject_ends_with if is_subject_case_sensitive else fold(subject_ends_with)
        self._advanced: tuple[_Advanced, ...] = tuple(advanced)

    def equality_keys(self) -> list[tuple[str, frozenset[str]]]:
        """(folded key, folded values) of every StringIn filter, in filter order (see class docstring)."""
        return [
            (".".join(f.path), f.values)
            for f in self._advanced
            if isinstance(f, _StringIn) and not f.negated and f.coerce is _event_string
        ]

    @property
    def matches_everything(self) -> bool:
        """True when the filter sets no constraint at all."""
        return (
            self.included_event_types is None
            and not self._subject_begins
            and not self._subject_ends
            and not self._advanced
        )

    def matches(self, event: Mapping[str, Any]) -> bool:
        """Whether one event (Event Grid schema, or a CloudEvent when compiled with `cloud_events`) passes
        the type, subject and all advanced filters (§3.1)."""
        if self.included_event_types is not None:
            event_type = event.get(self.event_type_key, MISSING)
            if event_type is MISSING:
                event_type = lookup(event, self.event_type_key)
            if not isinstance(event_type, str):
                return False
            if self._event_types_exact is not None:
                if event_type not in self._event_types_exact:
                    return False
            elif fold(event_type) not in self.included_event_types:
                return False
        if self._subject_begins or self._subject_ends:
            subject = event.get("subject", MISSING)
            if subject is MISSING:
                subject = lookup(event, "subject")
            if not isinstance(subject, str):
                return False
            if self._subject_folded:
                subject = fold(subject)
            if not subject.startswith(self._subject_begins) or not subject.endswith(self._subject_ends):
                return False
        return all(advanced.test(event) for advanced in self._advanced)

    def explain(self, event: Mapping[str, Any]) -> Refusal | None:
        """Why `event` does not pass: the first part of the filter that says no (in the order `matches`
        tests them), or None when it passes. Agrees with `matches` on every event."""
        if self.included_event_types is not None:
            event_type = event.get("eventType", MISSING)
            if event_type is MISSING:
                event_type = lookup(event, "eventType")
            types = sorted(self._event_types_exact or self.included_event_types)
            if not isinstance(event_type, str):
                return Refusal("includedEventTypes", None, f"the event has no eventType; the filter wants {types}")
            exact = self._event_types_exact
            if (event_type not in exact) if exact is not None else (fold(event_type) not in self.included_event_types):
                return Refusal("includedEventTypes", None, f"eventType '{event_type}' is not one of {types}")
        if self._subject_begins or self._subject_ends:
            subject = event.get("subject", MISSING)
            if subject is MISSING:
                subject = lookup(event, "subject")
            case = "case-sensitive" if self.is_subject_case_sensitive else "ignoring case"
            if not isinstance(subject, str):
                part = "subjectBeginsWith" if self._subject_begins else "subjectEndsWith"
                return Refusal(part, None, "the event has no subject")
            folded = fold(subject) if self._subject_folded else subject
            if not folded.startswith(self._subject_begins):
                return Refusal(
                    "subjectBeginsWith",
                    None,
                    f"subject '{subject}' does not begin with '{self.subject_begins_with}' ({case})",
                )
            if not folded.endswith(self._subject_ends):
                return Refusal(
                    "subjectEndsWith",
                    None,
                    f"subject '{subject}' does not end with '{self.subject_ends_with}' ({case})",
                )
        for index, advanced in enumerate(self._advanced):
            if not advanced.test(event):
                return Refusal("advancedFilters", index, advanced.why_not(event))
        return None

    def __repr__(self) -> str:
        return (
            f"CompiledFilter(included_event_types={self.included_event_types!r}, "
            f"subject_begins_with={self.subject_begins_with!r}, "
            f"subject_ends_with={self.subject_ends_with!r}, "
            f"advanced={list(self._advanced)!r}, cloud_events={self.cloud_events!r})"
        )


# --------------------------------------------------------------------------- validation and compilation


def _properties(obj: Mapping[str, Any], where: str) -> dict[str, Any]:
    # ARM reads property names case-insensitively (§3.2), so fold them; reject ambiguous duplicates.
    folded: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for name, value in obj.items():
        if not isinstance(name, str):
            raise InvalidFilter(f"{where} has a property name that is not a string: {name!r}.")
        key = fold(name)
        if key in folded:
            raise InvalidFilter(f"{where} has the property '{name}' twice (as '{spelled[key]}' and '{name}').")
        folded[key] = value
        spelled[key] = name
    return folded


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | Decimal):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _optional_bool(props: Mapping[str, Any], name: str) -> bool:
    value = props.get(name.lower())
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidFilter(f"The filter property '{name}' must be true or false, not {_json_type(value)}.")
    return value


def _optional_string(props: Mapping[str, Any], name: str) -> str:
    value = props.get(name.lower())
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidFilter(f"The filter property '{name}' must be a string, not {_json_type(value)}.")
    return value


def _event_types(props: Mapping[str, Any], options: FilterOptions) -> list[str] | None:
    value = props.get("includedeventtypes")
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise InvalidFilter(
            f"The filter property 'includedEventTypes' must be an array of strings, not {_json_type(value)}."
        )
    types: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise InvalidFilter(
                f"includedEventTypes[{index}] must be a non-empty event type name, not "
                f"{'an empty string' if item == '' else _json_type(item)}."
            )
        types.append(item)
    # An empty list sets no constraint, like null: a subscription that could never fire is not useful
    # and SDK serialisers commonly send [] for "not set".
    if not types:
        return None
    if options.legacy_all_event_types and len(types) == 1 and fold(types[0]) == "all":
        return None
    return types


def _to_decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise InvalidFilter(f"{where} must be a number, not {_json_type(value)}.")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidFilter(f"{where} must be a finite number, not {value!r}.")
        return Decimal(repr(value))
    if not value.is_finite():
        raise InvalidFilter(f"{where} must be a finite number, not {value}.")
    return value


class _FilterCompiler:
    def __init__(self, options: FilterOptions, arrays: bool) -> None:
        self.options = options
        self.arrays = arrays
        self.total_values = 0

    def compile(self, index: int, raw: Any) -> _Advanced:
        compiled = self._compile(index, raw)
        props = _properties(raw, f"advancedFilters[{index}]")
        if "values" in props and props["values"] is not None:
            compiled.wants = _shown(props["values"])
        elif "value" in props and props["value"] is not None:
            compiled.wants = _shown(props["value"])
        return compiled

    def _compile(self, index: int, raw: Any) -> _Advanced:
        where = f"advancedFilters[{index}]"
        if not isinstance(raw, Mapping):
            raise InvalidFilter(f"{where} must be an object with 'operatorType' and 'key', not {_json_type(raw)}.")
        props = _properties(raw, where)
        op_name = props.get("operatortype")
        if op_name is None:
            raise InvalidFilter(f"{where} has no 'operatorType'.")
        if not isinstance(op_name, str):
            raise InvalidFilter(f"{where}: 'operatorType' must be a string, not {_json_type(op_name)}.")
        spec = _OPERATORS_BY_FOLDED.get(fold(op_name))
        if spec is None:
            raise InvalidFilter(
                f"{where}: operatorType '{op_name}' is not a supported advanced filter operator. "
                f"Supported: {', '.join(OPERATOR_TYPES)}."
            )
        key = props.get("key")
        if key is None:
            raise InvalidFilter(f"{where} ({spec.name}) has no 'key'; say which event property to filter on.")
        if not isinstance(key, str):
            raise InvalidFilter(f"{where} ({spec.name}): 'key' must be a string, not {_json_type(key)}.")
        where = f"{where} ({spec.name} on key '{key}')"
        path = self._path(key, where)

        if spec.payload == _NONE:
            return _PresenceFilter(key, spec.name, path, want_absent=spec.name == "IsNullOrUndefined")

        if spec.payload == _SINGLE:
            if "value" not in props or props["value"] is None:
                hint = " (it takes a single 'value', not 'values')" if "values" in props else ""
                raise InvalidFilter(f"{where} has no 'value'{hint}.")
            payload: Any = props["value"]
            self.total_values += 1
        else:
            if "values" not in props or props["values"] is None:
                hint = " (it takes an array 'values', not a single 'value')" if "value" in props else ""
                raise InvalidFilter(f"{where} has no 'values'{hint}.")
            payload = props["values"]
            if not isinstance(payload, list | tuple):
                raise InvalidFilter(f"{where}: 'values' must be an array, not {_json_type(payload)}.")
            if not payload:
                raise InvalidFilter(f"{where}: 'values' is empty; give at least one value.")
            # O11: each element of `values` (a range pair included) counts as one value.
            self.total_values += len(payload)

        on_missing = spec.on_missing
        if on_missing is None:
            on_missing = self.options.missing_key_number_not_in_range_matches
        common: dict[str, Any] = {
            "negated": spec.negated,
            "arrays": self.arrays,
            "on_missing": on_missing,
            "options": self.options,
        }

        if spec.operand == _NUMBER and spec.payload == _MULTI:
            number_set = _NumberSet(key, spec.name, path, coerce=_event_number, **common)
            number_set.set_values(frozenset(_to_decimal(v, f"{where}: value {i + 1}") for i, v in enumerate(payload)))
            return number_set
        if spec.operand == _NUMBER:
            compare = _NumberCompare(key, spec.name, path, coerce=_event_number, **common)
            compare.set_value(_COMPARATORS[spec.name], _to_decimal(payload, f"{where}: 'value'"))
            return compare
        if spec.operand == _RANGE:
            number_range = _NumberRange(key, spec.name, path, coerce=_event_number, **common)
            number_range.set_ranges(tuple(self._range(v, f"{where}: range {i + 1}") for i, v in enumerate(payload)))
            return number_range
        if spec.operand == _BOOL:
            if not isinstance(payload, bool):
                raise InvalidFilter(f"{where}: 'value' must be true or false, not {_json_type(payload)}.")
            bool_equals = _BoolEquals(key, spec.name, path, coerce=_event_bool, **common)
            bool_equals.value = payload
            return bool_equals

        strings = [self._string(v, f"{where}: value {i + 1}") for i, v in enumerate(payload)]
        coerce = _event_string_or_number if self.options.stringify_numbers_for_string_ops else _event_string
        string_filter = _STRING_CLASSES[spec.name](key, spec.name, path, coerce=coerce, **common)
        if isinstance(string_filter, _StringIn):
            string_filter.values = frozenset(strings)
        elif isinstance(string_filter, _StringBeginsWith | _StringEndsWith | _StringContains):
            # Dict keys keep first-seen order while dropping duplicates.
            string_filter.values = tuple(dict.fromkeys(strings))
        return string_filter

    def _path(self, key: str, where: str) -> _Path:
        if not key.strip():
            raise InvalidFilter(f"{where}: 'key' is empty; give an event property such as 'data.name'.")
        path = _split_key(key)
        if any(not segment for segment in path):
            raise InvalidFilter(
                f"{where}: the key has an empty step; write dotted paths like 'data.to.rawId' "
                "with no leading, trailing or doubled dots."
            )
        limit = self.options.max_key_depth
        if limit is not None and len(path) > limit:
            raise InvalidFilter(f"{where}: the key is {len(path)} levels deep; at most {limit} are allowed.")
        return path

    def _string(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise InvalidFilter(f"{where} must be a string, not {_json_type(value)}.")
        limit = self.options.max_string_value_length
        if len(value) > limit:
            raise InvalidFilter(
                f"{where} is {len(value)} characters long; string values may be at most {limit} characters."
            )
        return fold(value)

    @staticmethod
    def _range(value: Any, where: str) -> tuple[Decimal, Decimal]:
        if not isinstance(value, list | tuple) or len(value) != 2:
            shape = f"an array of {len(value)}" if isinstance(value, list | tuple) else _json_type(value)
            raise InvalidFilter(f"{where} must be a pair [low, high], not {shape}.")
        low = _to_decimal(value[0], f"{where}: low bound")
        high = _to_decimal(value[1], f"{where}: high bound")
        if low > high:
            raise InvalidFilter(f"{where}: low bound {value[0]} is greater than high bound {value[1]}.")
        return low, high


def compile_filter(
    spec: Mapping[str, Any] | None, options: FilterOptions = DEFAULT_OPTIONS, *, cloud_events: bool = False
) -> CompiledFilter:
    """Validate an event subscription's `filter` object as ARM does on PUT, and compile it.

    `cloud_events`: the subscription receives CloudEvents 1.0, so its filter reads them (FilterViews).

    `spec` is the JSON object as the REST API / azure-mgmt-eventgrid sends it (camelCase property
    names, matched case-insensitively); None means no filter. Raises `InvalidFilter` on anything ARM
    would reject, including the §3.7 limits.
    """
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        raise InvalidFilter(f"The subscription 'filter' must be a JSON object, not {_json_type(spec)}.")
    props = _properties(spec, "The subscription 'filter'")

    event_types = _event_types(props, options)
    begins = _optional_string(props, "subjectBeginsWith")
    ends = _optional_string(props, "subjectEndsWith")
    case_sensitive = _optional_bool(props, "isSubjectCaseSensitive")
    arrays = _optional_bool(props, "enableAdvancedFilteringOnArrays")

    raw_filters = props.get("advancedfilters")
    if raw_filters is None:
        raw_filters = []
    if not isinstance(raw_filters, list | tuple):
        raise InvalidFilter(
            f"The filter property 'advancedFilters' must be an array of filters, not {_json_type(raw_filters)}."
        )
    if len(raw_filters) > options.max_advanced_filters:
        raise InvalidFilter(
            f"The filter has {len(raw_filters)} advanced filters; "
            f"at most {options.max_advanced_filters} are allowed per event subscription."
        )
    compiler = _FilterCompiler(options, arrays)
    advanced = [compiler.compile(index, raw) for index, raw in enumerate(raw_filters)]
    if compiler.total_values > options.max_total_values:
        raise InvalidFilter(
            f"The advanced filters have {compiler.total_values} values in total; at most "
            f"{options.max_total_values} are allowed per event subscription (each single 'value', each "
            "element of 'values' and each [low, high] range counts as one)."
        )

    return CompiledFilter(
        included_event_types=event_types,
        subject_begins_with=begins,
        subject_ends_with=ends,
        is_subject_case_sensitive=case_sensitive,
        arrays_enabled=arrays,
        advanced=advanced,
        options=options,
        cloud_events=cloud_events,
    )
