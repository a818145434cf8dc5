"""A real `callgrid serve` process on a free port, and what a test does with it: reset it, move its
clock, place calls, script devices, subscribe webhooks through ARM's own paths.

It only talks HTTP to the server, the way a user's app and the official SDKs do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

from callgrid.client import CallgridClient, CallgridHttpError
from callgrid.security import ensure_tls_material
from callgrid.testing.stores import new_test_schema, store_kind

INCOMING_CALL = "Microsoft.Communication.IncomingCall"
ARM_API = "api-version=2025-02-15"
EVENT_GRID_SCHEMA = "EventGridSchema"
CLOUD_EVENT_SCHEMA = "CloudEventSchemaV1_0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_tls_dir(directory: Path) -> Path:
    """A CA and server certificate for https://localhost; `ca-bundle.pem` is that CA plus certifi's roots."""
    ensure_tls_material(directory)
    return directory


@contextlib.contextmanager
def trusting(tls_dir: Path) -> Iterator[str]:
    """Make this process's HTTPS clients (requests, aiohttp, urllib) trust callgrid's CA while inside, as
    callgrid's banner tells users to; the previous settings come back on the way out.

    A bundle the process already trusted (SSL_CERT_FILE, REQUESTS_CA_BUNDLE) is kept, with the CA added.
    aiohttp reads SSL_CERT_FILE once, when imported: enter this before the SDKs' `.aio` clients are imported,
    or give them `connection_verify=<the bundle>` (the plugin's client fixtures do).
    """
    saved = {name: os.environ.get(name) for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")}
    bundle = tls_dir / "ca-bundle.pem"
    extra = [Path(p) for p in dict.fromkeys(v for v in saved.values() if v) if Path(p).is_file()]
    if extra:
        combined = tls_dir / "ca-bundle-combined.pem"
        combined.write_bytes(b"\n".join([bundle.read_bytes(), *(p.read_bytes() for p in extra)]))
        bundle = combined
    os.environ["SSL_CERT_FILE"] = os.environ["REQUESTS_CA_BUNDLE"] = str(bundle)
    try:
        yield str(bundle)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Clock:
    """The server's virtual clock, as a test moves it."""

    def __init__(self, server: CallgridServer) -> None:
        self._server = server

    def now(self) -> float:
        return float(self._server.client().request("GET", "/callgrid/v1/clock")["now"])

    def advance(self, seconds: float, *, patience: float | None = None) -> float:
        """Move the clock `seconds` ahead; everything due on the way happens at its own time, in order."""
        body: dict[str, Any] = {"seconds": seconds}
        if patience is not None:
            body["patienceSeconds"] = patience
        # A long advance over slow or silent webhooks takes real time: up to `patience` per attempt.
        client = self._server.client(timeout=600.0)
        return float(client.request("POST", "/callgrid/v1/clock:advance", body)["now"])


class FaultInjector:
    """Faults a test injects (`/callgrid/v1/faults`); `remove_all()` removes the ones it added."""

    def __init__(self, server: CallgridServer) -> None:
        self._server = server
        self._added: list[str] = []

    def add(self, **spec: Any) -> dict[str, Any]:
        fault: dict[str, Any] = self._server.client().request("POST", "/callgrid/v1/faults", spec)
        self._added.append(fault["id"])
        return fault

    def fail_deliveries(self, url: str, status: int = 500, *, count: int | None = None) -> dict[str, Any]:
        """Deliveries and callbacks to URLs starting with `url` get `status`, without reaching the app."""
        return self.add(kind="delivery", url=url, status=status, **_count(count))

    def time_out_deliveries(self, url: str, *, count: int | None = None) -> dict[str, Any]:
        """Deliveries to `url` get no answer: they time out when the clock passes the response time limit."""
        return self.add(kind="delivery", url=url, timeout=True, **_count(count))

    def device(self, raw_id: str, behaviour: str, *, count: int | None = None) -> dict[str, Any]:
        """`raw_id`'s device is "busy" or "unreachable", whatever its script says."""
        return self.add(kind="device", rawId=raw_id, behaviour=behaviour, **_count(count))

    def fail_operation(
        self,
        operation: str,
        status: int = 500,
        *,
        code: str | None = None,
        message: str | None = None,
        count: int | None = None,
    ) -> dict[str, Any]:
        """A Call Automation operation (answerCall, redirectCall, createCall, play, ...) fails with an ACS error."""
        extra = {k: v for k, v in {"code": code, "message": message}.items() if v is not None}
        return self.add(kind="operation", operation=operation, status=status, **extra, **_count(count))

    def list(self) -> list[dict[str, Any]]:
        value: list[dict[str, Any]] = self._server.client().request("GET", "/callgrid/v1/faults")["value"]
        return value

    def remove(self, fault_id: str) -> None:
        self._server.client().request("DELETE", f"/callgrid/v1/faults/{fault_id}")

    def remove_all(self) -> None:
        """Remove the faults this injector added (those already used up or removed are skipped)."""
        current = {f["id"] for f in self.list()}
        for fault_id in self._added:
            if fault_id in current:
                self.remove(fault_id)
        self._added.clear()


def _saved_store(data_dir: Path) -> str | None:
    try:
        saved = json.loads((data_dir / "server.json").read_text()).get("store")
    except (OSError, ValueError):
        return None
    return str(saved) if saved else None


def _count(count: int | None) -> dict[str, int]:
    return {} if count is None else {"count": count}


class CallgridServer:
    """`callgrid serve` in a subprocess, on a free port, with its state in `data_dir`."""

    def __init__(
        self,
        data_dir: Path,
        *,
        tls_dir: Path | None = None,
        clock: str = "virtual",
        ring_timeout: float | None = None,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        store: str | None = None,
    ) -> None:
        """`store`: the server's store URL; by default SQLite in `data_dir`, or, with
        CALLGRID_TEST_STORE=postgresql, a PostgreSQL schema of its own (dropped when the process exits)."""
        self.data_dir = data_dir
        if store is None and store_kind() == "postgresql" and "CALLGRID_STORE" not in (env or {}):
            # A data directory a server has used keeps its store (as `callgrid serve` reads it from server.json).
            store = _saved_store(data_dir) or new_test_schema()
        self.store = store
        self.port = free_port()
        self.clock_kind = clock
        self.ring_timeout = ring_timeout
        self.extra_args = extra_args or []
        self.server_env = env or {}  # extra CALLGRID_* settings for the server process
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "serve.log"
        self.env: dict[str, str] = {}
        self.clock = Clock(self)
        self.faults = FaultInjector(self)
        data_dir.mkdir(parents=True, exist_ok=True)
        if tls_dir is not None and not (data_dir / "tls").exists():
            # One CA for many servers: the test process trusts it once.
            shutil.copytree(tls_dir, data_dir / "tls")

    # ------------------------------------------------------------------ the process

    def start(self) -> CallgridServer:
        args = [
            sys.executable,
            "-m",
            "callgrid",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
            "--clock",
            self.clock_kind,
            "--log-level",
            "warning",
            *self._store_args(),
            *self.extra_args,
        ]
        if self.ring_timeout is not None:
            args += ["--ring-timeout", str(self.ring_timeout)]
        # `env` first: it creates the data directory's keys and store, which `serve` then loads; run side
        # by side, both could create them (two signing keys, or a migration applied twice).
        self._load_env()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.server_env},
        )
        try:
            self._wait_ready()
        except BaseException:
            # A server that came up too late must not outlive the test that gave up on it.
            self.stop(signal.SIGKILL)
            raise
        return self

    def _load_env(self) -> None:
        self.env = self._env_of(None)

    def _env_of(self, resource: str | None) -> dict[str, str]:
        """What `callgrid env [--resource NAME]` prints, as a dict."""
        args = [sys.executable, "-m", "callgrid", "env", "--data-dir", str(self.data_dir), "--port", str(self.port)]
        if resource is not None:
            args += ["--resource", resource]
        out = subprocess.run(
            [*args, *self._store_args()],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, **self.server_env},
        ).stdout
        env = {}
        for line in out.splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = shlex.split(value)[0] if value else ""
        return env

    def _wait_ready(self, timeout: float = 60.0) -> None:
        # Generous: a loaded CI machine takes tens of seconds to start two interpreters; a server that dies
        # is reported at once anyway.
        context = ssl.create_default_context(cafile=self.ca_bundle)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"callgrid exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/calling/keys", context=context, timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"callgrid did not start:\n{self.log_path.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self, *, hard: bool = False) -> CallgridServer:
        if hard:
            self.kill()
        else:
            self.stop()
        return self.start()

    def _store_args(self) -> list[str]:
        return [] if self.store is None else ["--store", self.store]

    def __enter__(self) -> CallgridServer:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ where it is, and its keys

    @property
    def endpoint(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def connection_string(self) -> str:
        return self.env["CALLGRID_CONNECTION_STRING"]

    @property
    def access_key(self) -> str:
        return self.env["CALLGRID_ACCESS_KEY"]

    @property
    def resource_id(self) -> str:
        return self.env["CALLGRID_RESOURCE_ID"]

    @property
    def arm_token(self) -> str:
        return self.env["CALLGRID_ARM_TOKEN"]

    @property
    def acs_token(self) -> str:
        """A bearer token for the ACS routes, for SDK clients built with a TokenCredential (README)."""
        return self.env["CALLGRID_ACS_TOKEN"]

    @property
    def ca_bundle(self) -> str:
        return self.env["REQUESTS_CA_BUNDLE"]

    def client(self, *, timeout: float = 30.0) -> CallgridClient:
        return CallgridClient(self.endpoint, self.access_key, Path(self.ca_bundle), timeout=timeout)

    # ------------------------------------------------------------------ what a test does

    def reset(self) -> None:
        """Forget calls, identities, numbers, subscriptions and deliveries; keys and the clock stay."""
        self.client().request("POST", "/callgrid/v1/reset")

    def advance(self, seconds: float, *, patience: float | None = None) -> float:
        return self.clock.advance(seconds, patience=patience)

    def create_resource(self, name: str, **options: str) -> CallgridResource:
        """Another Communication resource on this server (`callgrid resources create`): its own keys,
        identities, numbers and events, on the same endpoint. A reset deletes it."""
        self.client().request("POST", "/callgrid/v1/resources", {"name": name, **options})
        return self.resource(name)

    def resource(self, name: str) -> CallgridResource:
        """An existing resource of this server, with the variables `callgrid env --resource NAME` prints."""
        return CallgridResource(self, name, self._env_of(name))

    def delete_resource(self, name: str) -> None:
        self.client().request("DELETE", f"/callgrid/v1/resources/{urllib.parse.quote(name, safe='')}")

    def own_number(self, number: str) -> None:
        """Give the resource a phone number (idempotent)."""
        try:
            self.client().own_number(number)
        except CallgridHttpError as exc:
            if exc.status != 409:  # 409: owned already
                raise

    def place_call(self, from_: str, to: str, **extra: Any) -> dict[str, Any]:
        """A caller (a phone number or an identity's raw id) dials `to`; an owned number or a user raises
        IncomingCall. Returns the call (`serverCallId`, `state`, ...)."""
        if to.startswith("+"):
            self.own_number(to)
        placed: dict[str, Any] = self.client().request("POST", "/callgrid/v1/calls", {"from": from_, "to": to, **extra})
        return placed

    def get_call(self, server_call_id: str) -> dict[str, Any]:
        call: dict[str, Any] = self.client().request("GET", f"/callgrid/v1/calls/{server_call_id}")
        return call

    def wait_for_call(self, server_call_id: str, state: str, timeout: float = 10.0) -> dict[str, Any]:
        """The call once it is in `state` (ringing, connected, disconnected...), waiting up to `timeout` real
        seconds; on timeout, an AssertionError that says the state it was in and its timeline."""
        __tracebackhide__ = True
        deadline = time.monotonic() + timeout
        while True:
            call = self.get_call(server_call_id)
            if call["state"] == state:
                return call
            if time.monotonic() >= deadline:
                timeline = "\n".join(f"  {entry}" for entry in call.get("timeline", []))
                raise AssertionError(
                    f"call {server_call_id} is {call['state']}, not {state}, after {timeout:g} s; its timeline:\n"
                    f"{timeline or '  (empty)'}"
                )
            time.sleep(0.02)

    def set_device(
        self, raw_id: str, behaviour: str, *, answer_delay_ms: int = 0, connect_delay_ms: int = 0
    ) -> dict[str, Any]:
        """Script how an endpoint's device acts on an incoming call: "ring", "answer", "decline" or "busy"."""
        body = {"onIncomingCall": behaviour, "answerDelayMs": answer_delay_ms, "connectDelayMs": connect_delay_ms}
        device: dict[str, Any] = self.client().request(
            "PUT", "/callgrid/v1/endpoints/" + urllib.parse.quote(raw_id, safe=""), body
        )
        return device

    def subscribe(
        self,
        endpoint_url: str,
        *,
        name: str | None = None,
        event_types: Sequence[str] = (INCOMING_CALL,),
        to: Sequence[str] = (),
        advanced_filters: Sequence[dict[str, Any]] = (),
        subject_begins_with: str | None = None,
        schema: str | None = None,
        properties: dict[str, Any] | None = None,
        wait: bool = True,
    ) -> dict[str, Any]:
        """Subscribe a webhook to the resource's events, through ARM's path as the Azure CLI would.

        `to` narrows IncomingCall to calls for these numbers (+1425...) or identities (8:acs:...), the filter
        Azure's docs recommend. With `wait`, returns once the webhook's handshake has been answered.
        """
        __tracebackhide__ = True  # a failure points at the test's line, not at this helper's insides
        name = name or f"sub-{free_port()}"
        filter_: dict[str, Any] = {"includedEventTypes": list(event_types)}
        advanced = list(advanced_filters)
        numbers = [t for t in to if t.startswith("+")]
        identities = [t for t in to if not t.startswith("+")]
        if numbers:
            advanced.append({"operatorType": "StringIn", "key": "data.to.phoneNumber.value", "values": numbers})
        if identities:
            advanced.append({"operatorType": "StringIn", "key": "data.to.rawId", "values": identities})
        if advanced:
            filter_["advancedFilters"] = advanced
        if subject_begins_with is not None:
            filter_["subjectBeginsWith"] = subject_begins_with
        props: dict[str, Any] = {
            "destination": {"endpointType": "WebHook", "properties": {"endpointUrl": endpoint_url}},
            "filter": filter_,
        }
        if schema is not None:
            props["eventDeliverySchema"] = schema  # EVENT_GRID_SCHEMA (Azure's default) or CLOUD_EVENT_SCHEMA
        props.update(properties or {})
        doc: dict[str, Any] = self.client().arm(
            "PUT", self.subscription_path(name), {"properties": props}, token=self.arm_token
        )
        if not wait:
            return doc
        doc = self.wait_provisioned(name)
        if doc["properties"]["provisioningState"] != "Succeeded":
            raise AssertionError(
                f"subscription {name} is {doc['properties']['provisioningState']}: {endpoint_url} did not "
                "consent to the validation handshake"
            )
        return doc

    def subscription_path(self, name: str) -> str:
        return f"{self.resource_id}/providers/Microsoft.EventGrid/eventSubscriptions/{name}?{ARM_API}"

    def wait_provisioned(self, name: str, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            doc: dict[str, Any] = self.client().arm("GET", self.subscription_path(name), token=self.arm_token)
            state = doc["properties"]["provisioningState"]
            if state not in ("Creating", "Updating"):
                return doc
            if time.monotonic() > deadline:
                raise AssertionError(f"subscription {name} still {state} after {timeout:g} s")
            time.sleep(0.01)


class CallgridResource(CallgridServer):
    """Another Communication resource of a running server: the same process, endpoint and clock, its own keys
    and state. What a test does through it (`client()`, `subscribe()`, `place_call()`, `own_number()`, ...)
    it does as this resource; the process is the server's to start, stop and reset."""

    def __init__(self, server: CallgridServer, name: str, env: dict[str, str]) -> None:
        # No process of its own: the server's port, data dir, clock and faults, with this resource's variables.
        self.__dict__.update(server.__dict__)
        self.server = server
        self.name = name
        self.env = env

    @property
    def immutable_id(self) -> str:
        return self.env["CALLGRID_IMMUTABLE_RESOURCE_ID"]

    def start(self) -> CallgridServer:
        raise TypeError("a resource has no process of its own: start its server")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        raise TypeError("a resource has no process of its own: stop its server")


@contextlib.asynccontextmanager
async def running(data_dir: Path | None = None, *, trust: bool = True, **options: Any) -> AsyncIterator[CallgridServer]:
    """A callgrid server for the time of an `async with`, for runners other than pytest.

        async with callgrid.testing.running() as cg:
            client = CallAutomationClient.from_connection_string(cg.connection_string)

    Its state lives in `data_dir` (a temporary directory, removed afterwards, by default). With `trust`,
    this process trusts its CA inside the block (see `trusting`). `options` go to CallgridServer.
    """
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="callgrid-")))
        server = CallgridServer(data_dir, **options)
        await asyncio.to_thread(server.start)
        stack.callback(server.stop)
        if trust:
            stack.enter_context(trusting(Path(server.ca_bundle).parent))
        yield server
