"""What the call core asks of a SIP trunk (Direct Routing), and how the trunk's outcomes come back.

The core rings a public number over a trunk when a SIP route matches it (`sip_routing.trunks_for`) and
the node has a trunk (`callgrid serve --sip-port`); otherwise a simulated device rings, as before. It
hands the trunk a `TrunkLeg` once the ringing is committed, and shows it every committed change of a
call (`call_changed`) so the trunk can follow: answer or refuse an inbound INVITE, send BYE or CANCEL.
The trunk reports the far end's answer, refusal or hang-up through `CallService.far_end_*`, each in a
transaction of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from callgrid.platform.calls.models import Call


@dataclass(frozen=True)
class TrunkLeg:
    """An offer ringing a public number over a trunk."""

    server_call_id: str
    offer_id: str
    target: str  # E.164 number called
    caller: str  # E.164 number shown as the caller (a raw id when it is not a number)
    trunk_fqdn: str
    trunk_port: int
    custom_context: dict[str, Any] = field(default_factory=dict)
    # The trunks tried next, in order, when this one fails (408, 503, 504, unreachable): (fqdn, port).
    failover: tuple[tuple[str, int], ...] = ()


class TrunkPort(Protocol):
    def ring(self, leg: TrunkLeg) -> None: ...

    def call_changed(self, call: Call) -> None:
        """A call's new state was committed (every save of every call: a dictionary look-up for most)."""
