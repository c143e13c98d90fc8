"""Training data: chat JSONL files in, token ids with a loss mask out.

Two line formats are read, and may be mixed in one file::

    {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
    {"conversations": [{"from": "system"|"human"|"gpt", "value": "..."}, ...]}

The first is OpenAI's fine-tuning format (an assistant message with ``"weight": 0`` is
kept as context but not trained on); the second is ShareGPT's. Other keys on a line
(``"persona"``, ids) are ignored.

Every dialogue is rendered through the model's own chat template, and the loss is
taken on the assistant turns only (their text and the end-of-turn token the template
puts after them): the system prompt and the user's turns are context, not targets.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botkit.errors import DatasetError

IGNORE_INDEX = -100
"""Label of a position the loss skips (PyTorch's cross-entropy default)."""

_OPENAI_ROLES = {"system": "system", "user": "user", "assistant": "assistant"}
_SHAREGPT_ROLES = {
    "system": "system", "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "bot": "assistant",
}


@dataclass(frozen=True)
class Turn:
    role: str
    content: str
    train: bool = True
    """For assistant turns: whether the loss covers this turn."""


@dataclass(frozen=True)
class Dialogue:
    turns: tuple[Turn, ...]
    source: str
    """``file:line``, for messages that point at the data."""


@dataclass(frozen=True)
class Example:
    """One dialogue as the model sees it."""

    input_ids: list[int]
    labels: list[int]
    """``input_ids`` where the loss is taken, :data:`IGNORE_INDEX` elsewhere."""
    source: str

    @property
    def target_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


@dataclass
class DatasetReport:
    """What became of a data file; ``botkit train`` prints it and stores it in metrics."""

    path: str
    sha256: str
    dialogues: int = 0
    examples: int = 0
    truncated: int = 0
    """Dialogues longer than the maximum length, cut to it (the rest is not trained on)."""
    without_targets: int = 0
    """Dialogues dropped because no assistant token was left to train on."""
    tokens: int = 0
    target_tokens: int = 0
    truncated_sources: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = dict(vars(self))
        data["truncated_sources"] = self.truncated_sources[:20]
        return data


# -- reading -------------------------------------------------------------------------


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_jsonl(path: str | Path, what: str) -> Iterator[tuple[str, Any]]:
    """``(file:line, record)`` for every non-blank line; bad JSON fails with its line."""
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{what} not found: {file}") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{file} is not UTF-8 text: {exc}") from exc
    except OSError as exc:
        raise DatasetError(f"cannot read {file}: {exc}") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{file}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{where}: not valid JSON ({exc.msg} at column {exc.colno})"
            ) from None
        yield where, record


def read_dialogues(path: str | Path) -> list[Dialogue]:
    """Every dialogue in a JSONL file; a malformed line fails with its line number."""
    file = Path(path).expanduser()
    dialogues = [
        Dialogue(turns=_parse_record(record, where), source=where)
        for where, record in read_jsonl(file, "data file")
    ]
    if not dialogues:
        raise DatasetError(f"{file} holds no dialogues (the file is empty)")
    return dialogues


def _parse_record(record: Any, where: str) -> tuple[Turn, ...]:
    if not isinstance(record, dict):
        raise DatasetError(
            f"{where}: expected a JSON object with \"messages\" or \"conversations\""
        )
    if "messages" in record:
        items, role_key, text_key, roles = record["messages"], "role", "content", _OPENAI_ROLES
    elif "conversations" in record:
        items, role_key, text_key, roles = (
            record["conversations"], "from", "value", _SHAREGPT_ROLES
        )
    else:
        raise DatasetError(
            f"{where}: expected a \"messages\" list (OpenAI format) or a \"conversations\" "
            "list (ShareGPT format)"
        )
    if not isinstance(items, list) or not items:
        raise DatasetError(f"{where}: the list of turns is empty or not a list")
    turns = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise DatasetError(f"{where}: turn {index + 1} is not an object")
        role = roles.get(str(item.get(role_key, "")).lower())
        if role is None:
            known = ", ".join(sorted(roles))
            raise DatasetError(
                f"{where}: turn {index + 1} has {role_key}={item.get(role_key)!r}; "
                f"expected one of {known}"
            )
        content = item.get(text_key)
        if not isinstance(content, str):
            raise DatasetError(f"{where}: turn {index + 1} has no text in {text_key!r}")
        weight = item.get("weight", 1)
        if weight not in (0, 1):
            raise DatasetError(f"{where}: turn {index + 1} has weight {weight!r}; use 0 or 1")
        turns.append(Turn(role=role, content=content, train=bool(weight)))
    return tuple(turns)


# -- tokenizing ----------------------------------------------------------------------


