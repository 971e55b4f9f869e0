"""TCP/UDP gateway tests run on asyncio's loop and on uvloop, the one the gateway serves on.

The two loops differ where the TCP entry point lives (uvloop may deliver a read
after ``pause_reading``; their TLS and ``connect_accepted_socket`` are separate
code), so the L4 acceptance tests (``tests/l4/test_gateway_*.py``) and the
TCP/UDP example's test run on both. Every other test keeps asyncio's loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
import uvloop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    name = item.path.name
    l4 = item.path.parent.name == "l4" and name.startswith("test_gateway_")
    if not (l4 or name == "test_example_tcp_udp.py"):
        return {"asyncio": asyncio.new_event_loop}
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
