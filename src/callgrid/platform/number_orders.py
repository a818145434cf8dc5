"""Buying and giving back numbers, as the Phone Numbers API does it: searches and reservations that hold
catalogue numbers, and the long-running operations (search, purchase, release, capabilities, reservation
purchase) that the SDK's pollers follow through `/phoneNumbers/operations/{id}`.

Holds: a search holds its numbers for 15 minutes (the SDK documents "less than 15 min"), a reservation
for 15 minutes after its last change and at most 2 hours after its creation. A held number is offered to
nobody else; a bought one is owned by the resource, the very row `callgrid numbers add` writes.

Operations run on the injected clock. Each is due `operation_seconds` after it starts (a few seconds on
the system clock, so a poller sees `running` first; 0 on the virtual clock, where the operation has
finished by the time the request that started it is answered, and the poller's first look ends it).
A timer completes a due operation even if nobody polls; a poll that comes first completes it itself.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from callgrid.clock import Clock, iso_z
from callgrid.errors import CallgridError, Conflict, InvalidRequest, NotFound
from callgrid.platform import number_catalogue as catalogue
from callgrid.platform.phone_numbers import PhoneNumberService, country_of
from callgrid.platform.resource import CommunicationResource, ResourceDirectory
from callgrid.platform.timers import TimerService
from callgrid.store import StoreTx, TimerRow

SEARCH_LIFETIME_SECONDS = 15 * 60.0
RESERVATION_EXTENSION_SECONDS = 15 * 60.0
RESERVATION_MAX_SECONDS = 2 * 3600.0
MAX_SEARCH_QUANTITY = 100
MAX_BROWSE_RESULTS = 100
OPERATION_TIMER = "phoneNumbers.operation"
# Operation ids are "<prefix>_<id of what it works on>", as the API's examples show them.
_OPERATION_PREFIXES = {
    "search": "search",
    "purchase": "purchase",
    "releasePhoneNumber": "release",
    "updatePhoneNumberCapabilities": "capabilities",
    "reservationPurchase": "reservationPurchase",
}


@dataclass(frozen=True)
class StartedOperation:
    """What the API answers when a long-running operation starts (202): the operation to poll, the id
    of what it works on (the `search-id`, `purchase-id`, ... header), where its final state is read
    (`Location`), and the body the service sends with the 202, if any."""

    operation_id: str
    ident: str
    location: str | None = None
    body: dict[str, Any] | None = None


def _public(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored document as the API shows it: keys starting with '_' are callgrid's own."""
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def _capabilities(body: dict[str, Any] | None, *, required: bool) -> dict[str, str]:
    body = body or {}
    found = {}
    for name in ("calling", "sms"):
        value = body.get(name)
        if value is None:
            if required:
                raise InvalidRequest(f"capabilities.{name} is required.", code="InvalidCapabilities")
            continue
        if value not in catalogue.CAPABILITY_VALUES:
            raise InvalidRequest(
                f"capabilities.{name} '{value}' is not one of {', '.join(catalogue.CAPABILITY_VALUES)}.",
                code="InvalidCapabilities",
            )
        found[name] = value
    return found


def _check_within(capabilities: dict[str, str], offering: catalogue.Offering, where: str) -> None:
    for name, available in (("calling", offering.calling), ("sms", offering.sms)):
        requested = capabilities.get(name, "none")
        if not catalogue.capability_within(requested, available):
            raise InvalidRequest(
                f"{where}: {offering.number_type} numbers assigned to {offering.assignment_type} offer {name} "
                f"'{available}' at most; '{requested}' was asked for.",
                code="CapabilityNotSupported",
            )


