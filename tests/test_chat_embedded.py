"""`botkit chat` end to end: the real CLI process, the real embedded model, a real SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
BOTKIT = [sys.executable, "-m", "botkit.cli"]


def botkit(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTKIT_")}
    env["BOTKIT_BOT__DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [*BOTKIT, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL,
    )


def test_chat_once_prints_one_reply_and_the_conversation_survives_a_restart(
    tmp_path: Path, embedded_cache: Path
):
    pytest.importorskip("gguf")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "models").symlink_to(embedded_cache, target_is_directory=True)

    first = botkit(data_dir, "chat", "--once", "How do I reset my password?")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip(), "the reply is empty"
    assert first.stdout.endswith("\n")
    assert "Traceback" not in first.stderr
    assert "Loading" not in first.stdout  # progress goes to stderr, never stdout

    second = botkit(data_dir, "chat", "--resume", "--once", "And how long is the link valid?")
    assert second.returncode == 0, second.stderr

    exported = botkit(data_dir, "memory", "export", "--user", f"terminal:{_os_user()}")
    assert exported.returncode == 0, exported.stderr
    data = json.loads(exported.stdout)
    texts = [m["text"] for c in data["conversations"] for m in c["messages"]]
    assert texts[0] == "How do I reset my password?"
    assert texts[1] == first.stdout.strip()
    assert texts[2] == "And how long is the link valid?"
    assert texts[3] == second.stdout.strip()
    assert (data_dir / "botkit.db").is_file()


def _os_user() -> str:
    from botkit.terminal import _os_user

    return _os_user()
