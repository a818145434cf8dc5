"""Store tests run on both stores: `store_url` is a fresh SQLite file or a fresh PostgreSQL schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from callgrid.testing.stores import drop_schema, fresh_postgres_url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'callgrid.db'}"
        return
    url, schema = fresh_postgres_url("store")
    try:
        yield url
    finally:
        drop_schema(schema)
