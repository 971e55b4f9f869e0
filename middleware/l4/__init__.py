"""TCP and UDP middleware: the contract, the built-ins and their registry.

An L4 middleware decides whether a connection (TCP) or a datagram (UDP) may
pass; it never sees or edits payload bytes, so the proxy can splice admitted
TCP connections in the kernel. ``contract`` holds the types a middleware
author sees, ``registry`` the built-ins and plugin loading, ``chains`` the
compiler the L4 runtime calls; one module per built-in (``ip_allowlist``,
``in_flight``, ``rate_limit``).
"""