class NumberOrders:
    def __init__(
        self,
        clock: Clock,
        numbers: PhoneNumberService,
        timers: TimerService,
        resources: ResourceDirectory,
        *,
        operation_seconds: float,
    ) -> None:
        self._clock = clock
        self._numbers = numbers
        self._resources = resources
        self._timers = timers
        self._operation_seconds = max(0.0, operation_seconds)
        timers.register(OPERATION_TIMER, self._on_timer)

    # ---- whose is what ------------------------------------------------------------------------------
    # Searches, reservations and operations belong to the resource that started them (`_resourceId`);
    # documents from before there were several resources belong to the default one.

    def _mine(self, doc: dict[str, Any], resource: CommunicationResource) -> bool:
        return bool(doc.get("_resourceId", self._resources.default.immutable_id) == resource.immutable_id)

    def _owner(self, doc: dict[str, Any]) -> CommunicationResource:
        found = self._resources.by_immutable_id(doc.get("_resourceId", self._resources.default.immutable_id))
        if found is None:
            raise NotFound("The Communication resource of this operation was deleted.", code="ResourceNotFound")
        return found

    # ---- the catalogue ----------------------------------------------------------------------------

    def _country(self, code: str) -> catalogue.Country:
        found = catalogue.country(code)
        if found is None:
            raise InvalidRequest(
                f"Phone numbers are not offered in country '{code}' (callgrid sells US, CA and GB numbers).",
                code="UnsupportedCountry",
            )
        return found

    def _offering(self, country: catalogue.Country, number_type: str, assignment_type: str) -> catalogue.Offering:
        if number_type not in catalogue.NUMBER_TYPES:
            raise InvalidRequest(
                f"phoneNumberType '{number_type}' is not one of {', '.join(catalogue.NUMBER_TYPES)}.",
                code="InvalidPhoneNumberType",
            )
        if assignment_type not in catalogue.ASSIGNMENT_TYPES:
            raise InvalidRequest(
                f"assignmentType '{assignment_type}' is not one of {', '.join(catalogue.ASSIGNMENT_TYPES)}.",
                code="InvalidAssignmentType",
            )
        offering = country.offering(number_type, assignment_type)
        if offering is None:
            raise InvalidRequest(
                f"No {number_type} numbers assigned to {assignment_type} are offered in {country.code}.",
                code="NoOfferingAvailable",
            )
        return offering

    def countries(self) -> list[dict[str, Any]]:
        return [{"localizedName": c.name, "countryCode": c.code} for c in catalogue.COUNTRIES]

    def localities(
        self, country_code: str, *, administrative_division: str | None, number_type: str | None
    ) -> list[dict[str, Any]]:
        country = self._country(country_code)
        number_type = catalogue.spelled(number_type, catalogue.NUMBER_TYPES)
        if number_type not in (None, "geographic"):
            return []  # toll-free (and mobile, not sold here) numbers belong to no locality
        return [
            {
                "localizedName": loc.name,
                "administrativeDivision": {
                    "localizedName": loc.division,
                    "abbreviatedName": loc.division_abbreviation,
                },
            }
            for loc in country.localities
            if loc.in_division(administrative_division)
        ]

    def area_codes(
        self,
        country_code: str,
        *,
        number_type: str,
        assignment_type: str | None,
        locality: str | None,
        administrative_division: str | None,
    ) -> list[dict[str, Any]]:
        country = self._country(country_code)
        number_type = catalogue.spelled(number_type, catalogue.NUMBER_TYPES) or number_type
        assignment_type = catalogue.spelled(assignment_type, catalogue.ASSIGNMENT_TYPES)
        if assignment_type is not None:
            self._offering(country, number_type, assignment_type)
        elif number_type not in catalogue.NUMBER_TYPES:
            raise InvalidRequest(f"phoneNumberType '{number_type}' is not known.", code="InvalidPhoneNumberType")
        blocks = catalogue.area_codes(country, number_type)
        if number_type == "geographic":
            if not locality:
                raise InvalidRequest("locality is required for geographic area codes.", code="LocalityRequired")
            blocks = [
                b
                for b in blocks
                if b.locality is not None
                and b.locality.name.lower() == locality.lower()
                and b.locality.in_division(administrative_division)
            ]
        return [{"areaCode": b.code} for b in blocks]

    def offerings(
        self, country_code: str, *, number_type: str | None, assignment_type: str | None
    ) -> list[dict[str, Any]]:
        country = self._country(country_code)
        number_type = catalogue.spelled(number_type, catalogue.NUMBER_TYPES)
        assignment_type = catalogue.spelled(assignment_type, catalogue.ASSIGNMENT_TYPES)
        return [
            o.view()
            for o in country.offerings
            if number_type in (None, o.number_type) and assignment_type in (None, o.assignment_type)
        ]

    async def _available(
        self, tx: StoreTx, blocks: list[catalogue.AreaCode], *, holder: str | None = None
    ) -> list[str]:
        """Catalogue numbers of `blocks` that nobody owns and nobody else holds, in catalogue order."""
        candidates = [n for b in blocks for n in b.numbers()]
        held = await tx.number_holders(candidates, self._clock.now())
        free = []
        for number in candidates:
            if number in held and held[number] != holder:
                continue
            if await tx.get_phone_number(number) is None:
                free.append(number)
        return free

    def _available_number(
        self, number: str, country: catalogue.Country, offering: catalogue.Offering, status: str
    ) -> dict[str, Any]:
        return {
            "id": number.lstrip("+"),
            "countryCode": country.code,
            "phoneNumber": number,
            "capabilities": offering.capabilities(),
            "phoneNumberType": offering.number_type,
            "assignmentType": offering.assignment_type,
            "cost": offering.cost(),
            "status": status,
            "isAgreementToNotResellRequired": False,
        }

    async def browse(self, tx: StoreTx, country_code: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        country = self._country(country_code)
        number_type = catalogue.spelled(body.get("phoneNumberType"), catalogue.NUMBER_TYPES)
        if not isinstance(number_type, str):
            raise InvalidRequest("phoneNumberType is required.", code="InvalidPhoneNumberType")
        assignment_type = catalogue.spelled(body.get("assignmentType") or "application", catalogue.ASSIGNMENT_TYPES)
        offering = self._offering(country, number_type, assignment_type or "application")
        _check_within(_capabilities(body.get("capabilities"), required=False), offering, "browse")
        prefixes = [str(p).lstrip("+") for p in body.get("phoneNumberPrefixes") or []]
        blocks = catalogue.area_codes(country, number_type)
        found = []
        for number in await self._available(tx, blocks):
            digits = number.lstrip("+")
            national = digits[len(digits) - 10 :] if number.startswith("+1") else digits[2:]
            if prefixes and not any(digits.startswith(p) or national.startswith(p) for p in prefixes):
                continue
            found.append(self._available_number(number, country, offering, "available"))
            if len(found) == MAX_BROWSE_RESULTS:
                break
        return found

    # ---- searches -----------------------------------------------------------------------------------

    async def search(
        self, tx: StoreTx, resource: CommunicationResource, country_code: str, body: dict[str, Any]
    ) -> StartedOperation:
        """Starts a search: returns its operation; the search holds its numbers at once."""
        country = self._country(country_code)
        number_type = catalogue.spelled(body.get("phoneNumberType"), catalogue.NUMBER_TYPES)
        assignment_type = catalogue.spelled(body.get("assignmentType"), catalogue.ASSIGNMENT_TYPES)
        if not isinstance(number_type, str) or not isinstance(assignment_type, str):
            raise InvalidRequest("phoneNumberType and assignmentType are required.", code="InvalidSearchRequest")
        offering = self._offering(country, number_type, assignment_type)
        capabilities = _capabilities(body.get("capabilities"), required=True)
        _check_within(capabilities, offering, "search")
        quantity = body.get("quantity", 1)
        if quantity is None:
            quantity = 1
        if not isinstance(quantity, int) or isinstance(quantity, bool) or not 1 <= quantity <= MAX_SEARCH_QUANTITY:
            raise InvalidRequest(f"quantity must be between 1 and {MAX_SEARCH_QUANTITY}.", code="InvalidQuantity")
        blocks = catalogue.area_codes(country, number_type)
        area_code = body.get("areaCode")
        if area_code:
            blocks = [b for b in blocks if b.code == str(area_code)]
            if not blocks:
                raise InvalidRequest(
                    f"Area code '{area_code}' has no {number_type} numbers in {country.code}.",
                    code="InvalidAreaCode",
                )
        now = self._clock.now()
        search_id = str(uuid.uuid4())
        numbers = (await self._available(tx, blocks))[:quantity]
        expires_at = now + SEARCH_LIFETIME_SECONDS
        search: dict[str, Any] = {
            "searchId": search_id,
            "phoneNumbers": numbers,
            "phoneNumberType": number_type,
            "assignmentType": assignment_type,
            "capabilities": capabilities,
            "cost": offering.cost(),
            "searchExpiresBy": iso_z(expires_at),
            "isAgreementToNotResellRequired": False,
            "_country": country.code,
            "_expiresAt": expires_at,
            "_state": "held",
            "_resourceId": resource.immutable_id,
        }
        if not numbers:
            search["error"] = "OutOfStock"
            search["errorCode"] = 1000  # the pair the API's own example shows
            search["_state"] = "failed"
        else:
            await tx.hold_numbers(numbers, f"search:{search_id}", expires_at)
        await tx.put_number_search(search_id, search)
        location = f"/availablePhoneNumbers/searchResults/{search_id}"
        op = await self._start(tx, resource, "search", search_id, {"searchId": search_id}, resource_location=location)
        return StartedOperation(op["id"], search_id, location, _public(search))

    async def get_search(self, tx: StoreTx, resource: CommunicationResource, search_id: str) -> dict[str, Any]:
        search = await tx.get_number_search(search_id)
        if search is None or not self._mine(search, resource):
            raise NotFound(f"No search with id '{search_id}'.", code="SearchNotFound")
        return _public(search)

    async def purchase_search(
        self, tx: StoreTx, resource: CommunicationResource, body: dict[str, Any]
    ) -> StartedOperation:
        search_id = body.get("searchId")
        if not isinstance(search_id, str) or not search_id:
            raise InvalidRequest("searchId is required.", code="InvalidPurchaseRequest")
        search = await tx.get_number_search(search_id)
        if search is None or not self._mine(search, resource):
            raise NotFound(f"No search with id '{search_id}'.", code="SearchNotFound")
        self._check_purchasable(search)
        await self._check_unsold(tx, search["phoneNumbers"])
        search["_state"] = "purchasing"
        await tx.put_number_search(search_id, search)
        # As the API's examples show: the purchase is known by its search's id.
        op = await self._start(tx, resource, "purchase", search_id, {"searchId": search_id})
        return StartedOperation(op["id"], search_id)

    def _check_purchasable(self, search: dict[str, Any]) -> None:
        state = search["_state"]
        if state == "failed":
            raise InvalidRequest(f"Search '{search['searchId']}' found no numbers.", code="OutOfStock")
        if state in ("purchasing", "purchased"):
            raise Conflict(f"Search '{search['searchId']}' has already been purchased.", code="SearchAlreadyPurchased")
        if self._clock.now() >= search["_expiresAt"]:
            raise InvalidRequest(
                f"Search '{search['searchId']}' expired at {search['searchExpiresBy']}; its numbers are no "
                "longer held. Search again.",
                code="SearchExpired",
            )

    async def _check_unsold(self, tx: StoreTx, numbers: list[str]) -> None:
        sold = [n for n in numbers if await tx.get_phone_number(n) is not None]
        if sold:
            raise Conflict(f"Already purchased: {', '.join(sold)}.", code="PhoneNumbersAlreadyPurchased")

    # ---- owned numbers ------------------------------------------------------------------------------

    async def release(self, tx: StoreTx, resource: CommunicationResource, number: str) -> StartedOperation:
        await self._numbers.get(tx, resource, number)
        ident = str(uuid.uuid4())
        op = await self._start(tx, resource, "releasePhoneNumber", ident, {"phoneNumber": number})
        return StartedOperation(op["id"], ident)

    async def update_capabilities(
        self, tx: StoreTx, resource: CommunicationResource, number: str, body: dict[str, Any]
    ) -> StartedOperation:
        doc = await self._numbers.get(tx, resource, number)
        requested = _capabilities(body, required=False)
        if not requested:
            raise InvalidRequest("Give calling, sms or both.", code="InvalidCapabilities")
        wanted = {**doc["capabilities"], **requested}
        offering = self._offering_of(doc)
        if offering is not None:
            _check_within(wanted, offering, number)
        ident = str(uuid.uuid4())
        location = f"/phoneNumbers/{quote(number, safe='')}"
        # The 202 shows the number as it is (on the virtual clock, already changed).
        op = await self._start(
            tx,
            resource,
            "updatePhoneNumberCapabilities",
            ident,
            {"phoneNumber": number, "capabilities": wanted},
            resource_location=location,
        )
        return StartedOperation(op["id"], ident, location, await self._numbers.get(tx, resource, number))

    def _offering_of(self, doc: dict[str, Any]) -> catalogue.Offering | None:
        found = catalogue.lookup(doc["phoneNumber"])
        country = found[0] if found else catalogue.country(doc["countryCode"])
        return None if country is None else country.offering(doc["phoneNumberType"], doc["assignmentType"])

    # ---- reservations -------------------------------------------------------------------------------

    def _reservation_view(self, doc: dict[str, Any], *, with_numbers: bool = True) -> dict[str, Any]:
        view = _public(doc)
        if view["status"] == "active" and self._clock.now() >= doc["_expiresAt"]:
            view["status"] = "expired"
            view["phoneNumbers"] = {
                k: {**v, "status": "expired"} if v["status"] == "reserved" else v
                for k, v in view["phoneNumbers"].items()
            }
        if not with_numbers:
            view.pop("phoneNumbers", None)
        return view

    async def _reservation(
        self, tx: StoreTx, reservation_id: str, resource: CommunicationResource | None = None
    ) -> dict[str, Any]:
        doc = await tx.get_number_reservation(reservation_id)
        if doc is None or (resource is not None and not self._mine(doc, resource)):
            raise NotFound(f"No reservation with id '{reservation_id}'.", code="ReservationNotFound")
        return doc

    async def get_reservation(
        self, tx: StoreTx, resource: CommunicationResource, reservation_id: str
    ) -> dict[str, Any]:
        return self._reservation_view(await self._reservation(tx, reservation_id, resource))

    async def list_reservations(
        self, tx: StoreTx, resource: CommunicationResource, skip: int, top: int
    ) -> tuple[list[dict[str, Any]], bool]:
        if skip < 0 or not 1 <= top <= 1000:
            raise InvalidRequest("skip must be >= 0 and maxPageSize between 1 and 1000.", code="ValidationError")
        # Pages of the resource's own reservations: read in store order, the others skipped.
        mine: list[dict[str, Any]] = []
        offset = 0
        while len(mine) < skip + top + 1:
            chunk = await tx.list_number_reservations(offset, 500)
            mine += [d for d in chunk if self._mine(d, resource)]
            if len(chunk) < 500:
                break
            offset += len(chunk)
        page = mine[skip : skip + top + 1]
        return [self._reservation_view(d, with_numbers=False) for d in page[:top]], len(page) > top

    async def update_reservation(
        self, tx: StoreTx, resource: CommunicationResource, reservation_id: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], bool, bool]:
        """Creates or changes a reservation; returns it, whether it was created, and whether some
        number could not be added (the API's partial success)."""
        try:
            uuid.UUID(reservation_id)
        except ValueError:
            raise InvalidRequest("A reservation id is a GUID.", code="InvalidReservationId") from None
        changes = body.get("phoneNumbers") or {}
        if not isinstance(changes, dict):
            raise InvalidRequest("phoneNumbers must be an object keyed by phone number id.", code="BadRequest")
        now = self._clock.now()
        doc = await tx.get_number_reservation(reservation_id)
        if doc is not None and not self._mine(doc, resource):
            # Another resource's reservation: its id is taken, and nothing about it is told.
            raise Conflict(f"Reservation id '{reservation_id}' is already in use.", code="ReservationIdInUse")
        created = doc is None
        if doc is None:
            doc = {
                "id": reservation_id,
                "phoneNumbers": {},
                "status": "active",
                "_createdAt": now,
                "_resourceId": resource.immutable_id,
            }
        elif self._reservation_view(doc)["status"] != "active":
            raise InvalidRequest(
                f"Reservation '{reservation_id}' is {self._reservation_view(doc)['status']}; only active "
                "reservations change.",
                code="ReservationNotActive",
            )
        holder = f"reservation:{reservation_id}"
        entries: dict[str, Any] = doc["phoneNumbers"]
        partial = False
        for key, value in changes.items():
            number = "+" + str(key).lstrip("+")
            if value is None:
                entries.pop(number.lstrip("+"), None)
                await tx.release_holds(holder, [number])
                continue
            entry = await self._reserve_one(tx, number, holder, value if isinstance(value, dict) else {})
            partial = partial or entry["status"] == "error"
            entries[number.lstrip("+")] = entry
        expires_at = min(now + RESERVATION_EXTENSION_SECONDS, doc["_createdAt"] + RESERVATION_MAX_SECONDS)
        doc["_expiresAt"] = expires_at
        doc["expiresAt"] = iso_z(expires_at)
        reserved = [v["phoneNumber"] for v in entries.values() if v["status"] == "reserved"]
        await tx.hold_numbers(reserved, holder, expires_at)
        await tx.put_number_reservation(reservation_id, doc["_createdAt"], doc)
        return self._reservation_view(doc), created, partial

    async def _reserve_one(self, tx: StoreTx, number: str, holder: str, wanted: dict[str, Any]) -> dict[str, Any]:
        """One number into a reservation, with the assignment and capabilities asked for (by default the
        offering's); a number that cannot be reserved is an entry with status `error`, not a failure."""
        found = catalogue.lookup(number)
        if found is None or number not in await self._available(tx, [found[1]], holder=holder):
            # The code and message of the API's own partial-success example.
            return self._entry_error(number, "FailedToReserveNumber", "Failed to add the number to the reservation.")
        country, block = found
        assignment_type = catalogue.spelled(wanted.get("assignmentType") or "application", catalogue.ASSIGNMENT_TYPES)
        offering = country.offering(block.number_type, assignment_type or "application")
        if offering is None:
            return self._entry_error(
                number, "NoOfferingAvailable", f"{number} cannot be assigned to {wanted.get('assignmentType')}."
            )
        try:
            asked = _capabilities(wanted.get("capabilities"), required=False)
            capabilities = {"calling": "none", "sms": "none", **asked} if asked else offering.capabilities()
            _check_within(capabilities, offering, number)
        except CallgridError as exc:
            return self._entry_error(number, exc.code, exc.message)
        return {**self._available_number(number, country, offering, "reserved"), "capabilities": capabilities}

    def _entry_error(self, number: str, code: str, message: str) -> dict[str, Any]:
        found = catalogue.lookup(number)
        return {
            "id": number.lstrip("+"),
            "countryCode": found[0].code if found else country_of(number),
            "phoneNumber": number,
            "capabilities": {"calling": "none", "sms": "none"},
            "phoneNumberType": found[1].number_type if found else "geographic",
            "assignmentType": "application",
            "status": "error",
            "error": {"code": code, "message": message},
        }

    async def delete_reservation(self, tx: StoreTx, resource: CommunicationResource, reservation_id: str) -> None:
        doc = await self._reservation(tx, reservation_id, resource)
        status = self._reservation_view(doc)["status"]
        if status != "active":
            raise InvalidRequest(
                f"Reservation '{reservation_id}' is {status}; only active reservations can be deleted.",
                code="ReservationNotActive",
            )
        await tx.release_holds(f"reservation:{reservation_id}")
        await tx.delete_number_reservation(reservation_id)

    async def purchase_reservation(
        self, tx: StoreTx, resource: CommunicationResource, reservation_id: str
    ) -> StartedOperation:
        doc = await self._reservation(tx, reservation_id, resource)
        view = self._reservation_view(doc)
        if view["status"] == "expired":
            raise InvalidRequest(f"Reservation '{reservation_id}' has expired.", code="ReservationExpired")
        if view["status"] != "active":
            raise Conflict(f"Reservation '{reservation_id}' is {view['status']}.", code="ReservationNotActive")
        numbers = [v["phoneNumber"] for v in doc["phoneNumbers"].values() if v["status"] == "reserved"]
        if not numbers:
            raise InvalidRequest(f"Reservation '{reservation_id}' holds no numbers.", code="ReservationEmpty")
        await self._check_unsold(tx, numbers)
        doc["status"] = "submitted"
        await tx.put_number_reservation(reservation_id, doc["_createdAt"], doc)
        op = await self._start(tx, resource, "reservationPurchase", reservation_id, {"reservationId": reservation_id})
        return StartedOperation(op["id"], reservation_id)

    # ---- operations ---------------------------------------------------------------------------------

    async def _start(
        self,
        tx: StoreTx,
        resource: CommunicationResource,
        operation_type: str,
        ident: str,
        action: dict[str, Any],
        *,
        resource_location: str | None = None,
    ) -> dict[str, Any]:
        now = self._clock.now()
        op: dict[str, Any] = {
            "id": f"{_OPERATION_PREFIXES[operation_type]}_{ident}",
            "operationType": operation_type,
            "status": "running",
            "createdDateTime": iso_z(now),
            "lastActionDateTime": iso_z(now),
            "_dueAt": now + self._operation_seconds,
            "_action": action,
            "_resourceId": resource.immutable_id,
        }
        if resource_location is not None:
            op["resourceLocation"] = resource_location
        if self._operation_seconds <= 0:
            await self._complete(tx, op)
        else:
            await self._timers.schedule(tx, OPERATION_TIMER, op["_dueAt"], {"operationId": op["id"]})
        await tx.put_number_operation(op["id"], op)
        return op

    async def get_operation(self, tx: StoreTx, resource: CommunicationResource, operation_id: str) -> dict[str, Any]:
        op = await tx.get_number_operation(operation_id)
        if op is None or not self._mine(op, resource):
            raise NotFound(f"No operation with id '{operation_id}'.", code="OperationNotFound")
        if op["status"] == "running" and self._clock.now() >= op["_dueAt"]:
            await self._complete(tx, op)
            await tx.put_number_operation(operation_id, op)
        return _public(op)

    async def _on_timer(self, tx: StoreTx, timer: TimerRow) -> None:
        op = await tx.get_number_operation(timer.payload["operationId"])
        if op is not None and op["status"] == "running":
            await self._complete(tx, op)
            await tx.put_number_operation(op["id"], op)

    async def _complete(self, tx: StoreTx, op: dict[str, Any]) -> None:
        action = op["_action"]
        try:
            resource = self._owner(op)
            match op["operationType"]:
                case "search":
                    await self._finish_search(tx, action["searchId"])
                case "purchase":
                    await self._finish_purchase(tx, resource, action["searchId"])
                case "releasePhoneNumber":
                    await self._numbers.release(tx, resource, action["phoneNumber"])
                case "updatePhoneNumberCapabilities":
                    await self._numbers.set_capabilities(tx, resource, action["phoneNumber"], action["capabilities"])
                case "reservationPurchase":
                    await self._finish_reservation(tx, resource, action["reservationId"])
            op["status"] = "succeeded"
        except CallgridError as exc:
            op["status"] = "failed"
            op["error"] = {"code": exc.code, "message": exc.message}
        op["lastActionDateTime"] = iso_z(self._clock.now())

    async def _finish_search(self, tx: StoreTx, search_id: str) -> None:
        search = await tx.get_number_search(search_id)
        if search is not None and search["_state"] == "failed":
            raise InvalidRequest("No numbers matching the search are available.", code="OutOfStock")

    async def _finish_purchase(self, tx: StoreTx, resource: CommunicationResource, search_id: str) -> None:
        search = await tx.get_number_search(search_id)
        if search is None:
            raise NotFound(f"No search with id '{search_id}'.", code="SearchNotFound")
        try:
            if self._clock.now() >= search["_expiresAt"]:
                raise InvalidRequest(f"Search '{search_id}' expired before the purchase ended.", code="SearchExpired")
            await self._check_unsold(tx, search["phoneNumbers"])
        except CallgridError:
            search["_state"] = "held"
            await tx.put_number_search(search_id, search)
            raise
        offering = catalogue.country(search["_country"])
        for number in search["phoneNumbers"]:
            await self._numbers.own(
                tx,
                resource,
                number,
                number_type=search["phoneNumberType"],
                assignment_type=search["assignmentType"],
                capabilities=search["capabilities"],
                cost=search["cost"],
                country_code=offering.code if offering else None,
            )
        search["_state"] = "purchased"
        await tx.put_number_search(search_id, search)
        await tx.release_holds(f"search:{search_id}")

    async def _finish_reservation(self, tx: StoreTx, resource: CommunicationResource, reservation_id: str) -> None:
        doc = await self._reservation(tx, reservation_id)
        entries = [v for v in doc["phoneNumbers"].values() if v["status"] == "reserved"]
        try:
            await self._check_unsold(tx, [v["phoneNumber"] for v in entries])
        except CallgridError:
            doc["status"] = "active"
            await tx.put_number_reservation(reservation_id, doc["_createdAt"], doc)
            raise
        for entry in entries:
            await self._numbers.own(
                tx,
                resource,
                entry["phoneNumber"],
                number_type=entry["phoneNumberType"],
                assignment_type=entry["assignmentType"],
                capabilities=entry["capabilities"],
                cost=entry["cost"],
                country_code=entry["countryCode"],
            )
            entry["status"] = "purchased"
        doc["status"] = "completed"
        await tx.put_number_reservation(reservation_id, doc["_createdAt"], doc)
        await tx.release_holds(f"reservation:{reservation_id}")
