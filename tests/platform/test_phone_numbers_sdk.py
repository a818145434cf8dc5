"""Owned numbers: added through callgrid's API and the CLI, read through `PhoneNumbersClient`."""

from __future__ import annotations

import subprocess
import sys

import pytest
from azure.communication.phonenumbers import PhoneNumbersClient
from azure.core.exceptions import ResourceNotFoundError

from callgrid.client import CallgridHttpError
from callgrid.testing import CallgridServer


def test_owned_numbers_show_in_the_phone_numbers_sdk(fresh: CallgridServer) -> None:
    client = fresh.client()
    created = client.own_number("+14255551212")
    assert created["phoneNumber"] == "+14255551212"
    client.own_number("+18005550123")

    sdk = PhoneNumbersClient.from_connection_string(fresh.connection_string)
    numbers = {n.phone_number: n for n in sdk.list_purchased_phone_numbers()}
    assert set(numbers) == {"+14255551212", "+18005550123"}
    geographic = sdk.get_purchased_phone_number("+14255551212")
    assert geographic.country_code == "US"
    assert geographic.phone_number_type == "geographic"
    assert geographic.capabilities.calling == "inbound+outbound"
    assert geographic.purchase_date is not None
    assert numbers["+18005550123"].phone_number_type == "tollFree"

    client.release_number("+18005550123")
    with pytest.raises(ResourceNotFoundError):
        sdk.get_purchased_phone_number("+18005550123")


def test_listing_pages_through_many_numbers(fresh: CallgridServer) -> None:
    client = fresh.client()
    for i in range(130):
        client.own_number(f"+1425555{i:04d}")
    sdk = PhoneNumbersClient.from_connection_string(fresh.connection_string)
    listed = [n.phone_number for n in sdk.list_purchased_phone_numbers()]
    assert len(listed) == 130 and len(set(listed)) == 130


def test_number_errors(fresh: CallgridServer) -> None:
    client = fresh.client()
    with pytest.raises(CallgridHttpError) as bad:
        client.own_number("4255551212")
    assert bad.value.status == 400 and "E.164" in bad.value.message
    client.own_number("+14255551212")
    with pytest.raises(CallgridHttpError) as twice:
        client.own_number("+14255551212")
    assert twice.value.status == 409
    with pytest.raises(CallgridHttpError) as missing:
        client.release_number("+19995550000")
    assert missing.value.status == 404


def test_numbers_cli(fresh: CallgridServer) -> None:
    base = [sys.executable, "-m", "callgrid", "numbers"]
    where = ["--data-dir", str(fresh.data_dir), "--port", str(fresh.port)]
    added = subprocess.run([*base, "add", "+14255550199", *where], capture_output=True, text=True, check=True)
    assert "+14255550199" in added.stdout
    listed = subprocess.run([*base, "list", *where], capture_output=True, text=True, check=True)
    assert "+14255550199" in listed.stdout
    removed = subprocess.run([*base, "remove", "+14255550199", *where], capture_output=True, text=True, check=True)
    assert "released" in removed.stdout
    again = subprocess.run([*base, "remove", "+14255550199", *where], capture_output=True, text=True)
    assert again.returncode == 1 and "does not own" in again.stderr
