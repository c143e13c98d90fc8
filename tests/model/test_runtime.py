"""The continuous-batching runtime against transformers' own ``generate()``.

Every greedy reply the runtime produces while sharing forward passes with other
requests (joining and leaving the batch at different steps, prefilled in chunks, from a
cached prefix, under different LoRA adapters) must be the text ``generate()`` gives for
that request alone. The tiny fp32 Llama from the fixtures keeps this fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from botkit.config import RuntimeConfig
from botkit.errors import AdapterError, GenerationError, GeneratorBusy
from botkit.generation import ChatMessage, GenerationRequest, Generator, SamplingParams
from botkit.model import LoadedModel, validate_adapter_dir
from botkit.model.runtime import BatchedGenerator

from .conftest import SENTENCES, collect
from .test_lora import make_adapter

#: Seconds before a stuck stream or condition fails the test instead of hanging it.
PATIENCE = 60.0

SYSTEM = " ".join(SENTENCES)  # a long shared system prompt (about 100 tokens)
PROMPTS = [
    "Hi",
    "How do I reset my password?",
    "Hello there, how are you today? I am fine, thank you.",
    "The order ships in three to five business days. Please contact support if the "
    "problem persists. Open the settings page and choose reset password.",
    "Café crème",
    # The tiny model's greedy reply to this one reaches EOS after 15 tokens.
    "the if do and days Please How support Hello my ships",
]
EOS_PROMPT = PROMPTS[-1]


# -- requests and references -------------------------------------------------------------


def make_request(
    *turns: str | ChatMessage,
    adapter: str | None = None,
    request_id: str = "",
    **sampling: Any,
) -> GenerationRequest:
    """A request whose plain-string turns are user messages; greedy, 24 tokens, no EOS stop."""
    params: dict[str, Any] = {
        "temperature": 0.0,
        "repetition_penalty": 1.0,
        "max_new_tokens": 24,
        "ignore_eos": True,
    }
    params.update(sampling)
    messages = tuple(t if isinstance(t, ChatMessage) else ChatMessage("user", t) for t in turns)
    return GenerationRequest(
        messages=messages,
        sampling=SamplingParams(**params),
        adapter=adapter,
        request_id=request_id,
    )


def with_system(text: str, **kwargs: Any) -> GenerationRequest:
    return make_request(ChatMessage("system", SYSTEM), text, **kwargs)


def prompt_ids(tokenizer: Any, req: GenerationRequest) -> list[int]:
    ids = tokenizer.apply_chat_template(
        [m.as_dict() for m in req.messages], add_generation_prompt=True, return_dict=False
    )
    return list(ids[0] if ids and isinstance(ids[0], list) else ids)


def reference_text(model: Any, tokenizer: Any, req: GenerationRequest) -> str:
    """What a stream of transformers' greedy ``generate()`` tokens says to ``req`` alone.

    ``ignore_eos`` is ``min_new_tokens == max_new_tokens``: EOS is never picked. The
    whole reply is decoded at once, so a stream that lost held-back text at its end (the
    tiny model's byte-level tokens often end on a partial UTF-8 character) would differ.
    """
    sampling = req.sampling
    assert sampling.temperature == 0, "references are greedy"
    ids = torch.tensor([prompt_ids(tokenizer, req)], device=model.device)  # (1, T)
    eos = sorted({tokenizer.eos_token_id, *_as_list(model.generation_config.eos_token_id)})
    extra = {"min_new_tokens": sampling.max_new_tokens} if sampling.ignore_eos else {}
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=sampling.max_new_tokens,
            repetition_penalty=sampling.repetition_penalty,
            eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id,
            **extra,
        )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def _as_list(value: object) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]  # type: ignore[list-item]


# -- consuming streams ---------------------------------------------------------------------


class Reply:
    """One stream consumed by its own task: the pieces, and an event at the first one."""

    def __init__(self, generator: BatchedGenerator, req: GenerationRequest) -> None:
        self.request = req
        self.pieces: list[str] = []
        self._first = asyncio.Event()
        self.task = asyncio.create_task(self._consume(generator.stream(req)))

    async def _consume(self, stream: AsyncIterator[str]) -> None:
        try:
            async for piece in stream:
                self.pieces.append(piece)
                self._first.set()
        finally:
            self._first.set()  # an empty or failed reply starts nobody waiting forever

    async def started(self) -> None:
        await asyncio.wait_for(self._first.wait(), PATIENCE)

    async def text(self) -> str:
        await asyncio.wait_for(self.task, PATIENCE)
        return "".join(self.pieces)


async def staggered(
    generator: BatchedGenerator, requests: Sequence[GenerationRequest]
) -> list[str]:
    """Start each request once the one before has produced its first piece; all texts."""
    replies = []
    for req in requests:
        reply = Reply(generator, req)
        replies.append(reply)
        await reply.started()
    return [await reply.text() for reply in replies]


async def together(
    generator: BatchedGenerator, requests: Sequence[GenerationRequest]
) -> list[str]:
    replies = [Reply(generator, req) for req in requests]
    return [await reply.text() for reply in replies]


async def text_of(generator: BatchedGenerator, req: GenerationRequest) -> str:
    return "".join(await asyncio.wait_for(collect(generator, req), PATIENCE))  # type: ignore[arg-type]


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        await asyncio.sleep(0.005)


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def reference(load_tiny: Callable[..., LoadedModel], tiny_llama_dir: Path) -> LoadedModel:
    """A separate copy of the tiny Llama for ``generate()``, never touched by a runtime."""
    return load_tiny(tiny_llama_dir)


@pytest.fixture
async def make_runtime(
    load_tiny: Callable[..., LoadedModel], tiny_llama_dir: Path
) -> AsyncIterator[Callable[..., BatchedGenerator]]:
    """Build runtimes over fresh loads of the tiny Llama; all are closed afterwards."""
    made: list[BatchedGenerator] = []

    def make(config: RuntimeConfig | None = None, dtype: str = "float32") -> BatchedGenerator:
        runtime = BatchedGenerator(
            load_tiny(tiny_llama_dir, dtype), config=config or RuntimeConfig(), timeout_s=PATIENCE
        )
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        await asyncio.wait_for(runtime.aclose(), PATIENCE)


@pytest.fixture(scope="module")
def lora_dirs(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> dict[str, Path]:
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("runtime-adapters")
    dirs = {}
    for name, seed in [("alpha", 11), ("beta", 12)]:
        torch.manual_seed(seed)  # peft draws lora_A from the global generator
        model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
        dirs[name] = make_adapter(model, root / name, seed=seed)
    return dirs


@pytest.fixture
def adapter_models(tiny_llama_dir: Path, lora_dirs: dict[str, Path]) -> dict[str | None, Any]:
    """peft's own models per adapter name (``None``: the base), for reference replies."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    models: dict[str | None, Any] = {
        None: AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    }
    for name, directory in lora_dirs.items():
        base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
        models[name] = PeftModel.from_pretrained(base, str(directory)).eval()
    return models


