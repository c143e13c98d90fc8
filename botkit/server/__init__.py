"""The HTTP server behind ``botkit serve``.

One Starlette app on uvicorn holds the OpenAI-compatible API (:mod:`.openai_api`), the
operations endpoints (``/healthz``, ``/readyz``, ``/metrics``) and the routes of every
enabled channel adapter (the web widget's among them). See :func:`create_app`.
"""

from botkit.server.app import Server, create_app
from botkit.server.http import RateLimiter, json_error, read_json
from botkit.server.metrics import Metrics

__all__ = ["Metrics", "RateLimiter", "Server", "create_app", "json_error", "read_json"]
