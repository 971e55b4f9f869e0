"""``headers``: add, replace or remove request and response headers.

Traefik's ``customRequestHeaders`` / ``customResponseHeaders``: a value
sets the header (replacing what was there), an empty value removes it. The
security and CORS options of Traefik's ``headers`` arrive with the rest of
the built-ins.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.config.model import empty_map, model
from middleware.contract import BuildContext, Filter, Handler, Request, Response


@model
class HeadersOptions:
    custom_request_headers: Mapping[str, str] = empty_map()
    custom_response_headers: Mapping[str, str] = empty_map()


class _HeadersFilter(Filter):
    __slots__ = ("request_set", "request_del", "response_set", "response_del")

    def __init__(self, options: HeadersOptions) -> None:
        self.request_set = [(k, v) for k, v in options.custom_request_headers.items() if v]
        self.request_del = [k for k, v in options.custom_request_headers.items() if not v]
        self.response_set = [(k, v) for k, v in options.custom_response_headers.items() if v]
        self.response_del = [k for k, v in options.custom_response_headers.items() if not v]

    def request(self, request: Request) -> None:
        h = request.headers
        for name in self.request_del:
            h.remove(name)
        for name, value in self.request_set:
            h.set(name, value)

    def response(self, request: Request, response: Response) -> None:
        rh = response.headers
        for name in self.response_del:
            rh.remove(name)
        for name, value in self.response_set:
            rh.set(name, value)


class HeadersMiddleware:
    key = "headers"
    options = HeadersOptions

    def build(self, options: HeadersOptions, next: Handler, context: BuildContext) -> Filter:
        return _HeadersFilter(options)