# -- greedy equality -----------------------------------------------------------------------


@pytest.mark.parametrize("ignore_eos", [True, False])
async def test_staggered_greedy_replies_of_different_lengths_match_generate(
    make_runtime: Callable[..., BatchedGenerator], reference: LoadedModel, ignore_eos: bool
) -> None:
    token_counts = [30, 12, 25, 5, 18, 30]
    requests = [
        make_request(text, max_new_tokens=n, ignore_eos=ignore_eos, request_id=f"r{i}")
        for i, (text, n) in enumerate(zip(PROMPTS, token_counts, strict=True))
    ]
    expected = [reference_text(reference.model, reference.tokenizer, r) for r in requests]
    runtime = make_runtime()

    texts = await staggered(runtime, requests)

    for req, got, want in zip(requests, texts, expected, strict=True):
        assert got == want, f"{req.request_id}: {got!r} != generate's {want!r}"
    assert runtime.stats()["max_batch"] > 1  # they really shared forward passes
    assert runtime.stats()["queued"] == 0
    await wait_until(lambda: runtime.stats()["running"] == 0, "every slot to be freed")


async def test_ignore_eos_generates_past_eos_and_without_it_the_reply_ends_there(
    make_runtime: Callable[..., BatchedGenerator], reference: LoadedModel
) -> None:
    runtime = make_runtime()
    stopping = make_request(EOS_PROMPT, max_new_tokens=30, ignore_eos=False, request_id="eos")
    going_on = make_request(EOS_PROMPT, max_new_tokens=30, ignore_eos=True, request_id="all")

    stopped_text, full_text = await together(runtime, [stopping, going_on])

    stopped, full = runtime.finish_info("eos"), runtime.finish_info("all")
    assert stopped is not None
    assert full is not None
    assert (stopped.finish_reason, stopped.completion_tokens) == ("eos", 15)
    assert (full.finish_reason, full.completion_tokens) == ("length", 30)
    assert stopped.prompt_tokens == full.prompt_tokens == runtime.count_tokens(stopping.messages)
    assert stopped_text == reference_text(reference.model, reference.tokenizer, stopping)
    assert full_text == reference_text(reference.model, reference.tokenizer, going_on)


