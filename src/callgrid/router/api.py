"""The router's management API: assignments, rules, block list, the decision log.

Authenticated with the router's API key (`Authorization: Bearer <key>`), generated once into the
router's store (`callgrid router info` shows it) or set with CALLGRID_ROUTER_API_KEY.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from callgrid.router import identifiers
from callgrid.router.assignments import import_csv, make_assignment
from callgrid.router.identifiers import InvalidValue
from callgrid.router.models import Rules, Unassigned
from callgrid.router.web import MAX_BODY, BadRequest, error, read_json, same, state_of

Handler = Callable[[Request], Awaitable[Response]]


def api_key(handler: Handler) -> Handler:
    @wraps(handler)
    async def checked(request: Request) -> Response:
        header = request.headers.get("authorization", "")
        given = header[7:].strip() if header.lower().startswith("bearer ") else None
        if not same(given, state_of(request).api_key):
            return error(401, "Unauthorized", "send the router's API key as 'Authorization: Bearer <key>'.")
        try:
            return await handler(request)
        except InvalidValue as exc:
            return error(400, "InvalidValue", str(exc))
        except BadRequest as exc:
            return error(exc.status, exc.code, exc.message)

    return checked


async def _object(request: Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest(400, "BadRequest", "the body must be a JSON object.")
    return body


def _text(body: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise BadRequest(400, "BadRequest", f"'{name}' must be a string.")
    return value


def _limit(request: Request, default: int = 100) -> int:
    try:
        return max(1, min(int(request.query_params.get("limit", default)), 5000))
    except ValueError:
        raise BadRequest(400, "BadRequest", "limit must be an integer.") from None


@api_key
async def list_assignments(request: Request) -> Response:
    store = state_of(request).store
    limit = _limit(request, 1000)
    page = store.assignments(after=request.query_params.get("after", ""), limit=limit)
    body: dict[str, Any] = {"value": [a.view() for a in page], "count": store.count_assignments()}
    if len(page) == limit:
        body["nextAfter"] = page[-1].phone_number
    return JSONResponse(body)


@api_key
async def get_assignment(request: Request) -> Response:
    number = identifiers.phone_number(request.path_params["phoneNumber"])
    found = state_of(request).store.assignment(number)
    if found is None:
        return error(404, "NotFound", f"{number} is not assigned.")
    return JSONResponse(found.view())


@api_key
async def put_assignment(request: Request) -> Response:
    body = await _object(request)
    a = make_assignment(
        request.path_params["phoneNumber"], _text(body, "identity") or "", _text(body, "displayName", required=False)
    )
    created = state_of(request).store.assign(a)
    return JSONResponse(a.view(), status_code=201 if created else 200)


@api_key
async def delete_assignment(request: Request) -> Response:
    number = identifiers.phone_number(request.path_params["phoneNumber"])
    if not state_of(request).store.unassign(number):
        return error(404, "NotFound", f"{number} is not assigned.")
    return Response(status_code=204)


@api_key
async def import_assignments(request: Request) -> Response:
    mode = request.query_params.get("mode", "all-or-nothing")
    if mode not in ("all-or-nothing", "skip-bad"):
        return error(400, "BadRequest", "mode must be 'all-or-nothing' or 'skip-bad'.")
    raw = await request.body()
    if len(raw) > 64 * MAX_BODY:
        return error(413, "PayloadTooLarge", "the CSV is larger than 64 MiB; split it.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return error(400, "BadRequest", "the CSV is not UTF-8.")
    report = import_csv(state_of(request).store, text, all_or_nothing=mode == "all-or-nothing")
    if report.errors and not report.applied:
        return error(
            400, "InvalidRows", f"{len(report.errors)} bad row(s); nothing was imported.", report=report.view()
        )
    return JSONResponse(report.view())


@api_key
async def get_rules(request: Request) -> Response:
    return JSONResponse(state_of(request).store.rules().view())


@api_key
async def put_rules(request: Request) -> Response:
    body = await _object(request)
    current = state_of(request).store.rules()
    unassigned = current.unassigned
    if "unassigned" in body:
        try:
            unassigned = Unassigned(body["unassigned"])
        except ValueError:
            choices = ", ".join(u.value for u in Unassigned)
            return error(400, "InvalidValue", f"unassigned must be one of {choices}.")
    fallback = current.fallback
    if "fallback" in body:
        raw = _text(body, "fallback", required=False)
        fallback = identifiers.target(raw) if raw else None
    if unassigned is Unassigned.FALLBACK and not fallback:
        return error(400, "InvalidValue", "unassigned 'fallback' needs a fallback target.")
    rules = Rules(unassigned=unassigned, fallback=fallback)
    state_of(request).store.set_rules(rules)
    return JSONResponse(rules.view())


@api_key
async def list_blocked(request: Request) -> Response:
    return JSONResponse({"value": [{"caller": c, "note": n} for c, n in state_of(request).store.blocked()]})


@api_key
async def put_blocked(request: Request) -> Response:
    caller = identifiers.caller(request.path_params["caller"])
    raw = await request.body()
    note = None
    if raw:
        note = _text(await _object(request), "note", required=False)
    created = state_of(request).store.block(caller, note)
    return JSONResponse({"caller": caller, "note": note}, status_code=201 if created else 200)


@api_key
async def delete_blocked(request: Request) -> Response:
    caller = identifiers.caller(request.path_params["caller"])
    if not state_of(request).store.unblock(caller):
        return error(404, "NotFound", f"{caller} is not blocked.")
    return Response(status_code=204)


@api_key
async def list_decisions(request: Request) -> Response:
    q = request.query_params
    rows = state_of(request).store.decisions(
        limit=_limit(request, 50), event_id=q.get("eventId"), server_call_id=q.get("serverCallId")
    )
    return JSONResponse({"value": [d.view() for d in rows]})


@api_key
async def list_callbacks(request: Request) -> Response:
    return JSONResponse({"value": state_of(request).store.callbacks(_limit(request, 50))})
