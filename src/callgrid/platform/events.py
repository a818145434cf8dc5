"""How the platform raises events, without knowing who carries them.

ACS publishes system events (IncomingCall, ...) to its Event Grid system topic, and POSTs Call
Automation callbacks to apps. Both are written inside the caller's store transaction, so an event
is durable before the action that raised it is acknowledged. The server wires in Event Grid's
system topic and the callback outbox.
"""

from __future__ import annotations

from typing import Any, Protocol

from callgrid.platform.resource import CommunicationResource
from callgrid.store import StoreTx


class EventSink(Protocol):
    async def publish_system_event(
        self,
        tx: StoreTx,
        resource: CommunicationResource,
        *,
        event_type: str,
        subject: str,
        data: dict[str, Any],
        data_version: str = "1.0",
    ) -> str:
        """Put one event on `resource`'s system topic (no other resource's subscribers see it); returns its id."""
        ...

    async def send_callback(self, tx: StoreTx, *, url: str, event: dict[str, Any], audience: str) -> None:
        """Queue one Call Automation CloudEvent for `url` (POSTed as a JSON array), signed with a JWT for
        `audience` (the immutable id of the call's resource)."""
        ...
