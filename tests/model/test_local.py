from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from botkit.config import ModelConfig
from botkit.errors import AdapterError, GenerationError, GenerationTimeout
from botkit.generation import ChatMessage, Generator
from botkit.model import LoadedModel, LocalGenerator
from botkit.model.local import IncrementalDetokenizer, StopStringFilter

from .conftest import collect, request

PROMPT = "How do I reset my password?"


def hf_greedy_text(loaded: LoadedModel, text: str, max_new_tokens: int) -> str:
    """The reference: transformers' own greedy generate, decoded the same way."""
    tokenizer = loaded.tokenizer
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, return_tensors="pt"
    )["input_ids"]
    eos = sorted(
        {tokenizer.eos_token_id, *_as_list(loaded.model.generation_config.eos_token_id)}
    )
    with torch.inference_mode():
        out = loaded.model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id,
        )
    return tokenizer.decode(out[0, prompt.shape[1] :], skip_special_tokens=True)


def _as_list(value: object) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]  # type: ignore[list-item]


def test_local_generator_satisfies_the_generator_protocol(
    llama_generator: LocalGenerator,
) -> None:
    assert isinstance(llama_generator, Generator)
    assert llama_generator.context_window == 512
    assert llama_generator.dtype is torch.float32
    assert llama_generator.device == torch.device("cpu")


@pytest.mark.parametrize("model_dir", ["tiny_llama_dir", "tiny_gpt2_dir"])
async def test_greedy_stream_matches_transformers_generate(
    load_tiny: Callable[..., LoadedModel], model_dir: str, request_fixture: pytest.FixtureRequest
) -> None:
    loaded = load_tiny(request_fixture.getfixturevalue(model_dir))
    expected = hf_greedy_text(loaded, PROMPT, max_new_tokens=40)
    async with LocalGenerator(loaded) as generator:
        pieces = await collect(generator, request(PROMPT, max_new_tokens=40))

    assert expected  # the tiny model says something before EOS
    assert "".join(pieces).rstrip("\ufffd") == expected.rstrip("\ufffd")
    assert len(pieces) > 1  # streamed, not delivered at once


@pytest.fixture
def request_fixture(request: pytest.FixtureRequest) -> pytest.FixtureRequest:
    return request


async def test_same_seed_gives_same_text_and_other_seeds_differ(
    llama_generator: LocalGenerator,
) -> None:
    def sampled(seed: int):
        return request(PROMPT, temperature=1.0, top_k=0, top_p=1.0, seed=seed, max_new_tokens=24)

    first = "".join(await collect(llama_generator, sampled(7)))
    again = "".join(await collect(llama_generator, sampled(7)))
    others = {"".join(await collect(llama_generator, sampled(seed))) for seed in range(8, 12)}

    assert first == again
    assert others - {first}


async def test_top_k_one_is_greedy(llama_generator: LocalGenerator) -> None:
    greedy = "".join(await collect(llama_generator, request(PROMPT)))
    top1 = "".join(await collect(llama_generator, request(PROMPT, temperature=1.5, top_k=1)))
    assert top1 == greedy


async def test_stop_string_ends_the_reply_and_is_not_emitted(
    llama_generator: LocalGenerator,
) -> None:
    full = "".join(await collect(llama_generator, request(PROMPT, max_new_tokens=40)))
    stop = full[8:11]
    assert len(stop) == 3
    assert stop not in full[:10]

    pieces = await collect(llama_generator, request(PROMPT, max_new_tokens=40, stop=(stop,)))

    assert "".join(pieces) == full[: full.index(stop)]
    assert llama_generator.last_finish is not None
    assert llama_generator.last_finish.finish_reason == "stop"


class SlowForward:
    """Wraps a model's forward to count calls and take ``delay`` seconds each."""

    def __init__(self, model: torch.nn.Module, delay: float) -> None:
        self.inner = model.forward
        self.delay = delay
        self.calls = 0
        self.threads: set[str] = set()

    def __call__(self, *args: object, **kwargs: object) -> object:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        return self.inner(*args, **kwargs)


