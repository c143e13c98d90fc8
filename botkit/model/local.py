"""The in-process generator: one model, one worker thread, one request at a time.

The model never runs on the event loop. :class:`LocalGenerator` hands each request to a
single worker thread, which runs the decoding loop below and passes text pieces back
through ``loop.call_soon_threadsafe`` into an ``asyncio.Queue``. Closing the stream
(``aclose()`` or cancelling the task) sets a flag the worker checks before every token.

The decoding loop is kept plain on purpose: a continuous-batching runtime replaces the
one-at-a-time worker later, and it should be able to read this loop in one sitting.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from botkit.config import ModelConfig
from botkit.errors import BotkitError, GenerationError, GenerationTimeout
from botkit.generation import ChatMessage, GenerationRequest, SamplingParams
from botkit.model.loading import LoadedModel, load_model
from botkit.model.lora import AdapterSet, validate_adapter_dir

logger = logging.getLogger(__name__)

FinishReason = Literal["eos", "stop", "length", "cancelled"]


@dataclass(frozen=True)
class FinishInfo:
    """How the most recent reply ended, for logs, usage counts and benchmarks."""

    request_id: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    seconds: float
    """From the start of the prompt's forward pass to the last token."""


# -- sampling ------------------------------------------------------------------------


def sample_next_token(
    logits: torch.Tensor,
    previous_ids: torch.Tensor,
    sampling: SamplingParams,
    generator: torch.Generator,
) -> int:
    """Pick the next token from ``logits`` (vocab,) given the ids so far (T,).

    Same order as ``transformers``: repetition penalty, temperature, top-k, top-p.
    """
    logits = logits.float()  # (vocab,)
    if sampling.repetition_penalty != 1.0 and previous_ids.numel():
        seen = logits.gather(0, previous_ids)  # (T,)
        penalised = torch.where(
            seen < 0, seen * sampling.repetition_penalty, seen / sampling.repetition_penalty
        )
        logits = logits.scatter(0, previous_ids, penalised)
    if sampling.temperature <= 0:
        return int(torch.argmax(logits))
    logits = logits / sampling.temperature
    if 0 < sampling.top_k < logits.numel():
        kth_best = torch.topk(logits, sampling.top_k).values[-1]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if 0 < sampling.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)  # (vocab,), (vocab,)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token once the ones before it already cover top_p; the best always stays.
        drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= sampling.top_p
        drop = drop_sorted.scatter(0, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(-1)  # (vocab,)
    return int(torch.multinomial(probs, 1, generator=generator))


# -- text out ------------------------------------------------------------------------


class IncrementalDetokenizer:
    """Turns token ids into text deltas without ever splitting a UTF-8 character.

    Decodes a short window (the last emitted piece plus the new tokens) rather than the
    whole reply, and holds back text ending in U+FFFD: that is a character whose bytes
    have not all arrived yet.
    """

    def __init__(self, tokenizer: Any, lock: threading.Lock | None = None) -> None:
        self._tokenizer = tokenizer
        self._lock = lock or threading.Lock()
        self._ids: list[int] = []
        self._prefix_offset = 0  # start of the window decoded for context
        self._read_offset = 0  # first token not yet turned into emitted text

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        if len(new_text) <= len(prefix_text) or new_text.endswith("\ufffd"):
            return ""
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        return new_text[len(prefix_text) :]

    def flush(self) -> str:
        """The text still held back when the reply ends (a final partial character
        decodes to U+FFFD, as it would in the whole reply's text)."""
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return new_text[len(prefix_text) :]

    def _decode(self, ids: list[int]) -> str:
        if not ids:
            return ""
        with self._lock:
            return str(self._tokenizer.decode(ids, skip_special_tokens=True))


class ChatTokenizer:
    """The model's tokenizer, shared by the event loop and the model worker.

    HF fast tokenizers can fail ("Already borrowed") when two threads use one at once,
    so every use goes through one lock.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.lock = threading.Lock()

    def prompt_ids(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The chat template applied to ``messages``, generation prompt included."""
        with self.lock:
            ids = self.tokenizer.apply_chat_template(
                [m.as_dict() for m in messages],
                add_generation_prompt=True,
                tokenize=True,
                return_dict=False,
            )
        if ids and isinstance(ids[0], list):  # some tokenizers answer with a batch of one
            ids = ids[0]
        return list(ids)

    def count_text(self, text: str) -> int:
        with self.lock:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def detokenizer(self) -> IncrementalDetokenizer:
        return IncrementalDetokenizer(self.tokenizer, self.lock)


class StopStringFilter:
    """Cuts the reply at the first stop string, which is itself never emitted.

    Text that could be the start of a stop string is held back until it either
    completes the stop string or turns out not to.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""

    def push(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to emit, whether a stop string was reached)."""
        if not self._stops:
            return text, False
        self._held += text
        hits = [i for i in (self._held.find(s) for s in self._stops) if i >= 0]
        if hits:
            out, self._held = self._held[: min(hits)], ""
            return out, True
        keep = 0
        for size in range(1, min(len(self._held), max(map(len, self._stops)) - 1) + 1):
            tail = self._held[-size:]
            if any(stop.startswith(tail) for stop in self._stops):
                keep = size
        out, self._held = self._held[: len(self._held) - keep], self._held[len(self._held) - keep :]
        return out, False

    def flush(self) -> str:
        out, self._held = self._held, ""
        return out


# -- the generator -------------------------------------------------------------------

_Emit = Callable[[str, Any], None]


class LocalGenerator:
    """Implements :class:`botkit.generation.Generator` on a model in this process."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        adapters: AdapterSet | None = None,
        timeout_s: float = 120.0,
        threads: int = 0,
    ) -> None:
        self._loaded = loaded
        self._adapters = adapters or AdapterSet(
            loaded.model, base_weights_hash=loaded.weights_hash
        )
        self._timeout_s = timeout_s
        self._eos_ids = _eos_token_ids(loaded)
        self._forward_kwargs = _forward_kwargs(loaded.model)
        self._text = ChatTokenizer(loaded.tokenizer)
        self._threads = threads
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="botkit-model", initializer=self._init_worker
        )
        self._in_flight: set[threading.Event] = set()
        self._closed = False
        self.last_finish: FinishInfo | None = None
        """How the most recent reply ended (set by the worker)."""

    @classmethod
    def from_config(cls, cfg: ModelConfig, data_dir: Path) -> LocalGenerator:
        """Load the model ``cfg`` names, keeping converted weights in ``data_dir/models``."""
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        loaded = load_model(
            cfg.source,
            device=cfg.device,
            dtype=cfg.dtype,
            cache_dir=Path(data_dir) / "models",
            context_window=cfg.context_window,
        )
        return cls(loaded, timeout_s=cfg.generation_timeout_s, threads=cfg.threads)

    # -- reporting ---------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self._loaded.model_id

    @property
    def context_window(self) -> int:
        return self._loaded.context_window

    @property
    def device(self) -> torch.device:
        return self._loaded.device

    @property
    def dtype(self) -> torch.dtype:
        return self._loaded.dtype

    @property
    def weights_hash(self) -> str:
        return self._loaded.weights_hash

    @property
    def loaded(self) -> LoadedModel:
        return self._loaded

    @property
    def adapters(self) -> AdapterSet:
        """The adapter set; touch it only through this generator once requests run."""
        return self._adapters

    # -- the Generator protocol --------------------------------------------------------

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return len(self._text.prompt_ids(messages))

    def count_text(self, text: str) -> int:
        return self._text.count_text(text)

    def load_adapter(self, name: str, path: str) -> str:
        """Check and load a LoRA adapter; returns its version.

        The load runs on the model worker, so it waits for the reply in progress (if
        any) to finish and never races a generation.
        """
        self._check_open()
        validate_adapter_dir(path, base_weights_hash=self._loaded.weights_hash)
        return self._executor.submit(self._adapters.load, name, path).result()

    def unload_adapter(self, name: str) -> None:
        self._check_open()
        self._executor.submit(self._adapters.unload, name).result()

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        self._check_open()
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancel = threading.Event()

        def emit(kind: str, value: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed under us: nobody listens
                loop.call_soon_threadsafe(pieces.put_nowait, (kind, value))

        self._in_flight.add(cancel)
        self._executor.submit(self._run, request, cancel, emit)
        try:
            while True:
                try:
                    kind, value = await asyncio.wait_for(pieces.get(), self._timeout_s)
                except TimeoutError:
                    raise GenerationTimeout(
                        f"the model produced nothing for {self._timeout_s:g} s; it may be "
                        "overloaded (raise [model] generation_timeout_s if this machine is slow)"
                    ) from None
                if kind == "text":
                    yield value
                elif kind == "done":
                    return
                else:
                    raise value
        finally:
            cancel.set()
            self._in_flight.discard(cancel)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for cancel in list(self._in_flight):
            cancel.set()
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)

    async def __aenter__(self) -> LocalGenerator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the worker --------------------------------------------------------------------

    def _init_worker(self) -> None:
        # torch's intra-op thread count can be per calling thread (OpenMP); set it here too.
        if self._threads > 0:
            torch.set_num_threads(self._threads)

    def _run(self, request: GenerationRequest, cancel: threading.Event, emit: _Emit) -> None:
        """Worker entry: generate, then report the end (or the error) to the stream."""
        if cancel.is_set():
            return  # the consumer left (or timed out) while this request was queued
        try:
            self._generate(request, cancel, emit)
        except BotkitError as exc:
            emit("error", exc)
        except Exception as exc:  # torch and transformers raise many types
            logger.exception("generation %r failed", request.request_id)
            error = GenerationError(f"generation failed: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            emit("error", error)
        else:
            emit("done", None)

    @torch.inference_mode()
    def _generate(self, request: GenerationRequest, cancel: threading.Event, emit: _Emit) -> None:
        sampling = request.sampling
        device = self._loaded.device
        prompt_ids = self._text.prompt_ids(request.messages)
        room = self.context_window - len(prompt_ids)
        if room <= 0:
            raise GenerationError(
                f"the prompt takes {len(prompt_ids)} tokens but the context window holds "
                f"{self.context_window}; shorten the history or the system prompt"
            )
        max_new_tokens = min(sampling.max_new_tokens, room)

        rng = torch.Generator(device=device)
        if sampling.seed is None:
            rng.seed()
        else:
            rng.manual_seed(sampling.seed)

        detokenizer = self._text.detokenizer()
        stop_filter = StopStringFilter(sampling.stop)
        seen_ids = torch.tensor(prompt_ids, device=device)  # (T,) for the repetition penalty
        input_ids = seen_ids.unsqueeze(0)  # (1, T): the whole prompt on the first step
        cache_kwarg, extra_kwargs = self._forward_kwargs
        kv_cache = None  # the model's KV cache (a transformers Cache) after the first step
        completion_tokens = 0
        finish: FinishReason = "length"
        started = time.perf_counter()

        with self._adapters.use(request.adapter) as model:
            for _ in range(max_new_tokens):
                if cancel.is_set():
                    finish = "cancelled"
                    break
                out = model(
                    input_ids=input_ids, **{cache_kwarg: kv_cache}, use_cache=True, **extra_kwargs
                )
                kv_cache = getattr(out, cache_kwarg)
                logits = out.logits[0, -1, :]  # (1, 1, vocab) -> (vocab,)
                token_id = sample_next_token(logits, seen_ids, sampling, rng)
                if token_id in self._eos_ids:
                    finish = "eos"
                    break
                completion_tokens += 1
                seen_ids = torch.cat([seen_ids, seen_ids.new_tensor([token_id])])  # (T+1,)
                input_ids = seen_ids[-1:].unsqueeze(0)  # (1, 1): the cache holds the rest

                delta = detokenizer.push(token_id)
                text, stopped = stop_filter.push(delta)
                if text:
                    emit("text", text)
                if stopped:
                    finish = "stop"
                    break

        if finish in {"eos", "length"}:
            # Held-back text that never became a stop string is part of the reply.
            text, stopped = stop_filter.push(detokenizer.flush())
            tail = text if stopped else text + stop_filter.flush()
            if tail:
                emit("text", tail)
        self.last_finish = FinishInfo(
            request_id=request.request_id,
            prompt_tokens=len(prompt_ids),
            completion_tokens=completion_tokens,
            finish_reason=finish,
            seconds=time.perf_counter() - started,
        )

    # -- helpers -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise GenerationError("this generator is closed")


def _forward_kwargs(model: Any) -> tuple[str, dict[str, Any]]:
    """How this transformers version names the KV cache argument (``cache`` from 5.2x,
    ``past_key_values`` before), and whether the model can skip logits we do not read."""
    parameters = inspect.signature(type(model).forward).parameters
    cache_kwarg = "cache" if "cache" in parameters else "past_key_values"
    extra = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}
    return cache_kwarg, extra


def _eos_token_ids(loaded: LoadedModel) -> frozenset[int]:
    """Every id that ends a reply: the tokenizer's EOS and the model's generation config's."""
    ids: set[int] = set()
    tokenizer_eos = getattr(loaded.tokenizer, "eos_token_id", None)
    if isinstance(tokenizer_eos, int):
        ids.add(tokenizer_eos)
    generation_config = getattr(loaded.model, "generation_config", None)
    config_eos = getattr(generation_config, "eos_token_id", None)
    if isinstance(config_eos, int):
        ids.add(config_eos)
    elif isinstance(config_eos, list | tuple):
        ids.update(i for i in config_eos if isinstance(i, int))
    return frozenset(ids)
