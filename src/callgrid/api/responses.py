"""The JSON response of every callgrid route: Starlette's, encoded by orjson (see callgrid.jsonio)."""

from __future__ import annotations

from typing import Any

from starlette import responses

from callgrid import jsonio


class JSONResponse(responses.JSONResponse):
    def render(self, content: Any) -> bytes:
        return jsonio.dumpb(content)
