"""A real botkit server on loopback, for the HTTP, widget and API tests.

``LiveServer`` runs uvicorn in a background thread (its own event loop) with the web
adapter, the scripted generator as the model and a temporary SQLite file, on a free
port. Tests talk to it over real HTTP: in-process ASGI clients hang on event streams.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from botkit.config import Config, load_config
from botkit.engine import DialogueEngine
from botkit.memory import ConversationStore
from botkit.personas import PersonaRegistry
from botkit.server.run import ServerRunner, bind_socket
from botkit.testing import ScriptedGenerator, write_test_personas
from botkit_web import WebAdapter

T = TypeVar("T")


class LiveServer:
    """A running ``botkit serve`` (web adapter + OpenAI API) in a thread."""

    def __init__(
        self, tmp_path: Path, *, api_keys: tuple[str, ...] = (),
        server_settings: dict[str, Any] | None = None, **web_settings: Any,
    ) -> None:
        base = load_config(None, environ={})
        self.config: Config = replace(
            base,
            bot=replace(base.bot, data_dir=str(tmp_path / "data"),
                        personas_dir=str(tmp_path / "personas")),
            server=replace(base.server, **(server_settings or {})),
            adapters={"web": web_settings},
        )
        self.db_url = f"sqlite:///{tmp_path / 'web.db'}"
        self.personas_dir = write_test_personas(tmp_path / "personas")
        self.generator = ScriptedGenerator()
        self.api_keys = api_keys
        self.url = ""
        self.engine: DialogueEngine | None = None
        self.runner: ServerRunner | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="botkit-test-server",
                                        daemon=True)
        self._failure: BaseException | None = None
        self._opened = threading.Event()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> LiveServer:
        self._thread.start()
        self._opened.wait(30)
        if self._failure is not None:
            raise self._failure
        assert self.runner is not None
        if not self.runner.ready.wait(30):
            raise RuntimeError("the test server did not start within 30 s")
        self.url = self.runner.url
        return self

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to the test thread
            self._failure = exc
            self._opened.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        store = await ConversationStore.open(self.db_url)
        try:
            self.engine = DialogueEngine(
                store=store, generator=self.generator,
                personas=PersonaRegistry.from_dir(self.personas_dir),
                max_message_chars=self.config.bot.max_message_chars,
                generation_timeout_s=10.0,
            )
            adapter = WebAdapter(self.engine, self.config.adapters["web"])
            self.runner = ServerRunner(
                self.engine, self.config, sock=bind_socket("127.0.0.1", 0),
                adapters=[adapter], api_keys=self.api_keys,
            )
            self._opened.set()
            await self.runner.serve()
        finally:
            await store.close()

    def stop(self) -> None:
        if self.runner is not None:
            self.runner.request_stop()
        self._thread.join(30)
        if self._thread.is_alive():
            if self.runner is not None:
                self.runner.request_stop(force=True)
            self._thread.join(10)
        if self._failure is not None and not isinstance(self._failure, asyncio.CancelledError):
            raise self._failure

    # -- looking inside, from the test's thread ------------------------------------------

    def call(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``make()`` on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(make(), self._loop).result(30)

    @property
    def store(self) -> ConversationStore:
        assert self.engine is not None
        return self.engine.store

    def feedback(self) -> list[tuple[int, int]]:
        """Every stored feedback row as ``(message_id, score)``."""
        from sqlalchemy import select

        from botkit.memory.models import Feedback

        async def rows() -> list[tuple[int, int]]:
            async with self.store._transaction() as session:
                result = await session.execute(
                    select(Feedback.message_id, Feedback.score).order_by(Feedback.id)
                )
                return [(m, s) for m, s in result]

        return self.call(rows)

    def messages(self) -> list[tuple[str, str]]:
        """Every stored message as ``(role, text)``, oldest first."""
        from sqlalchemy import select

        from botkit.memory.models import Message

        async def rows() -> list[tuple[str, str]]:
            async with self.store._transaction() as session:
                result = await session.execute(
                    select(Message.role, Message.text).order_by(Message.id)
                )
                return [(r, t) for r, t in result]

        return self.call(rows)
