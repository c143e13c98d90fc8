"""The Starlette app: routes of the API, operations and adapters, behind one edge layer.

The edge (:class:`_Edge`, plain ASGI so streams pass through untouched) answers CORS,
refuses foreign origins and oversize bodies before any route runs, adds security
headers and counts every answer by channel and status for ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from botkit.server.http import HTTPProblem, is_loopback, json_error, problem_response
from botkit.server.metrics import Metrics

if TYPE_CHECKING:
    from botkit.adapters import Adapter
    from botkit.config import Config
    from botkit.engine import DialogueEngine

log = logging.getLogger(__name__)

#: Paths any page may load (script and stylesheet tags send no Origin to check).
_PUBLIC_ASSETS = ("/widget.js", "/widget/widget.css", "/widget/demo.css")


@dataclass
class Server:
    """What routes share: the engine, the config, the metrics and the API keys."""

    engine: DialogueEngine
    config: Config
    metrics: Metrics = field(default_factory=Metrics)
    api_keys: tuple[str, ...] = ()
    adapters: list[Adapter] = field(default_factory=list)

    @property
    def loopback_only(self) -> bool:
        return is_loopback(self.config.server.host)

    def origin_allowed(self, origin: str, scope: Scope) -> bool:
        """Same origin as the request, or listed in ``[server] allowed_origins``."""
        allowed = self.config.server.allowed_origins
        if "*" in allowed or origin in allowed:
            return True
        host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        return bool(host) and origin == f"{scheme}://{host}"


def channel_of(path: str) -> str:
    if path.startswith("/v1/"):
        return "openai"
    if path.startswith("/widget") or path == "/":
        return "web"
    if path == "/console" or path.startswith("/console/"):
        return "console"
    if path.startswith("/telegram/"):
        return "telegram"
    if path.startswith("/webhooks/"):
        return path.split("/")[2] or "webhooks"
    if path in ("/healthz", "/readyz", "/metrics"):
        return "ops"
    return "other"


class _Edge:
    def __init__(self, app: ASGIApp, server: Server) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        channel = channel_of(path)
        headers = dict(scope.get("headers") or [])
        origin = headers.get(b"origin", b"").decode("latin-1")
        status_seen = 0
        cors: list[tuple[bytes, bytes]] = []

        async def send_wrapper(message: Message) -> None:
            nonlocal status_seen
            if message["type"] == "http.response.start":
                status_seen = message["status"]
                extra = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    *cors,
                ]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        async def answer(response: Response) -> None:
            await response(scope, receive, send_wrapper)

        def refuse(status: int, code: str, message: str, **extra: Any) -> Response:
            if channel == "openai":  # OpenAI's clients read type and param too
                extra = {"type": "invalid_request_error", "param": None, **extra}
            return json_error(status, code, message, **extra)

        try:
            if origin and path not in _PUBLIC_ASSETS:
                if not self.server.origin_allowed(origin, scope):
                    await answer(refuse(
                        403, "forbidden_origin",
                        f"pages from {origin} may not call this server; add the origin to "
                        "[server] allowed_origins",
                    ))
                    return
                cors = [
                    (b"access-control-allow-origin", origin.encode("latin-1")),
                    (b"vary", b"Origin"),
                    (b"access-control-expose-headers", b"Retry-After"),
                ]
                if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
                    await answer(Response(status_code=204, headers={
                        "access-control-allow-methods": "GET, POST, OPTIONS",
                        "access-control-allow-headers":
                            "authorization, content-type, last-event-id",
                        "access-control-max-age": "600",
                    }))
                    return
            length = headers.get(b"content-length", b"")
            limit = self.server.config.server.max_body_bytes
            if length.isdigit() and int(length) > limit:
                await answer(refuse(
                    413, "body_too_large", f"the request body is over the {limit:,}-byte limit",
                    limit=limit,
                ))
                return
            await self.app(scope, receive, send_wrapper)
        finally:
            if status_seen:
                self.server.metrics.requests.labels(channel, str(status_seen)).inc()


async def _healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _readyz(request: Request) -> Response:
    from botkit.memory.db import probe

    server: Server = request.app.state.server
    checks: dict[str, str] = {}
    generator = server.engine.generator
    checks["model"] = "ok" if not getattr(generator, "closed", False) else "closed"
    try:
        async with asyncio.timeout(3):
            await probe(server.engine.store.engine)
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready; say which
        checks["database"] = f"unreachable: {type(exc).__name__}"
        log.warning("readiness: database unreachable: %s", exc)
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


async def _metrics(request: Request) -> Response:
    server: Server = request.app.state.server
    return Response(server.metrics.render(), media_type=server.metrics.content_type)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    extra: dict[str, Any] = {}
    if channel_of(request.url.path) == "openai":
        extra = {"type": "invalid_request_error", "param": None}
    return json_error(
        exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {}) or None,
        **extra,
    )


async def _problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPProblem)
    return problem_response(exc)


def create_app(
    engine: DialogueEngine,
    config: Config,
    *,
    adapters: Sequence[Adapter] = (),
    api_keys: Sequence[str] = (),
    metrics: Metrics | None = None,
) -> Starlette:
    """The whole HTTP surface of a botkit process."""
    from botkit import console
    from botkit.server import openai_api

    server = Server(
        engine=engine, config=config, metrics=metrics or Metrics(),
        api_keys=tuple(api_keys), adapters=list(adapters),
    )
    stats = getattr(engine.generator, "stats", None)
    if callable(stats):
        server.metrics.watch_generator(stats)
    routes: list[BaseRoute] = [
        Route("/healthz", _healthz),
        Route("/readyz", _readyz),
        Route("/metrics", _metrics),
        *openai_api.routes(),
        *console.routes(server),
    ]
    for adapter in adapters:
        routes.extend(adapter.http_routes(server))
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_exception, HTTPProblem: _problem},
    )
    app.state.server = server
    app.add_middleware(_Edge, server=server)
    return app
