"""Buying numbers from the catalogue with the official `PhoneNumbersClient`: search, purchase, calls to the
number bought, capabilities, release, expiry, reservations and number lookup (the test server runs a
virtual clock, so every long-running operation has ended when the request that starts it is answered)."""

from __future__ import annotations

import gc
import time
import uuid
from pathlib import Path

import pytest
from azure.communication.phonenumbers import (
    OperatorInformationOptions,
    PhoneNumberAssignmentType,
    PhoneNumberCapabilities,
    PhoneNumberCapabilityType,
    PhoneNumbersClient,
    PhoneNumberSearchResult,
    PhoneNumberType,
)
from azure.communication.phonenumbers.aio import PhoneNumbersClient as AsyncPhoneNumbersClient
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.core.pipeline.transport import RequestsTransport
from azure.core.polling import LROPoller

from callgrid.client import CallgridHttpError
from callgrid.testing import CallgridServer, WebhookReceiver
from tests.platform.calling_support import CALL_EVENTS, INCOMING_CALL, PSTN_CALLER, phone
from tests.support.arm import put_subscription

CALLING_ONLY = PhoneNumberCapabilities(
    calling=PhoneNumberCapabilityType.INBOUND_OUTBOUND, sms=PhoneNumberCapabilityType.NONE
)


def sdk(server: CallgridServer) -> PhoneNumbersClient:
    # polling_interval only matters while an operation runs; on the virtual clock none does.
    return PhoneNumbersClient.from_connection_string(server.connection_string, retry_total=0)


def search(
    client: PhoneNumbersClient, *, quantity: int = 1, area_code: str | None = "425"
) -> LROPoller[PhoneNumberSearchResult]:
    return client.begin_search_available_phone_numbers(
        "US",
        PhoneNumberType.GEOGRAPHIC,
        PhoneNumberAssignmentType.APPLICATION,
        CALLING_ONLY,
        quantity=quantity,
        area_code=area_code,
        polling_interval=0,
    )


