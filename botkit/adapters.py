"""The channel adapter contract and its discovery through entry points.

An adapter connects one platform to the engine: it turns platform events into
:class:`~botkit.engine.IncomingMessage`, passes them to ``engine.respond()`` and renders
the streamed :class:`~botkit.engine.Reply` the platform's way. Adapters register under
the entry-point group ``botkit.adapters``, so the core never imports a platform SDK and
a third-party adapter takes the same path as ours::

    [project.entry-points."botkit.adapters"]
    telegram = "botkit_telegram:TelegramAdapter"

An adapter that fails to import, is not an :class:`Adapter`, or rejects its config
section raises :class:`~botkit.errors.AdapterLoadError` before anything starts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from botkit.errors import AdapterLoadError, BotkitError

if TYPE_CHECKING:
    from botkit.engine import DialogueEngine

ENTRY_POINT_GROUP = "botkit.adapters"


class Clock(Protocol):
    """Time for an adapter's pacing; tests pass a virtual clock whose ``sleep`` advances
    it at once."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    """The real clock: ``time.monotonic`` and ``asyncio.sleep``."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
log = logging.getLogger(__name__)


class Adapter(ABC):
    """One channel. Subclasses set ``name`` and implement ``start`` and ``stop``.

    ``start()`` returns once the adapter is receiving (it runs its own tasks);
    ``stop(grace_s)`` stops receiving, lets in-flight replies finish for up to ``grace_s``
    seconds, then cancels them.
    Use it as ``async with adapter: ...`` to get both, with ``stop()`` on failure.
    """

    name: ClassVar[str]

    def __init__(self, engine: DialogueEngine, config: Mapping[str, Any] | None = None) -> None:
        self.engine = engine
        self.config = self.validate_config(dict(config or {}))

    @classmethod
    def validate_config(cls, raw: dict[str, Any]) -> Any:
        """Check the adapter's ``[adapters.<name>]`` table; raise ConfigError if wrong.

        The default accepts only an empty table.
        """
        if raw:
            from botkit.errors import ConfigError

            raise ConfigError(
                f"[adapters.{cls.name}] takes no settings; unknown: {', '.join(sorted(raw))}"
            )
        return raw

    def http_routes(self, server: Any) -> Sequence[Any]:
        """Starlette routes this adapter serves on ``botkit serve`` (webhooks, a widget).

        ``server`` is the :class:`botkit.server.app.Server` the routes share; the
        default serves nothing.
        """
        return ()

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self, grace_s: float = 30.0) -> None: ...

    async def __aenter__(self) -> Adapter:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def available_adapters() -> dict[str, EntryPoint]:
    """Every adapter registered under ``botkit.adapters``, by name (nothing imported)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_adapter_class(name: str) -> type[Adapter]:
    """Import the adapter registered as ``name`` and check that it is an Adapter."""
    found = available_adapters()
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        raise AdapterLoadError(name, f"no adapter of that name is installed (installed: {known})")
    try:
        cls = found[name].load()
    except Exception as exc:  # an adapter's import can fail in any way
        raise AdapterLoadError(name, f"{type(exc).__name__}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise AdapterLoadError(name, f"{found[name].value} is not a botkit.adapters.Adapter")
    return cls


def create_adapter(
    name: str, engine: DialogueEngine, config: Mapping[str, Any] | None = None, **kwargs: Any
) -> Adapter:
    """Load the adapter ``name`` and build it with its config section."""
    cls = load_adapter_class(name)
    try:
        return cls(engine, config, **kwargs)
    except BotkitError as exc:
        raise AdapterLoadError(name, exc) from exc
    except Exception as exc:
        raise AdapterLoadError(name, f"{type(exc).__name__}: {exc}") from exc
