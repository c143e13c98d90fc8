"""``botkit bench web`` end to end with a tiny load (scripted generator, loopback server).

Checks the machinery and the JSON, never a speed (BENCHMARKS.md: tests check
correctness, benchmarks report speed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from botkit.bench import web

QUICK = ["--users", "4", "--duration", "1.5", "--warmup", "0.5", "--token-rate", "200",
         "--reply-words", "8", "--think-s", "0.1"]


def assert_ordered(figures: dict[str, Any]) -> None:
    assert figures["p50"] is not None
    assert 0 < figures["p50"] <= figures["p95"] <= figures["p99"] <= figures["max"]


def test_web_benchmark_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "web.json"
    assert web.main([*QUICK, "--json", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    printed = capsys.readouterr().out

    assert "partial" not in report
    assert report["baseline"] == "direct"
    assert "baseline: engine.respond() called directly" in printed
    assert "web vs direct (baseline)" in printed
    assert {"cores", "processor", "python", "uvicorn", "starlette", "torch",
            "transformers"} <= report["machine"].keys()
    settings = report["settings"]
    assert settings["users"] == 4
    assert settings["server"] == "process"
    assert settings["client"] == "raw"
    assert settings["token_rate"] == 200

    for name in web.CONTENDERS:
        row = report["contenders"][name]
        assert row["status"] == "ok", row
        assert row["messages"] > 0, name
        assert row["messages_per_s"] > 0, name
        assert row["errors"] == 0, row["errors_by_kind"]
        assert row["errors_by_kind"] == {}
        assert row["pieces_per_reply"] == 8  # every reply streamed word by word
        assert_ordered(row["ttft_ms"])
        assert_ordered(row["reply_ms"])
        assert row["ttft_ms"]["p50"] <= row["reply_ms"]["p50"]

    served = report["contenders"]["web"]
    assert served["server"] == "child process"
    assert served["connections_opened"] == 4  # one keep-alive connection per user
    assert served["server_engine_ttft_ms"]["replies"] > 0
    assert_ordered(served["server_engine_ttft_ms"])
    assert_ordered(served["post_answered_ms"])
    assert served["post_answered_ms"]["p50"] <= served["stream_opened_ms"]["p50"]

    comparison = report["comparison"]
    direct = report["contenders"]["direct"]
    assert comparison["ttft_p95_added_ms"] == pytest.approx(
        served["ttft_ms"]["p95"] - direct["ttft_ms"]["p95"])
    assert comparison["ttft_p95_ratio"] == pytest.approx(
        served["ttft_ms"]["p95"] / direct["ttft_ms"]["p95"])
    assert comparison["target_at_target_load"] is False
    assert comparison["target_met"] is False  # 4 users are not the target's 200


def test_thread_server_httpx_client_and_skip(tmp_path: Path) -> None:
    out = tmp_path / "web.json"
    status = web.main([*QUICK, "--users", "3", "--server", "thread", "--client", "httpx",
                       "--skip", "direct", "--json", str(out)])
    assert status == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["contenders"]["direct"]["status"] == "skipped"
    row = report["contenders"]["web"]
    assert row["status"] == "ok"
    assert row["server"].startswith("thread")
    assert row["messages"] > 0
    assert row["errors"] == 0, row["errors_by_kind"]
    assert_ordered(row["ttft_ms"])
    assert report["comparison"]["ttft_p95_added_ms"] is None


def test_help_and_defaults() -> None:
    parser = web.add_arguments(argparse.ArgumentParser(prog="botkit bench web"))
    text = parser.format_help()
    for option in ("--users", "--duration", "--model", "--token-rate", "--reply-words",
                   "--think-s", "--server", "--client", "--config", "--json"):
        assert option in text
    args = parser.parse_args([])
    assert args.users is None  # 200 with the scripted generator, 8 with the real model
    assert web.DEFAULT_USERS == {"scripted": 200, "real": 8}
    assert (args.duration, args.model, args.token_rate) == (20.0, "scripted", 20.0)
    assert (args.server, args.client, args.json) == ("process", "raw", None)
    with pytest.raises(SystemExit):
        parser.parse_args(["--model", "nonsense"])


def test_config_option_is_not_added_twice() -> None:
    # The CLI may give every command its own --config; the benchmark then reuses it.
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", metavar="FILE")
    web.add_arguments(parser)
    assert parser.parse_args(["--config", "x.toml"]).config == "x.toml"


def test_percentiles_and_reply_text() -> None:
    assert web.percentile([], 95) is None
    assert web.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert web.percentile([float(v) for v in range(1, 101)], 99) == 99.0
    figures = web.spread([0.001, 0.002, 0.003])
    assert figures["p50"] == pytest.approx(2.0)
    assert figures["max"] == pytest.approx(3.0)
    assert len(web.reply_text(30).split()) == 30
    assert len(web.reply_text(200).split()) == 200
