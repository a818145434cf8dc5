"""psycopg 3 (async, psycopg_pool) against asyncpg on the PostgreSQL store's hot path (issue 12).

Same run, same database, same SQL (placeholders aside), each driver through a pool of 4 connections:
- claim+complete: claim 100 due deliveries (the store's one-statement FOR UPDATE SKIP LOCKED claim with
  their event bodies), then record their outcomes (100 UPDATEs and 100 attempt INSERTs, batched), each
  step its own transaction: deliveries per second;
- save call: one transaction that reads a call's document FOR UPDATE and writes it back (a state
  change), 4 at a time: transactions per second.
Prints JSON; each figure is the best of 3 rounds. Needs CALLGRID_TEST_POSTGRES_URL (or the local default).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg
import psycopg
from psycopg_pool import AsyncConnectionPool

from callgrid.store import open_store
from callgrid.testing.stores import drop_schema, fresh_postgres_url, postgres_url

DELIVERIES = 20_000
CLAIM = 100
CALL_SAVES = 4_000
CONCURRENCY = 4
ROUNDS = 3

CLAIM_SQL = (
    "WITH due AS (SELECT id, next_attempt_at AS was, rowid FROM deliveries "
    "WHERE status = 'pending' AND next_attempt_at <= {0} AND (lease_until IS NULL OR lease_until < {0}) "
    "ORDER BY next_attempt_at, rowid LIMIT {1} FOR UPDATE SKIP LOCKED), "
    "claimed AS (UPDATE deliveries d SET lease_until = {2}, next_attempt_at = {2} FROM due "
    "WHERE d.id = due.id RETURNING d.*) "
    "SELECT c.id, c.attempts, e.body FROM claimed c JOIN due ON due.id = c.id JOIN events e ON e.id = c.event_id "
    "ORDER BY due.was, due.rowid"
)
FINISH_SQL = "UPDATE deliveries SET status = 'delivered', attempts = {0}, lease_until = NULL WHERE id = {1}"
ATTEMPT_SQL = (
    "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, status, outcome, error, duration_ms, "
    "batch_size) VALUES ({0}, {1}, {2}, 200, 'Succeeded', NULL, 1.5, 1)"
)
GET_CALL = "SELECT doc FROM calls WHERE server_call_id = {0} FOR UPDATE"
PUT_CALL = "UPDATE calls SET doc = {0}, updated_at = {1} WHERE server_call_id = {2}"


def _ps(sql: str) -> bytes:
    return sql.format(*(["%s"] * 8)).encode()


def _apg(sql: str) -> str:
    return sql.format(*[f"${n}" for n in range(1, 9)])


async def _fill(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute("TRUNCATE deliveries, events, delivery_attempts, calls")
    body = json.dumps({"id": "x", "data": {"payload": "y" * 400}})
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO events (id, topic, body, created_at) VALUES (%s, 't', %s, 0)",
            [(f"e{n}", body) for n in range(DELIVERIES)],
        )
        await cur.executemany(
            "INSERT INTO deliveries (id, kind, event_id, url, created_at, next_attempt_at, max_attempts, status) "
            "VALUES (%s, 'eventgrid', %s, 'http://x', 0, 0, 30, 'pending')",
            [(f"d{n}", f"e{n}") for n in range(DELIVERIES)],
        )
        doc = json.dumps({"state": "connected", "participants": ["a" * 40] * 4, "n": 0})
        await cur.executemany(
            "INSERT INTO calls (server_call_id, doc, updated_at) VALUES (%s, %s, 0)",
            [(f"c{n}", doc) for n in range(100)],
        )


async def _psycopg(conninfo: str) -> dict[str, float]:
    async with AsyncConnectionPool(conninfo, min_size=CONCURRENCY, max_size=CONCURRENCY, open=False) as pool:
        await pool.open(wait=True)

        async def drain() -> None:
            while True:
                async with pool.connection() as conn, conn.transaction():
                    rows = await (await conn.execute(_ps(CLAIM_SQL), (1.0, 1.0, CLAIM, 99.0, 99.0))).fetchall()
                if not rows:
                    return
                async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                    await cur.executemany(_ps(FINISH_SQL), [(r[1] + 1, r[0]) for r in rows])
                    await cur.executemany(_ps(ATTEMPT_SQL), [(r[0], r[1] + 1, 1.0) for r in rows])

        async def saves(worker: int) -> None:
            for n in range(CALL_SAVES // CONCURRENCY):
                call = f"c{(worker * 7 + n) % 100}"
                async with pool.connection() as conn, conn.transaction():
                    row = await (await conn.execute(_ps(GET_CALL), (call,))).fetchone()
                    assert row is not None
                    doc = json.loads(row[0])
                    doc["n"] += 1
                    await conn.execute(_ps(PUT_CALL), (json.dumps(doc), float(n), call))

        return await _measure(conninfo, drain, saves)


async def _asyncpg(conninfo: str) -> dict[str, float]:
    schema = psycopg.conninfo.conninfo_to_dict(conninfo)["options"].split("search_path=")[1]
    url = postgres_url()
    pool = await asyncpg.create_pool(
        url, min_size=CONCURRENCY, max_size=CONCURRENCY, server_settings={"search_path": schema}
    )
    try:

        async def drain() -> None:
            while True:
                async with pool.acquire() as conn, conn.transaction():
                    rows = await conn.fetch(_apg(CLAIM_SQL), 1.0, CLAIM, 99.0)
                if not rows:
                    return
                async with pool.acquire() as conn, conn.transaction():
                    await conn.executemany(_apg(FINISH_SQL), [(r[1] + 1, r[0]) for r in rows])
                    await conn.executemany(_apg(ATTEMPT_SQL), [(r[0], r[1] + 1, 1.0) for r in rows])

        async def saves(worker: int) -> None:
            for n in range(CALL_SAVES // CONCURRENCY):
                call = f"c{(worker * 7 + n) % 100}"
                async with pool.acquire() as conn, conn.transaction():
                    row = await conn.fetchrow(_apg(GET_CALL), call)
                    assert row is not None
                    doc = json.loads(row[0])
                    doc["n"] += 1
                    await conn.execute(_apg(PUT_CALL), json.dumps(doc), float(n), call)

        return await _measure(conninfo, drain, saves)
    finally:
        await pool.close()


async def _measure(conninfo: str, drain: Any, saves: Any) -> dict[str, float]:
    best = {"claim_complete_deliveries_per_s": 0.0, "call_saves_per_s": 0.0}
    for _ in range(ROUNDS):
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            await _fill(conn)
        started = time.perf_counter()
        await asyncio.gather(*(drain() for _ in range(CONCURRENCY)))
        rate = DELIVERIES / (time.perf_counter() - started)
        best["claim_complete_deliveries_per_s"] = max(best["claim_complete_deliveries_per_s"], round(rate))
        started = time.perf_counter()
        await asyncio.gather(*(saves(w) for w in range(CONCURRENCY)))
        rate = CALL_SAVES / (time.perf_counter() - started)
        best["call_saves_per_s"] = max(best["call_saves_per_s"], round(rate))
    return best


async def main() -> None:
    url, schema = fresh_postgres_url("bench")
    try:
        store = await open_store(url)  # the real migrations
        conninfo = store._conninfo  # type: ignore[attr-defined]
        await store.close()
        results = {"psycopg": await _psycopg(conninfo), "asyncpg": await _asyncpg(conninfo)}
        for key in ("claim_complete_deliveries_per_s", "call_saves_per_s"):
            results[f"asyncpg_over_psycopg_{key}"] = round(results["asyncpg"][key] / results["psycopg"][key], 2)  # type: ignore[assignment]
        print(json.dumps(results, indent=2))
    finally:
        drop_schema(schema)


if __name__ == "__main__":
    asyncio.run(main())
