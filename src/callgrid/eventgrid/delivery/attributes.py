"""Delivery attribute mappings: static and dynamic values sent as HTTP headers (eventgrid.md 2.2).

Validated when a subscription is written; resolved per request from the event as delivered.
"""

from __future__ import annotations

import json
import re
from typing import Any

from callgrid.errors import InvalidRequest
from callgrid.eventgrid.filters import MISSING, lookup

MAX_MAPPINGS = 10
MAX_VALUE_BYTES = 4096
# An HTTP header name is an RFC 9110 token.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def _invalid(message: str) -> InvalidRequest:
    return InvalidRequest(message, code="InvalidRequest")


def validate_delivery_attribute_mappings(raw: Any) -> list[dict[str, Any]] | None:
    """The normalised mappings of a destination, or InvalidRequest with what is wrong."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise _invalid("deliveryAttributeMappings must be a list.")
    if len(raw) > MAX_MAPPINGS:
        raise _invalid(f"deliveryAttributeMappings can have at most {MAX_MAPPINGS} entries; found {len(raw)}.")
    seen: set[str] = set()
    normalised = []
    for index, mapping in enumerate(raw):
        where = f"deliveryAttributeMappings[{index}]"
        if not isinstance(mapping, dict):
            raise _invalid(f"{where} must be an object with name, type and properties.")
        name = mapping.get("name")
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise _invalid(f"{where}.name must be a valid HTTP header name.")
        if name.lower().startswith("aeg-"):
            raise _invalid(f"{where}.name '{name}' is reserved: names cannot start with 'aeg-'.")
        if name.lower() in seen:
            raise _invalid(f"{where}.name '{name}' is used by more than one mapping.")
        seen.add(name.lower())
        kind = mapping.get("type")
        props = mapping.get("properties")
        if not isinstance(props, dict):
            raise _invalid(f"{where}.properties is required.")
        if kind == "Static":
            value = props.get("value")
            if not isinstance(value, str):
                raise _invalid(f"{where}.properties.value must be a string.")
            if len(value.encode()) > MAX_VALUE_BYTES:
                raise _invalid(f"{where}.properties.value is longer than {MAX_VALUE_BYTES} bytes.")
            is_secret = props.get("isSecret", False)
            if not isinstance(is_secret, bool):
                raise _invalid(f"{where}.properties.isSecret must be true or false.")
            normalised.append({"name": name, "type": kind, "properties": {"value": value, "isSecret": is_secret}})
        elif kind == "Dynamic":
            source = props.get("sourceField")
            if not isinstance(source, str) or not source.strip():
                raise _invalid(f"{where}.properties.sourceField must be a field path such as 'data.key1'.")
            normalised.append({"name": name, "type": kind, "properties": {"sourceField": source}})
        else:
            raise _invalid(f"{where}.type must be 'Static' or 'Dynamic'.")
    return normalised


def attribute_headers(mappings: list[dict[str, Any]] | None, event: dict[str, Any]) -> dict[str, str]:
    """Headers for one request; a dynamic field that is missing or not a scalar sends no header."""
    headers: dict[str, str] = {}
    for mapping in mappings or ():
        props = mapping["properties"]
        if mapping["type"] == "Static":
            headers[mapping["name"]] = props["value"]
            continue
        value = lookup(event, props["sourceField"])
        if value is MISSING or value is None or isinstance(value, dict | list):
            continue
        text = json.dumps(value) if isinstance(value, bool) else str(value)
        if len(text.encode()) <= MAX_VALUE_BYTES:
            headers[mapping["name"]] = text
    return headers
