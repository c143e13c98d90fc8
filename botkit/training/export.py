"""``botkit data export``: training dialogues from the conversation memory, as JSONL.

One line per conversation, in the chat format OpenAI's fine-tuning API and most LoRA
trainers read::

    {"messages": [{"role": "user", "content": "..."}, ...], "persona": "pine"}

Which conversations qualify, and where each is cut, is decided by
:meth:`ConversationStore.training_selection`; this module only writes the file, and
writes it atomically, so an interrupted export never leaves half a data set behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from botkit.memory import ConversationStore
from botkit.memory.store import TrainingDialogue

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote."""

    conversations: int
    """Dialogues written, one JSONL line each; 0 means an empty file."""
    turns: int
    """Messages written across all dialogues, after merging consecutive turns."""
    skipped_opted_out: int
    """Conversations that would have qualified but were held back by a user's opt-out."""
    path: Path
    """The file written."""


def dialogue_json(dialogue: TrainingDialogue) -> dict[str, object]:
    """One dialogue as the JSON object written on its line."""
    return {
        "messages": [{"role": role, "content": text} for role, text in dialogue.messages],
        "persona": dialogue.persona,
    }


def _write_atomically(out: Path, lines: Iterable[str]) -> None:
    """Write ``lines`` to a temporary file beside ``out``, then rename it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as handle:
            for line in lines:
                handle.write(line)
                handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, out)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


async def export_dialogues(
    store: ConversationStore,
    out: Path,
    *,
    persona: str | None = None,
    since: datetime | None = None,
    feedback: bool = True,
    agent_replies: bool = False,
) -> ExportReport:
    """Write the qualifying training dialogues to ``out`` as JSONL and say what was written.

    The filters are those of :meth:`ConversationStore.training_selection`. When nothing
    qualifies the file is still written, empty, and the report says 0 conversations.
    """
    selection = await store.training_selection(
        persona=persona, since=since, feedback=feedback, agent_replies=agent_replies
    )
    lines = [
        json.dumps(dialogue_json(dialogue), ensure_ascii=False) for dialogue in selection.dialogues
    ]
    await asyncio.to_thread(_write_atomically, out, lines)
    report = ExportReport(
        conversations=len(selection.dialogues),
        turns=sum(len(dialogue.messages) for dialogue in selection.dialogues),
        skipped_opted_out=selection.skipped_opted_out,
        path=out,
    )
    logger.info(
        "exported %d dialogues (%d turns) to %s; %d held back by opt-out",
        report.conversations,
        report.turns,
        out,
        report.skipped_opted_out,
    )
    return report


__all__ = ["ExportReport", "dialogue_json", "export_dialogues"]
