"""The hottest POST routes, reached without FastAPI's router: a session step
(`/v1/sessions/{id}/step`), a gateway's bulk steps (`/v1/models/{m}/steps`) and KServe v2
infer (`/v2/models/{m}[/versions/{v}]/infer`).

Measured on a session step, FastAPI's part of a request (matching the path against every
route in turn, solving the route's dependencies, building its Request) cost more server CPU
than the step itself. This ASGI layer sits where FastAPI's router would be reached, inside
every middleware (request id, metrics, traces, time limit, CORS, API keys, rate limits, body
limit all still apply), and, for those paths only, calls the very route functions the
router would call, with the same Request, and answers their errors through the application's
own exception handlers (http/errors.py). So nothing about those routes is written twice: this
is the same path with less around it. Every other request goes on to FastAPI unchanged.

The route's template and parameters are put in the scope as the router would put them, so
the request's metrics and span carry the route template."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from rnnserve.http import sessions, v2

Handler = Callable[..., Awaitable[Response]]


class HotRoutes:
    """Pure ASGI, the innermost middleware: see the module's docstring."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        # the route objects the router holds for these templates, for the scope (metrics)
        self._routes: dict[str, BaseRoute] = {
            getattr(route, "path", ""): route for route in (*sessions.router.routes,
                                                            *v2.router.routes)
            if "POST" in (getattr(route, "methods", None) or ())}

    def match(self, path: str) -> tuple[str, Handler, dict[str, str]] | None:
        """(route template, route function, path parameters) of a hot route, else None.
        The parts must be non-empty and contain no '/', as the router's `{param}` requires."""
        parts = path.split("/")
        if len(parts) == 5 and parts[1] == "v1" and parts[3]:
            if parts[2] == "sessions" and parts[4] == "step":
                return ("/v1/sessions/{session_id}/step", sessions.step,
                        {"session_id": parts[3]})
            if parts[2] == "models" and parts[4] == "steps":
                return "/v1/models/{model}/steps", sessions.step_many, {"model": parts[3]}
        elif parts[:3] == ["", "v2", "models"] and parts[-1] == "infer" and parts[3]:
            if len(parts) == 5:
                return "/v2/models/{model}/infer", v2.infer, {"model": parts[3]}
            if len(parts) == 7 and parts[4] == "versions" and parts[5]:
                return ("/v2/models/{model}/versions/{version}/infer", v2.infer_version,
                        {"model": parts[3], "version": parts[5]})
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = (self.match(scope["path"])
                 if scope["type"] == "http" and scope["method"] == "POST" else None)
        if found is None:
            await self.app(scope, receive, send)
            return
        response = await self.respond(scope, receive, found)
        await response(scope, receive, send)

    async def respond(self, scope: Scope, receive: Receive,
                      found: tuple[str, Handler, dict[str, str]],
                      body: bytes | None = None) -> Response:
        """The route function's response to a hot route's request (`found`: its match), its
        errors answered by the application's handlers. Also the protocol's direct path
        (http/direct_path.py) answers through here, with the `body` it already holds
        (Starlette's Request keeps a body it read as `_body`: set, it is not streamed)."""
        template, handler, params = found
        self.mark(scope, found)
        request = Request(scope, receive)
        if body is not None:
            request._body = body
        try:
            return await handler(request, **params)
        except Exception as exc:  # the application's handler for it, as FastAPI's would
            return await self._handled(request, exc)

    def mark(self, scope: Scope, found: tuple[str, Handler, dict[str, str]]) -> None:
        """Put the route and its parameters in the scope, as the router would (the request's
        metrics and span carry the route template)."""
        scope["route"] = self._routes[found[0]]
        scope["path_params"] = found[2]

    async def error_response(self, scope: Scope, receive: Receive, exc: Exception) -> Response:
        """The application's answer to an error raised by a hot route's request (the
        sequence lane's step that failed in its batch)."""
        return await self._handled(Request(scope, receive), exc)

    async def _handled(self, request: Request, exc: Exception) -> Response:
        handlers = self.fastapi_app.exception_handlers
        for kind in type(exc).__mro__:
            if kind in handlers:
                answer = handlers[kind](request, exc)
                return await answer if isinstance(answer, Awaitable) else answer
        raise exc
