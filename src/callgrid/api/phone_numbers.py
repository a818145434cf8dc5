"""Phone Numbers API routes: purchased numbers, the catalogue of numbers for sale, searches, purchases,
releases, capability updates, reservations and number lookup (azure-communication-phonenumbers 1.4,
api-version 2025-06-01).

Long-running operations answer 202 with no body and the headers the SDK reads: `Operation-Location`
(polled until `status` is `succeeded` or `failed`), `operation-id`, the operation's own id
header (`search-id`, `purchase-id`, ...) and, where the SDK's final state comes from it, `Location`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from callgrid.api.auth import hmac_signed, node_of, resource_of
from callgrid.api.errors import read_object
from callgrid.api.responses import JSONResponse
from callgrid.errors import InvalidRequest
from callgrid.platform import number_lookup
from callgrid.platform.number_orders import StartedOperation

_MAX_INT = 2**31 - 1


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    # isascii: int() also reads fullwidth and other Unicode digits.
    digits = raw.strip()
    if not digits.isascii() or not digits.isdigit() or len(digits) > 10 or int(digits) > _MAX_INT:
        raise InvalidRequest(f"Query parameter '{name}' must be an integer from 0 to {_MAX_INT}.")
    return int(digits)


def _page(request: Request, items: list[dict[str, Any]], key: str) -> Response:
    """One page of a catalogue listing (`skip`, `maxPageSize`), with a relative `nextLink` that keeps the
    request's filters (the SDK re-sends its query and re-appends api-version)."""
    skip = _int_param(request, "skip", 0)
    top = _int_param(request, "maxPageSize", 100)
    if skip < 0 or not 1 <= top <= 1000:
        raise InvalidRequest("skip must be >= 0 and maxPageSize between 1 and 1000.", code="ValidationError")
    body: dict[str, Any] = {key: items[skip : skip + top]}
    if skip + top < len(items):
        query = {k: v for k, v in request.query_params.items() if k != "api-version"}
        query.update(skip=str(skip + top), maxPageSize=str(top))
        body["nextLink"] = f"{request.url.path}?{urlencode(query)}"
    return JSONResponse(body)


def _accepted(started: StartedOperation, id_header: str) -> Response:
    # Relative, as the service's own examples show them; the SDK resolves them against its endpoint.
    headers = {
        "Operation-Location": f"/phoneNumbers/operations/{started.operation_id}",
        "operation-id": started.operation_id,
        id_header: started.ident,
    }
    if started.location is not None:
        headers["Location"] = started.location
    if started.body is None:
        return Response(status_code=202, headers=headers)
    return JSONResponse(started.body, status_code=202, headers=headers)


# ---- purchased numbers ----------------------------------------------------------------------------------


@hmac_signed
async def list_purchased(request: Request) -> Response:
    node = node_of(request)
    skip = _int_param(request, "skip", 0)
    top = _int_param(request, "top", 100)
    async with node.store.transaction() as tx:
        page, more = await node.numbers.list(tx, resource_of(request), skip, top)
    body: dict[str, object] = {"phoneNumbers": page}
    if more:
        # Relative is fine: the SDK resolves it against the endpoint and re-appends api-version.
        body["nextLink"] = f"/phoneNumbers?skip={skip + top}&top={top}"
    return JSONResponse(body)


@hmac_signed
async def get_purchased(request: Request) -> Response:
    node = node_of(request)
    async with node.store.transaction() as tx:
        doc = await node.numbers.get(tx, resource_of(request), request.path_params["number"])
    return JSONResponse(doc)


@hmac_signed
async def release(request: Request) -> Response:
    node = node_of(request)
    async with node.store.transaction() as tx:
        op = await node.number_orders.release(tx, resource_of(request), request.path_params["number"])
    return _accepted(op, "release-id")


@hmac_signed
async def update_capabilities(request: Request) -> Response:
    node = node_of(request)
    body = await read_object(request)
    async with node.store.transaction() as tx:
        op = await node.number_orders.update_capabilities(tx, resource_of(request), request.path_params["number"], body)
    return _accepted(op, "capabilities-id")


@hmac_signed
async def get_operation(request: Request) -> Response:
    node = node_of(request)
    async with node.store.transaction() as tx:
        op = await node.number_orders.get_operation(tx, resource_of(request), request.path_params["operationId"])
    location = op.get("resourceLocation")
    return JSONResponse(op, headers={"Location": location} if location else None)


# ---- the catalogue ----------------------------------------------------------------------------------------


@hmac_signed
async def list_countries(request: Request) -> Response:
    return _page(request, node_of(request).number_orders.countries(), "countries")


@hmac_signed
async def list_localities(request: Request) -> Response:
    q = request.query_params
    items = node_of(request).number_orders.localities(
        request.path_params["countryCode"],
        administrative_division=q.get("administrativeDivision"),
        number_type=q.get("phoneNumberType"),
    )
    return _page(request, items, "phoneNumberLocalities")


@hmac_signed
async def list_area_codes(request: Request) -> Response:
    q = request.query_params
    number_type = q.get("phoneNumberType")
    if not number_type:
        raise InvalidRequest("phoneNumberType is required.", code="InvalidPhoneNumberType")
    items = node_of(request).number_orders.area_codes(
        request.path_params["countryCode"],
        number_type=number_type,
        assignment_type=q.get("assignmentType"),
        locality=q.get("locality"),
        administrative_division=q.get("administrativeDivision"),
    )
    return _page(request, items, "areaCodes")


