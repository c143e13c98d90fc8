"""``botkit bench serve`` end to end on a tiny Llama built from a config (no downloads).

Checks the machinery and the JSON, never a speed (BENCHMARKS.md: tests check
correctness, benchmarks report speed).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from botkit.bench import serve
from botkit.bench.contenders import build_workload, percentile
from tests.model.conftest import build_tokenizer, tiny_llama_config


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import LlamaForCausalLM

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(tokenizer))
    directory = tmp_path_factory.mktemp("bench-tiny-llama")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)  # type: ignore[attr-defined]
    return directory


def test_serve_benchmark_end_to_end(
    tiny_llama: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "serve.json"
    status = serve.main([
        "--model", str(tiny_llama), "--device", "cpu", "--dtype", "float32",
        "--cache-dir", str(tmp_path / "cache"), "--quick", "--requests", "4", "--users", "2",
        "--new-tokens", "8", "--adapters", "2", "--system-tokens", "120",
        "--json", str(out),
    ])
    assert status == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    printed = capsys.readouterr().out
    assert "baseline: sequential model.generate()" in printed
    assert "vs_sequential" in printed

    assert report["baseline"] == "sequential"
    assert report["dtype"] == "float32"
    assert {"cores", "torch", "transformers", "cpu_flags", "gpu"} <= report["machine"].keys()
    contenders = report["contenders"]
    for name in ("sequential", "static", "botkit", "single", "prefix_on", "prefix_off",
                 "adapters_single", "adapters_mixed"):
        row = contenders[name]
        assert row["status"] == "ok", (name, row)
        assert row["tokens"] > 0, name
        assert row["seconds"] > 0, name
        assert row["tok_s"] > 0, name
        assert row["peak_rss_mb"] > 0
    # Every request generates exactly new_tokens tokens: EOS is ignored by everyone.
    assert contenders["sequential"]["tokens"] == 4 * 8
    assert contenders["static"]["tokens"] == 4 * 8
    assert contenders["botkit"]["tokens"] == 4 * 8
    assert contenders["botkit"]["ttft_p95_s"] > 0
    # transformers' continuous batching may not run everywhere; then it says why.
    assert contenders["generate_batch"]["status"] in {"ok", "failed"}
    if contenders["generate_batch"]["status"] == "failed":
        assert contenders["generate_batch"]["reason"]

    ratios = report["ratios"]
    assert set(serve.RATIO_KEYS) <= ratios.keys()
    for key in serve.RATIO_KEYS:
        if key == "vs_generate_batch" and contenders["generate_batch"]["status"] != "ok":
            assert ratios[key] is None
            continue
        assert ratios[key] is not None, key
        assert ratios[key] > 0, key

    # fp32 greedy: botkit's replies and the static batches equal sequential generate()'s.
    assert report["correctness"]["botkit"]["compared"] == 4
    assert report["correctness"]["botkit"]["mismatched"] == 0
    assert report["correctness"]["static"]["mismatched"] == 0
    assert report["scenarios"]["adapters"]["adapters"] == 2


def test_skip_and_unknown_skip(tiny_llama: Path, tmp_path: Path) -> None:
    out = tmp_path / "serve.json"
    status = serve.main([
        "--model", str(tiny_llama), "--device", "cpu", "--dtype", "float32",
        "--cache-dir", str(tmp_path / "cache"), "--quick", "--requests", "2", "--users", "2",
        "--new-tokens", "4", "--skip", "sequential,static,generate_batch,prefix,adapters",
        "--json", str(out),
    ])
    assert status == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["contenders"]["sequential"]["status"] == "skipped"
    assert report["ratios"]["vs_sequential"] is None
    assert report["contenders"]["botkit"]["status"] == "ok"
    with pytest.raises(SystemExit):
        serve.main(["--model", str(tiny_llama), "--skip", "nonsense"])


def test_workload_spreads_prompt_lengths() -> None:
    tokenizer = build_tokenizer()
    prompts = build_workload(tokenizer, 12, seed=0, max_tokens=400)
    lengths = [len(p.ids) for p in prompts]
    assert max(lengths) <= 400
    assert max(lengths) - min(lengths) > 100
    assert len({p.ids for p in prompts}) == len(prompts)  # no two prompts alike
    assert build_workload(tokenizer, 12, seed=0, max_tokens=400) == prompts  # seeded


def test_percentile() -> None:
    assert percentile([], 95) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile(list(map(float, range(1, 101))), 95) == 95.0


def test_cli_has_bench_serve() -> None:
    from botkit.cli import build_parser

    args = build_parser().parse_args(["bench", "serve", "--quick", "--users", "3"])
    assert args.users == 3
    assert args.quick
    assert args.handler.__name__ == "_bench_serve"
