"""Dead-lettering (eventgrid.md 4.6): Azure's blob layout and fields, a local folder or a blob container, replay."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from callgrid.client import CallgridHttpError
from callgrid.eventgrid.delivery.deadletter import FolderWriter, InvalidDeadLetterDestination, destination_parts
from callgrid.eventgrid.events import parse_time
from callgrid.testing import CallgridServer, WebhookReceiver, free_port
from tests.eventgrid.delivery.helpers import DEAD_LETTER, raise_incoming_calls, run_to_end, settled, wait_for
from tests.support.arm import put_subscription

_BLOB_PATH = re.compile(r"^([A-Z0-9-]+)/(\d{4})/(\d{1,2})/(\d{1,2})/(\d{1,2})/([0-9a-f-]{36})\.json$")


def _dead_letter_sub(server: CallgridServer, name: str, url: str, **retry: int) -> None:
    put_subscription(
        server,
        name,
        url,
        properties={"deadLetterDestination": DEAD_LETTER, **({"retryPolicy": retry} if retry else {})},
    )


def _written(server: CallgridServer) -> list[dict[str, Any]]:
    def done() -> list[dict[str, Any]] | None:
        letters: list[dict[str, Any]] = server.client().dead_letters()["value"]
        return letters if letters and all(d["write"]["status"] == "written" for d in letters) else None

    result: list[dict[str, Any]] = wait_for(done)
    return result


def test_bad_request_is_dead_lettered_into_azures_blob_layout(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    _dead_letter_sub(fresh, "my-blob-subscription", webhook.url)
    webhook.responder = lambda item: (400, {"error": "bad"})
    (call_id,) = raise_incoming_calls(fresh)
    (row,) = settled(fresh)
    assert row["status"] == "deadLettered"
    (letter,) = _written(fresh)
    assert letter["deadLetterReason"] == "UndeliverableDueToHttpBadRequest"
    assert letter["subscriptionName"] == "my-blob-subscription"

    location = Path(letter["write"]["location"])
    root = fresh.data_dir.resolve() / "deadletters" / "deadacct" / "dead-letters"
    relative = location.relative_to(root).as_posix()
    match = _BLOB_PATH.match(relative)
    assert match, relative
    dead_at = datetime.fromtimestamp(parse_time(letter["deadLetteredAt"]) or 0, UTC)
    assert match.groups()[:5] == (
        "MY-BLOB-SUBSCRIPTION",
        str(dead_at.year),
        str(dead_at.month),
        str(dead_at.day),
        str(dead_at.hour),
    )

    (item,) = json.loads(location.read_text())
    assert item["eventType"] == "Microsoft.Communication.IncomingCall"
    assert item["data"]["serverCallId"] == call_id
    assert item["deadLetterReason"] == "UndeliverableDueToHttpBadRequest"
    assert item["deliveryAttempts"] == 1
    assert item["lastDeliveryOutcome"] == "BadRequest"
    assert item["lastHttpStatusCode"] == 400
    assert item["publishTime"].endswith("Z") and len(item["publishTime"]) == 28
    assert item["lastDeliveryAttemptTime"] == row["history"][0]["startedAt"]
    assert item == letter["event"]


def test_cloud_event_dead_letters_use_lower_case_fields(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    put_subscription(
        fresh,
        "ce-dead",
        webhook.url,
        properties={
            "eventDeliverySchema": "CloudEventSchemaV1_0",
            "deadLetterDestination": DEAD_LETTER,
            "retryPolicy": {"maxDeliveryAttempts": 1, "eventTimeToLiveInMinutes": 5},
        },
    )
    webhook.responder = lambda item: (500, None)
    raise_incoming_calls(fresh)
    settled(fresh)
    (letter,) = _written(fresh)
    (item,) = json.loads(Path(letter["write"]["location"]).read_text())
    assert item["specversion"] == "1.0"
    assert item["deadletterreason"] == "MaxDeliveryAttemptsExceeded"
    assert item["deliveryattempts"] == 1
    assert item["lastdeliveryoutcome"] == "GenericError"
    assert item["lasthttpstatuscode"] == 500
    assert "publishtime" in item and "lastdeliveryattempttime" in item


def test_without_a_destination_undeliverable_events_are_dropped(
    fresh: CallgridServer, webhook: WebhookReceiver
) -> None:
    put_subscription(fresh, "no-dl", webhook.url, properties={"retryPolicy": {"maxDeliveryAttempts": 1}})
    webhook.responder = lambda item: (500, None)
    raise_incoming_calls(fresh)
    (row,) = settled(fresh)
    assert (row["status"], row["reason"]) == ("dropped", "MaxDeliveryAttemptsExceeded")
    assert fresh.client().dead_letters()["value"] == []


def test_a_dead_letter_is_replayed_as_a_new_delivery(fresh: CallgridServer, webhook: WebhookReceiver) -> None:
    _dead_letter_sub(fresh, "replay-app", webhook.url, maxDeliveryAttempts=2, eventTimeToLiveInMinutes=60)
    webhook.responder = lambda item: (503, None)
    raise_incoming_calls(fresh)
    (row,) = settled(fresh)
    run_to_end(fresh, row["id"])
    (letter,) = _written(fresh)
    first_event = webhook.notifications()[0].body[0]

    webhook.responder = None  # the app is fixed
    replayed = fresh.client().replay_dead_letter(letter["id"])
    assert replayed["delivery"]["status"] == "pending"
    assert replayed["deadLetter"]["replayDeliveryId"] == replayed["delivery"]["id"]
    new = wait_for(
        lambda: [r for r in settled(fresh) if r["id"] == replayed["delivery"]["id"] and r["status"] == "delivered"]
    )[0]
    assert new["attempts"] == 1
    last = webhook.notifications()[-1]
    assert last.body == [first_event]  # the original event, as it was published
    assert last.header("aeg-delivery-count") == "0"
    (again,) = fresh.client().dead_letters()["value"]
    assert again["replayedAt"] is not None

    with pytest.raises(CallgridHttpError) as missing:
        fresh.client().replay_dead_letter("no-such-id")
    assert (missing.value.status, missing.value.code) == (404, "DeadLetterNotFound")


def test_dead_letter_routes_are_signed(fresh: CallgridServer) -> None:
    import requests

    for method, path in (
        ("GET", "/callgrid/v1/deadLetters"),
        ("POST", "/callgrid/v1/deadLetters/x:replay"),
        ("GET", "/callgrid/v1/deliveries"),
    ):
        response = requests.request(method, fresh.endpoint + path, verify=fresh.ca_bundle)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "Denied"


# ---------------------------------------------------------------------------- Azure Storage (Azurite)

AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _azurite_bin() -> Path:
    """Azurite from the npm registry, installed once into a cache directory."""
    home = Path(os.environ.get("CALLGRID_AZURITE_DIR", Path.home() / ".cache" / "callgrid-azurite"))
    binary = home / "node_modules" / ".bin" / "azurite-blob"
    if not binary.exists():
        npm = shutil.which("npm")
        assert npm, "the Azurite dead-letter test needs node and npm (Azurite is an npm package)"
        home.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--prefix", str(home), "azurite@3"], check=True, capture_output=True)
    return binary


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    location = tmp_path_factory.mktemp("azurite")
    proc = subprocess.Popen(
        [
            str(_azurite_bin()),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            str(location),
            "--silent",
            "--skipApiVersionCheck",
            "--loose",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, "Azurite did not start"
            time.sleep(0.1)
    yield (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )
    proc.terminate()
    proc.wait(10)


def test_dead_letters_go_to_a_blob_container_given_by_connection_string(
    azurite: str, tmp_path_factory: pytest.TempPathFactory, callgrid_tls_dir: Path, callgrid: CallgridServer
) -> None:
    server = CallgridServer(
        tmp_path_factory.mktemp("blob-dead-letters"),
        tls_dir=callgrid_tls_dir,
        env={"CALLGRID_DEAD_LETTER_CONNECTION_STRING": azurite},
    ).start()
    hook = WebhookReceiver(responder=lambda item: (413, None))
    try:
        _dead_letter_sub(server, "blob-app", hook.url)
        (call_id,) = raise_incoming_calls(server)
        (letter,) = _written(server)
    finally:
        hook.close()
        server.stop()
    container = BlobServiceClient.from_connection_string(azurite).get_container_client("dead-letters")
    (blob,) = list(container.list_blobs())
    assert _BLOB_PATH.match(blob.name), blob.name
    assert blob.name.startswith("BLOB-APP/")
    assert letter["write"]["location"].endswith("/dead-letters/" + blob.name)
    (item,) = json.loads(container.download_blob(blob.name).readall())
    assert item["deadLetterReason"] == "UndeliverableDueToHttpPayloadTooLarge"
    assert item["lastHttpStatusCode"] == 413
    assert item["data"]["serverCallId"] == call_id


async def test_the_folder_writer_never_writes_outside_its_root(tmp_path: Path) -> None:
    # Defence in depth behind the subscription PUT's checks: names from an older store may hold anything.
    root = tmp_path / "data" / "deadletters"
    writer = FolderWriter(root)
    for account, container, name in [("..", "..", "x.json"), ("acct", "..", "../../x.json"), ("a", "b", "/etc/x")]:
        with pytest.raises(InvalidDeadLetterDestination):
            await writer.write(account, container, name, b"[]")
    assert not any(p.is_file() for p in tmp_path.rglob("*"))
    storage = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/deadacct"
    with pytest.raises(InvalidDeadLetterDestination):
        destination_parts({"properties": {"resourceId": storage + "/..", "blobContainerName": "c1c"}})
    assert destination_parts({"properties": {"resourceId": storage, "blobContainerName": "c1c"}}) == ("deadacct", "c1c")
