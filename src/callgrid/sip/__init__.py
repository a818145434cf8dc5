"""The SIP trunk (Azure Direct Routing's edge): one more way into callgrid beside the HTTP API.

`trunk.SipTrunk` takes INVITEs to owned numbers and sends calls to public numbers over the configured
routes; `message`, `transport`, `transactions`, `sdp` and `rtp` are the SIP and media pieces it is made of.
"""
