"""Runs a scenario file against a callgrid server, as an app would: the official Call Automation and
Identity SDKs for the app's side, callgrid's simulator for the callers', and a WebhookReceiver as the
app's Event Grid endpoint and callback URI.

    result = await run_scenario("support-line.scenario.yaml", server)
    if not result.passed:
        print(result.report())

No pytest here: the plugin collects `*.scenario.yaml` files through this, and so does `callgrid scenario run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from callgrid.client import CallgridHttpError
from callgrid.testing.scenario import SUFFIX, Scenario, Step, event_type, load
from callgrid.testing.server import CallgridServer, FaultInjector
from callgrid.testing.webhook import WebhookReceiver

DEFAULT_WITHIN = 10.0  # real seconds an `expect` or `state` waits
DEFAULT_WATCH = 1.0  # real seconds an `expect no` watches

_VARIABLE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_MISSING = object()


@dataclass
class StepResult:
    """What became of one step: `status` is running, passed, failed or skipped."""

    index: int
    step: Step
    status: str
    seconds: float = 0.0
    message: str = ""
    diff: list[str] = field(default_factory=list)


@dataclass
class ScenarioResult:
    scenario: Scenario
    steps: list[StepResult]
    error: str = ""  # set when the scenario could not start (no server, a user not created...)

    @property
    def passed(self) -> bool:
        return not self.error and all(s.status == "passed" for s in self.steps)

    @property
    def failure(self) -> StepResult | None:
        return next((s for s in self.steps if s.status == "failed"), None)

    def report(self) -> str:
        """The failure as a reader wants it: which step, where, what was expected and what was seen."""
        if self.error:
            return f"{self.scenario.name} ({self.scenario.path}) could not run: {self.error}"
        failed = self.failure
        if failed is None:
            return f"{self.scenario.name}: passed ({len(self.steps)} steps)"
        lines = [
            f"{self.scenario.name}",
            f"step {failed.index + 1} ({self.scenario.path}:{failed.step.line}): {failed.step.describe()}",
            f"  {failed.message}",
        ]
        lines += [f"  {line}" for line in failed.diff]
        return "\n".join(lines)


class StepFailed(Exception):
    def __init__(self, message: str, diff: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.diff = diff or []


Progress = Callable[[StepResult], None]


def shipped_scenarios() -> list[Traversable]:
    """The scenario files that ship with callgrid: one per cell of the incoming-call scenario table."""
    folder = files("callgrid.testing").joinpath("scenarios")
    return sorted((f for f in folder.iterdir() if f.name.endswith(SUFFIX)), key=lambda f: f.name)


async def run_scenario(
    scenario: Scenario | Path | str,
    server: CallgridServer,
    *,
    progress: Progress | None = None,
    reset: bool = False,
) -> ScenarioResult:
    """Run every step in order until one fails; the steps after it are reported as skipped.

    `server` is a running kit server (virtual clock). With `reset`, its state is forgotten first. A file that
    does not pass its checks raises ScenarioError before anything runs.
    """
    if not isinstance(scenario, Scenario):
        scenario = load(scenario)
    results = [StepResult(i, step, "skipped") for i, step in enumerate(scenario.steps)]
    outcome = ScenarioResult(scenario, results)
    stack = contextlib.ExitStack()  # the webhook, the SDK transports, the faults: closed off the event loop
    try:
        try:
            if reset:
                await asyncio.to_thread(server.reset)
            run = _Run(scenario, server, stack)
            await asyncio.to_thread(run.prepare)
        except Exception as exc:  # the server, the SDK or the webhook: none of it is the scenario's fault
            outcome.error = f"{type(exc).__name__}: {exc}"
            return outcome
        for result in results:
            result.status = "running"
            if progress is not None:
                progress(result)
            began = time.perf_counter()
            try:
                await asyncio.to_thread(run.perform, result.step)
                result.status = "passed"
            except StepFailed as exc:
                result.status, result.message, result.diff = "failed", exc.message, exc.diff
            result.seconds = time.perf_counter() - began
            if progress is not None:
                progress(result)
            if result.status == "failed":
                break
    finally:
        await asyncio.to_thread(stack.close)
    return outcome


class _Run:
    """One scenario's run: its users, webhook and SDK clients, and what earlier steps left behind."""

    def __init__(self, scenario: Scenario, server: CallgridServer, stack: contextlib.ExitStack) -> None:
        self.scenario = scenario
        self.server = server
        self.stack = stack
        self.variables: dict[str, str] = {}
        self.incoming: dict[str, Any] | None = None  # the last IncomingCall an `expect` matched
        self.connection_id: str | None = None  # the app's call connection (answer, create call)
        self.server_call_id: str | None = None  # the call the simulator placed
        self.faults = FaultInjector(server)

    # ------------------------------------------------------------------ before the first step

    def prepare(self) -> None:
        from azure.communication.callautomation import CallAutomationClient
        from azure.communication.identity import CommunicationIdentityClient

        self.webhook = self.stack.enter_context(WebhookReceiver())
        self.stack.callback(self.faults.remove_all)
        self.variables["webhook"] = self.webhook.url + "/events"
        self.variables["callbacks"] = self.webhook.url + "/callbacks"
        identity = self.stack.enter_context(self._sdk(CommunicationIdentityClient))
        self.automation = self.stack.enter_context(self._sdk(CallAutomationClient))
        for name in self.scenario.users:
            self.variables[name] = identity.create_user().properties["id"]
        for number in self.scenario.numbers:
            self.server.own_number(number)
        sub = self.scenario.subscription
        self.server.subscribe(
            self.variables["webhook"],
            event_types=sub.events,
            to=[_raw_or_number(self.expand(t)) for t in sub.to],
            schema=sub.schema,
        )

    @contextlib.contextmanager
    def _sdk(self, client_class: Any) -> Iterator[Any]:
        # A transport of its own, closed at the end: a pooled keep-alive connection would hold up the server.
        from azure.core.pipeline.transport import RequestsTransport

        transport = RequestsTransport(connection_verify=self.server.ca_bundle)
        try:
            yield client_class.from_connection_string(self.server.connection_string, transport=transport)
        finally:
            transport.close()

    # ------------------------------------------------------------------ steps

    def perform(self, step: Step) -> None:
        handler = getattr(self, "do_" + step.action.replace(" ", "_"))
        if "fails with" in step.options:
            self._expect_failure(step, handler)
            return
        try:
            handler(step)
        except CallgridHttpError as exc:
            raise StepFailed(f"callgrid refused it: {exc}") from None
        except StepFailed:
            raise
        except Exception as exc:
            if (code := _acs_error(exc)) is not None:
                raise StepFailed(f"the Call Automation SDK raised {code}: {_first_line(exc)}") from None
            raise StepFailed(f"{type(exc).__name__}: {exc}") from None

    def _expect_failure(self, step: Step, handler: Callable[[Step], None]) -> None:
        expected = str(step.options["fails with"])
        try:
            handler(step)
        except StepFailed:
            raise
        except Exception as exc:
            code = _acs_error(exc)
            if code is None:
                raise StepFailed(f"{type(exc).__name__}: {exc}") from None
            if expected not in code.split("/"):
                raise StepFailed(
                    "it failed, but not as expected", [f"- fails with: {expected}", f"+ fails with: {code}"]
                ) from None
            return
        raise StepFailed(f"expected it to fail with {expected}; it succeeded")

    # the caller's side

    def do_call(self, step: Step) -> None:
        body: dict[str, Any] = {"from": self.party(step.options["from"]), "to": self.party(step.argument)}
        if "name" in step.options:
            body["callerDisplayName"] = step.options["name"]
        placed = self.server.client().request("POST", "/callgrid/v1/calls", body)
        self.server_call_id = placed["serverCallId"]

    def do_press(self, step: Step) -> None:
        self._simulate(step.options["by"], ":sendDtmf", {"tones": str(step.argument)})

    def do_say(self, step: Step) -> None:
        self._simulate(step.options["by"], ":say", {"text": self.expand(step.argument)})

    def do_leave(self, step: Step) -> None:
        self._simulate(step.argument, ":hangUp", None)

    def _simulate(self, party: str, verb: str, body: Any) -> None:
        raw_id = urllib.parse.quote(_raw_or_number(self.party(party), raw=True), safe="")
        path = f"/callgrid/v1/calls/{self._server_call()}/participants/{raw_id}{verb}"
        self.server.client().request("POST", path, body)

    def do_device(self, step: Step) -> None:
        delay = round((step.options.get("after") or 0) * 1000)
        self.server.set_device(
            _raw_or_number(self.party(step.argument), raw=True), step.options["does"], answer_delay_ms=delay
        )

    # the app's side

    def do_create_call(self, step: Step) -> None:
        caller = step.options.get("from")
        source = _identifier(self.party(caller)) if caller else None
        created = self.automation.create_call(
            _identifier(self.party(step.argument)), self.variables["callbacks"], source_caller_id_number=source
        )
        self.connection_id = created.call_connection_id
        self.server_call_id = created.server_call_id

    def do_answer(self, step: Step) -> None:
        answered = self.automation.answer_call(
            self._incoming_context(), self.variables["callbacks"], operation_context=step.argument
        )
        self.connection_id = answered.call_connection_id

    def do_reject(self, step: Step) -> None:
        self.automation.reject_call(self._incoming_context(), call_reject_reason=step.argument)

    def do_redirect(self, step: Step) -> None:
        self.automation.redirect_call(self._incoming_context(), _identifier(self.party(step.argument)))

    def do_add_participant(self, step: Step) -> None:
        caller = step.options.get("from")
        self._connection().add_participant(
            _identifier(self.party(step.argument)),
            source_caller_id_number=_identifier(self.party(caller)) if caller else None,
        )

    def do_transfer(self, step: Step) -> None:
        self._connection().transfer_call_to_participant(_identifier(self.party(step.argument)))

    def do_play(self, step: Step) -> None:
        from azure.communication.callautomation import TextSource

        to = step.options.get("to")
        play_to = [_identifier(self.party(to))] if to else "all"
        self._connection().play_media(TextSource(text=self.expand(step.argument)), play_to=play_to)

    def do_recognize(self, step: Step) -> None:
        from azure.communication.callautomation import RecognizeInputType, TextSource

        options = step.options
        prompt = TextSource(text=self.expand(options["prompt"])) if "prompt" in options else None
        extra: dict[str, Any] = {}
        if step.argument == "dtmf":
            extra["dtmf_max_tones_to_collect"] = options.get("tones") or 1
        self._connection().start_recognizing_media(
            RecognizeInputType.DTMF if step.argument == "dtmf" else RecognizeInputType.SPEECH,
            _identifier(self.party(options["from"])),
            initial_silence_timeout=round(options.get("silence") or 5),
            play_prompt=prompt,
            **extra,
        )

    def do_hang_up(self, step: Step) -> None:
        self._connection().hang_up(is_for_everyone=step.argument == "everyone")

    # what should have happened

    def do_expect(self, step: Step) -> None:
        kind = event_type(step.argument)
        where = self.expand_where(step.options.get("where") or {})
        within = step.options.get("within", DEFAULT_WITHIN)
        try:
            event = self.webhook.wait_for(kind, lambda e: _mismatches(e, where) == [], timeout=within)
        except AssertionError:
            raise StepFailed(*self._explain(kind, where, within)) from None
        if kind == event_type("IncomingCall"):
            self.incoming = event

    def do_expect_no(self, step: Step) -> None:
        kind = event_type(step.argument)
        where = self.expand_where(step.options.get("where") or {})
        within = step.options.get("within", DEFAULT_WATCH)
        try:
            event = self.webhook.wait_for(kind, lambda e: _mismatches(e, where) == [], timeout=within)
        except AssertionError:
            return
        raise StepFailed(f"a {_short(kind)} arrived, and none was expected:", _describe(event, where))

    def do_state(self, step: Step) -> None:
        server_call_id = self._server_call()
        within = step.options.get("within", DEFAULT_WITHIN)
        deadline = time.monotonic() + within
        while True:
            call = self.server.get_call(server_call_id)
            if call["state"] == step.argument:
                return
            if time.monotonic() >= deadline:
                timeline = [f"  {_timeline_entry(t)}" for t in call.get("timeline", [])][-8:]
                raise StepFailed(
                    f"the call did not become {step.argument} within {within:g} s",
                    [f"- state: {step.argument}", f"+ state: {call['state']}", *(["timeline:", *timeline])],
                )
            time.sleep(0.02)

    # the world around the call

    def do_fault(self, step: Step) -> None:
        options = dict(step.options)
        spec: dict[str, Any] = {"kind": step.argument}
        if step.argument == "delivery":
            spec["url"] = self.expand(options.pop("url", "$webhook"))
            if not options.get("timeout") and "status" not in options:
                spec["status"] = 500
        if "party" in options:
            spec["rawId"] = _raw_or_number(self.party(options.pop("party")), raw=True)
        spec.update({k: v for k, v in options.items() if k != "fails with"})
        self.faults.add(**spec)

    def do_advance(self, step: Step) -> None:
        self.server.advance(step.argument)

    # ------------------------------------------------------------------ helpers

    def expand(self, text: str) -> str:
        return _VARIABLE.sub(lambda m: self.variables[m.group(1)], text)

    def expand_where(self, where: dict[str, Any]) -> dict[str, Any]:
        def walk(value: Any) -> Any:
            if isinstance(value, str):
                return self.expand(value)
            if isinstance(value, list):
                return [walk(v) for v in value]
            if isinstance(value, dict):
                return {k: walk(v) for k, v in value.items()}
            return value

        return {path: walk(value) for path, value in where.items()}

    def party(self, text: str) -> str:
        return self.expand(text)

    def _incoming_context(self) -> str:
        if self.incoming is None:
            raise StepFailed("there is no IncomingCall to act on: add `- expect: IncomingCall` before this step")
        context: str = self.incoming["data"]["incomingCallContext"]
        return context

    def _connection(self) -> Any:
        if self.connection_id is None:
            raise StepFailed("the app is in no call: `answer` or `create call` first")
        return self.automation.get_call_connection(self.connection_id)

    def _server_call(self) -> str:
        if self.server_call_id is None:
            raise StepFailed("no call was placed: `call` first")
        return self.server_call_id

    def _explain(self, kind: str, where: dict[str, Any], within: float) -> tuple[str, list[str]]:
        """Why an `expect` failed: the closest event of the type, field by field, and what came instead."""
        everything = self.webhook.all_events()
        same = [e for e in everything if _type_of(e) == kind]
        received = ", ".join(_short(_type_of(e) or "?") for e in everything) or "nothing"
        if not same:
            return f"no {_short(kind)} arrived within {within:g} s", [f"received: {received}"]
        closest = min(reversed(same), key=lambda e: len(_mismatches(e, where)))
        if not _mismatches(closest, where):
            return (
                f"no new {_short(kind)} arrived within {within:g} s (every matching one was expected by an "
                "earlier step)",
                [f"received: {received}"],
            )
        diff = _describe(closest, where)
        return (
            f"no {_short(kind)} matching arrived within {within:g} s; the closest of {len(same)} seen "
            "(- expected, + seen):",
            [*diff, f"received: {received}"],
        )


