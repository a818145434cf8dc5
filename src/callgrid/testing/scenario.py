"""Scenario files: a call story in YAML, read and checked before anything runs.

    name: A customer calls the support line; the app answers
    given:
      numbers: ["+14255550100"]
      users: [agent]
    steps:
      - call: "+14255550100"
        from: "+12065550123"
      - expect: IncomingCall
        where:
          to.phoneNumber.value: "+14255550100"
      - answer:
      - expect: CallConnected

Each step is a mapping whose first key is the action and its value the action's main argument; the
other keys are the action's options. `$name` stands for a user of `given.users` (its raw id), `$webhook`
for the scenario's webhook URL. Everything wrong with a file is reported at once, each error with its
file:line, as `ScenarioError`. The format's reference is docs/testing.md; `ACTIONS` below is its source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SUFFIX = ".scenario.yaml"

# Short event names resolve to their full types; any full type (with a dot) is taken as it is.
EVENT_PREFIX = "Microsoft.Communication."

DEVICE_BEHAVIOURS = ("ring", "answer", "decline", "busy")
FAULT_KINDS = ("delivery", "device", "operation")
REJECT_REASONS = ("none", "busy", "forbidden")
CALL_STATES = ("ringing", "connecting", "connected", "disconnected")
OPERATORS = ("equals", "not", "startsWith", "endsWith", "contains", "matches", "oneOf", "exists")

# Built-in variables besides the users of `given.users`.
BUILTINS = ("webhook", "callbacks")

_VARIABLE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PHONE = re.compile(r"^\+[0-9]{6,15}$")
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)?\s*$")


@dataclass(frozen=True)
class Option:
    """One option of an action: its kind of value, and whether a step must give it."""

    kind: str  # party | text | duration | int | bool | choice | where | event
    required: bool = False
    choices: tuple[str, ...] = ()
    help: str = ""


@dataclass(frozen=True)
class Action:
    """An action: what its main argument is, and the options it takes."""

    argument: Option
    options: dict[str, Option] = field(default_factory=dict)
    help: str = ""
    sdk: bool = False  # a Call Automation operation: it takes `fails with`


_FAILS_WITH = Option("text", help="the ACS error code (or HTTP status) the operation is expected to fail with")

ACTIONS: dict[str, Action] = {
    # the caller's side, through callgrid's simulator
    "call": Action(
        Option("party", required=True, help="who is dialled: a phone number or $user"),
        {
            "from": Option("party", required=True, help="who dials: a phone number or $user"),
            "name": Option("text", help="the caller's display name"),
        },
        help="a caller places a call (callgrid's simulator)",
    ),
    "press": Action(
        Option("text", required=True, help="DTMF keys, e.g. 1#"),
        {"by": Option("party", required=True, help="the party who presses them")},
        help="a party of the placed call presses keys",
    ),
    "say": Action(
        Option("text", required=True, help="what is said"),
        {"by": Option("party", required=True, help="the party who speaks")},
        help="a party of the placed call speaks (synthesised speech)",
    ),
    "leave": Action(
        Option("party", required=True, help="the party who hangs up"),
        help="a party of the placed call hangs up",
    ),
    "device": Action(
        Option("party", required=True, help="whose device"),
        {
            "does": Option("choice", required=True, choices=DEVICE_BEHAVIOURS, help="what it does when it rings"),
            "after": Option("duration", help="how long it rings before answering"),
        },
        help="script how a user's or number's simulated device acts on an incoming call",
    ),
    # the app's side, through the official Call Automation SDK
    "create call": Action(
        Option("party", required=True, help="whom the app calls"),
        {"from": Option("party", help="the caller id: an owned number (required to call a number)")},
        help="the app places a call (create_call)",
        sdk=True,
    ),
    "answer": Action(
        Option("text", help="nothing, or an operation context"),
        help="the app answers the last IncomingCall (answer_call)",
        sdk=True,
    ),
    "reject": Action(
        Option("choice", choices=REJECT_REASONS, help="the reason"),
        help="the app rejects the last IncomingCall (reject_call)",
        sdk=True,
    ),
    "redirect": Action(
        Option("party", required=True, help="the new target"),
        help="the app redirects the last IncomingCall (redirect_call)",
        sdk=True,
    ),
    "add participant": Action(
        Option("party", required=True, help="whom to invite"),
        {"from": Option("party", help="the caller id shown to a phone: an owned number")},
        help="the app invites someone into its answered call (add_participant)",
        sdk=True,
    ),
    "transfer": Action(
        Option("party", required=True, help="the transfer target"),
        help="the app transfers the other party of its answered call (transfer_call_to_participant)",
        sdk=True,
    ),
    "play": Action(
        Option("text", required=True, help="the text to speak"),
        {"to": Option("party", help="one party only (default: everyone)")},
        help="the app plays a text prompt in its answered call (play_media)",
        sdk=True,
    ),
    "recognize": Action(
        Option("choice", required=True, choices=("dtmf", "speech"), help="what to listen for"),
        {
            "from": Option("party", required=True, help="whom to listen to"),
            "tones": Option("int", help="how many DTMF keys to collect (default 1)"),
            "prompt": Option("text", help="a text prompt played first"),
            "silence": Option("duration", help="how long to wait for input before failing (default 5s)"),
        },
        help="the app listens for keys or speech (start_recognizing_media)",
        sdk=True,
    ),
    "hang up": Action(
        Option("choice", choices=("everyone",), help="nothing (the app leaves), or everyone (ends the call)"),
        help="the app hangs up its answered call (hang_up)",
        sdk=True,
    ),
    # what should have happened
    "expect": Action(
        Option("event", required=True, help="an event or callback type: IncomingCall, CallConnected, ..."),
        {
            "where": Option("where", help="fields of the event's data and what they must be"),
            "within": Option("duration", help="how long to wait, in real time (default 10s)"),
        },
        help="wait for the next event or callback of this type that matches",
    ),
    "expect no": Action(
        Option("event", required=True, help="an event or callback type"),
        {
            "where": Option("where", help="fields of the event's data"),
            "within": Option("duration", help="how long to watch, in real time (default 1s)"),
        },
        help="no event or callback of this type (matching `where`) arrives",
    ),
    "state": Action(
        Option("choice", required=True, choices=CALL_STATES, help="the state the placed call reaches"),
        {"within": Option("duration", help="how long to wait, in real time (default 10s)")},
        help="the call placed by `call` reaches this state",
    ),
    # the world around the call
    "fault": Action(
        Option("choice", required=True, choices=FAULT_KINDS, help="what fails"),
        {
            "url": Option("text", help="delivery: URLs starting with this (default: the scenario's webhook)"),
            "status": Option("int", help="delivery or operation: the HTTP status"),
            "timeout": Option("bool", help="delivery: no answer at all"),
            "party": Option("party", help="device: whose device"),
            "behaviour": Option("choice", choices=("busy", "unreachable"), help="device: busy or unreachable"),
            "operation": Option("text", help="operation: answerCall, redirectCall, play, ..."),
            "code": Option("text", help="operation: the ACS error code"),
            "count": Option("int", help="how many times it fails (default: until the scenario ends)"),
        },
        help="inject a fault (/callgrid/v1/faults); removed when the scenario ends",
    ),
    "advance": Action(
        Option("duration", required=True, help="how far: 30, 30s, 5m, 1h, 500ms"),
        help="move callgrid's virtual clock; everything due on the way happens, in order",
    ),
}

for _action in ACTIONS.values():
    if _action.sdk:
        _action.options["fails with"] = _FAILS_WITH

_NEEDS = {
    **dict.fromkeys(("answer", "reject", "redirect"), "offer"),
    **dict.fromkeys(("add participant", "transfer", "play", "recognize", "hang up"), "connection"),
    **dict.fromkeys(("press", "say", "leave", "state"), "call"),
}
_FAULT_NEEDS = {"delivery": (), "device": ("party", "behaviour"), "operation": ("operation",)}
_FAULT_TAKES = {
    "delivery": ("url", "status", "timeout", "count"),
    "device": ("party", "behaviour", "count"),
    "operation": ("operation", "status", "code", "count"),
}


class ScenarioError(Exception):
    """A scenario file that cannot run: every problem found, each as `file:line: message`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class Step:
    """One step: `action` with its `argument` and `options`; `line` is where it starts in its file."""

    action: str
    argument: Any
    options: dict[str, Any]
    line: int

    def describe(self) -> str:
        """The step as a reader would say it: `expect IncomingCall where to.rawId = $agent`."""
        parts = [self.action]
        if self.argument is not None:
            parts.append(_show(self.argument))
        for name, value in self.options.items():
            if name == "where":
                parts.append("where " + ", ".join(f"{k} {_show_predicate(v)}" for k, v in value.items()))
            else:
                parts.append(f"{name} {_show(value)}")
        return " ".join(parts)


