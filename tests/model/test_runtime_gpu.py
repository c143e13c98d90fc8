"""The batched runtime on CUDA: the same checks as on the CPU, run where a GPU exists.

Marked ``gpu``: skipped without CUDA (see tests/conftest.py); ``bench/gpu.sh`` runs them
on a lent GPU machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from botkit.config import RuntimeConfig
from botkit.model import LoadedModel, load_model
from botkit.model.runtime import BatchedGenerator

from .test_runtime import PATIENCE, PROMPTS, make_request, reference_text, with_system

pytestmark = pytest.mark.gpu


@pytest.fixture
def load_cuda(tmp_path: Path) -> Callable[[Path, str], LoadedModel]:
    def load(directory: Path, dtype: str) -> LoadedModel:
        return load_model(str(directory), device="cuda", dtype=dtype, cache_dir=tmp_path / "c")

    return load


async def run_all(generator: BatchedGenerator, requests: list) -> list[str]:
    async def one(req) -> str:
        return "".join([piece async for piece in generator.stream(req)])

    return await asyncio.wait_for(asyncio.gather(*(one(r) for r in requests)), PATIENCE)


async def test_greedy_batch_on_cuda_fp32_matches_generate(load_cuda, tiny_llama_dir: Path):
    loaded = load_cuda(tiny_llama_dir, "float32")
    requests = [with_system(p, max_new_tokens=12 + i) for i, p in enumerate(PROMPTS)]
    async with BatchedGenerator(loaded, config=RuntimeConfig(prefill_chunk_tokens=32)) as gen:
        texts = await run_all(gen, requests)
        assert gen.stats()["max_batch"] > 1
        assert gen.stats()["prefix_cache_hits"] > 0
    for req, text in zip(requests, texts, strict=True):
        assert text == reference_text(loaded.model, loaded.tokenizer, req)


async def test_bfloat16_on_cuda_serves_a_mixed_batch(load_cuda, tiny_llama_dir: Path):
    loaded = load_cuda(tiny_llama_dir, "bfloat16")
    requests = [make_request(p, max_new_tokens=8, temperature=0.8, seed=i)
                for i, p in enumerate(PROMPTS)]
    async with BatchedGenerator(loaded) as gen:
        texts = await run_all(gen, requests)
    assert all(texts)
