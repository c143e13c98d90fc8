"""Load and decode speed of the embedded model through LocalGenerator.

Measures a cold load (empty cache: the GGUF file is dequantised and converted), a warm
load (from the converted copy), and single-stream greedy decoding of 64 new tokens in
fp32 and bf16 (one warm-up, then the median of three runs).

    .venv/bin/python bench/decode.py --json bench-decode.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

from botkit.generation import ChatMessage, GenerationRequest, SamplingParams
from botkit.model import LocalGenerator, cpu_has_native_bf16, load_model

QUESTION = "How do I reset my password?"
NEW_TOKENS = 64


async def decode_run(generator: LocalGenerator) -> dict[str, float]:
    """One greedy reply; returns time to first piece and decode tokens/s."""
    request = GenerationRequest(
        messages=(ChatMessage("user", QUESTION),),
        sampling=SamplingParams(
            temperature=0.0, repetition_penalty=1.0, max_new_tokens=NEW_TOKENS
        ),
    )
    started = time.perf_counter()
    first_piece = None
    async for _ in generator.stream(request):
        if first_piece is None:
            first_piece = time.perf_counter()
    ended = time.perf_counter()
    finish = generator.last_finish
    if finish is None or first_piece is None:
        raise RuntimeError("the generator produced no reply")
    tokens = finish.completion_tokens
    return {
        "tokens": tokens,
        "first_piece_s": first_piece - started,
        "total_s": ended - started,
        "tokens_per_s": tokens / (ended - started),
    }


async def bench_dtype(dtype: str, cache_dir: Path) -> dict[str, object]:
    loaded = load_model("embedded", device="cpu", dtype=dtype, cache_dir=cache_dir)
    async with LocalGenerator(loaded) as generator:
        await decode_run(generator)  # warm-up
        runs = [await decode_run(generator) for _ in range(3)]
    median = statistics.median(r["tokens_per_s"] for r in runs)
    return {
        "dtype": dtype,
        "runs": runs,
        "median_tokens_per_s": median,
        "median_first_piece_s": statistics.median(r["first_piece_s"] for r in runs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="botkit-bench-") as tmp:
        cache_dir = Path(tmp)
        cold = load_model("embedded", device="cpu", dtype="float32", cache_dir=cache_dir)
        warm = load_model("embedded", device="cpu", dtype="float32", cache_dir=cache_dir)
        loads = {"cold_load_s": cold.load_seconds, "warm_load_s": warm.load_seconds}
        del cold, warm
        decode = asyncio.run(decode_all(cache_dir))

    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "native_bf16": cpu_has_native_bf16(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    report = {"machine": machine, **loads, "new_tokens": NEW_TOKENS, "decode": decode}

    print(
        f"machine: {machine['cores']} cores ({machine['torch_threads']} torch threads), "
        f"native bf16: {machine['native_bf16']}, torch {machine['torch']}, "
        f"transformers {machine['transformers']}"
    )
    print(f"{'measure':<34}{'value':>12}")
    print(f"{'cold load (GGUF -> safetensors)':<34}{loads['cold_load_s']:>10.2f} s")
    print(f"{'warm load (converted copy)':<34}{loads['warm_load_s']:>10.2f} s")
    for row in decode:
        label = f"decode {NEW_TOKENS} tok, {row['dtype']}"
        print(
            f"{label:<34}{row['median_tokens_per_s']:>8.1f} tok/s"
            f"  (first piece {row['median_first_piece_s'] * 1000:.0f} ms)"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


async def decode_all(cache_dir: Path) -> list[dict[str, object]]:
    return [await bench_dtype(dtype, cache_dir) for dtype in ("float32", "bfloat16")]


if __name__ == "__main__":
    raise SystemExit(main())
