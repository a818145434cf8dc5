"""The router's Call Automation client: the official SDK's, built once, with only the policies its calls need.

The SDK's default pipeline runs thirteen policies around every request; for the router's two calls
(redirect and reject, each with a repeatability id and a bounded timeout) most of them do nothing but cost:
proxy, redirects, custom hooks, two logging policies that log nothing at the router's log level,
distributed tracing with no tracer installed, and a client request id generated from the clock (uuid1) that
nobody reads. What is kept is what changes the wire or the outcome: retries (safe: every call carries a
Repeatability-Request-ID, so a retried redirect is the same request to ACS), the SDK's own HMAC signing,
once per try, and the response decoder the SDK's error handling reads ACS's error code and message from.
"""

from __future__ import annotations

from typing import Any

from azure.communication.callautomation import __version__ as SDK_VERSION
from azure.communication.callautomation._shared.auth_policy_utils import get_authentication_policy
from azure.communication.callautomation.aio import CallAutomationClient
from azure.core.credentials import AzureKeyCredential
from azure.core.pipeline.policies import AsyncRetryPolicy, ContentDecodePolicy
from azure.core.pipeline.transport import AsyncHttpTransport

from callgrid.router.config import access_key_of, endpoint_of

# Sent with every call instead of the SDK's UserAgentPolicy (which rebuilds the header per request).
USER_AGENT = f"callgrid-router azsdk-python-communication-callautomation/{SDK_VERSION}"


def lean_client(connection_string: str, transport: AsyncHttpTransport[Any, Any]) -> CallAutomationClient:
    """The SDK's async client on `transport`, with a pipeline of retry, HMAC signing and response decoding."""
    endpoint = endpoint_of(connection_string)
    credential = AzureKeyCredential(access_key_of(connection_string))
    policies = [
        ContentDecodePolicy(),
        AsyncRetryPolicy(),
        # The function the client's own constructor signs with: the signature is the SDK's, per try.
        get_authentication_policy(endpoint, credential, is_async=True),
    ]
    return CallAutomationClient(endpoint, credential, policies=policies, transport=transport)
