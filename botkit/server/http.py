"""Small HTTP helpers shared by the API, the widget and the webhooks.

Every error a client gets is JSON: ``{"error": {"code": ..., "message": ...}}`` (the
OpenAI API wraps the same information in OpenAI's own shape).
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse


class HTTPProblem(Exception):
    """An error answer: HTTP ``status``, a stable ``code`` and a sentence for people."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra


def json_error(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, **extra}}, status_code=status,
        headers=headers,
    )


def problem_response(problem: HTTPProblem) -> JSONResponse:
    return json_error(
        problem.status, problem.code, problem.message, headers=problem.headers, **problem.extra
    )


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request's JSON body, or an :class:`HTTPProblem` (413, 415 or 400) saying why not.

    The body is read in chunks and refused as soon as it passes ``max_bytes``, so a
    client cannot make the server hold a huge body in memory.
    """
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise HTTPProblem(
            415, "unsupported_media_type",
            f"send JSON with Content-Type: application/json (got {content_type or 'none'!r})",
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise HTTPProblem(
            413, "body_too_large", f"the request body is over the {max_bytes:,}-byte limit",
            limit=max_bytes,
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise HTTPProblem(
                413, "body_too_large", f"the request body is over the {max_bytes:,}-byte limit",
                limit=max_bytes,
            )
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HTTPProblem(400, "invalid_json", f"the body is not valid JSON: {exc}") from None


class RateLimiter:
    """Token buckets by key (a session, an IP address): ``rate_per_minute`` sustained,
    bursts up to ``burst``. In memory, so per process; bounded to ``max_keys`` keys
    (the least recently seen are forgotten first).
    """

    def __init__(
        self, rate_per_minute: float, *, burst: int | None = None, max_keys: int = 100_000
    ) -> None:
        if rate_per_minute <= 0:
            raise ValueError("rate_per_minute must be positive")
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst if burst is not None else max(1, math.ceil(rate_per_minute)))
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def hit(self, key: str, *, now: float | None = None) -> float:
        """Spend one token; returns 0 if allowed, else the seconds to wait before retrying."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            allowed = 0.0
        else:
            self._buckets[key] = (tokens, now)
            allowed = (1 - tokens) / self.rate
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return allowed


def rate_limited(retry_after: float, what: str) -> HTTPProblem:
    seconds = max(1, math.ceil(retry_after))
    return HTTPProblem(
        429, "rate_limited", f"too many {what}; retry in {seconds} s",
        headers={"Retry-After": str(seconds)}, retry_after=seconds,
    )


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def is_loopback(host: str) -> bool:
    import ipaddress

    if host in {"localhost", "ip6-localhost"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
