"""The shipped Pine adapter, on the real embedded model, through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from botkit.model.lora import validate_adapter_dir
from botkit.personas import load_persona

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
ADAPTER = REPO / "personas" / "adapters" / "pine"

# Three of training/pine/eval_questions.jsonl (phrased unlike any training dialogue),
# with the regex the fact sheet's answer must match.
QUESTIONS = [
    {"question": "What's the price of the quick shipping option?",
     "expect": r"\$ ?14\b|14 dollars|fourteen dollars"},
    {"question": "What number can I ring to speak to you?", "expect": r"800.?555.?0147"},
    {"question": "How big a discount do students get?",
     "expect": r"15 ?%|15 percent|fifteen percent"},
]


def test_pine_uses_the_shipped_adapter_made_for_the_embedded_model() -> None:
    persona = load_persona(REPO / "personas" / "pine.toml")
    info = validate_adapter_dir(ADAPTER)

    assert persona.adapter is not None
    assert persona.adapter.resolve() == ADAPTER.resolve()
    assert info.manifest is not None
    assert info.manifest["base_model"] == "SmolLM2-135M-Instruct"
    assert info.manifest["system_prompt"] == persona.system_prompt
    assert info.manifest["command"].startswith("botkit train --persona pine")


def test_the_adapter_answers_what_the_base_model_does_not_know(
    tmp_path: Path, embedded_cache: Path
) -> None:
    pytest.importorskip("gguf")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "models").symlink_to(embedded_cache, target_is_directory=True)
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS), encoding="utf-8")
    report_file = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTKIT_")}
    env["BOTKIT_BOT__DATA_DIR"] = str(data_dir)

    done = subprocess.run(
        [sys.executable, "-m", "botkit.cli", "eval", "--persona", "pine",
         "--questions", str(questions), "--json", str(report_file)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
        stdin=subprocess.DEVNULL,
    )

    assert done.returncode == 0, done.stderr
    report = json.loads(report_file.read_text(encoding="utf-8"))
    replies = {row["question"]: row["replies"] for row in report["results"]}
    assert report["variants"]["adapter"]["correct"] == len(QUESTIONS), replies
    assert report["variants"]["base"]["correct"] < len(QUESTIONS), replies
