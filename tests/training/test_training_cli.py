"""``botkit train``, ``eval``, ``adapters list`` and ``data export`` as a user runs them."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from botkit.cli import main
from botkit.config import load_config
from botkit.memory import ConversationStore
from botkit.model.lora import validate_adapter_dir
from tests.training.conftest import copy_adapter, support_dialogues, write_jsonl

QUESTION = "How do I reset my password?"
ANSWER = "Open the settings page and choose reset password."


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_help_lists_adalora_and_resume(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["train", "--help"])

    out = capsys.readouterr().out
    assert exited.value.code == 0
    assert "--method {lora,adalora}" in out
    assert re.search(r"--resume\s+continue the run in --output from its last checkpoint", out)


def test_train_on_a_malformed_file_prints_one_line_naming_file_and_line(
    capsys: pytest.CaptureFixture[str], make_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = make_config()
    data = write_jsonl(tmp_path / "train.jsonl", [*support_dialogues(1), '{"messages": ['])

    code, out, err = cli(capsys, "train", "--config", str(config), "--data", str(data),
                         "--output", str(tmp_path / "out"), "--no-progress")

    assert code == 1
    assert out.startswith("training a lora adapter for persona pine on ")
    # transformers draws a "Loading weights" progress bar on stderr (redrawn with \r).
    messages = [line for line in err.split("\n") if line and "\r" not in line]
    assert messages == [f"botkit: error: {data}:5: not valid JSON (Expecting value at column 15)"]


def test_eval_without_questions_or_heldout_says_what_to_give(
    capsys: pytest.CaptureFixture[str], make_config: Callable[..., Path]
) -> None:
    code, out, err = cli(capsys, "eval", "--config", str(make_config()))

    assert code == 1
    assert err == "botkit: error: give --questions FILE, --heldout FILE, or both\n"


def test_adapters_list_shows_a_trained_adapter_and_the_channel_adapters(
    capsys: pytest.CaptureFixture[str], make_config: Callable[..., Path], adapter_dir: Path,
    tmp_path: Path, llama_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    adapter = copy_adapter(adapter_dir, tmp_path / "data" / "adapters" / "pine")
    config = make_config(adapter=adapter)
    monkeypatch.chdir(tmp_path)
    version = validate_adapter_dir(adapter).version
    val_loss = json.loads((adapter / "botkit_manifest.json").read_text())["metrics"]["val_loss"]

    code, out, _ = cli(capsys, "adapters", "list", "--config", str(config))

    assert code == 0
    lines = out.splitlines()
    assert lines[:2] == [
        "LoRA adapters:",
        f"  data/adapters/pine  version {version}, base {llama_dir.name}, "
        f"val loss {val_loss:.3f}  [persona pine]",
    ]
    channels = lines.index("channel adapters:")
    assert any(line.split()[0] == "terminal" for line in lines[channels + 1:])


async def store_dialogue(url: str, *, upvote: bool) -> None:
    """One web conversation: a question and a bot reply, rated +1 when ``upvote``."""
    store = await ConversationStore.open(url)
    try:
        user = await store.upsert_user("web", "ann")
        conversation = await store.current_conversation(
            "web", "chat-1", persona="pine", user_id=user.id
        )
        await store.add_message(conversation.id, role="user", text=QUESTION, user_id=user.id)
        reply = await store.add_message(conversation.id, role="assistant", text=ANSWER)
        assert reply is not None
        if upvote:
            await store.add_feedback(reply.id, user_id=user.id, score=1)
    finally:
        await store.close()


def test_data_export_writes_the_upvoted_dialogue(
    capsys: pytest.CaptureFixture[str], make_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = make_config()
    asyncio.run(store_dialogue(load_config(config, environ={}).database_url, upvote=True))
    out_file = tmp_path / "out.jsonl"

    code, out, _ = cli(capsys, "data", "export", "--config", str(config), "-o", str(out_file))

    assert code == 0
    assert out.startswith(f"wrote 1 dialogues (2 turns) to {out_file}")
    assert [json.loads(line) for line in out_file.read_text(encoding="utf-8").splitlines()] == [{
        "messages": [{"role": "user", "content": QUESTION},
                     {"role": "assistant", "content": ANSWER}],
        "persona": "pine",
    }]


def test_data_export_with_nothing_qualifying_says_so(
    capsys: pytest.CaptureFixture[str], make_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = make_config()
    asyncio.run(store_dialogue(load_config(config, environ={}).database_url, upvote=False))
    out_file = tmp_path / "out.jsonl"

    code, out, _ = cli(capsys, "data", "export", "--config", str(config), "-o", str(out_file))

    assert code == 0
    assert out == f"no conversation qualified; wrote an empty {out_file}\n"
    assert out_file.read_text(encoding="utf-8") == ""