async def test_closing_the_stream_stops_the_worker_and_the_next_request_works(
    llama_generator: LocalGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = llama_generator.loaded.model
    slow = SlowForward(model, delay=0.02)
    monkeypatch.setattr(model, "forward", slow)

    stream = llama_generator.stream(request(PROMPT, max_new_tokens=400))
    first = await anext(stream)
    await stream.aclose()
    calls_at_close = slow.calls

    after = await collect(llama_generator, request(PROMPT, max_new_tokens=3))

    assert first
    assert after
    # The cancelled reply ran at most one more forward pass; the next took three.
    assert slow.calls <= calls_at_close + 1 + 3
    assert llama_generator.last_finish is not None
    assert llama_generator.last_finish.completion_tokens == 3
    assert slow.threads == {t for t in slow.threads if t.startswith("botkit-model")}


async def test_cancelling_the_consuming_task_stops_the_worker(
    llama_generator: LocalGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = llama_generator.loaded.model
    slow = SlowForward(model, delay=0.02)
    monkeypatch.setattr(model, "forward", slow)
    got_one = asyncio.Event()

    async def consume() -> None:
        async for _ in llama_generator.stream(request(PROMPT, max_new_tokens=400)):
            got_one.set()

    task = asyncio.create_task(consume())
    await got_one.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    calls_at_cancel = slow.calls
    await collect(llama_generator, request(PROMPT, max_new_tokens=2))
    assert slow.calls <= calls_at_cancel + 1 + 2


async def test_no_piece_within_the_timeout_raises_generation_timeout(
    load_tiny: Callable[..., LoadedModel], tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = load_tiny(tiny_llama_dir)
    slow = SlowForward(loaded.model, delay=0.3)
    monkeypatch.setattr(loaded.model, "forward", slow)
    async with LocalGenerator(loaded, timeout_s=0.05) as generator:
        with pytest.raises(GenerationTimeout, match="produced nothing for 0.05 s"):
            await collect(generator, request(PROMPT, max_new_tokens=50))
        await asyncio.sleep(0.4)
        assert slow.calls <= 2  # told to stop: it does not run on to 50 tokens


async def test_worker_exceptions_reach_the_consumer_as_generation_error(
    llama_generator: LocalGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(llama_generator.loaded.model, "forward", broken)
    with pytest.raises(GenerationError, match="device-side assert") as caught:
        await collect(llama_generator, request(PROMPT))
    assert isinstance(caught.value.__cause__, RuntimeError)

    monkeypatch.undo()
    assert await collect(llama_generator, request(PROMPT))  # the worker lives on


async def test_prompt_longer_than_the_context_window_is_a_generation_error(
    load_tiny: Callable[..., LoadedModel], tiny_llama_dir: Path
) -> None:
    loaded = load_tiny(tiny_llama_dir)
    loaded.context_window = 8
    async with LocalGenerator(loaded) as generator:
        with pytest.raises(GenerationError, match="context window holds 8"):
            await collect(generator, request(PROMPT))


def test_count_tokens_is_the_templated_prompt_length(llama_generator: LocalGenerator) -> None:
    messages = [ChatMessage("system", "Be brief."), ChatMessage("user", PROMPT)]
    expected = llama_generator.loaded.tokenizer.apply_chat_template(
        [m.as_dict() for m in messages], add_generation_prompt=True, return_dict=False
    )
    assert llama_generator.count_tokens(messages) == len(expected)


def test_count_text_counts_plain_text_without_template(llama_generator: LocalGenerator) -> None:
    tokenizer = llama_generator.loaded.tokenizer
    assert llama_generator.count_text(PROMPT) == len(tokenizer(PROMPT)["input_ids"])
    assert llama_generator.count_text("") == 0


async def test_adapters_load_through_the_generator_and_change_the_reply(
    llama_generator: LocalGenerator, tiny_llama_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    from .test_lora import make_adapter

    adapter_dir = make_adapter(
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir), tmp_path / "persona", seed=3
    )
    base_text = "".join(await collect(llama_generator, request(PROMPT)))

    version = llama_generator.load_adapter("persona", str(adapter_dir))

    tuned_text = "".join(await collect(llama_generator, request(PROMPT, adapter="persona")))
    again_base = "".join(await collect(llama_generator, request(PROMPT)))
    assert len(version) == 12
    assert tuned_text != base_text
    assert again_base == base_text
    with pytest.raises(AdapterError, match="no adapter named 'other'"):
        await collect(llama_generator, request(PROMPT, adapter="other"))


async def test_closed_generator_refuses_work(
    load_tiny: Callable[..., LoadedModel], tiny_llama_dir: Path
) -> None:
    generator = LocalGenerator(load_tiny(tiny_llama_dir))
    await generator.aclose()
    await generator.aclose()  # idempotent
    with pytest.raises(GenerationError, match="closed"):
        await collect(generator, request(PROMPT))


async def test_from_config_loads_the_configured_model(
    tiny_gpt2_dir: Path, tmp_path: Path
) -> None:
    cfg = ModelConfig(
        source=str(tiny_gpt2_dir), device="cpu", dtype="float32", context_window=100,
        generation_timeout_s=9,
    )
    async with LocalGenerator.from_config(cfg, tmp_path) as generator:
        assert generator.context_window == 100
        assert generator.model_id == tiny_gpt2_dir.name
        assert await collect(generator, request(PROMPT, max_new_tokens=4))


# -- the pieces of the loop -------------------------------------------------------------


def test_detokenizer_never_splits_a_utf8_character(tiny_tokenizer: object) -> None:
    # Characters the tiny tokenizer never saw arrive as one byte-level token per byte.
    text = "Price: 5€ 🙂 ☃ naïve"
    ids = tiny_tokenizer(text)["input_ids"]  # type: ignore[operator]
    assert len(ids) > len(text) // 2

    detokenizer = IncrementalDetokenizer(tiny_tokenizer)
    pieces = [detokenizer.push(i) for i in ids]

    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)
    assert "" in pieces  # some tokens were held back until their character was whole


@pytest.mark.parametrize(
    ("chunks", "stops", "emitted", "stopped"),
    [
        (["Hello ", "wor", "ld"], ("world",), ["Hello ", "", ""], True),
        (["Hello ", "wor", "m"], ("world",), ["Hello ", "", "worm"], False),
        (["ab", "cUser:", "x"], ("User:",), ["ab", "c"], True),
        (["plain"], (), ["plain"], False),
    ],
)
def test_stop_filter_holds_back_possible_stop_starts(
    chunks: list[str], stops: tuple[str, ...], emitted: list[str], stopped: bool
) -> None:
    stop_filter = StopStringFilter(stops)
    outputs = []
    reached = False
    for chunk in chunks:
        text, reached = stop_filter.push(chunk)
        outputs.append(text)
        if reached:
            break
    assert outputs == emitted
    assert reached is stopped
