"""Persona editing while botkit runs: drafts validated by field, previews that change
nothing, hot publishing, every version kept, rollback, and export back to TOML."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from botkit.engine import DialogueEngine, IncomingMessage
from botkit.errors import PersonaError
from botkit.persona_versions import DraftError, PersonaEditor, diff, file_source
from botkit.personas import PersonaRegistry, load_persona
from botkit.testing import ScriptedGenerator


def msg(text: str) -> IncomingMessage:
    return IncomingMessage(channel="test", chat_key="chat-1", user_key="u1", text=text)


def edited(engine: DialogueEngine, prompt: str) -> str:
    """The persona's file with another system prompt."""
    source = file_source(engine.persona("pine"))
    changed = re.sub(r'(?m)^system_prompt = ".*"$', f'system_prompt = "{prompt}"', source)
    assert changed != source
    return changed


def top_level(source: str, line: str) -> str:
    """``line`` added among the top-level keys (before the first [table])."""
    return source.replace('display_name = "Pine"', f'display_name = "Pine"\n{line}')


@pytest.mark.parametrize(("change", "field"), [
    (lambda s: s.replace("temperature = 0.0", "temperature = -1.0"), "generation.temperature"),
    (lambda s: top_level(s, "mood = 'sunny'"), "toml"),
    (lambda s: s.replace('name = "pine"', 'name = "spruce"'), "name"),
    (lambda s: top_level(s, "support_hours = 'whenever'"), "support_hours"),
    (lambda s: s.replace('system_prompt = "', 'system_prompt = """'), "toml"),
])
async def test_an_invalid_draft_is_refused_with_the_field_that_is_wrong(
    botkit_engine: DialogueEngine, change, field: str,
) -> None:
    editor = PersonaEditor(botkit_engine)
    source = change(file_source(botkit_engine.persona("pine")))

    with pytest.raises(DraftError) as refused:
        await editor.publish("pine", source, author="olga")

    assert field in refused.value.fields
    assert refused.value.fields[field]
    assert await editor.history("pine") == []


async def test_a_preview_answers_with_the_draft_and_changes_nothing_live(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator,
) -> None:
    editor = PersonaEditor(botkit_engine)
    live_prompt = botkit_engine.persona("pine").system_prompt
    scripted_generator.replies.append("Ahoy! Pine the pirate here.")

    text = await editor.preview("pine", edited(botkit_engine, "You are Pine, a pirate."),
                                "hello")

    assert text == "Ahoy! Pine the pirate here."
    assert scripted_generator.requests[-1].messages[0].content == "You are Pine, a pirate."
    assert botkit_engine.persona("pine").system_prompt == live_prompt
    assert await botkit_engine.transcript("test", "chat-1") == []  # nothing stored
    assert await editor.history("pine") == []


async def test_publishing_changes_the_next_reply_without_a_restart_and_rollback_restores(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator,
) -> None:
    editor = PersonaEditor(botkit_engine)
    original = botkit_engine.persona("pine").system_prompt

    first = await editor.publish("pine", edited(botkit_engine, "You are Pine, brief."),
                                 author="olga", comment="shorter answers")
    await botkit_engine.respond(msg("hi")).collect()
    second = await editor.publish("pine", edited(botkit_engine, "You are Pine, verbose."),
                                  author="olga")
    back = await editor.rollback("pine", first.version, author="sam")
    await botkit_engine.respond(msg("hi again")).collect()

    assert scripted_generator.requests[0].messages[0].content == "You are Pine, brief."
    assert scripted_generator.requests[1].messages[0].content == "You are Pine, brief."
    assert [(v.version, v.author, v.comment) for v in await editor.history("pine")] == [
        (3, "sam", "rollback to version 1"), (2, "olga", None), (1, "olga", "shorter answers"),
    ]
    assert back.source == first.source
    assert "-system_prompt" in diff(second.source, back.source, old_label="v2",
                                    new_label="v3")
    assert original not in back.source
    with pytest.raises(PersonaError, match="no version 9"):
        await editor.rollback("pine", 9, author="sam")


async def test_a_restart_keeps_the_published_version_and_export_writes_it_back(
    botkit_engine: DialogueEngine, botkit_personas: PersonaRegistry, tmp_path: Path,
) -> None:
    await PersonaEditor(botkit_engine).publish(
        "pine", edited(botkit_engine, "You are Pine, published."), author="olga"
    )
    restarted = DialogueEngine(
        store=botkit_engine.store, generator=botkit_engine.generator,
        personas=PersonaRegistry.from_dir(next(iter(botkit_personas.values())).path.parent),
    )

    applied = await PersonaEditor(restarted).apply_published()
    written = await PersonaEditor(restarted).export(tmp_path / "exported")

    assert [r.version for r in applied] == [1]
    assert restarted.persona("pine").system_prompt == "You are Pine, published."
    assert [p.name for p in written] == ["pine.toml"]
    assert load_persona(written[0]).system_prompt == "You are Pine, published."


async def test_the_cli_lists_versions_and_exports_them_as_toml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from botkit.cli import main
    from botkit.memory import ConversationStore
    from botkit.testing import write_test_personas

    personas = write_test_personas(tmp_path / "personas")
    db = tmp_path / "data" / "botkit.db"
    config = tmp_path / "botkit.toml"
    config.write_text(f'[bot]\ndata_dir = "{tmp_path / "data"}"\npersonas_dir = "{personas}"\n'
                      f'[memory]\nurl = "sqlite:///{db}"\n', encoding="utf-8")
    store = await ConversationStore.open(f"sqlite:///{db}")
    source = (personas / "pine.toml").read_text(encoding="utf-8").replace(
        "virtual assistant", "exported assistant")
    await store.add_persona_version("pine", source, author="olga", comment="tone")
    await store.close()

    history = await asyncio.to_thread(main, ["persona", "history", "pine", "--config",
                                             str(config)])
    exported = await asyncio.to_thread(main, ["persona", "export", "--config", str(config),
                                              "--dir", str(tmp_path / "out")])

    out = capsys.readouterr().out
    assert (history, exported) == (0, 0)
    assert "version 1" in out
    assert "olga: tone" in out
    assert "version 1 by olga" in out
    assert "exported assistant" in load_persona(tmp_path / "out" / "pine.toml").system_prompt