async def test_small_prefill_chunks_give_the_same_greedy_replies(
    make_runtime: Callable[..., BatchedGenerator], reference: LoadedModel
) -> None:
    runtime = make_runtime(RuntimeConfig(prefill_chunk_tokens=4, prefix_cache=False))
    requests = [
        make_request(ChatMessage("system", SYSTEM), PROMPTS[3], max_new_tokens=20),
        make_request(" ".join(SENTENCES[:3]), max_new_tokens=28),
        make_request(ChatMessage("system", SENTENCES[4]), PROMPTS[2], max_new_tokens=16),
        make_request(PROMPTS[0], max_new_tokens=24),
    ]
    assert len(prompt_ids(reference.tokenizer, requests[0])) > 100
    expected = [reference_text(reference.model, reference.tokenizer, r) for r in requests]

    texts = await staggered(runtime, requests)

    for got, want in zip(texts, expected, strict=True):
        assert got == want
    assert runtime.stats()["max_batch"] > 1


# -- prefix cache ----------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [256, 7])
async def test_prefix_cache_reuses_a_shared_system_prompt_without_changing_replies(
    make_runtime: Callable[..., BatchedGenerator], reference: LoadedModel, chunk: int
) -> None:
    requests = [with_system(text, max_new_tokens=20) for text in PROMPTS[:4]]
    expected = [reference_text(reference.model, reference.tokenizer, r) for r in requests]
    ids = [prompt_ids(reference.tokenizer, r) for r in requests]
    shared = len(ids[0]) - len(prompt_ids(reference.tokenizer, make_request(PROMPTS[0])))
    assert shared > 90  # the system prompt's turn, in tokens

    texts: dict[bool, list[str]] = {}
    stats: dict[bool, dict[str, int | float]] = {}
    for cached in (False, True):
        runtime = make_runtime(RuntimeConfig(prefix_cache=cached, prefill_chunk_tokens=chunk))
        # The first reply finishes alone, so its prompt is cached before the others come.
        first = await text_of(runtime, requests[0])
        texts[cached] = [first, *await staggered(runtime, requests[1:])]
        stats[cached] = runtime.stats()

    assert texts[True] == texts[False]
    for got, want in zip(texts[True], expected, strict=True):
        assert got == want
    assert stats[False]["prefix_cache_hits"] == 0
    assert stats[False]["prefix_tokens_reused"] == 0
    assert stats[True]["prefix_cache_hits"] >= 3
    assert stats[True]["prefix_tokens_reused"] >= 3 * shared


async def test_second_turn_of_a_conversation_reuses_the_first_turns_tokens(
    make_runtime: Callable[..., BatchedGenerator], reference: LoadedModel
) -> None:
    runtime = make_runtime()
    first_turn = make_request(
        ChatMessage("system", SENTENCES[2]), SENTENCES[0] + " " + SENTENCES[3],
        max_new_tokens=20,
    )
    reply = await text_of(runtime, first_turn)
    second_turn = make_request(
        *first_turn.messages, ChatMessage("assistant", reply), SENTENCES[5], max_new_tokens=20
    )
    first_ids = prompt_ids(reference.tokenizer, first_turn)
    second_ids = prompt_ids(reference.tokenizer, second_turn)
    assert second_ids[: len(first_ids)] == first_ids  # the premise: a token-level extension
    before = runtime.stats()

    second_reply = await text_of(runtime, second_turn)

    after = runtime.stats()
    assert after["prefix_cache_hits"] == before["prefix_cache_hits"] + 1
    reused = after["prefix_tokens_reused"] - before["prefix_tokens_reused"]
    assert len(first_ids) - 1 <= reused < len(second_ids)
    assert second_reply == reference_text(reference.model, reference.tokenizer, second_turn)


