"""Running the server: uvicorn, the enabled adapters and a graceful shutdown.

On SIGINT or SIGTERM the server stops accepting connections, lets the replies in
progress finish (up to ``[server] shutdown_grace_s``), then cancels what is left: a
cancelled reply is stored as far as it was sent, flagged ``interrupted`` (shown as such,
never used for training). A second Ctrl+C stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING

import uvicorn

from botkit.adapters import Adapter, create_adapter
from botkit.server.app import create_app
from botkit.server.metrics import Metrics

if TYPE_CHECKING:
    from botkit.config import Config
    from botkit.engine import DialogueEngine

log = logging.getLogger(__name__)


def enabled_adapters(config: Config) -> list[str]:
    """``[server] adapters``, plus every adapter with an ``[adapters.<name>]`` table
    (the terminal chat excepted: it belongs to ``botkit chat``)."""
    names = list(config.server.adapters)
    names += [name for name in config.adapters if name not in names and name != "terminal"]
    return names


def api_keys_from(config: Config) -> tuple[str, ...]:
    raw = config.secret("api_keys") or ""
    return tuple(key.strip() for key in raw.split(",") if key.strip())


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: :class:`ServerRunner` owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class ServerRunner:
    """One ``botkit serve`` process: the HTTP app and every enabled adapter.

    ``adapters`` defaults to building ``[server] adapters`` from their config tables.
    ``sock`` serves on an already bound socket (tests bind port 0 to get a free one).
    """

    def __init__(
        self,
        engine: DialogueEngine,
        config: Config,
        *,
        host: str | None = None,
        port: int | None = None,
        sock: socket.socket | None = None,
        adapters: Sequence[Adapter] | None = None,
        api_keys: Sequence[str] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.engine = engine
        self.config = config
        self.host = host or config.server.host
        self.port = config.server.port if port is None else port
        self.sock = sock
        if sock is not None:
            self.host, self.port = sock.getsockname()[:2]
        if adapters is None:
            adapters = [
                create_adapter(name, engine, config.adapters.get(name))
                for name in enabled_adapters(config)
            ]
        self.adapters = list(adapters)
        self.api_keys = tuple(api_keys_from(config) if api_keys is None else api_keys)
        self.metrics = metrics or Metrics()
        self.ready = threading.Event()
        self._uvicorn: _Uvicorn | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def request_stop(self, *, force: bool = False) -> None:
        """Begin the graceful shutdown (callable from any thread)."""
        server = self._uvicorn
        if server is None:
            return
        if server.should_exit and force:
            server.force_exit = True
        server.should_exit = True

    async def serve(self, *, handle_signals: bool = False) -> None:
        """Serve until :meth:`request_stop` (or SIGINT/SIGTERM with ``handle_signals``)."""
        app = create_app(
            self.engine, self.config, adapters=self.adapters, api_keys=self.api_keys,
            metrics=self.metrics,
        )
        server_config = self.config.server
        uv_config = uvicorn.Config(
            app,
            host=self.host,
            port=self.port,
            log_config=None,
            access_log=server_config.access_log,
            lifespan="off",
            timeout_graceful_shutdown=int(max(1, server_config.shutdown_grace_s)),
            server_header=False,
        )
        self._uvicorn = _Uvicorn(uv_config)
        started: list[Adapter] = []
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM)
        if handle_signals:
            for sig in signals:
                loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            for adapter in self.adapters:
                await adapter.start()
                started.append(adapter)
            watcher = asyncio.create_task(self._announce_ready())
            try:
                await self._uvicorn.serve(sockets=[self.sock] if self.sock else None)
            finally:
                watcher.cancel()
            if not self._uvicorn.started:
                raise OSError(f"could not listen on {self.url} (is the port in use?)")
        finally:
            grace = 0.0 if self._uvicorn.force_exit else server_config.shutdown_grace_s
            for adapter in reversed(started):
                try:
                    await adapter.stop(grace_s=grace)
                except Exception:
                    log.exception("adapter %s failed to stop cleanly", adapter.name)
            if handle_signals:
                for sig in signals:
                    loop.remove_signal_handler(sig)
            self.ready.clear()

    async def _announce_ready(self) -> None:
        assert self._uvicorn is not None
        while not self._uvicorn.started:
            if self._uvicorn.should_exit:
                return
            await asyncio.sleep(0.02)
        if self.sock is None and self._uvicorn.servers:
            sockets: Sequence[socket.socket] = self._uvicorn.servers[0].sockets or []
            if sockets and self.port == 0:
                self.port = sockets[0].getsockname()[1]
        self.ready.set()

    def _on_signal(self, sig: int) -> None:
        assert self._uvicorn is not None
        if self._uvicorn.should_exit:
            log.warning("second %s: stopping now", signal.Signals(sig).name)
            self.request_stop(force=True)
            return
        log.warning(
            "%s: finishing the replies in progress (up to %g s; again to stop now)",
            signal.Signals(sig).name, self.config.server.shutdown_grace_s,
        )
        self.request_stop()


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0: a free one), for serving on a known port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only when their
    # proto says TCP, and without it Nagle holds each small event-stream write back
    # until the client's delayed ACK (about 25-40 ms per event).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def describe_start(runner: ServerRunner) -> str:
    names = ", ".join(a.name for a in runner.adapters) or "none"
    lines = [f"botkit is serving on {runner.url} (adapters: {names})"]
    if any(a.name == "web" for a in runner.adapters):
        lines.append(f"open {runner.url} to chat with the demo widget")
    lines.append(f"OpenAI-compatible API: {runner.url}/v1 "
                 + ("(API keys required)" if runner.api_keys else "(no API key: loopback only)"))
    lines.append(f"operator console: {runner.url}/console (accounts: botkit console add-user)")
    lines.append("health: /healthz  readiness: /readyz  metrics: /metrics;  Ctrl+C stops")
    return "\n".join(lines)

