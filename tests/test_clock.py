"""Timestamps as Event Grid and ACS write them (callgrid.clock)."""

from __future__ import annotations

from callgrid.clock import iso7, iso_z


def test_iso7_has_seven_fractional_digits_and_z() -> None:
    assert iso7(0.0) == "1970-01-01T00:00:00.0000000Z"
    assert iso7(1_764_421_200.25) == "2025-11-29T13:00:00.2500000Z"
    assert iso7(253_402_300_799.0) == "9999-12-31T23:59:59.0000000Z"


def test_iso_z_has_milliseconds() -> None:
    assert iso_z(1_764_421_200.25) == "2025-11-29T13:00:00.250Z"
