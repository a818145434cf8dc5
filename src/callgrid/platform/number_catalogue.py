"""The numbers for sale: a small, fixed catalogue that stands in for the carriers behind ACS.

Three countries (US, CA, GB), a few localities each with their area codes, toll-free area codes, and the
offerings ACS sells there (number type x assignment type -> capabilities and a monthly cost in USD).
Every area code holds a block of 100 numbers drawn from ranges set aside for fiction (NANP 555-0100 to
555-0199; Ofcom's drama ranges in GB), so nothing callgrid sells is somebody's real phone. The catalogue
is the same on every run; what is sold, searched or reserved lives in the store.
"""

from __future__ import annotations

from dataclasses import dataclass

CAPABILITY_VALUES = ("none", "inbound", "outbound", "inbound+outbound")
NUMBER_TYPES = ("geographic", "tollFree", "mobile")
ASSIGNMENT_TYPES = ("person", "application")
BLOCK_SIZE = 100


@dataclass(frozen=True)
class Locality:
    name: str
    division: str  # administrative division (state, province, nation), localized name
    division_abbreviation: str
    area_codes: tuple[str, ...]

    def in_division(self, division: str | None) -> bool:
        """Whether the locality lies in `division` (its name or abbreviation, any case; None: anywhere)."""
        return not division or division.lower() in (self.division.lower(), self.division_abbreviation.lower())


@dataclass(frozen=True)
class Offering:
    number_type: str
    assignment_type: str
    calling: str  # the most a number of this offering can do
    sms: str
    monthly_cost: float

    def capabilities(self) -> dict[str, str]:
        return {"calling": self.calling, "sms": self.sms}

    def cost(self) -> dict[str, object]:
        return {"amount": self.monthly_cost, "currencyCode": "USD", "billingFrequency": "monthly"}

    def view(self) -> dict[str, object]:
        return {
            "phoneNumberType": self.number_type,
            "assignmentType": self.assignment_type,
            "availableCapabilities": self.capabilities(),
            "cost": self.cost(),
        }


@dataclass(frozen=True)
class AreaCode:
    code: str
    number_type: str
    first: str  # the block's E.164 prefix; numbers are first + 4 digits, from `start`
    start: int
    locality: Locality | None = None

    def numbers(self) -> list[str]:
        return [f"{self.first}{self.start + i:04d}" for i in range(BLOCK_SIZE)]


@dataclass(frozen=True)
class Country:
    code: str
    name: str
    localities: tuple[Locality, ...]
    area_codes: tuple[AreaCode, ...]
    offerings: tuple[Offering, ...]
    operator: str  # plausible carrier name for number lookups
    mobile_country_code: str
    mobile_network_code: str

    def offering(self, number_type: str, assignment_type: str) -> Offering | None:
        for o in self.offerings:
            if o.number_type == number_type and o.assignment_type == assignment_type:
                return o
        return None


def _nanp(code: str, number_type: str, locality: Locality | None = None) -> AreaCode:
    # 555-0100 .. 555-0199 is reserved for fiction in every NANP area code.
    return AreaCode(code, number_type, f"+1{code}555", 100, locality)


_SEATTLE = Locality("Seattle", "Washington", "WA", ("206",))
_REDMOND = Locality("Redmond", "Washington", "WA", ("425",))
_NEW_YORK = Locality("New York", "New York", "NY", ("212",))
_SAN_FRANCISCO = Locality("San Francisco", "California", "CA", ("415",))
_US_LOCALITIES = (_SEATTLE, _REDMOND, _NEW_YORK, _SAN_FRANCISCO)
_TORONTO = Locality("Toronto", "Ontario", "ON", ("416",))
_VANCOUVER = Locality("Vancouver", "British Columbia", "BC", ("604",))
_LONDON = Locality("London", "England", "ENG", ("20",))
_MANCHESTER = Locality("Manchester", "England", "ENG", ("161",))

COUNTRIES: tuple[Country, ...] = (
    Country(
        "US",
        "United States",
        _US_LOCALITIES,
        (
            *(_nanp(c, "geographic", loc) for loc in _US_LOCALITIES for c in loc.area_codes),
            *(_nanp(c, "tollFree") for c in ("800", "833", "844", "855", "866")),
        ),
        (
            Offering("geographic", "application", "inbound+outbound", "inbound+outbound", 1.0),
            Offering("geographic", "person", "inbound+outbound", "none", 1.0),
            Offering("tollFree", "application", "inbound+outbound", "inbound+outbound", 2.0),
        ),
        "Contoso Telecom US",
        "310",
        "410",
    ),
    Country(
        "CA",
        "Canada",
        (_TORONTO, _VANCOUVER),
        (
            *(_nanp(c, "geographic", loc) for loc in (_TORONTO, _VANCOUVER) for c in loc.area_codes),
            *(_nanp(c, "tollFree") for c in ("877", "888")),
        ),
        (
            Offering("geographic", "application", "inbound+outbound", "inbound+outbound", 1.0),
            Offering("tollFree", "application", "inbound+outbound", "inbound+outbound", 2.0),
        ),
        "Fabrikam Mobile Canada",
        "302",
        "720",
    ),
    Country(
        "GB",
        "United Kingdom",
        (_LONDON, _MANCHESTER),
        (
            # Ofcom's drama ranges: 020 7946 0xxx, 0161 496 0xxx, 0808 157 0xxx.
            AreaCode("20", "geographic", "+44207946", 0, _LONDON),
            AreaCode("161", "geographic", "+44161496", 0, _MANCHESTER),
            AreaCode("808", "tollFree", "+44808157", 0),
        ),
        (
            # UK geographic and toll-free numbers carry no SMS; toll-free ones only take calls.
            Offering("geographic", "application", "inbound+outbound", "none", 1.0),
            Offering("tollFree", "application", "inbound", "none", 2.0),
        ),
        "Northwind Telecom UK",
        "234",
        "15",
    ),
)

_BY_CODE = {c.code: c for c in COUNTRIES}
_BY_NUMBER: dict[str, tuple[Country, AreaCode]] = {
    n: (country, area) for country in COUNTRIES for area in country.area_codes for n in area.numbers()
}


def country(code: str) -> Country | None:
    return _BY_CODE.get(code.upper())


def lookup(number: str) -> tuple[Country, AreaCode] | None:
    """The country and area code block a catalogue number belongs to."""
    return _BY_NUMBER.get(number)


def area_codes(country: Country, number_type: str) -> list[AreaCode]:
    return [a for a in country.area_codes if a.number_type == number_type]


def spelled(value: object, choices: tuple[str, ...]) -> str | None:
    """`value` as the API spells it (the SDK's enums are case-insensitive: "TollFree" is "tollFree");
    None for no value, or one that is not a string."""
    if not isinstance(value, str):
        return None
    return next((c for c in choices if c.lower() == value.lower()), value)


def capability_within(requested: str, available: str) -> bool:
    """Whether `requested` (none, inbound, outbound, inbound+outbound) asks no more than `available` gives."""
    wanted = set() if requested == "none" else set(requested.split("+"))
    offered = set() if available == "none" else set(available.split("+"))
    return wanted <= offered
