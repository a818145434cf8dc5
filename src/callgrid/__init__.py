"""callgrid: Azure Communication Services incoming calls and Event Grid, on one machine."""

__version__ = "0.1.0"
