"""``botkit bench train`` end to end on a tiny Llama built from a config (no downloads).

Checks the machinery, the JSON and that both contenders train the same objective;
never a speed (BENCHMARKS.md: tests check correctness, benchmarks report speed).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from botkit.bench import train as bench_train
from botkit.cli import main as cli_main
from tests.model.conftest import build_tokenizer, tiny_llama_config

QUESTIONS = [
    "How do I reset my password?",
    "Hello there, how are you today?",
    "When does the order ship?",
    "Please help.",
]
ANSWERS = [
    "Open the settings page and choose reset password.",
    "The order ships in three to five business days.",
    "Please contact support if the problem persists.",
    "Hello there, I am fine, thank you.",
]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import LlamaForCausalLM

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(tokenizer))
    directory = tmp_path_factory.mktemp("bench-train-tiny-llama")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)  # type: ignore[attr-defined]
    return directory


def write_dialogues(path: Path, count: int = 12) -> Path:
    """``count`` dialogues whose lengths vary a lot (1-4 repeats, 1-2 exchanges)."""
    lines = []
    for i in range(count):
        repeat = 1 + (i * 5) % 4
        messages = [
            {"role": "user", "content": " ".join([QUESTIONS[i % 4]] * repeat)},
            {"role": "assistant", "content": " ".join([ANSWERS[i % 4]] * repeat)},
        ]
        if i % 3 == 0:
            messages += [{"role": "user", "content": QUESTIONS[(i + 1) % 4]},
                         {"role": "assistant", "content": ANSWERS[(i + 1) % 4]}]
        lines.append(json.dumps({"messages": messages}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_train_benchmark_end_to_end(
    tiny_llama: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_dialogues(tmp_path / "train.jsonl")
    out = tmp_path / "train.json"
    status = cli_main([
        "bench", "train", "--model", str(tiny_llama), "--device", "cpu",
        "--cache-dir", str(tmp_path / "cache"), "--data", str(data),
        "--persona-prompt", "Be brief.", "--batch-size", "4", "--max-length", "160",
        "--rank", "4",
        "--quick", "--json", str(out),
    ])
    assert status == 0
    printed = capsys.readouterr().out
    assert "baseline: plain padded loop" in printed
    assert "vs_padded_loop" in printed

    report = json.loads(out.read_text(encoding="utf-8"))
    assert "partial" not in report
    assert report["benchmark"] == "train"
    assert report["baseline"] == (
        "plain padded loop (random batches, full logits, no prefix sharing)"
    )
    assert report["dtype"] == "float32"
    assert {"cores", "torch", "transformers", "peft", "cpu_flags"} <= report["machine"].keys()
    settings = report["settings"]
    assert settings["dialogues"] == 32  # --quick; the file has 12
    assert settings["examples"] == 12
    assert settings["truncated"] == 3  # longer than --max-length 160
    assert settings["repeats"] == 1
    assert settings["train"]["batch_size"] == 4

    results = report["results"]
    assert set(results) == {"botkit", "padded_loop"}
    for name, row in results.items():
        assert row["status"] == "ok", name
        assert row["runs"] == 1
        assert row["tok_s"] > 0, name
        assert row["seconds"] > 0, name
        assert row["tok_s_min"] <= row["tok_s"] <= row["tok_s_max"]
        assert row["tokens"] == settings["tokens"]  # every example, once per epoch
        assert row["batches"] == 3
        assert row["process_peak_rss_mb_cumulative"] > 0
    botkit, padded = results["botkit"], results["padded_loop"]
    assert botkit["settings"] == {
        "grouping": "length", "selective_logits": True, "share_prefix": True
    }
    assert padded["settings"] == {
        "grouping": "random", "selective_logits": False, "share_prefix": False
    }
    assert report["ratios"]["vs_padded_loop"] == pytest.approx(botkit["tok_s"] / padded["tok_s"])
    assert padded["padding_share"] >= botkit["padding_share"]
    assert padded["padding_share"] > 0
    assert padded["lm_head_rows"] > botkit["lm_head_rows"] == settings["target_tokens"]
    # Same objective: identical loss on identical batches at identical weights, and
    # close mean losses over the epoch.
    assert botkit["initial_loss"] == pytest.approx(padded["initial_loss"], rel=1e-4)
    assert report["correctness"]["initial_loss_match"]
    assert botkit["train_loss"] == pytest.approx(padded["train_loss"], rel=0.05)
    assert not report["correctness"]["train_loss_flagged"]


def test_missing_data_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli_main(["bench", "train", "--data", str(tmp_path / "nope.jsonl")])
    assert status != 0
    assert "no such file" in capsys.readouterr().err


def test_batch_figures() -> None:
    from botkit.training.data import IGNORE_INDEX, Example

    examples = [
        Example([1, 2, 3, 4], [IGNORE_INDEX, IGNORE_INDEX, 3, 4], "a"),
        Example([1, 2], [IGNORE_INDEX, 2], "b"),
    ]
    full = bench_train.batch_figures(examples, [[0, 1]], selective=False)
    assert full == {"batches": 1, "tokens": 6, "positions": 8, "padding_share": 0.25,
                    "lm_head_rows": 6}
    assert bench_train.batch_figures(examples, [[0], [1]], selective=True)["lm_head_rows"] == 3


def test_cli_has_bench_train() -> None:
    from botkit.cli import build_parser

    args = build_parser().parse_args(["bench", "train", "--quick", "--dialogues", "5"])
    assert args.quick
    assert args.dialogues == 5
    assert (args.batch_size, args.max_length, args.dtype) == (8, 512, "float32")
    assert args.handler.__name__ == "_bench_train"


def test_default_system_prompt_is_pines() -> None:
    prompt, source = bench_train.resolve_system_prompt(None)
    if source.startswith("none"):
        assert prompt == ""
    else:
        assert source.endswith("pine.toml")
        assert prompt
    assert bench_train.resolve_system_prompt("") == ("", "--persona-prompt")
