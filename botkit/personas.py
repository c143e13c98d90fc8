"""Persona files -> validated :class:`Persona` objects.

Operators describe each persona in one TOML file in the personas folder. Loading checks
every field and names the file and the field when something is wrong, so a typo in a
persona never surfaces later as a strange reply.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botkit.config import read_toml
from botkit.errors import PersonaError, UnknownPersonaError
from botkit.generation import SamplingParams
from botkit.handoff_rules import SupportHours

NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass(frozen=True)
class GenerationSettings:
    temperature: float = 0.3
    """0 is greedy; higher is more varied."""
    top_p: float = 0.9
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches this."""
    top_k: int = 50
    """Keep only the k most likely tokens; 0 disables."""
    repetition_penalty: float = 1.1
    """Above 1 discourages repeating tokens already in the prompt or reply."""
    max_new_tokens: int = 256
    """The longest reply, in tokens."""
    stop: tuple[str, ...] = ()
    """Strings that end a reply (not included in it)."""

    def sampling(self, seed: int | None = None) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            repetition_penalty=self.repetition_penalty,
            max_new_tokens=self.max_new_tokens,
            stop=self.stop,
            seed=seed,
        )


@dataclass(frozen=True)
class MemorySettings:
    history_tokens: int = 1536
    """At most this many tokens of past turns go into the prompt (the newest first)."""


@dataclass(frozen=True)
class Persona:
    name: str
    """Identifier used in config, the CLI and the database (lowercase, digits, - and _)."""
    display_name: str
    """What users see, e.g. ``Pine``."""
    system_prompt: str
    """The system message that opens every prompt."""
    greeting: str = ""
    """First message shown to a user (terminal, widget, Telegram /start)."""
    adapter: Path | None = None
    """LoRA adapter directory (relative paths are relative to the persona file), or none."""
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    memory: MemorySettings = field(default_factory=MemorySettings)
    escalation_keywords: tuple[str, ...] = ()
    """Words that ask for a human agent (used by human handoff), matched in any case and
    with small typos (see :mod:`botkit.handoff_rules`)."""
    handoff_topics: tuple[str, ...] = ()
    """The persona's own handoff rule: messages about these topics (matched like the
    escalation keywords, e.g. ``lawyer``, ``chargeback``) go to a person even when the
    user did not ask for one."""
    support_hours: SupportHours | None = None
    """When people answer, e.g. ``Mon-Fri 09:00-17:00 Europe/Berlin``; outside them a
    user asking for a human is told when the team is back and the bot carries on. None:
    a request is always queued for the team."""
    path: Path | None = None
    """The file this persona was loaded from (not a key)."""


_TOP_KEYS = {
    "name", "display_name", "system_prompt", "greeting", "adapter",
    "generation", "memory", "escalation_keywords", "handoff_topics", "support_hours",
}


def _check_type(value: Any, expected: type | tuple[type, ...], where: str) -> Any:
    allowed = expected if isinstance(expected, tuple) else (expected,)
    # bool is an int in Python; a persona saying `top_k = true` is still a mistake.
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        kind = "number" if float in allowed else " or ".join(t.__name__ for t in allowed)
        raise PersonaError(f"{where}: expected {kind}, got {value!r}")
    return value


