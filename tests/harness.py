"""Start a real gateway in the test's event loop, on 127.0.0.1 port 0.

The gateway is the real ``Gateway`` with the real file provider watching a
file in the test's tmp_path; ``reload`` rewrites that file and waits for the
gateway to accept or reject it (an event, not a sleep).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path

from gateway.app import Gateway
from gateway.config.dynamic import DynamicConfig
from gateway.config.errors import ConfigError
from gateway.config.loader import parse_static
from gateway.observer import Observer
from gateway.process import make_providers


@dataclass
class RunningGateway:
    gateway: Gateway
    dynamic_path: Path
    task: asyncio.Task[None]
    accepted: asyncio.Queue[DynamicConfig] = field(default_factory=asyncio.Queue)
    rejected: asyncio.Queue[list[ConfigError]] = field(default_factory=asyncio.Queue)

    def port(self, entry: str = "web") -> int:
        return self.gateway.entry_points[entry].bound_port

    def udp_port(self, entry: str) -> int:
        return int(self.gateway.udp_entry_points[entry].address[1])

    async def reload(self, text: str, *, expect_ok: bool = True) -> object:
        """Atomically replace the dynamic file and wait for the verdict."""
        tmp = self.dynamic_path.with_name(".next.yml")
        tmp.write_text(text)
        os.replace(tmp, self.dynamic_path)
        queue: asyncio.Queue[object] = self.accepted if expect_ok else self.rejected  # type: ignore[assignment]
        return await asyncio.wait_for(queue.get(), 10)

    async def stop(self) -> None:
        self.gateway.stop()
        await asyncio.wait_for(self.task, 30)


async def start_gateway(
    tmp_path: Path,
    dynamic: str,
    *,
    static: str = "",
    entry_points: tuple[str, ...] = ("web",),
    metrics: object | None = None,
    registry: object | None = None,
    access_log: object | None = None,
) -> RunningGateway:
    """A gateway serving ``dynamic`` on fresh 127.0.0.1 ports."""
    dyn = tmp_path / "dynamic.yml"
    dyn.write_text(dynamic)
    eps = "".join(f'  {name}:\n    address: "127.0.0.1:0"\n' for name in entry_points)
    text = static or f"entryPoints:\n{eps}providers:\n  file:\n    filename: dynamic.yml\n"
    (tmp_path / "sluice.yml").write_text(text)
    static_config = parse_static(text, str(tmp_path / "sluice.yml"))
    gateway = Gateway(
        static_config,
        providers=make_providers(static_config, tmp_path),
        metrics=metrics,
        observer=Observer(metrics, access_log),  # type: ignore[arg-type]
        registry=registry,
    )  # type: ignore[arg-type]
    running = RunningGateway(gateway, dyn, asyncio.get_running_loop().create_task(gateway.run()))
    gateway.on_config.append(running.accepted.put_nowait)
    gateway.on_reject.append(lambda provider, errors: running.rejected.put_nowait(errors))
    waiter = asyncio.ensure_future(gateway.listening.wait())
    done, _ = await asyncio.wait(
        {waiter, running.task}, timeout=10, return_when=asyncio.FIRST_COMPLETED
    )
    if running.task in done:
        running.task.result()
    assert waiter in done, "gateway did not open its listeners"
    while not running.accepted.empty():
        running.accepted.get_nowait()
    return running
