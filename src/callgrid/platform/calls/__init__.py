"""Calls: participants, ringing offers, app connections, and the state machine that moves them."""

from callgrid.platform.calls.models import Call, CallConnection, CallState, Participant, RingOffer
from callgrid.platform.calls.service import CallService, DeviceBehaviour

__all__ = [
    "Call",
    "CallConnection",
    "CallService",
    "CallState",
    "DeviceBehaviour",
    "Participant",
    "RingOffer",
]
