"""ACS result codes: (HTTP-like code, sub-code, message), as callbacks carry them in `resultInformation`."""

from __future__ import annotations

Result = tuple[int, int, str]

# ACS result codes used when a call, an offer or an operation ends (acs-wire.md 5.3).
SUCCESS: Result = (200, 0, "Action completed successfully.")
ENDED_NORMALLY: Result = (200, 7000, "The conversation has ended.")
NOT_ANSWERED: Result = (408, 8587, "Incoming call not answered within time.")
DECLINED: Result = (603, 8538, "The callee declined the call.")
BUSY: Result = (486, 8539, "The callee is busy.")
# An unreachable device (an injected fault): SIP's 480 Temporarily Unavailable; the sub-code is callgrid's
# choice, not observed on Azure.
UNREACHABLE: Result = (480, 10037, "The callee is not reachable.")
FORBIDDEN: Result = (403, 8540, "The call was rejected as forbidden.")
CANCELED: Result = (487, 8542, "The call was canceled by the caller.")
