"""Prometheus metrics for ``/metrics``: requests, latencies, tokens, queue, streams, errors.

Each :class:`Metrics` has its own registry, so two servers in one process (tests) do not
share counters.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# The *_created series double every counter's output and nobody graphs them.
disable_created_metrics()

_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "botkit_requests", "HTTP requests answered, by channel and status code",
            ["channel", "status"], registry=r,
        )
        self.ttft = Histogram(
            "botkit_time_to_first_token_seconds",
            "From receiving a message to the first token of the reply",
            ["channel"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.reply_time = Histogram(
            "botkit_reply_seconds", "From receiving a message to the complete reply",
            ["channel"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.tokens = Counter(
            "botkit_tokens_generated", "Tokens generated in replies", ["channel"], registry=r,
        )
        self.replies = Counter(
            "botkit_replies", "Replies by channel and outcome (ok, error, cancelled, busy)",
            ["channel", "outcome"], registry=r,
        )
        self.active_streams = Gauge(
            "botkit_active_streams", "Replies being streamed to clients now", ["channel"],
            registry=r,
        )
        self.errors = Counter(
            "botkit_errors", "Errors by channel and kind", ["channel", "kind"], registry=r,
        )
        self.queue_depth = Gauge(
            "botkit_queue_depth", "Requests waiting for the model", registry=r,
        )
        self.running = Gauge(
            "botkit_generator_running", "Requests the model is generating now", registry=r,
        )

    def watch_generator(self, stats: Callable[[], dict[str, int | float]]) -> None:
        """Read the queue depth and running requests from ``stats()`` at each scrape."""
        self.queue_depth.set_function(lambda: float(stats().get("queued", 0)))
        self.running.set_function(lambda: float(stats().get("running", 0)))

    def observe_reply(
        self, channel: str, outcome: str, *, first_token_s: float | None,
        duration_s: float | None, tokens: int,
    ) -> None:
        self.replies.labels(channel, outcome).inc()
        if first_token_s is not None:
            self.ttft.labels(channel).observe(first_token_s)
        if duration_s is not None and outcome == "ok":
            self.reply_time.labels(channel).observe(duration_s)
        if tokens:
            self.tokens.labels(channel).inc(tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
