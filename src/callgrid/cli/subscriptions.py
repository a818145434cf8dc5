"""`callgrid subscriptions list|create|show|delete`: Event Grid subscriptions on the resource, through ARM."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.table import Table

from callgrid.cli.common import AsJson, DataDir, PortOption, console, existing_state, fail, print_json

API = "api-version=2025-02-15"
INCOMING_CALL = "Microsoft.Communication.IncomingCall"

subscriptions_app = typer.Typer(help="Event Grid subscriptions on the resource (ARM paths).", no_args_is_help=True)


def _path(resource_id: str, name: str | None = None) -> str:
    base = f"{resource_id}/providers/Microsoft.EventGrid/eventSubscriptions"
    return f"{base}/{name}?{API}" if name else f"{base}?{API}"


def _filter(event_types: list[str], to_numbers: list[str], to_identities: list[str]) -> dict[str, Any]:
    advanced = []
    if to_numbers:
        advanced.append({"operatorType": "StringIn", "key": "data.to.phoneNumber.value", "values": to_numbers})
    if to_identities:
        advanced.append({"operatorType": "StringIn", "key": "data.to.rawId", "values": to_identities})
    result: dict[str, Any] = {"includedEventTypes": event_types}
    if advanced:
        result["advancedFilters"] = advanced
    return result


@subscriptions_app.command("create")
def create(
    name: str,
    endpoint: Annotated[str, typer.Option(help="The webhook URL Event Grid POSTs to (query string kept).")],
    event_type: Annotated[list[str] | None, typer.Option("--event-type", help="Repeatable.")] = None,
    to_number: Annotated[
        list[str] | None, typer.Option("--to-number", help="Only calls to these numbers (repeatable).")
    ] = None,
    to_identity: Annotated[
        list[str] | None, typer.Option("--to-identity", help="Only calls to these identities (repeatable).")
    ] = None,
    cloud_events: Annotated[bool, typer.Option("--cloud-events", help="CloudEventSchemaV1_0 delivery.")] = False,
    data_dir: DataDir = None,
    port: PortOption = None,
) -> None:
    """Create or update a WebHook subscription; waits for the validation handshake."""
    state = existing_state(data_dir, port)
    client, token = state.client(), state.arm_token()
    properties: dict[str, Any] = {
        "destination": {"endpointType": "WebHook", "properties": {"endpointUrl": endpoint}},
        "filter": _filter(event_type or [INCOMING_CALL], to_number or [], to_identity or []),
        "eventDeliverySchema": "CloudEventSchemaV1_0" if cloud_events else "EventGridSchema",
    }
    try:
        doc = client.arm("PUT", _path(state.resource.arm_id, name), {"properties": properties}, token=token)
        with console.status("validating the endpoint (Event Grid's handshake)…"):
            deadline = time.monotonic() + 60
            while doc["properties"]["provisioningState"] in ("Creating", "Updating") and time.monotonic() < deadline:
                time.sleep(0.2)
                doc = client.arm("GET", _path(state.resource.arm_id, name), token=token)
    except Exception as exc:
        fail(exc)
    provisioning = doc["properties"]["provisioningState"]
    colour = "green" if provisioning == "Succeeded" else "red"
    console.print(f"subscription [bold]{name}[/bold]: [{colour}]{provisioning}[/{colour}]")
    if provisioning != "Succeeded":
        raise typer.Exit(1)


@subscriptions_app.command("list")
def list_(as_json: AsJson = False, data_dir: DataDir = None, port: PortOption = None) -> None:
    """List the resource's event subscriptions."""
    state = existing_state(data_dir, port)
    try:
        docs = state.client().arm("GET", _path(state.resource.arm_id), token=state.arm_token())["value"]
    except Exception as exc:
        fail(exc)
    if as_json:
        print_json(docs)
        return
    table = Table("name", "state", "endpoint", "event types", "schema")
    for doc in docs:
        props = doc["properties"]
        dest = props["destination"].get("properties", {})
        table.add_row(
            doc["name"],
            props["provisioningState"],
            dest.get("endpointBaseUrl", ""),
            ", ".join(props.get("filter", {}).get("includedEventTypes") or ["(all)"]),
            props.get("eventDeliverySchema", ""),
        )
    console.print(table)


@subscriptions_app.command("show")
def show(name: str, as_json: AsJson = False, data_dir: DataDir = None, port: PortOption = None) -> None:
    """Show one subscription as ARM returns it (--json: plain, uncoloured)."""
    state = existing_state(data_dir, port)
    try:
        doc = state.client().arm("GET", _path(state.resource.arm_id, name), token=state.arm_token())
    except Exception as exc:
        fail(exc)
    if as_json:
        print_json(doc)
        return
    console.print_json(data=doc)


@subscriptions_app.command("delete")
def delete(name: str, data_dir: DataDir = None, port: PortOption = None) -> None:
    """Delete a subscription (its pending deliveries are dropped, as in Azure)."""
    state = existing_state(data_dir, port)
    try:
        state.client().arm("DELETE", _path(state.resource.arm_id, name), token=state.arm_token())
    except Exception as exc:
        fail(exc)
    console.print(f"deleted [bold]{name}[/bold]")