@dataclass
class Subscription:
    events: list[str]
    to: list[str]
    schema: str


@dataclass
class Scenario:
    name: str
    path: Path
    description: str
    users: list[str]
    numbers: list[str]
    subscription: Subscription
    steps: list[Step]


def event_type(name: str) -> str:
    """`IncomingCall` → `Microsoft.Communication.IncomingCall`; a dotted type is kept as given."""
    return name if "." in name else EVENT_PREFIX + name


def parse_duration(value: Any) -> float | None:
    """30, 2.5, "30s", "5m", "1h", "500ms" → seconds; None if it is not a duration."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value >= 0 else None
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2) or "s"]
    return None


def load(path: Path | str) -> Scenario:
    """Read and check a scenario file; raises ScenarioError with every problem and its line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    return loads(text, path)


def loads(text: str, path: Path | str = "<scenario>") -> Scenario:
    return _Reader(Path(path)).read(text)


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[str] = []
        self.variables: set[str] = set(BUILTINS)

    def problem(self, node: yaml.Node | None, message: str) -> None:
        where = f"{self.path}:{node.start_mark.line + 1}" if node is not None else str(self.path)
        self.problems.append(f"{where}: {message}")

    def read(self, text: str) -> Scenario:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = f":{mark.line + 1}" if mark is not None else ""
            raise ScenarioError([f"{self.path}{line}: not valid YAML: {exc.problem or exc}"]) from None
        if not isinstance(root, yaml.MappingNode):
            raise ScenarioError([f"{self.path}: a scenario is a mapping with `name`, `given` and `steps`"])
        top = self.mapping(root, ("name", "description", "given", "steps"), "the scenario")
        name = self.text(top.get("name"), "name") if "name" in top else self.path.name.removesuffix(SUFFIX)
        if "name" not in top:
            self.problem(root, "`name` is missing: say in one line what happens")
        description = self.text(top["description"], "description") if "description" in top else ""
        users, numbers, subscription = self.given(top.get("given"))
        steps = self.steps(top.get("steps"), root)
        self.check_order(steps)
        if self.problems:
            raise ScenarioError(self.problems)
        return Scenario(name, self.path, description, users, numbers, subscription, steps)

    # ------------------------------------------------------------------ sections

    def given(self, node: yaml.Node | None) -> tuple[list[str], list[str], Subscription]:
        subscription = Subscription([event_type("IncomingCall")], [], "EventGridSchema")
        if node is None:
            return [], [], subscription
        given = self.mapping(node, ("users", "numbers", "subscription"), "`given`")
        users = [u for u in self.texts(given.get("users"), "`given.users`") if self.user_name(given["users"], u)]
        self.variables.update(users)
        numbers = self.texts(given.get("numbers"), "`given.numbers`")
        for number in numbers:
            if not _PHONE.match(number):
                self.problem(given["numbers"], f"`{number}` is not a phone number in E.164 form (+14255550100)")
        if "subscription" in given:
            sub = self.mapping(given["subscription"], ("events", "to", "schema"), "`given.subscription`")
            events = self.texts(sub.get("events"), "`subscription.events`") or ["IncomingCall"]
            to = [self.party_text(sub["to"], t) for t in self.texts(sub.get("to"), "`subscription.to`")]
            schema = self.text(sub["schema"], "schema") if "schema" in sub else "EventGrid"
            schemas = {"EventGrid": "EventGridSchema", "CloudEvents": "CloudEventSchemaV1_0"}
            if schema not in schemas:
                self.problem(sub["schema"], f"`schema` is EventGrid or CloudEvents, not `{schema}`")
            subscription = Subscription([event_type(e) for e in events], to, schemas.get(schema, "EventGridSchema"))
        return users, numbers, subscription

    def user_name(self, node: yaml.Node, name: str) -> bool:
        if not _NAME.match(name) or name in BUILTINS:
            self.problem(node, f"`{name}` cannot name a user: use letters, digits and _ (not {', '.join(BUILTINS)})")
            return False
        return True

    def steps(self, node: yaml.Node | None, root: yaml.Node) -> list[Step]:
        if node is None:
            self.problem(root, "`steps` is missing: a list of steps, each `- action: argument`")
            return []
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            self.problem(node, "`steps` is a list of steps, each `- action: argument`")
            return []
        return [s for s in (self.step(item) for item in node.value) if s is not None]

    def step(self, node: yaml.Node) -> Step | None:
        if not isinstance(node, yaml.MappingNode) or not node.value:
            self.problem(node, "a step is `- action: argument` with its options below it")
            return None
        (key_node, value_node), *rest = node.value
        action = self.scalar_text(key_node)
        if action not in ACTIONS:
            known = ", ".join(ACTIONS)
            hint = _closest(action, ACTIONS)
            self.problem(key_node, f"unknown action `{action}`{hint}; the actions are: {known}")
            return None
        spec = ACTIONS[action]
        argument = self.value(value_node, spec.argument, action, f"`{action}`")
        options: dict[str, Any] = {}
        for option_key, option_value in rest:
            name = self.scalar_text(option_key)
            if name in ACTIONS:
                self.problem(option_key, f"`{name}` is an action: start a new step with `- {name}:`")
                continue
            if name not in spec.options:
                takes = ", ".join(f"`{o}`" for o in spec.options) or "no options"
                self.problem(
                    option_key, f"`{action}` has no option `{name}`{_closest(name, spec.options)}; it takes {takes}"
                )
                continue
            options[name] = self.value(option_value, spec.options[name], action, f"`{name}`")
        for name, option in spec.options.items():
            if option.required and name not in options:
                self.problem(node, f"`{action}` needs `{name}:` ({option.help})")
        if action == "fault" and isinstance(argument, str):
            for name in _FAULT_NEEDS[argument]:
                if name not in options:
                    self.problem(node, f"a {argument} fault needs `{name}:`")
            for name in options:
                if name not in _FAULT_TAKES[argument]:
                    self.problem(
                        node, f"a {argument} fault takes no `{name}` (it takes {', '.join(_FAULT_TAKES[argument])})"
                    )
        return Step(action, argument, options, node.start_mark.line + 1)

    def check_order(self, steps: list[Step]) -> None:
        """Steps that act on something an earlier step must have brought: an offer, a connection, a call."""
        offered = connected = placed = False
        for step in steps:
            need = _NEEDS.get(step.action)
            if need == "offer" and not offered:
                self.problems.append(
                    f"{self.path}:{step.line}: `{step.action}` acts on an IncomingCall: "
                    "add `- expect: IncomingCall` before it"
                )
            elif need == "connection" and not connected:
                self.problems.append(
                    f"{self.path}:{step.line}: `{step.action}` needs the app in a call: "
                    "`answer` or `create call` before it"
                )
            elif need == "call" and not placed:
                self.problems.append(
                    f"{self.path}:{step.line}: `{step.action}` acts on a placed call: `call` or `create call` before it"
                )
            if step.action == "expect" and isinstance(step.argument, str):
                offered = offered or event_type(step.argument) == event_type("IncomingCall")
            connected = connected or step.action in ("answer", "create call")
            placed = placed or step.action in ("call", "create call")

    # ------------------------------------------------------------------ values

    def value(self, node: yaml.Node, option: Option, action: str, what: str) -> Any:
        plain = self.plain(node)
        if plain is None:
            if option.required:
                self.problem(node, f"{what} needs a value ({option.help})")
            return None
        if option.kind == "where":
            return self.where(node)
        if not isinstance(node, yaml.ScalarNode):
            self.problem(node, f"{what} is a single value ({option.help}), not a list or mapping")
            return None
        if option.kind == "duration":
            seconds = parse_duration(plain)
            if seconds is None:
                self.problem(node, f"{what}: `{node.value}` is not a duration (30, 30s, 5m, 1h, 500ms)")
            return seconds
        if option.kind == "int":
            if isinstance(plain, bool) or not isinstance(plain, int) or plain < 0:
                self.problem(node, f"{what}: `{node.value}` is not a whole number")
                return None
            return plain
        if option.kind == "bool":
            if not isinstance(plain, bool):
                self.problem(node, f"{what}: `{node.value}` is not true or false")
            return bool(plain)
        text = str(node.value)
        if option.kind == "choice" and text not in option.choices:
            self.problem(node, f"{what}: `{text}` is not one of {', '.join(option.choices)}")
            return None
        if option.kind == "party":
            return self.party_text(node, text)
        self.check_variables(node, text)
        return text

    def party_text(self, node: yaml.Node, text: str) -> str:
        """A phone number (+E.164), an identity's raw id (8:acs:..., 4:+1...), or $user."""
        self.check_variables(node, text)
        if not (text.startswith("$") or _PHONE.match(text) or ":" in text):
            self.problem(node, f"`{text}` is neither a phone number (+14255550100), a raw id nor a $user")
        return text

    def check_variables(self, node: yaml.Node, text: str) -> None:
        for name in _VARIABLE.findall(text):
            if name not in self.variables:
                known = ", ".join(f"${v}" for v in sorted(self.variables))
                self.problem(node, f"`${name}` is not defined: add it to `given.users` (defined: {known})")

    def where(self, node: yaml.Node) -> dict[str, Any]:
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, "`where` maps fields of the event's data to what they must be (to.rawId: $agent)")
            return {}
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            path = self.scalar_text(key_node)
            if isinstance(value_node, yaml.MappingNode):
                ops = self.mapping(value_node, OPERATORS, f"the test of `{path}`")
                if len(ops) != 1:
                    self.problem(value_node, f"the test of `{path}` is one of {', '.join(OPERATORS)}")
                    continue
                ((operator, operand_node),) = ops.items()
                operand = self.plain(operand_node)
                self.walk_variables(operand_node)
                if operator == "matches":
                    try:
                        re.compile(str(operand))
                    except re.error as exc:
                        self.problem(operand_node, f"`{operand}` is not a regular expression: {exc}")
                if operator == "oneOf" and not isinstance(operand, list):
                    self.problem(operand_node, "`oneOf` takes a list")
                if operator == "exists" and not isinstance(operand, bool):
                    self.problem(operand_node, "`exists` takes true or false")
                out[path] = {operator: operand}
            else:
                self.walk_variables(value_node)
                out[path] = self.plain(value_node)
        return out

    def walk_variables(self, node: yaml.Node) -> None:
        if isinstance(node, yaml.ScalarNode):
            self.check_variables(node, str(node.value))
        elif isinstance(node, yaml.SequenceNode):
            for child in node.value:
                self.walk_variables(child)
        elif isinstance(node, yaml.MappingNode):
            for _, child in node.value:
                self.walk_variables(child)

    def plain(self, node: yaml.Node) -> Any:
        """The node as plain Python; `+14255550100` stays a string (YAML 1.1 would make it a number)."""
        if isinstance(node, yaml.ScalarNode):
            if node.style is None and _PHONE.match(node.value):
                return node.value
            return _construct_scalar(node)
        if isinstance(node, yaml.SequenceNode):
            return [self.plain(child) for child in node.value]
        if isinstance(node, yaml.MappingNode):
            return {self.scalar_text(k): self.plain(v) for k, v in node.value}
        return None

    def mapping(self, node: yaml.Node, allowed: tuple[str, ...], what: str) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, f"{what} is a mapping ({', '.join(allowed)})")
            return {}
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = self.scalar_text(key_node)
            if key not in allowed:
                self.problem(key_node, f"{what} has no `{key}`{_closest(key, allowed)}; it has {', '.join(allowed)}")
            elif key in out:
                self.problem(key_node, f"`{key}` is given twice")
            else:
                out[key] = value_node
        return out

    def text(self, node: yaml.Node | None, what: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.value == "":
            self.problem(node, f"`{what}` is a line of text")
            return ""
        return str(node.value)

    def texts(self, node: yaml.Node | None, what: str) -> list[str]:
        if node is None:
            return []
        if isinstance(node, yaml.ScalarNode) and node.value:
            return [str(node.value)]
        if isinstance(node, yaml.SequenceNode) and all(isinstance(n, yaml.ScalarNode) for n in node.value):
            return [str(n.value) for n in node.value]
        self.problem(node, f"{what} is a list of values")
        return []

    def scalar_text(self, node: yaml.Node) -> str:
        if not isinstance(node, yaml.ScalarNode):
            self.problem(node, "a key must be a plain word")
            return ""
        return str(node.value)


def _construct_scalar(node: yaml.ScalarNode) -> Any:
    # PyYAML has no public "construct this node" function; a safe loader over an empty document does it.
    return yaml.SafeLoader("").construct_object(node, deep=True)


def _closest(word: str, choices: Any) -> str:
    import difflib

    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean `{match[0]}`?)" if match else ""


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}s"
    return str(value)


def _show_predicate(value: Any) -> str:
    if isinstance(value, dict) and len(value) == 1:
        ((operator, operand),) = value.items()
        return f"{operator} {operand!r}" if operator != "equals" else f"= {operand!r}"
    return f"= {value!r}"
