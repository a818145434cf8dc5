"""callgrid in a test suite: a real server on a free port, a webhook receiver, and a pytest plugin.

With pytest, installing callgrid is enough: the plugin (`callgrid.testing.plugin`) is registered by
entry point and gives the `callgrid`, `webhook`, `subscribe`, `place_call`, ... fixtures. Other runners
use `running()`, an async context manager, and `WebhookReceiver` directly.
"""

from callgrid.testing.server import (
    CLOUD_EVENT_SCHEMA,
    EVENT_GRID_SCHEMA,
    INCOMING_CALL,
    CallgridResource,
    CallgridServer,
    Clock,
    FaultInjector,
    free_port,
    make_tls_dir,
    running,
    trusting,
)
from callgrid.testing.webhook import Received, WebhookReceiver

__all__ = [
    "CLOUD_EVENT_SCHEMA",
    "EVENT_GRID_SCHEMA",
    "INCOMING_CALL",
    "CallgridResource",
    "CallgridServer",
    "Clock",
    "FaultInjector",
    "Received",
    "WebhookReceiver",
    "free_port",
    "make_tls_dir",
    "running",
    "trusting",
]
