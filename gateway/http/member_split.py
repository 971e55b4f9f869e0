"""Weighted services whose members carry middlewares: the choice made before the chain ends.

A ``weighted`` service balances among its members inside the exchange, after
every middleware has run. When a member has middlewares of its own
(``services[].middlewares``, a Sluice addition; the Gateway API translation
puts backendRef-level filters there), the member must be chosen first and
only its middlewares run. For such a router the compiler ends the router's
chain with a *split* handler instead of the plain proxy terminal: the split
picks a member by smooth weighted round robin, runs that member's chain,
whose terminal points the exchange at the member's service and forwards.

Routers without member middlewares are compiled as before and pay nothing.
A retry middleware in the router's chain sits before the split, so each try
chooses again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

from gateway.config.dynamic import WeightedService
from gateway.http.middleware_path import current_exchange, proxy
from gateway.http.routing import RouterRuntime, ServiceRuntime
from gateway.l4.udp_balancer import SmoothWeighted
from middleware.contract import Handler, Request, Response

# Builds the handler running ``names`` then ``terminal`` (None when ``names`` is empty).
ChainBuilder = Callable[[Sequence[str], Handler, str], Handler | None]


def member_middlewares(weighted: WeightedService | None) -> bool:
    """Whether a weighted service needs a split (some member has middlewares)."""
    return weighted is not None and any(m.middlewares for m in weighted.services)


def build_split(
    router: RouterRuntime,
    weighted: WeightedService,
    services: Mapping[str, ServiceRuntime],
    build_chain: ChainBuilder,
) -> tuple[Handler, list[RouterRuntime]]:
    """The handler that ends ``router``'s chain, and the member routers it switches to.

    The caller sets each member router's ``chain`` to the router's final
    chain once built: the exchange reads it (target and forwarded-header
    handling) after the switch.
    """
    members: list[tuple[Handler, int]] = []
    member_routers: list[RouterRuntime] = []
    for member in weighted.services:
        if member.weight <= 0:
            continue
        member_router = dataclasses.replace(router, service=services[member.name])
        member_routers.append(member_router)
        terminal = _forward_to(member_router)
        label = f"{router.name}#{member.name}"
        handler = build_chain(member.middlewares, terminal, label) or terminal
        members.append((handler, member.weight))
    order = SmoothWeighted(members)

    async def split(request: Request) -> Response:
        handler = order.next()
        if handler is None:  # every weight is 0: the weighted service would answer 503
            return await proxy(current_exchange.get(), request)
        return await handler(request)

    return split, member_routers


def _forward_to(member_router: RouterRuntime) -> Handler:
    async def forward(request: Request) -> Response:
        exchange = current_exchange.get()
        # Metrics and the access log then name the member's service, as a
        # weighted service's pick would.
        exchange.router = member_router
        return await proxy(exchange, request)

    return forward
