"""``headers``: add, replace or remove request and response headers.

Traefik's ``customRequestHeaders`` / ``customResponseHeaders``: a value
sets the header (replacing what was there), an empty value removes it. The
security and CORS options of Traefik's ``headers`` arrive with the rest of
the built-ins.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.config.model import empty_map, model
from middleware.contract import Handler, Request, Response


@model
class HeadersOptions:
    custom_request_headers: Mapping[str, str] = empty_map()
    custom_response_headers: Mapping[str, str] = empty_map()


class HeadersMiddleware:
    key = "headers"
    options = HeadersOptions

    def build(self, options: HeadersOptions, next: Handler) -> Handler:
        request_set = [(k, v) for k, v in options.custom_request_headers.items() if v]
        request_del = [k for k, v in options.custom_request_headers.items() if not v]
        response_set = [(k, v) for k, v in options.custom_response_headers.items() if v]
        response_del = [k for k, v in options.custom_response_headers.items() if not v]

        async def headers(request: Request) -> Response:
            h = request.headers
            for name in request_del:
                h.remove(name)
            for name, value in request_set:
                h.set(name, value)
            response = await next(request)
            rh = response.headers
            for name in response_del:
                rh.remove(name)
            for name, value in response_set:
                rh.set(name, value)
            return response

        return headers
