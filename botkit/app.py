"""Assemble a running bot from a config: personas, memory, model, engine.

The order is cheapest check first: personas (a typo is found in milliseconds), then the
database (a server that is down fails before the model spends seconds loading), then
the model.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from botkit.config import Config
from botkit.engine import DialogueEngine
from botkit.generation import Generator
from botkit.memory import ConversationStore
from botkit.personas import PersonaRegistry

log = logging.getLogger(__name__)


def load_personas(config: Config) -> PersonaRegistry:
    personas = PersonaRegistry.from_dir(config.bot.personas_dir)
    personas[config.bot.default_persona]  # an unknown default fails here, by name
    return personas


async def open_store(config: Config) -> ConversationStore:
    return await ConversationStore.open(
        config.database_url,
        password=config.secret("database_password"),
        sqlite_synchronous=config.memory.sqlite_synchronous,
        busy_timeout_ms=config.memory.busy_timeout_ms,
        auto_upgrade=config.memory.auto_upgrade,
    )


def build_generator(config: Config) -> Generator:
    """Load the model and wrap it in the runtime ``[runtime] engine`` names.

    The batched runtime serves Llama-family models; any other model falls back to the
    simple one-request-at-a-time generator, with a warning that says so.
    """
    import torch

    from botkit.model.loading import load_model
    from botkit.model.local import LocalGenerator
    from botkit.model.runtime import BatchedGenerator

    model = config.model
    if model.threads > 0:
        torch.set_num_threads(model.threads)
    loaded = load_model(
        model.source, device=model.device, dtype=model.dtype,
        cache_dir=config.data_dir / "models", context_window=model.context_window,
    )
    if config.runtime.engine == "batched":
        if BatchedGenerator.supports(loaded.model):
            return BatchedGenerator(
                loaded, config=config.runtime, timeout_s=model.generation_timeout_s,
                threads=model.threads,
            )
        log.warning(
            "the batched runtime does not support %s; serving one request at a time",
            type(loaded.model).__name__,
        )
    return LocalGenerator(loaded, timeout_s=model.generation_timeout_s, threads=model.threads)


async def load_generator(config: Config) -> Generator:
    # torch and the model are imported only here, off the event loop.
    return await asyncio.to_thread(build_generator, config)


@asynccontextmanager
async def open_engine(
    config: Config, *, generator: Generator | None = None
) -> AsyncIterator[DialogueEngine]:
    """A ready engine; everything it opened is closed on exit."""
    personas = load_personas(config)
    store = await open_store(config)
    owns_generator = generator is None
    try:
        if generator is None:
            generator = await load_generator(config)
        engine = DialogueEngine(
            store=store,
            generator=generator,
            personas=personas,
            default_persona=config.bot.default_persona,
            max_message_chars=config.bot.max_message_chars,
            generation_timeout_s=config.model.generation_timeout_s,
        )
        await engine.load_adapters()
        # Personas published from the console since the files were written win.
        from botkit.persona_versions import PersonaEditor

        await PersonaEditor(engine).apply_published()
        yield engine
    finally:
        if owns_generator and generator is not None:
            await generator.aclose()
        await store.close()