async def test_prefix_cache_never_shares_kv_between_adapters(
    make_runtime: Callable[..., BatchedGenerator],
    lora_dirs: dict[str, Path],
    adapter_models: dict[str | None, Any],
    reference: LoadedModel,
) -> None:
    runtime = make_runtime()
    runtime.load_adapter("alpha", str(lora_dirs["alpha"]))
    tokenizer = reference.tokenizer

    for adapter in (None, "alpha", None, "alpha"):
        req = with_system(PROMPTS[1], adapter=adapter, max_new_tokens=16)
        got = await text_of(runtime, req)
        assert got == reference_text(adapter_models[adapter], tokenizer, req), adapter

    assert runtime.stats()["prefix_cache_hits"] >= 2  # the repeats did hit, each its own


async def test_replacing_an_adapter_drops_its_cached_prefixes(
    make_runtime: Callable[..., BatchedGenerator],
    lora_dirs: dict[str, Path],
    adapter_models: dict[str | None, Any],
    reference: LoadedModel,
) -> None:
    runtime = make_runtime()
    req = with_system(PROMPTS[2], adapter="persona", max_new_tokens=16)
    runtime.load_adapter("persona", str(lora_dirs["alpha"]))
    before = await text_of(runtime, req)

    runtime.load_adapter("persona", str(lora_dirs["beta"]))  # a new version, same name
    after = await text_of(runtime, req)

    assert before == reference_text(adapter_models["alpha"], reference.tokenizer, req)
    assert after == reference_text(adapter_models["beta"], reference.tokenizer, req)


# -- LoRA adapters -----------------------------------------------------------------------------


async def test_mixed_adapters_in_one_batch_match_each_adapter_alone(
    make_runtime: Callable[..., BatchedGenerator],
    lora_dirs: dict[str, Path],
    adapter_models: dict[str | None, Any],
    reference: LoadedModel,
) -> None:
    runtime = make_runtime()
    for name, directory in lora_dirs.items():
        assert runtime.load_adapter(name, str(directory)) == validate_adapter_dir(directory).version
    requests = [
        make_request(text, adapter=adapter, max_new_tokens=n)
        for text, n in [(PROMPTS[1], 24), (PROMPTS[2], 18)]
        for adapter in (None, "alpha", "beta")
    ]
    expected = [reference_text(adapter_models[r.adapter], reference.tokenizer, r) for r in requests]

    texts = await staggered(runtime, requests)

    for req, got, want in zip(requests, texts, expected, strict=True):
        assert got == want, f"adapter {req.adapter}: {got!r} != alone {want!r}"
    assert len(set(texts[:3])) == 3
    assert len(set(texts[3:])) == 3
    assert runtime.stats()["max_batch"] > 1


async def test_adapters_load_and_unload_while_another_reply_streams(
    make_runtime: Callable[..., BatchedGenerator],
    lora_dirs: dict[str, Path],
    adapter_models: dict[str | None, Any],
    reference: LoadedModel,
) -> None:
    runtime = make_runtime()
    long_base = make_request(PROMPTS[0], max_new_tokens=400)
    tuned = make_request(PROMPTS[1], adapter="alpha", max_new_tokens=20)
    streaming = Reply(runtime, long_base)
    await streaming.started()

    version = await asyncio.to_thread(runtime.load_adapter, "alpha", str(lora_dirs["alpha"]))
    tuned_text = await text_of(runtime, tuned)
    await asyncio.to_thread(runtime.unload_adapter, "alpha")

    assert version == validate_adapter_dir(lora_dirs["alpha"]).version
    tuned_alone = reference_text(adapter_models["alpha"], reference.tokenizer, tuned)
    assert tuned_text == tuned_alone
    with pytest.raises((AdapterError, GenerationError), match="alpha"):
        await text_of(runtime, tuned)
    assert await streaming.text() == reference_text(reference.model, reference.tokenizer, long_base)