@hmac_signed
async def list_offerings(request: Request) -> Response:
    q = request.query_params
    items = node_of(request).number_orders.offerings(
        request.path_params["countryCode"],
        number_type=q.get("phoneNumberType"),
        assignment_type=q.get("assignmentType"),
    )
    return _page(request, items, "phoneNumberOfferings")


@hmac_signed
async def browse(request: Request) -> Response:
    node = node_of(request)
    body = await read_object(request)
    async with node.store.transaction() as tx:
        found = await node.number_orders.browse(tx, request.path_params["countryCode"], body)
    return JSONResponse({"phoneNumbers": found})


# ---- searches and purchases -----------------------------------------------------------------------------


@hmac_signed
async def search(request: Request) -> Response:
    node = node_of(request)
    body = await read_object(request)
    async with node.store.transaction() as tx:
        op = await node.number_orders.search(tx, resource_of(request), request.path_params["countryCode"], body)
    return _accepted(op, "search-id")


@hmac_signed
async def get_search(request: Request) -> Response:
    node = node_of(request)
    async with node.store.transaction() as tx:
        found = await node.number_orders.get_search(tx, resource_of(request), request.path_params["searchId"])
    return JSONResponse(found)


@hmac_signed
async def purchase(request: Request) -> Response:
    node = node_of(request)
    body = await read_object(request)
    async with node.store.transaction() as tx:
        op = await node.number_orders.purchase_search(tx, resource_of(request), body)
    return _accepted(op, "purchase-id")


# ---- reservations -----------------------------------------------------------------------------------------


@hmac_signed
async def list_reservations(request: Request) -> Response:
    node = node_of(request)
    skip = _int_param(request, "skip", 0)
    top = _int_param(request, "maxPageSize", 100)
    async with node.store.transaction() as tx:
        page, more = await node.number_orders.list_reservations(tx, resource_of(request), skip, top)
    body: dict[str, Any] = {"reservations": page}
    if more:
        body["nextLink"] = f"/availablePhoneNumbers/reservations?skip={skip + top}&maxPageSize={top}"
    return JSONResponse(body)


@hmac_signed
async def put_reservation(request: Request) -> Response:
    node = node_of(request)
    body = await read_object(request, allow_empty=True)
    async with node.store.transaction() as tx:
        view, created, partial = await node.number_orders.update_reservation(
            tx, resource_of(request), request.path_params["reservationId"], body
        )
    # Partial success (some number could not be reserved) is 207, as the API documents.
    return JSONResponse(view, status_code=207 if partial else 201 if created else 200)


@hmac_signed
async def get_reservation(request: Request) -> Response:
    node = node_of(request)
    async with node.store.transaction() as tx:
        view = await node.number_orders.get_reservation(tx, resource_of(request), request.path_params["reservationId"])
    return JSONResponse(view)


@hmac_signed
async def delete_reservation(request: Request) -> Response:
    node = node_of(request)
    async with node.store.transaction() as tx:
        await node.number_orders.delete_reservation(tx, resource_of(request), request.path_params["reservationId"])
    return Response(status_code=204)


@hmac_signed
async def purchase_reservation(request: Request) -> Response:
    node = node_of(request)
    await read_object(request, allow_empty=True)  # agreeToNotResell: no number sold here requires it
    async with node.store.transaction() as tx:
        op = await node.number_orders.purchase_reservation(
            tx, resource_of(request), request.path_params["reservationId"]
        )
    return _accepted(op, "reservation-purchase-id")


# ---- number lookup -----------------------------------------------------------------------------------------


@hmac_signed
async def operator_information(request: Request) -> Response:
    node = node_of(request)
    body = await read_object(request)
    async with node.store.transaction() as tx:
        values = await number_lookup.operator_information(tx, body)
    return JSONResponse({"values": values})


routes = [
    Route("/phoneNumbers", list_purchased, methods=["GET"]),
    Route("/phoneNumbers/operations/{operationId}", get_operation, methods=["GET"]),
    Route("/phoneNumbers/{number}", get_purchased, methods=["GET"]),
    Route("/phoneNumbers/{number}", release, methods=["DELETE"]),
    Route("/phoneNumbers/{number}/capabilities", update_capabilities, methods=["PATCH"]),
    Route("/availablePhoneNumbers/countries", list_countries, methods=["GET"]),
    Route("/availablePhoneNumbers/countries/{countryCode}/localities", list_localities, methods=["GET"]),
    Route("/availablePhoneNumbers/countries/{countryCode}/areaCodes", list_area_codes, methods=["GET"]),
    Route("/availablePhoneNumbers/countries/{countryCode}/offerings", list_offerings, methods=["GET"]),
    Route("/availablePhoneNumbers/countries/{countryCode}/:browse", browse, methods=["POST"]),
    Route("/availablePhoneNumbers/countries/{countryCode}/:search", search, methods=["POST"]),
    Route("/availablePhoneNumbers/searchResults/{searchId}", get_search, methods=["GET"]),
    Route("/availablePhoneNumbers/:purchase", purchase, methods=["POST"]),
    Route("/availablePhoneNumbers/reservations", list_reservations, methods=["GET"]),
    Route("/availablePhoneNumbers/reservations/{reservationId}", put_reservation, methods=["PATCH"]),
    Route("/availablePhoneNumbers/reservations/{reservationId}", get_reservation, methods=["GET"]),
    Route("/availablePhoneNumbers/reservations/{reservationId}", delete_reservation, methods=["DELETE"]),
    Route("/availablePhoneNumbers/reservations/{reservationId}/:purchase", purchase_reservation, methods=["POST"]),
    Route("/operatorInformation/:search", operator_information, methods=["POST"]),
]
