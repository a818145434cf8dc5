"""Request authentication: HMAC or an Entra ID-shaped bearer token for ACS and callgrid routes, bearer tokens
for ARM routes.

Every resource shares the endpoint, so the key a request is signed with (or the resource a bearer token was
issued for) says which resource it is for (platform/resource.py): the signed handler finds it and leaves it
in `request.state.resource`.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from urllib.parse import quote

import jwt
from starlette.requests import Request
from starlette.responses import Response

from callgrid.api.body import ACS_BODY_LIMIT, AUDIO_BODY_LIMIT, close_if_unread, read_body
from callgrid.api.errors import error_response
from callgrid.clock import to_datetime
from callgrid.errors import Forbidden
from callgrid.node import Node
from callgrid.platform.resource import CommunicationResource
from callgrid.security import HmacAuthError, TokenError, check_headers, verify_arm_token, verify_entra_token
from callgrid.security.hmac_auth import verify_signature_with_any, x_ms_host_candidates

Handler = Callable[[Request], Awaitable[Response]]


def node_of(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


def resource_of(request: Request) -> CommunicationResource:
    """The resource whose key signed the request (or whose ARM token it carries). A way in that names no
    resource of its own (none today) acts as the default resource, as every request did before there
    were several."""
    resource: CommunicationResource | None = getattr(request.state, "resource", None)
    return resource if resource is not None else node_of(request).resource


def require_default_resource(request: Request, what: str) -> None:
    """Server-wide acts (reset, faults, managing resources) belong to whoever holds the default resource's
    key, the server's owner: another resource's key would reach into every resource's state."""
    resource = resource_of(request)
    if not resource.is_default:
        raise Forbidden(
            f"Only the default resource's key may {what}; this request is signed with the key of '{resource.name}'.",
            code="AuthorizationFailed",
        )


def raw_target(request: Request) -> str:
    """The request-target as the client sent it: HMAC signatures are over these exact bytes."""
    raw = request.scope.get("raw_path") or quote(request.scope["path"]).encode()
    target = raw.decode("latin-1")
    query = request.scope.get("query_string", b"")
    return f"{target}?{query.decode('latin-1')}" if query else target


def _denied(request: Request, exc: HmacAuthError | TokenError) -> Response:
    # The real service says only the first sentence; the second tells a developer what to fix.
    message = f"Denied by the resource provider. {exc}"
    return error_response(401, "Denied", message, headers=close_if_unread(request))


def verify_acs_bearer(node: Node, resource: CommunicationResource, token: str) -> None:
    """Accept `token` only if callgrid issued it (`callgrid token`) for `resource`'s data plane: RS256 by the
    token key, this server's issuer, the ACS audience, `resource` in its claims, and in date on the server's
    clock. Raise :class:`TokenError` otherwise."""
    verify_entra_token(
        node.keys.token_key.public_key(),
        token,
        issuer=node.settings.endpoint,
        resource_id=resource.immutable_id,
        now=to_datetime(node.wall_clock.now()),
    )


async def _token_resource(node: Node, token: str) -> CommunicationResource:
    """The resource a token names (its `resourceId` claim, read before the signature is checked: the check
    that follows is against that resource, so a forged claim gains nothing). A token naming no resource of
    this server is checked against the default one, whose check then says what is wrong with it."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return node.resource
    resource_id = str(claims.get("resourceId", ""))
    if resource_id and resource_id != node.resource.immutable_id:
        await node.sync_resources()  # made or deleted on another node?
    named = node.resources.by_immutable_id(resource_id)
    return named if named is not None else node.resource


def _bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def hmac_signed(handler: Handler) -> Handler:
    """The signature's headers are checked before the body is read; the body is hashed as it streams in, up
    to the ACS routes' limit (api/body.py), then the hash and the signature are checked.

    Every ACS client also takes a TokenCredential and then sends `Authorization: Bearer <token>` instead:
    such a request is checked by `verify_acs_bearer` before its body is read."""
    return _signed(handler, ACS_BODY_LIMIT)


def hmac_signed_audio(handler: Handler) -> Handler:
    """`hmac_signed` for a route whose body carries audio (api/body.py's AUDIO_BODY_LIMIT)."""
    return _signed(handler, AUDIO_BODY_LIMIT)


def _signed(handler: Handler, limit: int) -> Handler:
    @functools.wraps(handler)
    async def wrapper(request: Request) -> Response:
        node = node_of(request)
        token = _bearer_token(request)
        if token is not None:
            try:
                if not token:
                    raise TokenError("the Authorization header has no token after 'Bearer'")
                resource = await _token_resource(node, token)
                verify_acs_bearer(node, resource, token)
            except TokenError as exc:
                return _denied(request, TokenError(f"The bearer token is refused: {exc}."))
            await read_body(request, limit)
            request.state.resource = resource
            return await handler(request)
        try:
            signed = check_headers(
                request.headers,
                now=to_datetime(node.wall_clock.now()),
                max_skew=timedelta(seconds=node.settings.max_clock_skew_seconds),
            )
        except HmacAuthError as exc:
            return _denied(request, exc)
        digest = hashlib.sha256()
        await read_body(request, limit, on_chunk=digest.update)

        def verify() -> CommunicationResource:
            candidates = node.resources.candidates()
            index = verify_signature_with_any(
                signed,
                method=request.method,
                raw_target=raw_target(request),
                host=request.headers.get("host", ""),
                body_digest=digest.digest(),
                access_keys=[key for _, key in candidates],
                signed_for=x_ms_host_candidates(request.headers.get("x-ms-host"), request.headers.get("host", "")),
            )
            return candidates[index][0]

        try:
            synced = False
            try:
                resource = verify()
            except HmacAuthError:
                # A key made on another node since this one last read the resources?
                if not await node.sync_resources():
                    raise
                synced = True
                resource = verify()
            # The default resource's keys never change; another's may have been regenerated or deleted
            # on another node: checked against the store's version (nothing to do on a store of its own).
            if not resource.is_default and not synced and await node.sync_resources():
                resource = verify()
        except HmacAuthError as exc:
            return _denied(request, exc)
        request.state.resource = resource
        return await handler(request)

    return wrapper


def arm_bearer(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def wrapper(request: Request) -> Response:
        node = node_of(request)
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        close = close_if_unread(request)
        if scheme.lower() != "bearer" or not token:
            return error_response(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing: send "
                "'Authorization: Bearer <token>' with the token `callgrid env` prints as CALLGRID_ARM_TOKEN.",
                headers=close,
            )
        try:
            claims = verify_arm_token(
                node.keys.token_key.public_key(), token.strip(), now=to_datetime(node.wall_clock.now())
            )
        except TokenError as exc:
            return error_response(
                401, "InvalidAuthenticationToken", f"The access token is invalid: {exc}", headers=close
            )
        # The token's principal is one resource's owner (api/arm.py keeps it to that resource's parts).
        subject = str(claims.get("sub", ""))
        if subject != node.resource.arm_subject:
            await node.sync_resources()  # made or deleted on another node?
        principal = node.resources.by_arm_subject(subject)
        if principal is None:
            return error_response(
                401,
                "InvalidAuthenticationToken",
                "The access token is invalid: its principal is unknown here (was its resource deleted?).",
                headers=close,
            )
        request.state.resource = principal
        return await handler(request)

    return wrapper