async def test_unknown_adapter_fails_that_request_only(
    make_runtime: Callable[..., BatchedGenerator], reference: LoadedModel
) -> None:
    runtime = make_runtime()
    good = make_request(PROMPTS[2], max_new_tokens=30)
    streaming = Reply(runtime, good)
    await streaming.started()

    with pytest.raises((AdapterError, GenerationError), match="other"):
        await text_of(runtime, make_request(PROMPTS[1], adapter="other"))

    assert await streaming.text() == reference_text(reference.model, reference.tokenizer, good)
    assert await text_of(runtime, make_request(PROMPTS[1], max_new_tokens=4))  # still serving


async def test_bad_adapter_directories_are_adapter_errors(
    make_runtime: Callable[..., BatchedGenerator], lora_dirs: dict[str, Path], tmp_path: Path
) -> None:
    runtime = make_runtime()
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    for file in lora_dirs["alpha"].iterdir():
        (garbage / file.name).write_bytes(file.read_bytes())
    (garbage / "adapter_config.json").write_text("{not json", encoding="utf-8")

    with pytest.raises(AdapterError, match="not found"):
        runtime.load_adapter("absent", str(tmp_path / "absent"))
    with pytest.raises(AdapterError, match="garbage"):
        runtime.load_adapter("garbage", str(garbage))
    with pytest.raises((AdapterError, GenerationError), match="garbage"):
        await text_of(runtime, make_request(PROMPTS[1], adapter="garbage"))


async def test_many_mixed_requests_through_a_small_batch_match_their_references(
    make_runtime: Callable[..., BatchedGenerator],
    lora_dirs: dict[str, Path],
    adapter_models: dict[str | None, Any],
    reference: LoadedModel,
) -> None:
    """Queueing, chunked prefill, cached prefixes and mixed adapters all at once."""
    runtime = make_runtime(RuntimeConfig(max_concurrent=3, prefill_chunk_tokens=5))
    for name, directory in lora_dirs.items():
        runtime.load_adapter(name, str(directory))
    adapters = [None, "alpha", "beta", "alpha", None, "beta", "beta", None, "alpha"]
    requests = [
        (with_system if i % 2 else make_request)(
            PROMPTS[i % len(PROMPTS)], adapter=adapter, max_new_tokens=5 + 3 * i,
            ignore_eos=i % 3 != 0,
        )
        for i, adapter in enumerate(adapters)
    ]
    expected = [reference_text(adapter_models[r.adapter], reference.tokenizer, r) for r in requests]
    for adapter in (None, "alpha", "beta"):  # the system prompt cached under each adapter
        await text_of(runtime, with_system(PROMPTS[4], adapter=adapter, max_new_tokens=2))
    hits_before = runtime.stats()["prefix_cache_hits"]

    texts = await together(runtime, requests)

    for i, (got, want) in enumerate(zip(texts, expected, strict=True)):
        assert got == want, f"request {i} ({requests[i].adapter}): {got!r} != {want!r}"
    stats = runtime.stats()
    assert stats["max_batch"] == 3
    assert stats["prefix_cache_hits"] - hits_before >= 4  # each system-prompted request


# -- sampling ----------------------------------------------------------------------------------


async def test_per_request_sampling_in_one_batch(
    make_runtime: Callable[..., BatchedGenerator], reference: LoadedModel
) -> None:
    runtime = make_runtime()

    def sampled(seed: int, **overrides: Any) -> GenerationRequest:
        params = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": seed} | overrides
        return make_request(PROMPTS[1], max_new_tokens=24, **params)

    greedy = [
        make_request(PROMPTS[2], max_new_tokens=24),
        make_request(PROMPTS[3], max_new_tokens=24, repetition_penalty=1.3),
    ]
    nucleus = {"temperature": 0.8, "top_k": 50, "top_p": 0.9, "repetition_penalty": 1.1}
    requests = [
        greedy[0], sampled(7), greedy[1], sampled(7), sampled(8), sampled(9), sampled(10),
        sampled(21, **nucleus), sampled(21, **nucleus),
    ]

    texts = await together(runtime, requests)
    alone = await text_of(runtime, sampled(7))

    assert texts[0] == reference_text(reference.model, reference.tokenizer, greedy[0])
    assert texts[2] == reference_text(reference.model, reference.tokenizer, greedy[1])
    assert texts[1] == texts[3] == alone  # a seed decides the reply, whatever runs beside it
    assert texts[7] == texts[8]
    assert {texts[4], texts[5], texts[6]} - {texts[1]}  # other seeds, other replies
    assert runtime.stats()["max_batch"] > 1


