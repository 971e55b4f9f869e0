"""Helpers for the HTTP requests middleware sends itself (auth servers, JWKS, error pages)."""

from __future__ import annotations

import aiohttp


async def read_limited(reply: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole body of ``reply``, or None past ``limit`` bytes.

    ``content.read(n)`` returns what is buffered, not n bytes: a body that
    arrives in several reads would be cut short without this loop.
    """
    data = bytearray()
    async for chunk in reply.content.iter_any():
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)
