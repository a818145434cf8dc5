"""The web console at `/console`: every call, event, delivery, dead letter and callback, live; and the
actions a developer takes while building a call app (place calls, be the phone, own numbers, subscribe).

Server-rendered (Jinja2) with a small hand-written script; its assets ship in the package (no CDN).
Live panels come as server-sent events: the server renders each panel and sends it when it changed.
It reads and changes the domain only through the services the HTTP API uses; the domain knows nothing
of it (it watches events through the publisher's observers).
"""

from __future__ import annotations

from callgrid.console.app import install, mount, shutdown

__all__ = ["install", "mount", "shutdown"]