async def test_stop_string_ends_the_reply_and_is_not_emitted(
    make_runtime: Callable[..., BatchedGenerator], reference: LoadedModel
) -> None:
    runtime = make_runtime()
    full = reference_text(
        reference.model, reference.tokenizer, make_request(PROMPTS[2], max_new_tokens=40)
    )
    at = next(  # a printable stop string first seen after a few characters
        i for i in range(6, len(full) - 3)
        if full[i : i + 3].isprintable() and "\ufffd" not in full[i : i + 3]
        and full.find(full[i : i + 3]) == i
    )
    stop = full[at : at + 3]
    stopping = make_request(PROMPTS[2], max_new_tokens=40, stop=(stop,), request_id="stop")
    beside = make_request(PROMPTS[1], max_new_tokens=30)

    stopped, other = await together(runtime, [stopping, beside])

    assert stopped == full[:at]
    info = runtime.finish_info("stop")
    assert info is not None
    assert info.finish_reason == "stop"
    assert other == reference_text(reference.model, reference.tokenizer, beside)


# -- cancellation, queueing and the memory budget ---------------------------------------------


async def test_closing_a_stream_frees_its_slot_for_a_queued_request(
    make_runtime: Callable[..., BatchedGenerator], reference: LoadedModel
) -> None:
    runtime = make_runtime(RuntimeConfig(max_concurrent=1))
    stream = runtime.stream(make_request(PROMPTS[0], max_new_tokens=400, request_id="closed"))
    assert await asyncio.wait_for(anext(stream), PATIENCE)
    waiting_request = make_request(PROMPTS[1], max_new_tokens=20)
    waiting = Reply(runtime, waiting_request)
    await wait_until(lambda: runtime.stats()["queued"] == 1, "the second request to queue")

    await stream.aclose()

    assert await waiting.text() == (
        reference_text(reference.model, reference.tokenizer, waiting_request)
    )
    await wait_until(lambda: runtime.stats()["running"] == 0, "the slots to empty")
    info = runtime.finish_info("closed")
    assert info is not None
    assert info.finish_reason == "cancelled"
    assert info.completion_tokens < 400


async def test_cancelling_the_consuming_task_frees_the_slot(
    make_runtime: Callable[..., BatchedGenerator],
) -> None:
    runtime = make_runtime()
    reply = Reply(runtime, make_request(PROMPTS[0], max_new_tokens=400, request_id="gone"))
    await reply.started()
    assert runtime.stats()["running"] == 1

    reply.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reply.task

    await wait_until(lambda: runtime.stats()["running"] == 0, "the slot to be freed")
    info = runtime.finish_info("gone")
    assert info is not None
    assert info.finish_reason == "cancelled"
    assert await text_of(runtime, make_request(PROMPTS[1], max_new_tokens=4))


async def test_request_cancelled_while_queued_never_runs(
    make_runtime: Callable[..., BatchedGenerator],
) -> None:
    runtime = make_runtime(RuntimeConfig(max_concurrent=1))
    stream = runtime.stream(make_request(PROMPTS[0], max_new_tokens=400))
    await asyncio.wait_for(anext(stream), PATIENCE)
    queued = Reply(runtime, make_request(PROMPTS[1], request_id="never"))
    await wait_until(lambda: runtime.stats()["queued"] == 1, "the request to queue")

    queued.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued.task
    await wait_until(lambda: runtime.stats()["queued"] == 0, "the queue to drop it")
    await stream.aclose()
    await wait_until(lambda: runtime.stats()["running"] == 0, "the slots to empty")

    assert queued.pieces == []
    info = runtime.finish_info("never")
    assert info is None or (info.finish_reason, info.completion_tokens) == ("cancelled", 0)


