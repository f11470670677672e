"""The Starlette application: every HTTP and WebSocket endpoint of PROTOCOL.md."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from tidings.engine.store import Store
from tidings.transports import http_api, openapi
from tidings.transports.logs import AccessLog
from tidings.transports.metrics import Metrics
from tidings.transports.wire import Context
from tidings.transports.ws_agent import agent_endpoint
from tidings.transports.ws_chat import chat_endpoint

__all__ = ["build_app"]


def _http(ctx: Context, handler: Callable[[Context, Request], Awaitable[Response]]) -> Any:
    async def endpoint(request: Request) -> Response:
        return await handler(ctx, request)

    endpoint.__doc__ = handler.__doc__
    return endpoint


def _ws(ctx: Context, handler: Callable[[Context, WebSocket], Awaitable[None]]) -> Any:
    """A WebSocket endpoint that counts toward `limits.connections_per_ip`: over it, the
    request is refused with HTTP 429 before the WebSocket opens."""

    async def endpoint(websocket: WebSocket) -> None:
        address = ctx.address_of(websocket)
        if not ctx.addresses.connect(address):
            await websocket.send_denial_response(
                JSONResponse(
                    {"error": {"code": "rate_limited", "detail": "too many connections from this address"}},
                    status_code=429,
                )
            )
            return
        try:
            await handler(ctx, websocket)
        finally:
            ctx.addresses.disconnect(address)

    return endpoint


def build_app(ctx: Context, store: Store) -> Starlette:
    """The ASGI app serving `ctx`'s inbox; `/readyz` asks `store`. With
    `server.access_log`, every HTTP request is logged (see `logs.AccessLog`). Its
    `state.metrics` is the app's `Metrics`, to `watch` the inbox once it runs."""
    metrics = Metrics(ctx)

    async def readyz(request: Request) -> Response:
        return await http_api.readyz(ctx, request, store)

    readyz.__doc__ = http_api.readyz.__doc__
    routes = [
        Route("/sms/inbound", metrics.timed(_http(ctx, http_api.sms_inbound)), methods=["POST"]),
        Route("/sms/status", _http(ctx, http_api.sms_status), methods=["POST"]),
        Route("/l/{code}", _http(ctx, http_api.short_link), methods=["GET"]),
        Route("/api/openapi.json", _http(ctx, openapi.openapi_json), methods=["GET"]),
        Route("/api/{name}", _http(ctx, http_api.api), methods=["POST"]),
        Route("/healthz", _http(ctx, http_api.healthz), methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
        Route("/", _http(ctx, http_api.console_page), methods=["GET"]),
        Route("/chat", _http(ctx, http_api.chat_page), methods=["GET"]),
        Route("/static/{name}", _http(ctx, http_api.static), methods=["GET"]),
        Route("/widget.js", _http(ctx, http_api.widget_script), methods=["GET"]),
        WebSocketRoute("/ws/agent", _ws(ctx, agent_endpoint)),
        WebSocketRoute("/ws/chat", _ws(ctx, chat_endpoint)),
    ]
    middleware = [Middleware(AccessLog)] if ctx.config.server.access_log else []
    app = Starlette(routes=routes, middleware=middleware)
    app.state.metrics = metrics
    return app
