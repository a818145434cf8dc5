"""ACS Identity API routes (what `CommunicationIdentityClient` calls)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from callgrid.api.auth import hmac_signed, node_of, resource_of
from callgrid.api.errors import field, read_object, string_list
from callgrid.api.responses import JSONResponse


@hmac_signed
async def create_identity(request: Request) -> Response:
    node = node_of(request)
    body = await read_object(request, allow_empty=True)
    scopes = string_list(body, "createTokenWithScopes", required=False, code="ValidationError")
    minutes = field(body, "expiresInMinutes", int, required=False)
    async with node.store.transaction() as tx:
        user_id = await node.identities.create_user(tx, resource_of(request))
        result: dict[str, object] = {"identity": {"id": user_id}}
        if scopes is not None:
            token = await node.identities.issue_token(tx, resource_of(request), user_id, scopes, minutes)
            result["accessToken"] = {"token": token.token, "expiresOn": token.expires_on}
    return JSONResponse(result, status_code=201)


@hmac_signed
async def delete_identity(request: Request) -> Response:
    node = node_of(request)
    async with node.store.transaction() as tx:
        await node.identities.delete_user(tx, resource_of(request), request.path_params["id"])
    return Response(status_code=204)


@hmac_signed
async def issue_access_token(request: Request) -> Response:
    node = node_of(request)
    body = await read_object(request)
    scopes = string_list(body, "scopes", code="ValidationError")
    minutes = field(body, "expiresInMinutes", int, required=False)
    async with node.store.transaction() as tx:
        token = await node.identities.issue_token(tx, resource_of(request), request.path_params["id"], scopes, minutes)
    return JSONResponse({"token": token.token, "expiresOn": token.expires_on})


@hmac_signed
async def revoke_access_tokens(request: Request) -> Response:
    node = node_of(request)
    async with node.store.transaction() as tx:
        await node.identities.revoke_tokens(tx, resource_of(request), request.path_params["id"])
    return Response(status_code=204)


routes = [
    Route("/identities", create_identity, methods=["POST"]),
    # The SDK's action paths have an odd "/:" (acs-wire.md 2).
    Route("/identities/{id}/:issueAccessToken", issue_access_token, methods=["POST"]),
    Route("/identities/{id}/:revokeAccessTokens", revoke_access_tokens, methods=["POST"]),
    Route("/identities/{id}", delete_identity, methods=["DELETE"]),
]
