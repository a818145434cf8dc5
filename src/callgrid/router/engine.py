"""Acting on IncomingCall events: decide, make the SDK calls, record every outcome.

Each accepted event is handled in its own task, right after the webhook has acknowledged it. SDK calls
carry a Repeatability-Request-ID derived from the event id and the step, and the time the event was first
accepted, so a call resumed after a crash is the same request to ACS, not a second one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from email.utils import formatdate
from typing import Any

from azure.communication.callautomation import (
    CommunicationIdentifier,
    CommunicationUserIdentifier,
    PhoneNumberIdentifier,
)
from azure.communication.callautomation.aio import CallAutomationClient
from azure.core.exceptions import AzureError, HttpResponseError

from callgrid.router.automation import USER_AGENT
from callgrid.router.models import ActionRecord, IncomingCall
from callgrid.router.routing import Plan, Step, blocking_keys, decide
from callgrid.router.store import RouterStore

log = logging.getLogger("callgrid.router")
_REPEATABILITY = uuid.UUID("6f1d5a52-8f8b-4d0c-9a53-3c2a1c7e9b10")


def sdk_identifier(raw_id: str) -> CommunicationIdentifier:
    """The SDK's identifier for a stored target."""
    if raw_id.startswith("4:"):
        return PhoneNumberIdentifier(raw_id[2:])
    return CommunicationUserIdentifier(raw_id)


class Router:
    def __init__(self, store: RouterStore, automation: CallAutomationClient, sdk_timeout: float = 10.0) -> None:
        self.store = store
        self.automation = automation
        self.sdk_timeout = sdk_timeout
        self._tasks: set[asyncio.Task[None]] = set()
        self._date = (-1, "")

    def submit(self, call: IncomingCall, first_sent: float) -> None:
        task = asyncio.get_running_loop().create_task(self.handle(call, first_sent))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def resume_pending(self) -> int:
        pending = self.store.pending()
        for call, first_sent in pending:
            self.submit(call, first_sent)
        return len(pending)

    async def drain(self, timeout: float = 5.0) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def handle(self, call: IncomingCall, first_sent: float) -> None:
        try:
            # One read for the assignment, the block list and the rules (`decide` asks it nothing else).
            lookup = self.store.lookup(call.callee_number, blocking_keys(call))
            plan = decide(call, lookup, lookup.rules)
            actions: list[ActionRecord] = []
            outcome = await self._carry_out(call, plan, first_sent, actions)
            self.store.finish(call.event_id, plan.rule, outcome, actions)
            log.info("event %s from %s to %s: rule %s, %s", call.event_id, call.caller, call.callee, plan.rule, outcome)
        except Exception:
            # Left pending: the next start resumes it (the store is the only thing that can fail here).
            log.exception("event %s: could not finish routing", call.event_id)

    async def _carry_out(self, call: IncomingCall, plan: Plan, first_sent: float, actions: list[ActionRecord]) -> str:
        if not plan.steps:
            return "left ringing"
        for index, step in enumerate(plan.steps):
            record = await self._perform(call, step, index, first_sent)
            actions.append(record)
            if record.ok:
                return _describe(step)
        # ACS codes do not tell a dead context from a bad target (8522 is both), so every step was tried.
        return f"failed: {record.error_code or record.status} {record.error_message or ''}".strip()

    async def _perform(self, call: IncomingCall, step: Step, index: int, first_sent: float) -> ActionRecord:
        headers = {
            "Repeatability-Request-ID": repeatability_id(f"{call.event_id}/{index}"),
            "Repeatability-First-Sent": self._first_sent(first_sent),
            "User-Agent": USER_AGENT,
        }
        record = ActionRecord(action=step.action, target=step.target, reason=step.reason, ok=False, at=time.time())
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.sdk_timeout):
                await self._sdk_call(call, step, headers)
            record.ok = True
        except HttpResponseError as exc:
            record.status = exc.status_code
            error: Any = exc.error
            record.error_code = getattr(error, "code", None) or (exc.reason or None)
            record.error_message = getattr(error, "message", None) or exc.message
        except TimeoutError:
            record.error_code = "Timeout"
            record.error_message = f"no answer from ACS within {self.sdk_timeout:g} s"
        except AzureError as exc:
            record.error_code = type(exc).__name__
            record.error_message = str(exc)
        record.elapsed_ms = (time.perf_counter() - started) * 1000
        return record

    def _first_sent(self, first_sent: float) -> str:
        # The header has whole seconds: the calls accepted within one second share the text.
        second = int(first_sent)
        if second != self._date[0]:
            self._date = (second, formatdate(second, usegmt=True))
        return self._date[1]

    async def _sdk_call(self, call: IncomingCall, step: Step, headers: dict[str, str]) -> None:
        if step.action == "redirect":
            assert step.target is not None
            await self.automation.redirect_call(
                call.incoming_call_context, sdk_identifier(step.target), headers=headers
            )
        else:
            await self.automation.reject_call(
                call.incoming_call_context, call_reject_reason=step.reason, headers=headers
            )


def repeatability_id(name: str) -> str:
    """str(uuid.uuid5(_REPEATABILITY, name)), without building a UUID object (half the time, once per SDK call)."""
    digest = bytearray(hashlib.sha1(_REPEATABILITY.bytes + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = digest.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def _describe(step: Step) -> str:
    if step.action == "redirect":
        return f"redirected to {step.note + ' ' if step.note else ''}{step.target}"
    return f"rejected ({step.reason}){' as ' + step.note if step.note else ''}"