def _render(tokenizer: Any, messages: Sequence[dict[str, str]], *, generation: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(
        list(messages), add_generation_prompt=generation, tokenize=True, return_dict=False
    )
    if ids and isinstance(ids[0], list):
        ids = ids[0]
    return list(ids)


def tokenize_dialogue(tokenizer: Any, dialogue: Dialogue, *, system_prompt: str = "") -> Example:
    """Render ``dialogue`` with the chat template; labels cover the assistant turns only.

    Each assistant turn's span is found by rendering the dialogue up to it (with the
    generation prompt) and up to its end: the template must render a conversation's
    prefixes as prefixes of the whole, which every common chat template does.
    """
    turns = list(dialogue.turns)
    if system_prompt and turns[0].role != "system":
        turns.insert(0, Turn("system", system_prompt))
    while turns and turns[-1].role != "assistant":
        turns.pop()  # trailing user turns have nothing to learn from
    messages = [{"role": t.role, "content": t.content} for t in turns]
    if not messages:
        return Example([], [], dialogue.source)
    full = _render(tokenizer, messages, generation=False)
    labels = [IGNORE_INDEX] * len(full)
    for index, turn in enumerate(turns):
        if turn.role != "assistant" or not turn.train:
            continue
        start = len(_render(tokenizer, messages[:index], generation=True))
        through = _render(tokenizer, messages[: index + 1], generation=False)
        if full[: len(through)] != through or start > len(through):
            raise DatasetError(
                f"{dialogue.source}: the model's chat template does not render a "
                "conversation's beginning as a prefix of the whole, so the assistant turns "
                "cannot be located; use a model with a standard chat template"
            )
        labels[start : len(through)] = full[start : len(through)]
    return Example(full, labels, dialogue.source)


def build_examples(
    tokenizer: Any,
    path: str | Path,
    *,
    system_prompt: str = "",
    max_length: int = 1024,
) -> tuple[list[Example], DatasetReport]:
    """Read and tokenize a data file; dialogues over ``max_length`` are truncated."""
    dialogues = read_dialogues(path)
    report = DatasetReport(path=str(path), sha256=file_sha256(path), dialogues=len(dialogues))
    examples = []
    for dialogue in dialogues:
        example = tokenize_dialogue(tokenizer, dialogue, system_prompt=system_prompt)
        if len(example.input_ids) > max_length:
            report.truncated += 1
            report.truncated_sources.append(dialogue.source)
            example = Example(
                example.input_ids[:max_length], example.labels[:max_length], example.source
            )
        if example.target_tokens == 0:
            report.without_targets += 1
            continue
        examples.append(example)
        report.tokens += len(example.input_ids)
        report.target_tokens += example.target_tokens
    report.examples = len(examples)
    if not examples:
        raise DatasetError(
            f"{path}: none of its {len(dialogues)} dialogue(s) has an assistant turn to train "
            "on (every token is masked); each dialogue needs at least one assistant reply"
        )
    return examples, report


def split_examples(
    examples: Sequence[Example], fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """A seeded train/validation split; the validation part has at least one example."""
    if not 0 < fraction < 1:
        raise DatasetError(f"the validation fraction must be between 0 and 1, not {fraction}")
    if len(examples) < 2:
        raise DatasetError(
            "at least two dialogues are needed to hold one out for validation; "
            "add data or give a validation file with --valid"
        )
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    held = max(1, round(len(examples) * fraction))
    valid = [examples[i] for i in sorted(order[:held])]
    train = [examples[i] for i in sorted(order[held:])]
    return train, valid


# -- batching ------------------------------------------------------------------------


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, *, seed: int, group: int = 64
) -> list[list[int]]:
    """Batches of similar lengths, in a random order, so that padding stays small.

    Examples are shuffled, cut into groups of ``group`` batches, sorted by length
    within each group and batched; the batches are then shuffled. Every epoch draws
    a different grouping from its own seed.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = max(batch_size * group, batch_size)
    batches: list[list[int]] = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def random_batches(count: int, batch_size: int, *, seed: int) -> list[list[int]]:
    """Plain shuffled batches (the baseline a padded loop uses)."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return [order[i : i + batch_size] for i in range(0, count, batch_size)]


def iter_batches(
    examples: Sequence[Example], batches: Sequence[Sequence[int]], pad_id: int
) -> Iterator[tuple[Any, Any, Any]]:
    """(input_ids, attention_mask, labels) tensors, right-padded to each batch's longest."""
    import torch

    for batch in batches:
        rows = [examples[i] for i in batch]
        width = max(len(r.input_ids) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        for row, example in enumerate(rows):
            size = len(example.input_ids)
            ids[row, :size] = torch.tensor(example.input_ids)
            mask[row, :size] = 1
            labels[row, :size] = torch.tensor(example.labels)
        yield ids, mask, labels
