"""The router: the number-assignment application of the seed ("you maintain the number assignment within your
application and route or answer calls at runtime").

It is a user of ACS, not part of callgrid's platform: it imports nothing from the rest of callgrid and talks
only through Microsoft's SDKs and HTTP, so the same code runs in front of a real Communication resource.
"""
