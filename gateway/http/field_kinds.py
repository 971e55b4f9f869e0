"""How header fields are treated when a head is rebuilt, with per-spelling caches (sans-IO).

The exchange rewrites every request head it sends upstream and every
response head it sends back. Deciding what to do with a field takes one dict
lookup keyed by the field name *as sent*: clients and upstreams repeat the
same few names in the same case, so the lower-cased classification runs once
per spelling. Every cache here is bounded and simply cleared when full, so
hostile traffic cannot grow it.
"""

from __future__ import annotations

from gateway.http import wire
from gateway.http.forwarded import FORWARDED_NAMES, forwarding_headers

FORWARDED_BLOCKS: dict[tuple[bytes, bytes, bytes], tuple[bytes, bytes]] = {}


def forwarded_block(ip: bytes, port: bytes, proto: bytes) -> tuple[bytes, bytes]:
    """The X-Forwarded-* block for an untrusted client, split around the host."""
    if len(FORWARDED_BLOCKS) > 10_000:
        FORWARDED_BLOCKS.clear()
    lines = b"".join(
        name + b": " + value + b"\r\n"
        for name, value in forwarding_headers(
            [], trusted=False, client_ip=ip, proto=proto, host=b"\0", port=port
        )
    )
    before, _, after = lines.partition(b"\0")
    FORWARDED_BLOCKS[(ip, port, proto)] = (before, after)
    return before, after


# Request fields never copied upstream as sent: hop-by-hop ones, framing and
# Host (re-derived), and X-Forwarded-* (rebuilt from what the gateway trusts).
REQUEST_SKIP = wire.HOP_BY_HOP | FORWARDED_NAMES | {b"content-length", b"host"}
# REQUEST_SKIP by field names as clients spell them (0: copied, else skipped),
# so the usual repeated names cost one lookup and no lower-casing.
COPY, SKIP, HOST, FORWARDED = range(4)
REQUEST_KINDS: dict[bytes, int] = {}


def request_kind(name: bytes) -> int:
    if len(REQUEST_KINDS) > 4_096:
        REQUEST_KINDS.clear()
    lname = name.lower()
    if lname == b"host":
        kind = HOST
    elif lname in FORWARDED_NAMES:
        kind = FORWARDED
    else:
        kind = SKIP if lname in REQUEST_SKIP else COPY
    REQUEST_KINDS[name] = kind
    return kind


# Response fields _send_head does more with than copy (0: copied as is).
PLAIN, HOP_BY_HOP_FIELD, CONNECTION, CONTENT_LENGTH = range(4)
RESPONSE_FIELDS = {name: HOP_BY_HOP_FIELD for name in wire.HOP_BY_HOP}
RESPONSE_FIELDS[b"connection"] = CONNECTION
RESPONSE_FIELDS[b"content-length"] = CONTENT_LENGTH
# The same, keyed by field names as upstreams spell them: an upstream sends
# the same few names in the same case every time, so one lookup settles a
# field without lower-casing it. Bounded like the other per-value caches.
RESPONSE_KINDS: dict[bytes, int] = {}


def response_kind(name: bytes) -> int:
    if len(RESPONSE_KINDS) > 4_096:
        RESPONSE_KINDS.clear()
    kind = RESPONSE_KINDS[name] = RESPONSE_FIELDS.get(name.lower(), PLAIN)
    return kind


CONNECTION_DROPS: dict[bytes, frozenset[bytes]] = {}


def connection_drops(value: bytes) -> frozenset[bytes]:
    """Fields a response's ``Connection`` value names beyond the hop-by-hop ones.

    Those are skipped anyway, so the usual ``keep-alive`` names nothing more
    and the response head needs no second pass. Cached: upstreams repeat it.
    """
    named = CONNECTION_DROPS.get(value)
    if named is None:
        if len(CONNECTION_DROPS) > 1_000:
            CONNECTION_DROPS.clear()
        named = CONNECTION_DROPS[value] = wire.connection_tokens([value]) - wire.HOP_BY_HOP
    return named


def without_fields(parts: list[bytes], names: frozenset[bytes]) -> list[bytes]:
    """Drop header entries (name, ": ", value, CRLF quadruples) named in ``names``."""
    out = parts[:1]
    i = 1
    while i + 3 < len(parts) + 1 and i < len(parts):
        if parts[i].lower() in names:
            i += 4
            continue
        out.extend(parts[i : i + 4])
        i += 4
    return out