def _table(raw: Mapping[str, Any], cls: type, where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            raise PersonaError(
                f"{where}: unknown field {key!r} (known: {', '.join(sorted(fields))})"
            )
        default = fields[key].default
        at = f"{where}.{key}"
        if isinstance(default, tuple):
            _check_type(value, list, at)
            kwargs[key] = tuple(_check_type(v, str, at) for v in value)
        elif isinstance(default, float):
            kwargs[key] = float(_check_type(value, (int, float), at))
        else:
            kwargs[key] = _check_type(value, type(default), at)
    return cls(**kwargs)


def _validate_generation(gen: GenerationSettings, where: str) -> None:
    checks = [
        (gen.temperature >= 0, "temperature must be 0 or more"),
        (0 < gen.top_p <= 1, "top_p must be in (0, 1]"),
        (gen.top_k >= 0, "top_k must be 0 or more"),
        (gen.repetition_penalty > 0, "repetition_penalty must be positive"),
        (gen.max_new_tokens >= 1, "max_new_tokens must be at least 1"),
        (all(gen.stop), "stop strings must not be empty"),
    ]
    for ok, message in checks:
        if not ok:
            raise PersonaError(f"{where}: [generation] {message}")


def parse_persona(raw: Mapping[str, Any], path: Path) -> Persona:
    """Build a Persona from a parsed TOML table; errors name the file and field."""
    where = str(path)
    for key in raw:
        if key not in _TOP_KEYS:
            known = ", ".join(sorted(_TOP_KEYS))
            raise PersonaError(f"{where}: unknown field {key!r} (known: {known})")
    for required in ("name", "system_prompt"):
        if required not in raw:
            raise PersonaError(f"{where}: missing required field {required!r}")
    name = _check_type(raw["name"], str, f"{where}: name")
    if not name or not set(name) <= NAME_CHARS:
        raise PersonaError(
            f"{where}: name {name!r} must be lowercase letters, digits, '-' or '_'"
        )
    system_prompt = _check_type(raw["system_prompt"], str, f"{where}: system_prompt")
    if not system_prompt.strip():
        raise PersonaError(f"{where}: system_prompt must not be empty")
    adapter_raw = _check_type(raw.get("adapter", ""), str, f"{where}: adapter")
    adapter = None
    if adapter_raw:
        adapter = Path(adapter_raw).expanduser()
        if not adapter.is_absolute():
            adapter = path.parent / adapter
    keywords = _check_type(
        raw.get("escalation_keywords", []), list, f"{where}: escalation_keywords"
    )
    topics = _check_type(raw.get("handoff_topics", []), list, f"{where}: handoff_topics")
    hours_raw = _check_type(raw.get("support_hours", ""), str, f"{where}: support_hours")
    try:
        support_hours = SupportHours.parse(hours_raw) if hours_raw.strip() else None
    except ValueError as exc:
        raise PersonaError(f"{where}: support_hours: {exc}") from None
    generation_raw = _check_type(raw.get("generation", {}), dict, f"{where}: generation")
    memory_raw = _check_type(raw.get("memory", {}), dict, f"{where}: memory")
    generation = _table(generation_raw, GenerationSettings, f"{where}: generation")
    _validate_generation(generation, where)
    memory = _table(memory_raw, MemorySettings, f"{where}: memory")
    if memory.history_tokens < 0:
        raise PersonaError(f"{where}: [memory] history_tokens must be 0 or more")
    return Persona(
        name=name,
        display_name=_check_type(raw.get("display_name", name), str, f"{where}: display_name"),
        system_prompt=system_prompt,
        greeting=_check_type(raw.get("greeting", ""), str, f"{where}: greeting"),
        adapter=adapter,
        generation=generation,
        memory=memory,
        escalation_keywords=tuple(
            _check_type(k, str, f"{where}: escalation_keywords") for k in keywords
        ),
        handoff_topics=tuple(_check_type(t, str, f"{where}: handoff_topics") for t in topics),
        support_hours=support_hours,
        path=path,
    )


def load_persona(path: str | Path) -> Persona:
    """Load and validate one persona file."""
    file = Path(path)
    return parse_persona(read_toml(file, PersonaError, "persona file"), file)


class PersonaRegistry(Mapping[str, Persona]):
    """The personas of one folder, by name."""

    def __init__(self, personas: Mapping[str, Persona]) -> None:
        self._personas = dict(personas)

    @classmethod
    def from_dir(cls, folder: str | Path) -> PersonaRegistry:
        """Load every ``*.toml`` in ``folder``; the first bad file stops loading with its error."""
        directory = Path(folder)
        if not directory.is_dir():
            raise PersonaError(f"personas folder not found: {directory}")
        personas: dict[str, Persona] = {}
        for file in sorted(directory.glob("*.toml")):
            persona = load_persona(file)
            if persona.name in personas:
                raise PersonaError(
                    f"{file}: persona name {persona.name!r} is already used by "
                    f"{personas[persona.name].path}"
                )
            personas[persona.name] = persona
        return cls(personas)

    def __getitem__(self, name: str) -> Persona:
        try:
            return self._personas[name]
        except KeyError:
            known = ", ".join(sorted(self._personas)) or "none"
            raise UnknownPersonaError(f"unknown persona {name!r} (known: {known})") from None

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return self._personas.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._personas

    def __iter__(self) -> Iterator[str]:
        return iter(self._personas)

    def __len__(self) -> int:
        return len(self._personas)

    def replace(self, persona: Persona) -> None:
        """Put ``persona`` in place of the one of its name (a published edit, hot)."""
        self._personas[persona.name] = persona
