"""Authentication and cryptography for callgrid: HMAC request signing, TLS material, signing keys,
JWTs and the sealed incomingCallContext. Pure functions and classes; no web framework here."""

from callgrid.security.call_context import (
    InvalidCallContext,
    decode_call_context,
    encode_call_context,
    new_secret,
)
from callgrid.security.hmac_auth import (
    HmacAuthError,
    SignedRequest,
    check_headers,
    content_hash,
    format_http_date,
    new_access_key,
    sign_request,
    verify_request,
    verify_signature,
)
from callgrid.security.keys import jwks, key_id, load_or_create_rsa_key, load_or_create_token
from callgrid.security.tls import TlsMaterial, ensure_tls_material
from callgrid.security.tokens import (
    TokenError,
    issue_acs_access_token,
    issue_arm_token,
    issue_entra_token,
    sign_callback_token,
    verify_acs_access_token,
    verify_arm_token,
    verify_entra_token,
)

__all__ = [
    "HmacAuthError",
    "InvalidCallContext",
    "SignedRequest",
    "TlsMaterial",
    "TokenError",
    "check_headers",
    "content_hash",
    "decode_call_context",
    "encode_call_context",
    "ensure_tls_material",
    "format_http_date",
    "issue_acs_access_token",
    "issue_arm_token",
    "issue_entra_token",
    "jwks",
    "key_id",
    "load_or_create_rsa_key",
    "load_or_create_token",
    "new_access_key",
    "new_secret",
    "sign_callback_token",
    "sign_request",
    "verify_acs_access_token",
    "verify_arm_token",
    "verify_entra_token",
    "verify_request",
    "verify_signature",
]
