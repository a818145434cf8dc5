"""Phone numbers a resource owns, shown as the Phone Numbers API shows purchased numbers.

A number is owned by one resource at most (it is one line of the public network); every method takes the
resource a request is for, and another resource's number is not found.
"""

from __future__ import annotations

from typing import Any

from callgrid.clock import Clock, to_datetime
from callgrid.errors import Conflict, InvalidRequest, NotFound
from callgrid.identifiers import E164
from callgrid.platform.resource import CommunicationResource
from callgrid.store import DuplicateKey, StoreTx

# Enough of the numbering plan to fill `countryCode`; anything else is reported as "US"-less "ZZ".
_COUNTRY_PREFIXES = [
    ("+1", "US"), ("+44", "GB"), ("+49", "DE"), ("+33", "FR"), ("+31", "NL"), ("+34", "ES"), ("+39", "IT"),
    ("+46", "SE"), ("+47", "NO"), ("+45", "DK"), ("+353", "IE"), ("+61", "AU"), ("+81", "JP"), ("+91", "IN"),
    ("+55", "BR"), ("+52", "MX"), ("+41", "CH"), ("+43", "AT"), ("+32", "BE"), ("+48", "PL"), ("+64", "NZ"),
]  # fmt: skip
_US_TOLL_FREE = ("800", "833", "844", "855", "866", "877", "888")


def country_of(number: str) -> str:
    for prefix, country in sorted(_COUNTRY_PREFIXES, key=lambda p: -len(p[0])):
        if number.startswith(prefix):
            return country
    return "ZZ"


def validate_e164(number: str) -> str:
    number = number.strip()
    if not E164.match(number):
        raise InvalidRequest(
            f"'{number}' is not a phone number in E.164 form (a '+', the country code, then up to 14 digits).",
            code="InvalidPhoneNumber",
        )
    return number


class PhoneNumberService:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    async def own(
        self,
        tx: StoreTx,
        resource: CommunicationResource,
        number: str,
        *,
        number_type: str | None = None,
        assignment_type: str = "application",
        capabilities: dict[str, str] | None = None,
        cost: dict[str, Any] | None = None,
        country_code: str | None = None,
    ) -> dict[str, Any]:
        """The resource owns `number` from now on: added directly (`callgrid numbers add`, with these
        defaults) or bought from the catalogue (with the offering's attributes)."""
        number = validate_e164(number)
        toll_free = number.startswith("+1") and number[2:5] in _US_TOLL_FREE
        doc = {
            "id": number.lstrip("+"),
            "phoneNumber": number,
            "countryCode": country_code or country_of(number),
            "phoneNumberType": number_type or ("tollFree" if toll_free else "geographic"),
            "capabilities": capabilities or {"calling": "inbound+outbound", "sms": "none"},
            "assignmentType": assignment_type,
            "purchaseDate": to_datetime(self._clock.now()).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "cost": cost or {"amount": 1.0, "currencyCode": "USD", "billingFrequency": "monthly"},
        }
        try:
            await tx.add_phone_number(number, doc, resource.immutable_id)
        except DuplicateKey:
            owner = await tx.phone_number_owner(number)
            if owner == resource.immutable_id:
                raise Conflict(f"The resource already owns {number}.", code="PhoneNumberAlreadyOwned") from None
            raise Conflict(
                f"{number} is owned by another Communication resource on this server; release it there first.",
                code="PhoneNumberAlreadyOwned",
            ) from None
        return doc

    async def get(self, tx: StoreTx, resource: CommunicationResource, number: str) -> dict[str, Any]:
        doc = await tx.get_phone_number(number)
        if doc is None or await tx.phone_number_owner(number) != resource.immutable_id:
            raise NotFound(f"The resource does not own {number}.", code="PhoneNumberNotFound")
        return doc

    async def set_capabilities(
        self, tx: StoreTx, resource: CommunicationResource, number: str, capabilities: dict[str, str]
    ) -> dict[str, Any]:
        doc = await self.get(tx, resource, number)
        doc["capabilities"] = capabilities
        await tx.delete_phone_number(number)
        await tx.add_phone_number(number, doc, resource.immutable_id)
        return doc

    async def is_owned(self, tx: StoreTx, resource: CommunicationResource, number: str) -> bool:
        return await tx.phone_number_owner(number) == resource.immutable_id

    async def owner(self, tx: StoreTx, number: str) -> str | None:
        """The immutable id of the resource that owns `number`, if any resource here does."""
        return await tx.phone_number_owner(number)

    async def release(self, tx: StoreTx, resource: CommunicationResource, number: str) -> None:
        if not await self.is_owned(tx, resource, number) or not await tx.delete_phone_number(number):
            raise NotFound(f"The resource does not own {number}.", code="PhoneNumberNotFound")

    async def list(
        self, tx: StoreTx, resource: CommunicationResource, skip: int, top: int
    ) -> tuple[list[dict[str, Any]], bool]:
        if skip < 0 or not 1 <= top <= 1000:
            raise InvalidRequest("skip must be >= 0 and top between 1 and 1000.", code="ValidationError")
        page = await tx.list_phone_numbers(resource.immutable_id, skip, top + 1)
        return page[:top], len(page) > top