async def test_cancelling_during_chunked_prefill_leaves_other_replies_intact(
    make_runtime: Callable[..., BatchedGenerator], reference: LoadedModel
) -> None:
    runtime = make_runtime(RuntimeConfig(prefill_chunk_tokens=4, prefix_cache=False))
    decoding_request = make_request(PROMPTS[1], max_new_tokens=200)
    decoding = Reply(runtime, decoding_request)
    await decoding.started()
    long_prompt = make_request(ChatMessage("system", SYSTEM), PROMPTS[3], max_new_tokens=10)
    prefilling = Reply(runtime, long_prompt)
    await wait_until(lambda: runtime.stats()["running"] == 2, "the long prompt to start")

    prefilling.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await prefilling.task
    after_request = make_request(PROMPTS[2], max_new_tokens=20)
    after = await text_of(runtime, after_request)

    assert await decoding.text() == (
        reference_text(reference.model, reference.tokenizer, decoding_request)
    )
    assert after == reference_text(reference.model, reference.tokenizer, after_request)


async def test_a_reader_that_stops_reading_holds_up_no_one_and_loses_nothing(
    make_runtime: Callable[..., BatchedGenerator], reference: LoadedModel
) -> None:
    runtime = make_runtime()
    stalled_request = make_request(PROMPTS[1], max_new_tokens=60)
    fast_request = make_request(PROMPTS[2], max_new_tokens=60)
    stalled_pieces: list[str] = []
    resume = asyncio.Event()

    async def read_then_stall() -> None:
        async for piece in runtime.stream(stalled_request):
            stalled_pieces.append(piece)
            await resume.wait()  # reads nothing more until the other reply is complete

    stalled = asyncio.create_task(read_then_stall())
    fast = await text_of(runtime, fast_request)  # a stall that blocked the batch hangs here
    resume.set()
    await asyncio.wait_for(stalled, PATIENCE)

    assert fast == reference_text(reference.model, reference.tokenizer, fast_request)
    assert "".join(stalled_pieces) == (
        reference_text(reference.model, reference.tokenizer, stalled_request)
    )


async def test_closing_the_runtime_ends_live_streams_with_an_error(
    load_tiny: Callable[..., LoadedModel], tiny_llama_dir: Path
) -> None:
    runtime = BatchedGenerator(load_tiny(tiny_llama_dir), timeout_s=PATIENCE)
    live = Reply(runtime, make_request(PROMPTS[0], max_new_tokens=400))
    await live.started()

    await asyncio.wait_for(runtime.aclose(), PATIENCE)
    await asyncio.wait_for(runtime.aclose(), PATIENCE)  # idempotent

    with pytest.raises(GenerationError, match="closed"):
        await live.text()
    with pytest.raises(GenerationError, match="closed"):
        await text_of(runtime, make_request(PROMPTS[1]))


