"""The HTTP layer: thin routes over the domain. ACS and ARM wire shapes in, domain calls, wire shapes out."""
