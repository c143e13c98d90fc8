"""Prompt assembly within a token budget.

The prompt is the persona's system prompt plus the newest turns that fit, counted with
the generator's real tokenizer. What fits is the smallest of: the model's context window
minus the reply's ``max_new_tokens``, and the persona's ``history_tokens`` for past
turns. A long conversation never fails: the oldest turns are dropped. Text injected
here (the system prompt) is never written back into history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from botkit.errors import InputError
from botkit.generation import ChatMessage, Generator
from botkit.personas import Persona


@dataclass(frozen=True, slots=True)
class BuiltPrompt:
    messages: tuple[ChatMessage, ...]
    prompt_tokens: int
    dropped_turns: int


def build_prompt(
    persona: Persona,
    history: Sequence[ChatMessage],
    generator: Generator,
) -> BuiltPrompt:
    """The system prompt plus as many of the newest ``history`` turns as fit.

    ``history`` is oldest first and ends with the user's new message, which is always
    kept; an :class:`InputError` says so when even that alone does not fit.
    """
    system = ChatMessage("system", persona.system_prompt)
    window_budget = generator.context_window - persona.generation.max_new_tokens
    base = generator.count_tokens([system])
    if not history:
        return BuiltPrompt((system,), base, 0)

    newest = history[-1]
    essential = generator.count_tokens([system, newest])
    if essential > window_budget:
        raise InputError(
            "the message is too long for the model's context window "
            f"({essential} tokens with the system prompt; {window_budget} fit)"
        )
    history_budget = min(window_budget - base, persona.memory.history_tokens)

    # Count each turn on its own (cheap, cached per text by the caller's tokenizer) and
    # add turns from the newest back while they fit; then verify the whole prompt once,
    # since a chat template may add a little per turn that the per-turn sum misses.
    kept: list[ChatMessage] = [newest]
    used = essential - base
    for turn in reversed(history[:-1]):
        cost = generator.count_tokens([system, turn]) - base
        if used + cost > history_budget:
            break
        kept.append(turn)
        used += cost
    kept.reverse()
    # Never start the kept history with an assistant turn: the model would see a reply
    # to a question that is no longer there.
    while len(kept) > 1 and kept[0].role == "assistant":
        kept.pop(0)

    messages = [system, *kept]
    total = generator.count_tokens(messages)
    while total > window_budget and len(messages) > 2:
        messages.pop(1)
        total = generator.count_tokens(messages)
    return BuiltPrompt(tuple(messages), total, len(history) - (len(messages) - 1))