async def test_a_failing_forward_pass_fails_the_running_requests_and_the_worker_lives_on(
    make_runtime: Callable[..., BatchedGenerator],
    reference: LoadedModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from botkit.model.batched_forward import BatchedForward

    runtime = make_runtime()
    running = Reply(runtime, make_request(PROMPTS[0], max_new_tokens=400))
    await running.started()
    healthy_forward = BatchedForward.__call__

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(BatchedForward, "__call__", broken)
    with pytest.raises(GenerationError, match="device-side assert") as caught:
        await running.text()
    monkeypatch.setattr(BatchedForward, "__call__", healthy_forward)

    assert isinstance(caught.value.__cause__, RuntimeError)
    after = make_request(PROMPTS[1], max_new_tokens=20)
    assert await text_of(runtime, after) == (
        reference_text(reference.model, reference.tokenizer, after)
    )


async def test_past_max_queue_a_request_is_refused_as_busy(
    make_runtime: Callable[..., BatchedGenerator],
) -> None:
    runtime = make_runtime(RuntimeConfig(max_concurrent=1, max_queue=1))
    running = Reply(runtime, make_request(PROMPTS[0], max_new_tokens=300, request_id="one"))
    await running.started()
    waiting = Reply(runtime, make_request(PROMPTS[1], max_new_tokens=30, request_id="two"))
    await wait_until(lambda: runtime.stats()["queued"] == 1, "the second request to queue")

    with pytest.raises(GeneratorBusy, match="busy"):
        await asyncio.wait_for(anext(runtime.stream(make_request(PROMPTS[2]))), PATIENCE)

    assert await running.text()
    assert await waiting.text()
    for request_id, tokens in [("one", 300), ("two", 30)]:
        info = runtime.finish_info(request_id)
        assert info is not None
        assert info.completion_tokens == tokens


async def test_requests_that_fit_the_kv_budget_only_one_at_a_time_wait_their_turn(
    make_runtime: Callable[..., BatchedGenerator], reference: LoadedModel
) -> None:
    requests = [
        make_request(PROMPTS[1], max_new_tokens=40, request_id="a"),
        make_request(PROMPTS[2], max_new_tokens=40, request_id="b"),
    ]
    needs = [len(prompt_ids(reference.tokenizer, r)) + 40 for r in requests]
    budget = max(needs) + 4
    assert budget < sum(needs)
    runtime = make_runtime(RuntimeConfig(kv_cache_tokens=budget))
    assert runtime.stats()["kv_tokens_budget"] == budget

    texts = await together(runtime, requests)

    for req, got in zip(requests, texts, strict=True):
        assert got == reference_text(reference.model, reference.tokenizer, req)
        info = runtime.finish_info(req.request_id)
        assert info is not None
        assert info.completion_tokens == 40
    assert runtime.stats()["max_batch"] == 1  # the second waited for the first


async def test_request_that_can_never_fit_the_kv_budget_is_a_clear_error(
    make_runtime: Callable[..., BatchedGenerator],
) -> None:
    runtime = make_runtime(RuntimeConfig(kv_cache_tokens=60))

    with pytest.raises(GenerationError, match="60") as caught:
        await text_of(runtime, make_request(PROMPTS[1], max_new_tokens=100))

    assert not isinstance(caught.value, GeneratorBusy)  # waiting would never help
    assert await text_of(runtime, make_request(PROMPTS[0], max_new_tokens=8))


# -- models, dtypes, counting --------------------------------------------------------------


def test_supports_llama_but_not_gpt2(
    load_tiny: Callable[..., LoadedModel], tiny_llama_dir: Path, tiny_gpt2_dir: Path
) -> None:
    assert BatchedGenerator.supports(load_tiny(tiny_llama_dir).model) is True
    assert BatchedGenerator.supports(load_tiny(tiny_gpt2_dir).model) is False


async def test_bfloat16_on_cpu_serves_a_batch(
    make_runtime: Callable[..., BatchedGenerator],
) -> None:
    runtime = make_runtime(dtype="bfloat16")
    requests = [
        make_request(text, max_new_tokens=12, request_id=f"bf{i}")
        for i, text in enumerate(PROMPTS[:3])
    ]

    texts = await staggered(runtime, requests)

    assert all(texts)
    for req in requests:
        info = runtime.finish_info(req.request_id)
        assert info is not None
        assert info.completion_tokens == 12


def test_runtime_is_a_generator_and_counts_tokens_like_the_tokenizer(
    make_runtime: Callable[..., BatchedGenerator], reference: LoadedModel, tiny_llama_dir: Path
) -> None:
    runtime = make_runtime()
    tokenizer = reference.tokenizer
    messages = [ChatMessage("system", "Be brief."), ChatMessage("user", PROMPTS[1])]
    templated = tokenizer.apply_chat_template(
        [m.as_dict() for m in messages], add_generation_prompt=True, return_dict=False
    )

    assert isinstance(runtime, Generator)
    assert runtime.model_id == tiny_llama_dir.name
    assert runtime.context_window == 512
    assert runtime.count_tokens(messages) == len(templated)
    assert runtime.count_text(PROMPTS[2]) == len(tokenizer(PROMPTS[2])["input_ids"])
    assert runtime.count_text("") == 0
