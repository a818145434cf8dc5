"""`callgrid token`: bearer tokens for the ACS routes (what a TokenCredential hands the SDKs) or for ARM."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import jwt
import typer

from callgrid.cli.common import DataDir, PortOption, existing_state
from callgrid.security.tokens import ACS_AUDIENCE, ARM_AUDIENCE, ENTRA_LIFETIME

_DURATION = re.compile(r"^\s*(\d{1,7})\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_LIFETIME = timedelta(days=3650)


def register(app: typer.Typer) -> None:
    app.command()(token)


def parse_lifetime(text: str) -> timedelta:
    """`3600`, `90s`, `30m`, `1h`, `7d`: a positive duration of at most ten years."""
    match = _DURATION.match(text.lower())
    if match is None:
        raise typer.BadParameter(f"{text!r} is not a duration: give seconds, or a number with s, m, h or d (1h)")
    lifetime = timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    if lifetime <= timedelta(0):
        raise typer.BadParameter("a token's lifetime must be more than 0 seconds")
    if lifetime > MAX_LIFETIME:
        raise typer.BadParameter("a token's lifetime can be at most 3650 days")
    return lifetime


def token(
    data_dir: DataDir = None,
    port: PortOption = None,
    lifetime: Annotated[
        str,
        typer.Option(
            "--lifetime", "-l", help="How long it is valid: seconds, or 30m, 1h, 7d (default: 1h, as Entra ID's)."
        ),
    ] = f"{int(ENTRA_LIFETIME.total_seconds())}s",
    arm: Annotated[bool, typer.Option("--arm", help="A token for the ARM routes (Event Grid subscriptions).")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print accessToken, expiresOn and tokenType as JSON, as `az` does.")
    ] = False,
) -> None:
    """Print a bearer token for the ACS routes, as Entra ID would issue one for https://communication.azure.com.

    Hand it to the SDK clients through a TokenCredential (README: Entra ID tokens); callgrid checks its
    signature, issuer, audience, resource and dates on every ACS route.
    """
    duration = parse_lifetime(lifetime)
    state = existing_state(data_dir, port)
    value = state.arm_token(duration) if arm else state.acs_token(duration)
    if not as_json:
        print(value)
        return
    expires = datetime.fromtimestamp(jwt.decode(value, options={"verify_signature": False})["exp"], UTC)
    document = {
        "accessToken": value,
        "tokenType": "Bearer",
        "audience": ARM_AUDIENCE if arm else ACS_AUDIENCE,
        "expiresOn": expires.isoformat(),
        "expires_on": int(expires.timestamp()),
    }
    print(json.dumps(document, indent=2))
