"""Gateway-level L4 tests run on asyncio's loop and on uvloop, the one the gateway serves on.

The two loops differ where the TCP entry point lives (uvloop may deliver a read
after ``pause_reading``; their TLS and ``connect_accepted_socket`` are separate
code), so the acceptance tests in ``test_gateway_*.py`` run on both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
import uvloop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    if not item.path.name.startswith("test_gateway_"):
        return {"asyncio": asyncio.new_event_loop}
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
