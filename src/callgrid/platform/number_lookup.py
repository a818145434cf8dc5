"""Number lookup (`search_operator_information`): plausible operator information for any E.164 number.

Catalogue numbers get their country's made-up carrier, the resource's own numbers name ACS, and any other
number is placed by its country code. One number a request, as Azure's tests suggest (two are refused).
"""

from __future__ import annotations

from typing import Any

from callgrid.errors import InvalidRequest
from callgrid.platform import number_catalogue as catalogue
from callgrid.platform.phone_numbers import country_of, validate_e164
from callgrid.store import StoreTx

MAX_LOOKUP_NUMBERS = 1
# Who a lookup names as the operator of the resource's own numbers.
_ACS_OPERATOR = "Microsoft Azure Communication Services"


async def operator_information(tx: StoreTx, body: dict[str, Any]) -> list[dict[str, Any]]:
    numbers = body.get("phoneNumbers")
    if not isinstance(numbers, list) or not numbers:
        raise InvalidRequest("phoneNumbers is required.", code="InvalidOperatorInformationRequest")
    if len(numbers) > MAX_LOOKUP_NUMBERS:
        raise InvalidRequest(
            f"At most {MAX_LOOKUP_NUMBERS} phone number can be looked up per request.",
            code="TooManyPhoneNumbers",
        )
    details = bool((body.get("options") or {}).get("includeAdditionalOperatorDetails"))
    return [await _operator(tx, validate_e164(str(n)), details) for n in numbers]


async def _operator(tx: StoreTx, number: str, details: bool) -> dict[str, Any]:
    owned = await tx.get_phone_number(number)
    found = catalogue.lookup(number)
    iso = found[0].code if found else country_of(number)
    if owned is not None:
        kind = "geographic" if owned["phoneNumberType"] == "geographic" else "other"
        operator = {"name": _ACS_OPERATOR, "mobileCountryCode": "", "mobileNetworkCode": ""}
    elif found is not None:
        kind = "geographic" if found[1].number_type == "geographic" else "other"
        country = found[0]
        operator = {
            "name": country.operator,
            "mobileCountryCode": country.mobile_country_code,
            "mobileNetworkCode": country.mobile_network_code,
        }
    else:
        kind = "unknown" if iso == "ZZ" else "geographic"
        known = catalogue.country(iso)
        operator = {
            "name": known.operator if known else "Unknown operator",
            "mobileCountryCode": known.mobile_country_code if known else "",
            "mobileNetworkCode": known.mobile_network_code if known else "",
        }
    national, international = _formats(number)
    info: dict[str, Any] = {
        "phoneNumber": number,
        "nationalFormat": national,
        "internationalFormat": international,
        "isoCountryCode": iso,
        "numberType": kind,
    }
    if details:
        info["operatorDetails"] = operator
    return info


def _formats(number: str) -> tuple[str, str]:
    """National and international renderings: NANP and UK by their plans, others plainly."""
    digits = number[1:]
    if number.startswith("+1") and len(digits) == 11:
        area, exchange, line = digits[1:4], digits[4:7], digits[7:]
        return f"({area}) {exchange}-{line}", f"+1 {area} {exchange} {line}"
    if number.startswith("+44") and len(digits) == 12:
        rest = digits[2:]
        if rest.startswith("20"):
            return f"020 {rest[2:6]} {rest[6:]}", f"+44 20 {rest[2:6]} {rest[6:]}"
        return f"0{rest[:3]} {rest[3:6]} {rest[6:]}", f"+44 {rest[:3]} {rest[3:6]} {rest[6:]}"
    return number, number
