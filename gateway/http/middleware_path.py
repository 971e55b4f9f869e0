"""How an exchange runs its router's middleware: inline filters or a task.

A router whose middlewares are all ``Filter``s runs them right in the
protocol callback that routed the request (``run_filters``); only a filter
that returns an awaitable moves that one request into a task. Any other chain
runs as a task (``run_chain``) whose terminal handler, ``proxy_terminal``,
forwards the request and resolves with the upstream's response head; the
callback flow resumes once the chain returns it.

This module also gives middleware the request and response bodies whole
(``read_request_body``, ``read_response_body``), for buffering, retry and
the like; the exchange holds what they read.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import TYPE_CHECKING

from gateway.http import wire
from middleware.contract import BodyTooLarge, Headers, Request, Response

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from gateway.http.exchange import Exchange

log = logging.getLogger(__name__)

# The exchange whose middleware chain is running; each chain runs in its own
# task, so the terminal handler finds its exchange without a per-request closure.
current_exchange: contextvars.ContextVar[Exchange] = contextvars.ContextVar("sluice_exchange")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


async def proxy_terminal(request: Request) -> Response:
    """The last handler of every middleware chain: forward upstream."""
    return await proxy(current_exchange.get(), request)


async def proxy(ex: Exchange, request: Request) -> Response:
    """Forward and wait for the response head; a second call forwards again (retry)."""
    if ex.waiter is not None:
        if not ex.request_replayable():
            raise RuntimeError("the request body was already streamed; it cannot be sent again")
        ex.abandon_upstream()
        ex.reset_for_retry()
    ex.waiter = asyncio.get_running_loop().create_future()
    ex.pending_body = []
    ex.forward()
    return await ex.waiter


# -- filters, inline ---------------------------------------------------------------


def run_filters(ex: Exchange, start: int) -> None:
    """Run the router's filters from ``start``; forward, answer, or go async."""
    chain = ex.router.filters
    assert chain is not None
    filters = chain.filters
    request = ex.request
    i = start
    try:
        for i in range(start, len(filters)):
            result = filters[i].request(request)
            if result is None:
                continue
            if isinstance(result, Response):
                answer(ex, result, i)
            else:
                ex.task = asyncio.get_running_loop().create_task(_await_filters(ex, i, result))
            return
    except Exception:
        filter_failed(ex, i)
        return
    ex.forward()


async def _await_filters(ex: Exchange, i: int, pending: Awaitable[Response | None]) -> None:
    chain = ex.router.filters
    assert chain is not None
    filters = chain.filters
    request = ex.request
    try:
        result = await pending
        while result is None:
            i += 1
            if i == len(filters):
                ex.forward()
                return
            step = filters[i].request(request)
            result = step if step is None or isinstance(step, Response) else await step
    except asyncio.CancelledError:
        raise
    except Exception:
        filter_failed(ex, i)
        return
    answer(ex, result, i)


def answer(ex: Exchange, response: Response, below: int) -> None:
    """Send a response filter ``below`` made, through the outer filters' hooks."""
    chain = ex.router.filters
    if chain is not None and chain.responders:
        try:
            chain.respond_from(below, ex.request, response)
        except Exception:
            log.exception("router %s: middleware failed on a response", ex.router.name)
            ex.client.count_middleware_error(ex.router)
            response = Response(500, body=b"Internal Server Error\n")
    ex.respond(response)


def filter_failed(ex: Exchange, i: int) -> None:
    chain = ex.router.filters
    name = chain.failed(i) if chain is not None else "?"
    log.exception("router %s: middleware %s failed", ex.router.name, name)
    ex.client.count_middleware_error(ex.router)
    if not ex.head_sent:
        answer(ex, Response(500, body=b"Internal Server Error\n"), i)


def edit_response_head(
    ex: Exchange, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
) -> Response:
    """The upstream head as filters see it, after their response hooks ran."""
    # The list is this response's own (the upstream parser made it for it).
    response = Response(
        status, headers=Headers(headers), reason=reason.decode("latin-1"), streamed=True
    )
    request = ex.request
    chain = ex.router.filters
    assert chain is not None
    done = 0
    try:
        for hook in chain.hooks:
            hook(request, response)
            done += 1
    except Exception:
        chain.failed(chain.responders[done])
        raise
    return response


# -- handlers, in a task --------------------------------------------------------------


async def run_chain(ex: Exchange) -> None:
    chain = ex.router.chain
    assert chain is not None
    current_exchange.set(ex)
    try:
        response = await chain(ex.request)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("router %s: middleware failed", ex.router.name)
        ex.client.count_middleware_error(ex.router)
        if not ex.head_sent:
            ex.respond(Response(500, body=b"Internal Server Error\n"))
        return
    if ex.finished:
        return
    if response.streamed:
        ex.transform = response.transform
        ex.send_head(response.status, response.reason.encode("latin-1"), response.headers.raw)
        if ex.upgrade_data is not None:
            ex.on_upgraded(ex.upgrade_data)
            return
        pending, ex.pending_body = ex.pending_body, None
        for data in pending or ():
            ex.relay_body(data)
        if ex.response_complete:
            ex.finish_response()
        else:
            ex.flush()
    else:
        ex.respond(response)


# -- bodies read whole -------------------------------------------------------------


async def read_request_body(ex: Exchange, limit: int) -> bytes:
    if ex.full_body is not None:
        if len(ex.full_body) > limit:
            raise BodyTooLarge(limit)
        return ex.full_body
    if not ex.has_body:
        return b""
    if ex.body_sent:
        raise RuntimeError("the request body was already forwarded")
    if ex.expect_continue and not ex.head_sent:
        # The client waits for this before it sends the body we want to read.
        ex.client.write(_CONTINUE)
        ex.expect_continue = False
    loop = asyncio.get_running_loop()
    while not ex.request_complete:
        if ex.buffered > limit:
            raise BodyTooLarge(limit)
        ex.body_waiter = loop.create_future()
        ex.client.set_reading(True)
        try:
            await ex.body_waiter
        finally:
            ex.body_waiter = None
    if ex.buffered > limit:
        raise BodyTooLarge(limit)
    body = b"".join(ex.body_buffer)
    ex.body_buffer.clear()
    ex.buffered = 0
    ex.full_body = body
    return body


async def read_response_body(ex: Exchange, limit: int) -> bytes:
    loop = asyncio.get_running_loop()
    counted = 0
    size = 0
    while not ex.response_complete:
        pending = ex.pending_body or ()
        # A running total: a trickling upstream must not make this quadratic.
        size += sum(map(len, pending[counted:]))
        counted = len(pending)
        if size > limit:
            ex.abandon_upstream()
            raise BodyTooLarge(limit)
        ex.body_waiter = loop.create_future()
        try:
            await ex.body_waiter
        finally:
            ex.body_waiter = None
    body = b"".join(ex.pending_body or ())
    ex.pending_body = []
    if len(body) > limit:
        raise BodyTooLarge(limit)
    return body


def wake(ex: Exchange) -> None:
    waiter = ex.body_waiter
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def run_finalizers(request: Request) -> None:
    finalizers = request.finalizers
    if finalizers is None:
        return
    request.finalizers = None
    for callback in finalizers:
        try:
            callback()
        except Exception:
            log.exception("middleware finalizer failed")


def error_response(status: int, cause: str) -> Response:
    return Response(status, body=wire.reason_phrase(status) + b"\n", error=cause)
