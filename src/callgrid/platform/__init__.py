"""The ACS side: the Communication resource, identities, owned numbers, calls and their devices."""
