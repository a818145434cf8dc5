"""CommunicationIdentifier: the raw-id forms ACS uses, and their wire model.

The SDKs decide an identifier's type from its nested object (`communicationUser`, `phoneNumber`, ...),
and for users take the id from `rawId`; so everything callgrid emits carries `kind`, `rawId` and the
nested object, as the real service does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# [0-9], not \d, which takes any Unicode digit (fullwidth, Arabic-Indic, ...); ACS takes ASCII only.
# "\Z", not "$", which also matches before a trailing newline.
E164 = re.compile(r"^\+[1-9][0-9]{6,14}\Z")


class IdentifierKind(StrEnum):
    COMMUNICATION_USER = "communicationUser"
    PHONE_NUMBER = "phoneNumber"
    MICROSOFT_TEAMS_USER = "microsoftTeamsUser"
    MICROSOFT_TEAMS_APP = "microsoftTeamsApp"
    UNKNOWN = "unknown"


class InvalidIdentifier(ValueError):
    """An identifier that is not well formed (the message says why)."""


_TEAMS_USER_PREFIXES = ("8:orgid:", "8:dod:", "8:gcch:", "8:teamsvisitor:")
_TEAMS_APP_PREFIXES = ("28:orgid:", "28:dod:", "28:gcch:", "28:dod-global:", "28:gcch-global:", "28:")
_ACS_USER_PREFIXES = ("8:acs:", "8:gcch-acs:", "8:dod-acs:", "8:spool:")


@dataclass(frozen=True, slots=True)
class CommunicationIdentifier:
    kind: IdentifierKind
    raw_id: str

    @property
    def is_phone_number(self) -> bool:
        return self.kind is IdentifierKind.PHONE_NUMBER

    @property
    def is_communication_user(self) -> bool:
        return self.kind is IdentifierKind.COMMUNICATION_USER

    @property
    def phone_number(self) -> str:
        """The E.164 value of a phone-number identifier (`4:+1425...` -> `+1425...`)."""
        if not self.is_phone_number:
            raise InvalidIdentifier(f"{self.raw_id} is not a phone number")
        return self.raw_id[2:]

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"kind": self.kind.value, "rawId": self.raw_id}
        if self.kind is IdentifierKind.COMMUNICATION_USER:
            wire["communicationUser"] = {"id": self.raw_id}
        elif self.kind is IdentifierKind.PHONE_NUMBER:
            wire["phoneNumber"] = {"value": self.phone_number}
        elif self.kind is IdentifierKind.MICROSOFT_TEAMS_USER:
            prefix = next(p for p in _TEAMS_USER_PREFIXES if self.raw_id.startswith(p))
            wire["microsoftTeamsUser"] = {
                "userId": self.raw_id[len(prefix) :],
                "isAnonymous": prefix == "8:teamsvisitor:",
                "cloud": {"8:dod:": "dod", "8:gcch:": "gcch"}.get(prefix, "public"),
            }
        elif self.kind is IdentifierKind.MICROSOFT_TEAMS_APP:
            prefix = next(p for p in _TEAMS_APP_PREFIXES if self.raw_id.startswith(p))
            wire["microsoftTeamsApp"] = {
                "appId": self.raw_id[len(prefix) :],
                "cloud": "dod" if "dod" in prefix else "gcch" if "gcch" in prefix else "public",
            }
        return wire

    def __str__(self) -> str:
        return self.raw_id


def phone_number(value: str) -> CommunicationIdentifier:
    if not E164.match(value):
        raise InvalidIdentifier(f"'{value}' is not an E.164 phone number (like +14255551212)")
    return CommunicationIdentifier(IdentifierKind.PHONE_NUMBER, "4:" + value)


def communication_user(raw_id: str) -> CommunicationIdentifier:
    if not raw_id.startswith(_ACS_USER_PREFIXES):
        raise InvalidIdentifier(f"'{raw_id}' is not a Communication Services user id (8:acs:...)")
    return CommunicationIdentifier(IdentifierKind.COMMUNICATION_USER, raw_id)


def from_raw_id(raw_id: str) -> CommunicationIdentifier:
    """Parse any raw id; an E.164 number without `4:` is accepted as a phone number."""
    raw_id = raw_id.strip()
    if not raw_id:
        raise InvalidIdentifier("an identifier cannot be empty")
    if raw_id.startswith("+"):
        return phone_number(raw_id)
    if raw_id.startswith("4:"):
        return phone_number(raw_id[2:])
    if raw_id.startswith(_ACS_USER_PREFIXES):
        return CommunicationIdentifier(IdentifierKind.COMMUNICATION_USER, raw_id)
    if raw_id.startswith(_TEAMS_APP_PREFIXES):
        return CommunicationIdentifier(IdentifierKind.MICROSOFT_TEAMS_APP, raw_id)
    if raw_id.startswith(_TEAMS_USER_PREFIXES):
        return CommunicationIdentifier(IdentifierKind.MICROSOFT_TEAMS_USER, raw_id)
    return CommunicationIdentifier(IdentifierKind.UNKNOWN, raw_id)


def from_wire(value: Any, field: str = "identifier") -> CommunicationIdentifier:
    """Read an identifier as the SDKs send it: `rawId` plus a nested object, `kind` optional.

    The nested object wins over `rawId` when both are present, as in the SDK's own reader.
    """
    if not isinstance(value, dict):
        raise InvalidIdentifier(f"'{field}' must be a CommunicationIdentifier object")
    user = value.get("communicationUser")
    if isinstance(user, dict) and isinstance(user.get("id"), str):
        return communication_user(user["id"])
    phone = value.get("phoneNumber")
    if isinstance(phone, dict) and isinstance(phone.get("value"), str):
        return phone_number(phone["value"])
    raw = value.get("rawId")
    if isinstance(raw, str) and raw:
        return from_raw_id(raw)
    raise InvalidIdentifier(f"'{field}' has neither a rawId nor a known identifier object")
