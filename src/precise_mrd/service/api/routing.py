"""A route class for the hottest endpoint: the endpoint gets the request, nothing is solved.

FastAPI resolves an endpoint's parameters per request: it parses the query string, headers and
cookies, validates each parameter, runs the dependency graph, then validates and renders the
return value against ``response_model``. For ``GET /status/{job_id}`` that machinery cost more
than the work (docs/performance.md). :class:`RequestRoute` calls its endpoint as
``endpoint(request, **path_params)`` and sends the :class:`~starlette.responses.Response` it
returns as it is. The OpenAPI document still describes the route from the endpoint's signature
and ``response_model``; errors still go through the app's exception handlers.

The endpoint takes ``request: Request`` and the path's parameters, all ``str`` (nothing to
validate), and nothing else; any other signature is refused when the route is made.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.convertors import StringConvertor
from starlette.routing import compile_path


class RequestRoute(APIRoute):
    """An :class:`~fastapi.routing.APIRoute` whose endpoint is called with the request and the
    path parameters only (see the module)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        _check_signature(path, endpoint)
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            response: Response = await endpoint(request, **request.path_params)
            return response

        return handle


def _check_signature(path: str, endpoint: Callable[..., Any]) -> None:
    """Refuse an endpoint this route class would call wrongly.

    >>> async def fine(request: Request, job_id: str) -> Response: ...
    >>> _check_signature("/status/{job_id}", fine)
    >>> async def extra(request: Request, job_id: str, limit: int = 5) -> Response: ...
    >>> _check_signature("/status/{job_id}", extra)
    Traceback (most recent call last):
    ...
    TypeError: extra: a RequestRoute endpoint takes request and its path's str parameters: job_id
    """
    _, _, convertors = compile_path(path)
    parameters = list(inspect.signature(endpoint, eval_str=True).parameters.values())
    path_parameters = parameters[1:]
    if (
        not inspect.iscoroutinefunction(endpoint)
        or [(p.name, p.annotation) for p in parameters[:1]] != [("request", Request)]
        or sorted(parameter.name for parameter in path_parameters) != sorted(convertors)
        or any(parameter.annotation is not str for parameter in path_parameters)
        or not all(isinstance(convertor, StringConvertor) for convertor in convertors.values())
    ):
        raise TypeError(
            f"{endpoint.__name__}: a RequestRoute endpoint takes request and its path's str "
            f"parameters: {', '.join(convertors)}"
        )
