"""What a subscription's endpoint receives: the event in its delivery schema, the body, the headers.

Serialised once per POST: Event Grid-schema events are stored as the JSON text they are delivered
as, so a batch body is those texts joined into an array, with no decode or encode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from callgrid import jsonio
from callgrid.eventgrid.delivery.attributes import attribute_headers
from callgrid.eventgrid.events import is_cloud_event, to_cloud_event

EVENT_GRID_SCHEMA = "EventGridSchema"
CLOUD_EVENT_SCHEMA = "CloudEventSchemaV1_0"
CUSTOM_INPUT_SCHEMA = "CustomInputSchema"
EVENT_GRID_CONTENT_TYPE = "application/json; charset=utf-8"
CLOUD_EVENT_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
# Batched CloudEvents delivery is undocumented; the batch media type of the CloudEvents spec (O7).
CLOUD_EVENT_BATCH_CONTENT_TYPE = "application/cloudevents-batch+json; charset=utf-8"
EVENT_GRID_ORIGIN = "eventgrid.azure.net"


@dataclass(frozen=True)
class Target:
    """What delivery needs of one subscription, read once per claim."""

    subscription_id: str
    name: str
    topic: str  # the lower-cased event source it listens to: what metrics are counted under
    endpoint_type: str  # WebHook, or AzureFunction (an Azure resource: slightly different retry rules)
    header_name: str  # aeg-subscription-name (upper-cased by default, eventgrid.md O6)
    state: str
    url: str
    schema: str
    max_events: int
    max_bytes: int
    mappings: list[dict[str, Any]] | None
    dead_letter: dict[str, Any] | None

    @property
    def batched(self) -> bool:
        # Decided by the subscription, not by how many events a POST happens to carry, so a
        # CloudEvents receiver always sees one shape (object, or array when batching is on).
        return self.max_events > 1

    @property
    def azure_resource(self) -> bool:
        return self.endpoint_type != "WebHook"

    @property
    def endpoint(self) -> str:
        """The endpoint without its query string: what probation and metrics key on."""
        return self.url.split("?", 1)[0]

    @classmethod
    def from_doc(cls, doc: dict[str, Any], *, uppercase_name: bool) -> Target:
        props = doc["properties"]
        dest = props["destination"]["properties"]
        return cls(
            subscription_id=doc["id"].lower(),
            name=doc["name"],
            topic=str(doc.get("callgrid", {}).get("source") or props["topic"]).lower(),
            endpoint_type=props["destination"].get("endpointType", "WebHook"),
            header_name=doc["name"].upper() if uppercase_name else doc["name"],
            state=props.get("provisioningState", ""),
            url=dest["endpointUrl"],
            schema=props.get("eventDeliverySchema") or EVENT_GRID_SCHEMA,
            max_events=int(dest.get("maxEventsPerBatch") or 1),
            max_bytes=int(dest.get("preferredBatchSizeInKilobytes") or 64) * 1024,
            mappings=dest.get("deliveryAttributeMappings"),
            dead_letter=props.get("deadLetterDestination"),
        )


def delivered_text(stored: str, schema: str, *, dataschema: bool) -> str:
    """A stored event as the subscription receives it (JSON text)."""
    if schema == CUSTOM_INPUT_SCHEMA:
        # Only custom-schema topics allow it; they store the envelope with the original event as `data`.
        return jsonio.dumps(jsonio.loads(stored)["data"])
    if schema != CLOUD_EVENT_SCHEMA:
        return stored
    event = jsonio.loads(stored)
    if is_cloud_event(event):
        return stored
    return jsonio.dumps(to_cloud_event(event, include_dataschema=dataschema))


def dead_letter_text(stored: str, delivered: str, schema: str) -> str:
    """The event a dead-letter item is built on: as delivered, but the Event Grid envelope (raw event
    in `data`) for CustomInputSchema (eventgrid.md 4.6)."""
    return stored if schema == CUSTOM_INPUT_SCHEMA else delivered


def request_for(
    target: Target, texts: list[str], delivery_count: int, output_id: str | None
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of one POST carrying `texts` (already in the delivery schema)."""
    first = jsonio.loads(texts[0])
    cloud = target.schema == CLOUD_EVENT_SCHEMA
    headers = attribute_headers(target.mappings, first)
    headers.update(
        {
            "aeg-event-type": "Notification",
            "aeg-subscription-name": target.header_name,
            "aeg-delivery-count": str(delivery_count),
        }
    )
    if cloud:
        headers["aeg-metadata-version"] = str(first.get("specversion", "1.0"))
        headers["WebHook-Request-Origin"] = EVENT_GRID_ORIGIN
        if target.batched:
            headers["Content-Type"] = CLOUD_EVENT_BATCH_CONTENT_TYPE
            body = "[" + ",".join(texts) + "]"
        else:
            headers["Content-Type"] = CLOUD_EVENT_CONTENT_TYPE
            body = texts[0]
    else:
        headers["Content-Type"] = EVENT_GRID_CONTENT_TYPE
        headers["aeg-data-version"] = str(first.get("dataVersion", ""))
        headers["aeg-metadata-version"] = str(first.get("metadataVersion", "1"))
        body = "[" + ",".join(texts) + "]"
    if output_id is not None:
        headers["aeg-output-event-id"] = output_id
    return body.encode(), headers
