"""The router's decision log under steady writes, as `router serve` runs it: the WAL starts over."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from callgrid.router.models import ActionRecord, IncomingCall
from callgrid.router.store import RouterStore


def test_wal_starts_over_while_serving(tmp_path: Path) -> None:
    # 2,000 events accepted and finished, paced. Checkpoints move to the store's own thread while serving,
    # with SQLite's automatic checkpoint far above (80 MB): unless that thread lets the WAL restart, every
    # commit appends, about 25 MB here. The file keeps its high-water size after a restart, so its size
    # tells how far the WAL ever got. Counted, not timed.
    store = RouterStore(tmp_path / "router.db")
    store.start_checkpoints(interval=0.01)
    wal = tmp_path / "router.db-wal"
    context = "c" * 1500
    largest = 0
    try:
        for n in range(2000):
            call = IncomingCall(str(uuid.uuid4()), "4:+12065550100", "4:+14255550001", context, f"call-{n}")
            fresh, _ = store.accept([call])
            assert fresh == [call]
            action = ActionRecord(action="redirect", target="8:acs:user", reason=None, ok=True, at=time.time())
            store.finish(call.event_id, "assigned", "redirected", [action])
            if n % 100 == 0:
                largest = max(largest, wal.stat().st_size)
            time.sleep(0.0005)
        assert store.decisions(limit=1)[0].outcome == "redirected"
    finally:
        store.close()
    assert largest < 8 * 1024 * 1024, f"WAL reached {largest} bytes"
