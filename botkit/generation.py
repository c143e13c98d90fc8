"""The generator seam: what the engine asks of whatever produces replies.

The in-process model (:class:`botkit.model.local.LocalGenerator`) is one implementation,
a remote OpenAI-compatible server could be another, and
:class:`botkit.testing.ScriptedGenerator` serves the tests of everything above it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One turn of a prompt, in the shape chat templates expect."""

    role: Role
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to pick tokens. ``temperature == 0`` means greedy."""

    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50
    repetition_penalty: float = 1.1
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False
    """Keep generating past EOS up to ``max_new_tokens`` (benchmarks: equal work for all)."""


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One reply to produce: the full prompt, how to sample, which LoRA adapter.

    ``adapter`` is the name under which the adapter was registered with the generator
    (see :meth:`Generator.load_adapter`), or ``None`` for the base model.
    """

    messages: tuple[ChatMessage, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    adapter: str | None = None
    request_id: str = ""


@runtime_checkable
class Generator(Protocol):
    """Produces replies as a stream of text deltas.

    ``stream()`` returns an async iterator; the caller cancels a reply by closing it
    (``await it.aclose()``) or by cancelling the task that iterates it, and the
    implementation then stops spending compute on it at once.
    """

    @property
    def model_id(self) -> str:
        """What produced the replies, for the record (e.g. ``SmolLM2-135M-Instruct``)."""
        ...

    @property
    def context_window(self) -> int:
        """How many tokens a prompt plus its reply may hold."""
        ...

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Tokens the prompt would take after the chat template, generation prompt included."""
        ...

    def count_text(self, text: str) -> int:
        """Tokens of plain text, without any template (stored with each message)."""
        ...

    def load_adapter(self, name: str, path: str) -> str:
        """Make a LoRA adapter directory available under ``name``; returns its version."""
        ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        """Yield the reply's text as it is produced, in pieces."""
        ...

    async def aclose(self) -> None:
        """Release the model and its worker."""
        ...