# ---------------------------------------------------------------------- matching


def lookup(event: dict[str, Any], path: str) -> Any:
    """A dotted path into the event's data (`to.phoneNumber.value`, `participants.0.rawId`); `_MISSING`
    if it is not there."""
    value: Any = event.get("data", {})
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def holds(predicate: Any, seen: Any) -> bool:
    """Whether a `where` entry's test holds for a seen value."""
    if isinstance(predicate, dict) and len(predicate) == 1:
        ((operator, operand),) = predicate.items()
        if operator == "exists":
            return bool((seen is not _MISSING) == bool(operand))
        if seen is _MISSING:
            return bool(operator == "not")
        text = seen if isinstance(seen, str) else str(seen)
        checks: dict[str, Callable[[], bool]] = {
            "equals": lambda: _equal(operand, seen),
            "not": lambda: not _equal(operand, seen),
            "startsWith": lambda: text.startswith(str(operand)),
            "endsWith": lambda: text.endswith(str(operand)),
            "contains": lambda: (operand in seen) if isinstance(seen, list) else str(operand) in text,
            "matches": lambda: re.search(str(operand), text) is not None,
            "oneOf": lambda: any(_equal(o, seen) for o in operand),
        }
        if operator in checks:
            return checks[operator]()
    return seen is not _MISSING and _equal(predicate, seen)


