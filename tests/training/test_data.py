"""Training data: JSONL dialogues in, token ids with an assistant-only loss mask out."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest

from botkit.errors import DatasetError
from botkit.training.data import (
    IGNORE_INDEX,
    Dialogue,
    Example,
    Turn,
    build_examples,
    length_grouped_batches,
    random_batches,
    read_dialogues,
    split_examples,
    tokenize_dialogue,
)
from tests.model.conftest import build_tokenizer
from tests.training.conftest import openai_line, write_jsonl

END_OF_TURN = "<|im_end|>\n"

DIALOGUE = [
    ("system", "You are a shop assistant."),
    ("user", "How do I reset my password?"),
    ("assistant", "Open the settings page and choose reset password."),
    ("user", "When does my order ship?"),
    ("assistant", "The order ships in three to five business days."),
]
SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt"}


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return build_tokenizer()


def labelled_spans(tokenizer: Any, example: Example) -> list[str]:
    """The text of each run of consecutive labelled positions."""
    spans: list[list[int]] = []
    previous = IGNORE_INDEX
    for token, label in zip(example.input_ids, example.labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            if previous == IGNORE_INDEX:
                spans.append([])
            spans[-1].append(token)
        previous = label
    return [tokenizer.decode(span, skip_special_tokens=False) for span in spans]


def test_openai_and_sharegpt_lines_give_the_same_examples(tmp_path: Path, tokenizer: Any) -> None:
    openai = write_jsonl(tmp_path / "openai.jsonl", [openai_line(*DIALOGUE, persona="pine")])
    sharegpt = write_jsonl(tmp_path / "sharegpt.jsonl", [{
        "id": "x1",
        "conversations": [{"from": SHAREGPT_ROLES[r], "value": c} for r, c in DIALOGUE],
    }])

    assert [d.turns for d in read_dialogues(openai)] == [d.turns for d in read_dialogues(sharegpt)]
    from_openai, _ = build_examples(tokenizer, openai)
    from_sharegpt, _ = build_examples(tokenizer, sharegpt)
    assert from_openai[0].input_ids == from_sharegpt[0].input_ids
    assert from_openai[0].labels == from_sharegpt[0].labels
    assert from_openai[0].source == f"{openai}:1"


def test_only_assistant_turns_and_their_end_of_turn_are_labelled(
    tmp_path: Path, tokenizer: Any
) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [openai_line(*DIALOGUE)])

    [example], report = build_examples(tokenizer, data)

    assert labelled_spans(tokenizer, example) == [
        DIALOGUE[2][1] + END_OF_TURN,
        DIALOGUE[4][1] + END_OF_TURN,
    ]
    assert report.target_tokens == example.target_tokens
    assert report.tokens == len(example.input_ids)


def test_an_assistant_turn_with_weight_0_is_context_not_target(
    tmp_path: Path, tokenizer: Any
) -> None:
    line = openai_line(*DIALOGUE)
    line["messages"][2]["weight"] = 0
    data = write_jsonl(tmp_path / "d.jsonl", [line])

    [example], _ = build_examples(tokenizer, data)

    assert labelled_spans(tokenizer, example) == [DIALOGUE[4][1] + END_OF_TURN]
    assert DIALOGUE[2][1] in tokenizer.decode(example.input_ids)


def test_the_persona_prompt_opens_only_dialogues_without_a_system_turn(
    tmp_path: Path, tokenizer: Any
) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [
        openai_line(*DIALOGUE[1:3]),
        openai_line(("system", "Own prompt."), *DIALOGUE[1:3]),
    ])

    examples, _ = build_examples(tokenizer, data, system_prompt="Persona prompt.")
    without, with_own = (tokenizer.decode(e.input_ids) for e in examples)

    assert without.startswith("<|im_start|>system\nPersona prompt.<|im_end|>\n<|im_start|>user\n")
    assert with_own.startswith("<|im_start|>system\nOwn prompt.<|im_end|>\n")
    assert "Persona prompt." not in with_own
    assert [labelled_spans(tokenizer, e) for e in examples] == [[DIALOGUE[2][1] + END_OF_TURN]] * 2


def test_malformed_json_names_the_file_and_line(tmp_path: Path, tokenizer: Any) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [
        openai_line(*DIALOGUE), "", '{"messages": [{"role": "user", "content": "hi"}',
    ])

    with pytest.raises(DatasetError, match=rf"^{re.escape(str(data))}:3: not valid JSON"):
        build_examples(tokenizer, data)


def test_an_unknown_role_names_the_line_and_the_role(tmp_path: Path) -> None:
    line = openai_line(("user", "hi"), ("assistant", "hello"))
    line["messages"][1]["role"] = "robot"
    data = write_jsonl(tmp_path / "d.jsonl", [openai_line(*DIALOGUE), line])

    message = rf"^{re.escape(str(data))}:2: turn 2 has role='robot'; expected one of"
    with pytest.raises(DatasetError, match=message):
        read_dialogues(data)


def test_an_empty_file_is_an_error(tmp_path: Path) -> None:
    data = tmp_path / "empty.jsonl"
    data.write_text("\n\n", encoding="utf-8")

    with pytest.raises(DatasetError, match="holds no dialogues"):
        read_dialogues(data)


def test_a_file_without_assistant_turns_says_every_token_is_masked(
    tmp_path: Path, tokenizer: Any
) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [
        openai_line(("user", "Hello there")), openai_line(("system", "x"), ("user", "Anyone?")),
    ])

    with pytest.raises(DatasetError, match="every token is masked"):
        build_examples(tokenizer, data)


def test_long_dialogues_are_truncated_and_counted(tmp_path: Path, tokenizer: Any) -> None:
    long_user = "Please contact support if the problem persists. " * 20
    short = openai_line(*DIALOGUE[1:3])
    long = openai_line(*DIALOGUE[1:3], ("user", long_user), DIALOGUE[4])
    data = write_jsonl(tmp_path / "d.jsonl", [short, long])
    [short_example], _ = build_examples(tokenizer, write_jsonl(tmp_path / "s.jsonl", [short]))
    max_length = len(short_example.input_ids) + 10

    examples, report = build_examples(tokenizer, data, max_length=max_length)

    assert (report.dialogues, report.examples, report.truncated, report.without_targets) == (
        2, 2, 1, 0
    )
    assert report.truncated_sources == [f"{data}:2"]
    assert max(len(e.input_ids) for e in examples) == max_length
    # The cut dialogue still trains on its first reply, and only on that.
    assert labelled_spans(tokenizer, examples[1]) == [DIALOGUE[2][1] + END_OF_TURN]


def test_a_dialogue_whose_reply_is_cut_off_entirely_is_skipped(
    tmp_path: Path, tokenizer: Any
) -> None:
    long_user = "Please contact support if the problem persists. " * 20
    data = write_jsonl(tmp_path / "d.jsonl", [
        openai_line(*DIALOGUE[1:3]), openai_line(("user", long_user), DIALOGUE[2]),
    ])

    examples, report = build_examples(tokenizer, data, max_length=64)

    assert (report.examples, report.truncated, report.without_targets) == (1, 1, 1)
    assert [e.source for e in examples] == [f"{data}:1"]


def padding(batches: list[list[int]], lengths: list[int]) -> int:
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)


def test_length_grouped_batches_cover_every_index_once_with_less_padding() -> None:
    rng = random.Random(7)
    lengths = [rng.choice([rng.randint(8, 40), rng.randint(200, 900)]) for _ in range(300)]

    grouped = length_grouped_batches(lengths, 8, seed=3, group=4)
    plain = random_batches(len(lengths), 8, seed=3)

    assert sorted(i for batch in grouped for i in batch) == list(range(len(lengths)))
    assert all(1 <= len(batch) <= 8 for batch in grouped)
    assert padding(grouped, lengths) < padding(plain, lengths) / 3
    assert length_grouped_batches(lengths, 8, seed=3, group=4) == grouped
    assert length_grouped_batches(lengths, 8, seed=4, group=4) != grouped


def test_split_examples_is_seeded_and_disjoint() -> None:
    examples = [Example([1, 2], [IGNORE_INDEX, 2], f"f:{n}") for n in range(1, 21)]

    train, valid = split_examples(examples, 0.2, seed=5)
    again = split_examples(examples, 0.2, seed=5)
    other = split_examples(examples, 0.2, seed=6)

    sources = ({e.source for e in train}, {e.source for e in valid})
    assert (len(train), len(valid)) == (16, 4)
    assert not sources[0] & sources[1]
    assert sources[0] | sources[1] == {e.source for e in examples}
    assert ({e.source for e in again[0]}, {e.source for e in again[1]}) == sources
    assert {e.source for e in other[1]} != sources[1]


def test_trailing_user_turns_are_not_rendered(tokenizer: Any) -> None:
    turns = [*DIALOGUE[1:3], ("user", "Thanks!")]
    dialogue = Dialogue(tuple(Turn(role, text) for role, text in turns), source="mem:1")

    text = tokenizer.decode(tokenize_dialogue(tokenizer, dialogue).input_ids)

    assert "Thanks!" not in text
    assert text.endswith(DIALOGUE[2][1] + END_OF_TURN)
