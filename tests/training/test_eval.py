"""``botkit eval``: question files, scoring, and the adapter-vs-base report."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from botkit.config import load_config
from botkit.errors import DatasetError
from botkit.generation import GenerationRequest
from botkit.testing import ScriptedGenerator
from botkit.training.evaluate import EvalJob, ask_all, evaluate, read_questions
from tests.training.conftest import PERSONA_PROMPT, copy_adapter, write_jsonl

QUESTIONS = [
    {"question": "How do I reset my password?", "expect": "settings page", "fact": "reset"},
    {"question": "When does my order ship?", "expect": r"three to five\s+business", "fact": "ship"},
]
RIGHT = {
    "How do I reset my password?": "Open the Settings Page and choose reset password.",
    "When does my order ship?": "It ships in three to five business days.",
}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([QUESTIONS[0], '{"question": "Hi?", "expect": '], r":2: not valid JSON"),
        ([{"question": "Hi?", "expect": "(unclosed"}],
         r":1: \"expect\" is not a valid regular expression: missing \)"),
        ([QUESTIONS[0], {"question": "Hi?"}], r":2: \"expect\" must be a regular expression"),
        ([{"expect": "x"}], r":1: \"question\" must be a non-empty string"),
    ],
    ids=["bad-json", "bad-regex", "missing-expect", "missing-question"],
)
def test_a_bad_questions_line_is_named_by_file_and_line(
    tmp_path: Path, lines: list[Any], message: str
) -> None:
    path = write_jsonl(tmp_path / "q.jsonl", lines)

    with pytest.raises(DatasetError, match=f"^{re.escape(str(path))}{message}"):
        read_questions(path)


def test_questions_keep_their_extra_keys_and_match_case_insensitively(tmp_path: Path) -> None:
    questions = read_questions(write_jsonl(tmp_path / "q.jsonl", QUESTIONS))

    assert [q.extra for q in questions] == [{"fact": "reset"}, {"fact": "ship"}]
    assert questions[0].check("open the SETTINGS PAGE")
    assert not questions[0].check("open the settings")


def scripted(adapter_answers: dict[str, str]) -> ScriptedGenerator:
    """Right answers through an adapter, a wrong one from the base model."""

    def reply(request: GenerationRequest) -> str:
        if request.adapter is not None:
            return adapter_answers[request.messages[-1].content]
        return "I do not know."

    return ScriptedGenerator(default=reply)


async def test_ask_all_asks_each_question_greedily_with_the_system_prompt(tmp_path: Path) -> None:
    questions = read_questions(write_jsonl(tmp_path / "q.jsonl", QUESTIONS))
    generator = scripted(RIGHT)

    replies = await ask_all(generator, "Be brief.", questions, adapter="tuned", max_new_tokens=12)

    assert replies == [RIGHT[q["question"]] for q in QUESTIONS]
    for request, question in zip(generator.requests, QUESTIONS, strict=True):
        assert [(m.role, m.content) for m in request.messages] == [
            ("system", "Be brief."), ("user", question["question"])
        ]
        assert (request.adapter, request.sampling.temperature) == ("tuned", 0.0)
        assert request.sampling.max_new_tokens == 12


def test_evaluate_scores_adapter_and_base_and_records_the_score(
    tmp_path: Path, make_config: Callable[..., Path], adapter_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    adapter = copy_adapter(adapter_dir, tmp_path / "adapter")
    config = load_config(make_config(adapter=adapter), environ={})
    generator = scripted(RIGHT)

    async def load_generator(config: Any) -> ScriptedGenerator:
        return generator

    monkeypatch.setattr("botkit.app.load_generator", load_generator)
    questions = write_jsonl(tmp_path / "q.jsonl", QUESTIONS)
    lines: list[str] = []

    report = evaluate(
        EvalJob(persona="pine", questions=questions, record=True), config, say=lines.append
    )

    assert list(generator.adapters.values()) == [str(adapter)]
    assert generator.closed
    assert {r.messages[0].content for r in generator.requests} == {PERSONA_PROMPT}
    assert report["variants"] == {
        "adapter": {"correct": 2, "total": 2, "accuracy": 1.0},
        "base": {"correct": 0, "total": 2, "accuracy": 0.0},
    }
    assert [row["fact"] for row in report["results"]] == ["reset", "ship"]
    assert lines[-3].split() == ["How", "do", "I", "reset", "my", "password?", "yes", "no"]
    assert lines[-1].split() == ["accuracy", "100%", "0%"]
    manifest = json.loads((adapter / "botkit_manifest.json").read_text(encoding="utf-8"))
    assert (manifest["eval"]["accuracy"], manifest["eval"]["base_accuracy"]) == (1.0, 0.0)
    assert manifest["eval"]["questions"] == 2


@pytest.fixture
def eval_config(tmp_path: Path, make_config: Callable[..., Path], adapter_dir: Path) -> Any:
    """The config of a persona whose adapter was trained on the tiny Llama."""
    adapter = copy_adapter(adapter_dir, tmp_path / "adapter")
    return load_config(make_config(adapter=adapter), environ={})


# Both runtimes: the simple one keeps adapters in peft, the batched one in its own bank.
@pytest.mark.parametrize("engine", ["batched", "simple"])
def test_evaluate_on_the_tiny_model_reports_what_the_replies_show(
    tmp_path: Path, make_config: Callable[..., Path], adapter_dir: Path, engine: str
) -> None:
    adapter = copy_adapter(adapter_dir, tmp_path / "adapter")
    eval_config = load_config(make_config(adapter=adapter, engine=engine), environ={})
    # One pattern that matches any reply and one that matches none: both outcomes occur.
    questions = write_jsonl(tmp_path / "q.jsonl", [
        {"question": "How do I reset my password?", "expect": ".*"},
        {"question": "When does my order ship?", "expect": "zq{5}"},
        {"question": "Hello there, how are you today?", "expect": "e"},
    ])
    json_out = tmp_path / "out" / "report.json"
    lines: list[str] = []

    report = evaluate(
        EvalJob(persona="pine", questions=questions, max_new_tokens=6, json_out=json_out),
        eval_config, say=lines.append,
    )

    assert list(report["variants"]) == ["adapter", "base"]
    for variant in ("adapter", "base"):
        correct = []
        for row in report["results"]:
            reply = row["replies"][variant]
            assert row["correct"][variant] == bool(re.search(row["expect"], reply, re.I))
            correct.append(row["correct"][variant])
        assert report["variants"][variant]["accuracy"] == pytest.approx(sum(correct) / 3)
    assert [row["correct"]["base"] for row in report["results"]][:2] == [True, False]
    assert any(row["replies"]["adapter"] != row["replies"]["base"] for row in report["results"])
    assert json.loads(json_out.read_text(encoding="utf-8")) == report
    assert lines[-1] == f"wrote {json_out}"
    # Without --record the adapter directory is left as it was.
    manifest = json.loads((adapter / "botkit_manifest.json").read_text(encoding="utf-8"))
    assert "eval" not in manifest


def test_base_only_asks_the_base_model_alone(tmp_path: Path, eval_config: Any) -> None:
    questions = write_jsonl(tmp_path / "q.jsonl", QUESTIONS[:1])

    report = evaluate(
        EvalJob(persona="pine", questions=questions, base_only=True, max_new_tokens=4),
        eval_config, say=lambda line: None,
    )

    assert list(report["variants"]) == ["base"]
    assert report["adapter"] is None
    assert list(report["results"][0]["replies"]) == ["base"]


def test_heldout_perplexity_is_measured_with_and_without_the_adapter(
    eval_config: Any, support_data: Path
) -> None:
    lines: list[str] = []

    report = evaluate(EvalJob(persona="pine", heldout=support_data), eval_config, say=lines.append)

    heldout = report["heldout"]
    assert list(heldout) == ["adapter", "base"]
    for row in heldout.values():
        assert math.isfinite(row["loss"])
        assert row["tokens"] > 0
        assert row["perplexity"] == pytest.approx(math.exp(row["loss"]))
    assert heldout["adapter"]["tokens"] == heldout["base"]["tokens"]
    # The adapter was trained on these very dialogues.
    assert heldout["adapter"]["loss"] < heldout["base"]["loss"] - 0.1
    assert lines[0].startswith(f"held-out adapter: loss {heldout['adapter']['loss']:.3f}, ")
