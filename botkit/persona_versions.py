"""Personas edited while botkit runs: validate a draft, preview it, publish it (hot, no
restart), keep every version with who changed what and when, roll back, export to TOML.

Persona files on disk stay the source of a fresh deployment. Publishing stores the
persona's whole TOML in SQL as its next version (``persona_versions``) and swaps it into
the running engine; at start, the newest published version of a persona overrides its
file, so a restart keeps the edit. ``botkit persona export`` writes the newest versions
back to files, to commit them.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import os
import re
import tempfile
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

from botkit.context import build_prompt
from botkit.errors import PersonaError
from botkit.generation import ChatMessage, GenerationRequest
from botkit.memory import ConversationStore, PersonaVersionRecord
from botkit.personas import Persona, parse_persona

if TYPE_CHECKING:
    from botkit.engine import DialogueEngine

log = logging.getLogger(__name__)

_FIELD = re.compile(r"^(?:\[(?P<table>\w+)\] )?(?P<field>[a-z_]+)\b")


class DraftError(PersonaError):
    """A draft that is not a valid persona; ``fields`` maps each bad field to why."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


def parse_draft(source: str, *, name: str, base: Persona | None) -> Persona:
    """The persona ``source`` (TOML) describes, or a :class:`DraftError` by field.

    The name cannot change (it keys conversations and adapters); relative paths resolve
    against the persona's file, as when it is loaded from disk.
    """
    try:
        raw = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        raise DraftError({"toml": f"not valid TOML: {exc}"}) from None
    if raw.get("name", name) != name:
        raise DraftError({"name": f"the name cannot change (it is {name!r}); a new persona "
                                  "is a new file"})
    raw = {**raw, "name": name}
    path = base.path if base is not None and base.path is not None else Path(f"{name}.toml")
    try:
        return parse_persona(raw, path)
    except PersonaError as exc:
        message = str(exc).removeprefix(f"{path}: ")
        found = _FIELD.match(message)
        field = "toml"
        if found:
            field = (f"{found['table']}.{found['field']}" if found["table"]
                     else found["field"])
            if field == "unknown":
                field = "toml"
        raise DraftError({field: message}) from None


def file_source(persona: Persona) -> str:
    """The TOML a persona was loaded from (its file), or a minimal one."""
    if persona.path is not None and persona.path.is_file():
        return persona.path.read_text(encoding="utf-8")
    return f'name = "{persona.name}"\nsystem_prompt = """{persona.system_prompt}"""\n'


def diff(old: str, new: str, *, old_label: str, new_label: str) -> str:
    """A unified diff of two persona sources (what changed between versions)."""
    return "".join(difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True),
        fromfile=old_label, tofile=new_label,
    ))


async def export_versions(
    store: ConversationStore, folder: Path, names: list[str] | None = None
) -> list[Path]:
    """Write the newest published version of each persona to ``folder/<name>.toml``
    (atomically: a reader never sees half a file)."""
    records = [r for r in await store.latest_persona_versions()
               if not names or r.persona in names]
    return await asyncio.to_thread(_write_sources, folder, records)


def _write_sources(folder: Path, records: list[PersonaVersionRecord]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for record in records:
        target = folder / f"{record.persona}.toml"
        fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{record.persona}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(record.source)
        os.replace(temp, target)
        written.append(target)
    return written


class PersonaEditor:
    """Publishing, previewing and rolling back the personas of one running engine."""

    def __init__(self, engine: DialogueEngine) -> None:
        self.engine = engine

    def current(self, name: str) -> Persona:
        return self.engine.persona(name)

    async def source(self, name: str) -> str:
        """The live persona's TOML: its newest published version, else its file."""
        versions = await self.engine.store.persona_versions(name)
        return versions[0].source if versions else file_source(self.current(name))

    async def history(self, name: str) -> list[PersonaVersionRecord]:
        self.current(name)  # an unknown persona is an UnknownPersonaError
        return await self.engine.store.persona_versions(name)

    async def preview(self, name: str, source: str, text: str) -> str:
        """The reply ``source`` would give to ``text``, stored nowhere; the live persona
        does not change."""
        live = self.current(name)
        draft = parse_draft(source, name=name, base=live)
        prompt = build_prompt(draft, [ChatMessage("user", text)], self.engine.generator)
        adapter = None
        if draft.adapter is not None:
            if draft.adapter == live.adapter and name in self.engine._adapter_versions:
                adapter = name
            else:
                adapter = f"{name}.preview"
                await asyncio.to_thread(
                    self.engine.generator.load_adapter, adapter, str(draft.adapter)
                )
        request = GenerationRequest(messages=prompt.messages, sampling=draft.generation.sampling(),
                                    adapter=adapter, request_id=f"preview-{name}")
        pieces: list[str] = []
        async with asyncio.timeout(self.engine.generation_timeout_s):
            async for piece in self.engine.generator.stream(request):
                pieces.append(piece)
        return "".join(pieces)

    async def publish(
        self, name: str, source: str, *, author: str, comment: str | None = None
    ) -> PersonaVersionRecord:
        """Validate, store as the next version and swap into the running engine."""
        persona = parse_draft(source, name=name, base=self.current(name))
        # Recorded first: a database failure must not leave a live change with no version.
        record = await self.engine.store.add_persona_version(
            name, source, author=author, comment=comment
        )
        await self._activate(persona)
        log.info("persona %s: version %d published by %s", name, record.version, author)
        return record

    async def rollback(self, name: str, version: int, *, author: str) -> PersonaVersionRecord:
        """Publish an earlier version again (as a new version: history only grows)."""
        for record in await self.history(name):
            if record.version == version:
                return await self.publish(name, record.source, author=author,
                                          comment=f"rollback to version {version}")
        raise PersonaError(f"persona {name!r} has no version {version}")

    async def apply_published(self) -> list[PersonaVersionRecord]:
        """At start: the newest published version of each persona replaces its file's."""
        applied: list[PersonaVersionRecord] = []
        for record in await self.engine.store.latest_persona_versions():
            base = self.engine.personas.get(record.persona)
            if base is None:
                log.warning("persona %s has published versions but no file; skipped",
                            record.persona)
                continue
            try:
                await self._activate(parse_draft(record.source, name=record.persona, base=base))
            except PersonaError as exc:
                log.warning("persona %s version %d no longer loads (%s); using its file",
                            record.persona, record.version, exc)
                continue
            applied.append(record)
            log.info("persona %s: using published version %d", record.persona, record.version)
        return applied

    async def export(self, folder: Path, names: list[str] | None = None) -> list[Path]:
        return await export_versions(self.engine.store, folder, names)

    async def _activate(self, persona: Persona) -> None:
        engine = self.engine
        if persona.adapter is None:
            engine._adapter_versions.pop(persona.name, None)
        elif persona.adapter != engine.persona(persona.name).adapter or (
            persona.name not in engine._adapter_versions
        ):
            version = await asyncio.to_thread(
                engine.generator.load_adapter, persona.name, str(persona.adapter)
            )
            engine._adapter_versions[persona.name] = version
        engine.personas.replace(persona)