def test_search_purchase_call_update_release(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    put_subscription(fresh, "numbers-app", webhook.url + "/eventgrid", included_event_types=CALL_EVENTS)
    client = sdk(fresh)

    poller = search(client, quantity=2)
    found = poller.result()
    assert poller.status() == "succeeded"
    assert len(found.phone_numbers) == 2 and all(n.startswith("+1425555") for n in found.phone_numbers)
    assert found.cost.amount == 1.0 and found.cost.currency_code == "USD"
    assert found.search_expires_by is not None
    assert client._phone_number_client.phone_numbers.get_search_result(found.search_id).phone_numbers == (
        found.phone_numbers
    )

    # A second search is not offered the numbers the first one holds.
    other = search(client, quantity=2).result()
    assert not set(other.phone_numbers) & set(found.phone_numbers)

    purchase = client.begin_purchase_phone_numbers(found.search_id, polling_interval=0)
    assert purchase.result() is None
    assert purchase.status() == "succeeded"
    headers = purchase.polling_method()._initial_response.http_response.headers
    assert headers["operation-id"] == "purchase_" + found.search_id
    assert headers["Operation-Location"] == f"/phoneNumbers/operations/purchase_{found.search_id}"
    bought = found.phone_numbers[0]
    owned = client.get_purchased_phone_number(bought)
    assert owned.phone_number_type == "geographic" and owned.assignment_type == "application"
    assert owned.capabilities.calling == "inbound+outbound" and owned.capabilities.sms == "none"
    assert {n.phone_number for n in client.list_purchased_phone_numbers()} == set(found.phone_numbers)

    # The same store state as `callgrid numbers add`: a PSTN call to it raises IncomingCall.
    callgrid = fresh.client()
    placed = callgrid.place_call(PSTN_CALLER, bought)
    events = webhook.wait_until(lambda: webhook.events(INCOMING_CALL))
    assert events[0]["data"]["to"]["rawId"] == phone(bought)
    assert events[0]["data"]["serverCallId"] == placed["serverCallId"]

    # Buying the same search again: its numbers are sold.
    with pytest.raises(ResourceExistsError) as twice:
        client.begin_purchase_phone_numbers(found.search_id, polling_interval=0)
    assert twice.value.error.code == "SearchAlreadyPurchased"

    updated = client.begin_update_phone_number_capabilities(
        bought, sms=PhoneNumberCapabilityType.OUTBOUND, calling=PhoneNumberCapabilityType.INBOUND, polling_interval=0
    ).result()
    assert updated.phone_number == bought
    assert updated.capabilities.sms == "outbound" and updated.capabilities.calling == "inbound"

    release = client.begin_release_phone_number(bought, polling_interval=0)
    release.result()
    assert release.status() == "succeeded"
    with pytest.raises(ResourceNotFoundError):
        client.get_purchased_phone_number(bought)
    with pytest.raises(CallgridHttpError) as refused:
        callgrid.place_call(PSTN_CALLER, bought)
    assert refused.value.status == 400 and refused.value.code == "PhoneNumberNotOwned"
    with pytest.raises(ResourceNotFoundError):
        client.begin_release_phone_number(bought, polling_interval=0)


def test_an_expired_search_refuses_purchase(fresh: CallgridServer) -> None:
    client = sdk(fresh)
    found = search(client).result()
    fresh.advance(15 * 60)
    with pytest.raises(HttpResponseError) as expired:
        client.begin_purchase_phone_numbers(found.search_id, polling_interval=0)
    assert expired.value.status_code == 400 and expired.value.error.code == "SearchExpired"
    # Its numbers are free again: a new search is offered them, and can buy them.
    again = search(client).result()
    assert again.phone_numbers == found.phone_numbers
    client.begin_purchase_phone_numbers(again.search_id, polling_interval=0).result()
    assert client.get_purchased_phone_number(found.phone_numbers[0])


def test_search_and_purchase_errors(fresh: CallgridServer) -> None:
    client = sdk(fresh)
    with pytest.raises(ResourceNotFoundError) as unknown:
        client.begin_purchase_phone_numbers(str(uuid.uuid4()), polling_interval=0)
    assert unknown.value.error.code == "SearchNotFound"
    with pytest.raises(HttpResponseError) as country:
        client.begin_search_available_phone_numbers(
            "FR", PhoneNumberType.TOLL_FREE, PhoneNumberAssignmentType.APPLICATION, CALLING_ONLY
        )
    assert country.value.status_code == 400 and country.value.error.code == "UnsupportedCountry"
    with pytest.raises(HttpResponseError) as offering:
        client.begin_search_available_phone_numbers(
            "GB", PhoneNumberType.GEOGRAPHIC, PhoneNumberAssignmentType.PERSON, CALLING_ONLY
        )
    assert offering.value.error.code == "NoOfferingAvailable"
    # UK geographic numbers carry no SMS.
    with pytest.raises(HttpResponseError) as sms:
        client.begin_search_available_phone_numbers(
            "GB",
            PhoneNumberType.GEOGRAPHIC,
            PhoneNumberAssignmentType.APPLICATION,
            PhoneNumberCapabilities(calling=PhoneNumberCapabilityType.INBOUND, sms=PhoneNumberCapabilityType.INBOUND),
        )
    assert sms.value.error.code == "CapabilityNotSupported"

    # A number `callgrid numbers add` owns is sold: no search offers it, and a held one cannot be bought.
    found = search(client).result()
    fresh.client().own_number(found.phone_numbers[0])
    with pytest.raises(ResourceExistsError) as sold:
        client.begin_purchase_phone_numbers(found.search_id, polling_interval=0)
    assert sold.value.error.code == "PhoneNumbersAlreadyPurchased"

    # All 100 numbers of an area code taken: the search operation fails, and the poller says so.
    search(client, quantity=99).result()
    with pytest.raises(HttpResponseError) as out:
        search(client).result()
    assert "OutOfStock" in str(out.value)


def test_update_capabilities_beyond_the_offering_is_refused(fresh: CallgridServer) -> None:
    client = sdk(fresh)
    found = client.begin_search_available_phone_numbers(
        "GB", PhoneNumberType.TOLL_FREE, PhoneNumberAssignmentType.APPLICATION,
        PhoneNumberCapabilities(calling=PhoneNumberCapabilityType.INBOUND, sms=PhoneNumberCapabilityType.NONE),
        polling_interval=0,
    ).result()  # fmt: skip
    assert found.phone_numbers[0].startswith("+44808157")
    client.begin_purchase_phone_numbers(found.search_id, polling_interval=0).result()
    with pytest.raises(HttpResponseError) as refused:
        client.begin_update_phone_number_capabilities(
            found.phone_numbers[0], sms=PhoneNumberCapabilityType.OUTBOUND, polling_interval=0
        )
    assert refused.value.status_code == 400 and refused.value.error.code == "CapabilityNotSupported"
    with pytest.raises(ResourceNotFoundError):
        client.begin_update_phone_number_capabilities("+14255550000", calling="inbound", polling_interval=0)


def test_catalogue_listings(fresh: CallgridServer) -> None:
    client = sdk(fresh)
    assert [c.country_code for c in client.list_available_countries()] == ["US", "CA", "GB"]
    localities = list(client.list_available_localities("US"))
    assert [loc.localized_name for loc in localities] == ["Seattle", "Redmond", "New York", "San Francisco"]
    washington = list(client.list_available_localities("US", administrative_division="WA"))
    assert {loc.administrative_division.abbreviated_name for loc in washington} == {"WA"}
    assert list(client.list_available_localities("US", phone_number_type=PhoneNumberType.TOLL_FREE)) == []
    area_codes = client.list_available_area_codes(
        "US",
        PhoneNumberType.GEOGRAPHIC,
        assignment_type=PhoneNumberAssignmentType.APPLICATION,
        locality="Redmond",
        administrative_division="WA",
    )
    assert [a.area_code for a in area_codes] == ["425"]
    toll_free = client.list_available_area_codes("US", PhoneNumberType.TOLL_FREE)
    assert {a.area_code for a in toll_free} <= {"888", "877", "866", "855", "844", "800", "833"}
    offerings = list(client.list_available_offerings("GB"))
    assert {(o.phone_number_type, o.assignment_type) for o in offerings} == {
        ("geographic", "application"),
        ("tollFree", "application"),
    }
    assert all(o.available_capabilities.sms == "none" for o in offerings)
    # Paging: the SDK follows nextLink with the filters kept.
    paged = list(client.list_available_localities("US", max_page_size=1))
    assert len(paged) == 4
    with pytest.raises(HttpResponseError):
        list(client.list_available_offerings("XX"))


def test_reservations_and_browse(fresh: CallgridServer) -> None:
    client = sdk(fresh)
    browsed = client.browse_available_phone_numbers(
        country_code="US", phone_number_type=PhoneNumberType.TOLL_FREE, phone_number_prefixes=["833"]
    ).phone_numbers
    assert browsed and all(n.phone_number.startswith("+1833") for n in browsed)
    first, second = browsed[0], browsed[1]

    reservation_id = str(uuid.uuid4())
    empty = client.create_or_update_reservation(reservation_id=reservation_id)
    assert empty.id == reservation_id and empty.status == "active" and len(empty.phone_numbers) == 0
    fresh.advance(1)
    held = client.create_or_update_reservation(reservation_id=reservation_id, numbers_to_add=[first, second])
    assert held.expires_at > empty.expires_at
    assert held.phone_numbers[first.id].status == "reserved"
    # A reserved number is offered to nobody else.
    again = client.browse_available_phone_numbers(
        country_code="US", phone_number_type=PhoneNumberType.TOLL_FREE, phone_number_prefixes=["833"]
    ).phone_numbers
    assert first.phone_number not in {n.phone_number for n in again}
    # Partial success: a number held elsewhere, or asked for with SMS where none is sold, is an error entry.
    london = client.browse_available_phone_numbers(
        country_code="GB", phone_number_type=PhoneNumberType.GEOGRAPHIC
    ).phone_numbers[0]
    assert london.capabilities.sms == "none"
    london.capabilities.sms = PhoneNumberCapabilityType.INBOUND
    rival = client.create_or_update_reservation(reservation_id=str(uuid.uuid4()), numbers_to_add=[first, london])
    assert rival.phone_numbers[first.id].status == "error"
    assert rival.phone_numbers[first.id].error.code == "FailedToReserveNumber"
    assert rival.phone_numbers[london.id].error.code == "CapabilityNotSupported"
    fresh.advance(1)
    fewer = client.create_or_update_reservation(reservation_id=reservation_id, numbers_to_remove=[second.id])
    assert set(fewer.phone_numbers) == {first.id}
    assert client.get_reservation(reservation_id).expires_at == fewer.expires_at
    assert reservation_id in {r.id for r in client.list_reservations()}

    client.begin_purchase_reservation(reservation_id, polling_interval=0).result()
    assert client.get_reservation(reservation_id).status == "completed"
    assert client.get_purchased_phone_number(first.phone_number).phone_number_type == "tollFree"

    other = str(uuid.uuid4())
    client.create_or_update_reservation(reservation_id=other, numbers_to_add=[second])
    client.delete_reservation(other)
    with pytest.raises(ResourceNotFoundError):
        client.get_reservation(other)

    expiring = str(uuid.uuid4())
    client.create_or_update_reservation(reservation_id=expiring, numbers_to_add=[second])
    fresh.advance(15 * 60)
    assert client.get_reservation(expiring).status == "expired"
    with pytest.raises(HttpResponseError) as expired:
        client.begin_purchase_reservation(expiring, polling_interval=0)
    assert expired.value.error.code == "ReservationExpired"


def test_operator_information(fresh: CallgridServer) -> None:
    client = sdk(fresh)
    fresh.client().own_number("+14255551212")
    owned = client.search_operator_information("+14255551212").values[0]
    assert owned.phone_number == "+14255551212" and owned.iso_country_code == "US"
    assert owned.national_format == "(425) 555-1212"
    detailed = client.search_operator_information(
        ["+442079460001"], options=OperatorInformationOptions(include_additional_operator_details=True)
    ).values[0]
    assert detailed.iso_country_code == "GB" and detailed.operator_details.name
    assert detailed.international_format == "+44 20 7946 0001"
    with pytest.raises(HttpResponseError) as too_many:
        client.search_operator_information(["+14255551212", "+14255551213"])
    assert too_many.value.status_code == 400
    with pytest.raises(HttpResponseError):
        client.search_operator_information("4255551212")


def test_operations_take_time_on_the_system_clock(
    tmp_path_factory: pytest.TempPathFactory, callgrid_tls_dir: Path
) -> None:
    server = CallgridServer(
        tmp_path_factory.mktemp("numbers-system-clock"),
        tls_dir=callgrid_tls_dir,
        clock="system",
        env={"CALLGRID_NUMBER_OPERATION_SECONDS": "1"},
    ).start()
    # A transport of our own, closed before the server stops: a connection left open (the SDK streams the
    # first response of each long-running operation and its poller keeps it) would hold the server's
    # graceful shutdown for its whole timeout.
    transport = RequestsTransport()
    try:
        _buy_on_the_system_clock(
            PhoneNumbersClient.from_connection_string(server.connection_string, transport=transport)
        )
    finally:
        gc.collect()  # the pollers, and the connections their first responses hold
        transport.close()
        server.stop()


def _buy_on_the_system_clock(client: PhoneNumbersClient) -> None:
    operations = client._phone_number_client.phone_numbers
    poller = client.begin_search_available_phone_numbers(
        "US", PhoneNumberType.TOLL_FREE, PhoneNumberAssignmentType.APPLICATION, CALLING_ONLY, polling_interval=0.2
    )
    # Not finished yet: "InProgress" from the first response, or "running" once the poller's thread has polled.
    assert poller.status() in {"InProgress", "running"}
    found = poller.result()
    assert poller.status() == "succeeded" and found.phone_numbers

    # Nobody polls: the operation still ends on time, and the number is owned.
    started = time.monotonic()
    purchase = client.begin_purchase_phone_numbers(found.search_id, polling=False)
    operation_id = purchase.polling_method()._initial_response.http_response.headers["operation-id"]
    assert operations.get_operation(operation_id).status == "running"
    with pytest.raises(ResourceNotFoundError):
        client.get_purchased_phone_number(found.phone_numbers[0])
    deadline = started + 10
    while time.monotonic() < deadline:  # reads the number, never the operation
        try:
            owned = client.get_purchased_phone_number(found.phone_numbers[0])
            break
        except ResourceNotFoundError:
            time.sleep(0.1)
    assert owned.phone_number == found.phone_numbers[0]
    assert time.monotonic() - started >= 0.9
    assert operations.get_operation(operation_id).status == "succeeded"


async def test_async_client_buys_and_releases(fresh: CallgridServer) -> None:
    async with AsyncPhoneNumbersClient.from_connection_string(fresh.connection_string, retry_total=0) as client:
        poller = await client.begin_search_available_phone_numbers(
            "CA", PhoneNumberType.TOLL_FREE, PhoneNumberAssignmentType.APPLICATION, CALLING_ONLY, polling_interval=0
        )
        found = await poller.result()
        assert found.phone_numbers[0].startswith("+1877555")
        await (await client.begin_purchase_phone_numbers(found.search_id, polling_interval=0)).result()
        owned = await client.get_purchased_phone_number(found.phone_numbers[0])
        assert owned.country_code == "CA" and owned.cost.amount == 2.0
        await (await client.begin_release_phone_number(found.phone_numbers[0], polling_interval=0)).result()
        with pytest.raises(ResourceNotFoundError):
            await client.get_purchased_phone_number(found.phone_numbers[0])


def test_a_purchase_survives_a_crash(tmp_path_factory: pytest.TempPathFactory, callgrid_tls_dir: Path) -> None:
    server = CallgridServer(
        tmp_path_factory.mktemp("numbers-crash"),
        tls_dir=callgrid_tls_dir,
        clock="system",
        env={"CALLGRID_NUMBER_OPERATION_SECONDS": "2"},
    ).start()
    transport = RequestsTransport()
    try:
        client = PhoneNumbersClient.from_connection_string(server.connection_string, transport=transport)
        found = client.begin_search_available_phone_numbers(
            "US", PhoneNumberType.TOLL_FREE, PhoneNumberAssignmentType.APPLICATION, CALLING_ONLY, polling_interval=0.2
        ).result()
        client.begin_purchase_phone_numbers(found.search_id, polling=False)
        server.restart(hard=True)  # killed while the purchase runs: the operation and its timer are stored
        operations = client._phone_number_client.phone_numbers
        assert operations.get_search_result(found.search_id).phone_numbers == found.phone_numbers
        deadline = time.monotonic() + 10
        while operations.get_operation("purchase_" + found.search_id).status == "running":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert operations.get_operation("purchase_" + found.search_id).status == "succeeded"
        assert client.get_purchased_phone_number(found.phone_numbers[0])
        del client, operations
    finally:
        gc.collect()
        transport.close()
        server.stop()


def test_enum_values_are_case_insensitive(fresh: CallgridServer) -> None:
    client = sdk(fresh)
    found = client.begin_search_available_phone_numbers(
        "us", "TollFree", "Application", CALLING_ONLY, polling_interval=0
    ).result()
    assert found.phone_number_type == "tollFree" and found.assignment_type == "application"
    assert [o.phone_number_type for o in client.list_available_offerings("US", phone_number_type="TOLLFREE")] == [
        "tollFree"
    ]
