"""Fakes and pytest fixtures for testing code built on botkit, without loading weights.

:class:`ScriptedGenerator` stands in for the model behind the
:class:`~botkit.generation.Generator` seam: it replies with text you choose, in pieces,
at the pace you choose, and records every request it was given. The fixtures build a
real :class:`~botkit.engine.DialogueEngine` on a real SQLite file in a temporary folder.

This module is registered as a pytest plugin (entry point ``pytest11``), so adapter
authors get the fixtures by installing botkit::

    async def test_my_adapter(botkit_engine, scripted_generator):
        scripted_generator.replies.append("Hello there!")
        ...
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from botkit.generation import ChatMessage, GenerationRequest

if TYPE_CHECKING:
    from botkit.engine import DialogueEngine
    from botkit.personas import PersonaRegistry

ReplyScript = str | Callable[[GenerationRequest], str]

_PIECE = re.compile(r"\S+\s*|\s+")


class ScriptedGenerator:
    """A Generator that replies from a script instead of a model.

    ``replies`` is consumed in order (a string, or a callable given the request); when
    it runs out, ``default`` is used (a callable or a string). Replies are streamed
    word by word with ``delay_s`` between pieces; ``stall_after`` makes it stop
    producing after that many pieces (to test time-outs). Token counts are words
    plus punctuation, a stand-in for a real tokenizer that keeps tests deterministic.
    """

    def __init__(
        self,
        replies: Sequence[ReplyScript] = (),
        *,
        default: ReplyScript = "I am a scripted reply.",
        delay_s: float = 0.0,
        stall_after: int | None = None,
        context_window: int = 2048,
        model_id: str = "scripted",
    ) -> None:
        self.replies: list[ReplyScript] = list(replies)
        self.default = default
        self.delay_s = delay_s
        self.stall_after = stall_after
        self._context_window = context_window
        self._model_id = model_id
        self.requests: list[GenerationRequest] = []
        self.adapters: dict[str, str] = {}
        self.cancelled = 0
        self.completed = 0
        self.closed = False

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def context_window(self) -> int:
        return self._context_window

    def count_text(self, text: str) -> int:
        return len(re.findall(r"\w+|[^\w\s]", text))

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        # Four tokens of template per turn, like ChatML's <|im_start|>role\n...<|im_end|>\n,
        # plus three for the generation prompt.
        return sum(4 + self.count_text(m.content) for m in messages) + 3

    def load_adapter(self, name: str, path: str) -> str:
        self.adapters[name] = path
        return f"scripted-{name}"

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        self.requests.append(request)
        script = self.replies.pop(0) if self.replies else self.default
        text = script(request) if callable(script) else script
        finished = False
        try:
            for index, piece in enumerate(_PIECE.findall(text)):
                if self.stall_after is not None and index >= self.stall_after:
                    await asyncio.Event().wait()  # never set: a stalled model
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                yield piece
            finished = True
        finally:
            if finished:
                self.completed += 1
            else:
                self.cancelled += 1

    async def aclose(self) -> None:
        self.closed = True


PINE_TEST_PERSONA = '''
name = "pine"
display_name = "Pine"
system_prompt = "You are Pine, the Harbor & Pine virtual assistant."
greeting = "Hi! I'm Pine. How can I help?"
escalation_keywords = ["agent", "human"]

[generation]
temperature = 0.0
max_new_tokens = 64

[memory]
history_tokens = 512
'''


def write_test_personas(folder: Path) -> Path:
    """Write the test persona file(s) into ``folder`` and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pine.toml").write_text(PINE_TEST_PERSONA, encoding="utf-8")
    return folder


@pytest.fixture
def scripted_generator() -> ScriptedGenerator:
    """A fresh :class:`ScriptedGenerator`; append to ``.replies`` to script answers."""
    return ScriptedGenerator()


@pytest.fixture
def botkit_personas(tmp_path: Path) -> PersonaRegistry:
    from botkit.personas import PersonaRegistry

    return PersonaRegistry.from_dir(write_test_personas(tmp_path / "personas"))


@pytest.fixture
def botkit_db_url(tmp_path: Path) -> str:
    """A SQLite file in the test's temporary folder."""
    return f"sqlite:///{tmp_path / 'botkit.db'}"


@pytest.fixture
async def botkit_engine(
    botkit_db_url: str,
    scripted_generator: ScriptedGenerator,
    botkit_personas: PersonaRegistry,
) -> AsyncIterator[DialogueEngine]:
    """A real engine on a real SQLite file, with the scripted generator as its model."""
    from botkit.engine import DialogueEngine
    from botkit.memory import ConversationStore

    store = await ConversationStore.open(botkit_db_url)
    try:
        engine = DialogueEngine(
            store=store,
            generator=scripted_generator,
            personas=botkit_personas,
            max_message_chars=4000,
            generation_timeout_s=5.0,
        )
        await engine.load_adapters()
        yield engine
    finally:
        await store.close()
