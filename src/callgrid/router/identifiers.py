"""What the router accepts as a phone number, an identity, or a routing target; clear messages otherwise.

The SDK's identifier parser is imported when an identity is checked, not with this module: every `callgrid`
command imports it (the CLI's `router` commands validate with it), and the SDK costs a server's start ~0.1 s.
"""

from __future__ import annotations

import re

_E164 = re.compile(r"^\+[1-9][0-9]{1,14}\Z")
# Separators people type or spreadsheets keep; anything else is an error, never silently dropped.
_SEPARATORS = re.compile(r"[\s().\-]")
_ACS_PREFIXES = ("8:acs:", "8:gcch-acs:", "8:dod-acs:", "8:spool:")
MAX_DISPLAY_NAME = 256


class InvalidValue(ValueError):
    """A number, identity or target the router will not store or use."""


def phone_number(value: str) -> str:
    """An E.164 number, normalised: '+1 (425) 555-1212' -> '+14255551212'."""
    text = value.strip()
    if text.startswith("4:"):
        text = text[2:]
    compact = _SEPARATORS.sub("", text)
    if not _E164.match(compact):
        raise InvalidValue(f"'{value}' is not an E.164 phone number (a '+', the country code, at most 15 digits).")
    return compact


def identity(value: str) -> str:
    """A Communication Services user's raw id (8:acs:<resource>_<user>)."""
    text = value.strip()
    if not text.startswith(_ACS_PREFIXES) or any(c.isspace() for c in text):
        raise InvalidValue(
            f"'{value}' is not a Communication Services identity: expected a raw id like 8:acs:<resource>_<user>."
        )
    from azure.communication.callautomation import CommunicationUserIdentifier
    from azure.communication.callautomation._shared.models import identifier_from_raw_id

    parsed = identifier_from_raw_id(text)
    suffix = text.split(":", 2)[2]
    if not isinstance(parsed, CommunicationUserIdentifier) or not suffix.strip("_"):
        raise InvalidValue(f"'{value}' is not a Communication Services user identity (8:acs:<resource>_<user>).")
    if not text.startswith("8:spool:") and "_" not in suffix.strip("_"):
        raise InvalidValue(f"'{value}' lacks the '<resource>_<user>' part of an ACS user id.")
    return text


def target(value: str) -> str:
    """A redirect target: an identity's raw id or an E.164 number (stored as given kind's canonical raw id)."""
    text = value.strip()
    if text.startswith(_ACS_PREFIXES):
        return identity(text)
    return "4:" + phone_number(text)


def display_name(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    text = value.strip()
    if len(text) > MAX_DISPLAY_NAME:
        raise InvalidValue(f"display name is longer than {MAX_DISPLAY_NAME} characters.")
    if any(ord(c) < 32 for c in text):
        raise InvalidValue("display name contains control characters.")
    return text


def caller(value: str) -> str:
    """A block-list entry: an E.164 number, or any raw id (ACS user, Teams user...)."""
    text = value.strip()
    if text.startswith("+") or text.startswith("4:"):
        return phone_number(text)
    if ":" in text and not any(c.isspace() for c in text):
        return text
    raise InvalidValue(f"'{value}' is neither an E.164 number nor a raw id.")
