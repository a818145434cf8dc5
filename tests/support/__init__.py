"""Test support: a real callgrid process, and a real webhook receiver, both on loopback."""
