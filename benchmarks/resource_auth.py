"""What several Communication resources cost a signed request (issue 17).

Every resource shares the endpoint and the key that verifies a request's HMAC signature names its resource
(api/auth.py), so a request signed by a resource other than the default one is first checked against the
keys before its own. Measures the signature check alone, in process (no server), as `_signed` runs it
(`verify_signature_with_any` over `ResourceDirectory.candidates()`): signed by the default resource (the
baseline), and by the last of 1, 10 and 100 resources. Prints JSON: microseconds per request and the
ratio to the baseline of the same run.

With `--store postgresql://...` it also measures what several nodes on one store add (issue 12): a request
signed by a resource other than the default one first checks that the resources did not change on another
node (`Node.sync_resources`: one statement reading `resources.version`). The default resource's requests,
and every request on SQLite, skip it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import time
from datetime import UTC, datetime, timedelta

from callgrid.platform.resource import CommunicationResource, ResourceDirectory
from callgrid.security import check_headers, new_access_key, sign_request
from callgrid.security.hmac_auth import verify_signature_with_any
from callgrid.store import open_store

HOST = "localhost:8443"
PATH = "/calling/callConnections/6a1f2c3d-0000-4000-8000-000000000001:playMedia?api-version=2025-06-15"
BODY = b'{"playSources": [{"kind": "file", "file": {"uri": "https://example.com/a.wav"}}]}'
REQUESTS = 1_000


def resource(name: str, default: bool = False) -> CommunicationResource:
    return CommunicationResource(
        name=name,
        immutable_id=name,
        access_key=new_access_key(),
        secondary_key=new_access_key(),
        subscription_id="s",
        resource_group="rg",
        is_default=default,
    )


def check(directory: ResourceDirectory, headers: dict[str, str]) -> CommunicationResource:
    signed = check_headers(headers, now=datetime.now(UTC), max_skew=timedelta(minutes=15))
    candidates = directory.candidates()
    index = verify_signature_with_any(
        signed,
        method="POST",
        raw_target=PATH,
        host=HOST,
        body_digest=hashlib.sha256(BODY).digest(),
        access_keys=[key for _, key in candidates],
    )
    return candidates[index][0]


def per_request_us(directory: ResourceDirectory, signer: CommunicationResource) -> float:
    headers = sign_request("POST", PATH, HOST, BODY, signer.access_key, datetime.now(UTC))
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(REQUESTS):
            assert check(directory, headers) is signer
        best = min(best, (time.perf_counter() - start) / REQUESTS * 1e6)
    return best


async def version_check_us(url: str, default: CommunicationResource) -> float:
    """Microseconds per version check on a shared store, as a non-default resource's request pays it."""
    store = await open_store(url)
    try:
        directory = ResourceDirectory(default)
        async with store.transaction() as tx:
            await directory.reload(tx)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(REQUESTS):
                assert not await directory.moved(store)
            best = min(best, (time.perf_counter() - start) / REQUESTS * 1e6)
        return best
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="a postgresql:// URL: also measure the shared store's version check")
    args = parser.parse_args()
    default = resource("default", default=True)
    results = []
    alone = ResourceDirectory(default)
    per_request_us(alone, default)  # warm-up: the first run pays for imports and caches
    baseline = per_request_us(alone, default)
    for count in (1, 10, 100):
        others = [resource(f"r{i}") for i in range(count)]
        directory = ResourceDirectory(default, others)
        us = per_request_us(directory, others[-1])
        results.append({"resources": count + 1, "signedBy": "last", "usPerRequest": round(us, 1)})
    report: dict[str, object] = {
        "baseline": {"resources": 1, "signedBy": "default", "usPerRequest": round(baseline, 1)},
        "results": [{**r, "ratio": round(r["usPerRequest"] / baseline, 2)} for r in results],
    }
    if args.store:
        check = asyncio.run(version_check_us(args.store, default))
        report["sharedStoreVersionCheck"] = {"usPerRequest": round(check, 1), "ratio": round(check / baseline, 2)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