def _equal(expected: Any, seen: Any) -> bool:
    if expected == seen:
        return True
    # `code: 200` against "200", or the other way round: YAML and JSON disagree on scalars, readers do not.
    scalars = (str, int, float, bool)
    return isinstance(expected, scalars) and isinstance(seen, scalars) and str(expected) == str(seen)


def _mismatches(event: dict[str, Any], where: dict[str, Any]) -> list[str]:
    return [path for path, predicate in where.items() if not holds(predicate, lookup(event, path))]


def _describe(event: dict[str, Any], where: dict[str, Any]) -> list[str]:
    lines = []
    for path, predicate in where.items():
        seen = lookup(event, path)
        shown = "(missing)" if seen is _MISSING else _repr(seen)
        if holds(predicate, seen):
            lines.append(f"  {path}: {shown}")
        else:
            lines.append(f"- {path}: {_show_predicate(predicate)}")
            lines.append(f"+ {path}: {shown}")
    return lines


def _show_predicate(predicate: Any) -> str:
    if isinstance(predicate, dict) and len(predicate) == 1:
        ((operator, operand),) = predicate.items()
        return _repr(operand) if operator == "equals" else f"{operator} {_repr(operand)}"
    return _repr(predicate)


def _repr(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _type_of(event: dict[str, Any]) -> str | None:
    kind = event.get("eventType", event.get("type"))
    return kind if isinstance(kind, str) else None


def _short(kind: str) -> str:
    return kind.removeprefix("Microsoft.Communication.")


def _timeline_entry(entry: Any) -> str:
    if isinstance(entry, dict):
        return " ".join(f"{k}={v}" for k, v in entry.items())
    return str(entry)


# ---------------------------------------------------------------------- identifiers and errors


def _raw_or_number(party: str, *, raw: bool = False) -> str:
    """`+1425...` → itself (or `4:+1425...` with `raw`); a raw id is kept."""
    if party.startswith("+"):
        return "4:" + party if raw else party
    return party


def _identifier(party: str) -> Any:
    from azure.communication.callautomation import CommunicationUserIdentifier, PhoneNumberIdentifier

    if party.startswith(("+", "4:")):
        return PhoneNumberIdentifier(party.removeprefix("4:"))
    return CommunicationUserIdentifier(party)


def _acs_error(exc: Exception) -> str | None:
    """`8523/400` for an SDK error answered by the service (the ACS code and the HTTP status), else None."""
    from azure.core.exceptions import HttpResponseError

    if not isinstance(exc, HttpResponseError):
        return None
    code = getattr(exc.error, "code", None) if exc.error is not None else None
    status = exc.status_code
    return "/".join(str(p) for p in (code, status) if p)


def _first_line(exc: Exception) -> str:
    message = str(getattr(exc, "message", None) or exc)
    return message.strip().splitlines()[0] if message.strip() else type(exc).__name__
