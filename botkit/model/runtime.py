"""The serving runtime: continuous batching of many conversations on one model.

One worker thread runs an iteration-level scheduler. Every step it

1. retires requests that were cancelled and admits waiting ones while there is room
   (``max_concurrent`` and the KV budget; past ``max_queue`` waiting, a newcomer gets
   :class:`~botkit.errors.GeneratorBusy` at once);
2. computes the next chunk of the newcomers' prompts (at most ``prefill_chunk_tokens``
   per step, so a long prompt never freezes the others' streams), starting from the
   longest cached prefix when the prefix cache has one;
3. decodes one token for every request past its prompt, in ONE forward pass whatever
   their lengths and LoRA adapters (:mod:`botkit.model.batched_forward`), samples each
   row with its own parameters, and streams the text.

A request leaves the batch the moment it ends (EOS, a stop string, ``max_new_tokens``
or cancellation); its slot is reused by the next one. Text reaches the asyncio side
through a :class:`_Sink` that coalesces pieces when a consumer is slow, so one slow
reader never stalls the batch and memory stays bounded by the reply's length.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

from botkit.config import RuntimeConfig
from botkit.errors import (
    BotkitError,
    GenerationError,
    GenerationTimeout,
    GeneratorBusy,
    ModelError,
)
from botkit.generation import ChatMessage, GenerationRequest
from botkit.model.batched_forward import BatchedForward, supports
from botkit.model.kv_cache import KVPool, PrefixCache
from botkit.model.loading import LoadedModel
from botkit.model.local import (
    ChatTokenizer,
    FinishInfo,
    FinishReason,
    IncrementalDetokenizer,
    StopStringFilter,
    _eos_token_ids,
    sample_next_token,
)
from botkit.model.lora import validate_adapter_dir
from botkit.model.lora_bank import LoraBank

logger = logging.getLogger(__name__)

_FINISHED_KEPT = 1024  # how many FinishInfo records finish_info() can still answer for


class _Sink:
    """Worker -> event loop hand-off of one reply's text, coalescing when the reader lags."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._pieces: list[str] = []
        self._ended = False
        self._error: BaseException | None = None
        self._ready = asyncio.Event()

    def _wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
            self._loop.call_soon_threadsafe(self._ready.set)

    def put(self, text: str) -> None:
        with self._lock:
            self._pieces.append(text)
        self._wake()

    def end(self, error: BaseException | None = None) -> None:
        with self._lock:
            self._ended, self._error = True, error
        self._wake()

    async def take(self, timeout_s: float) -> tuple[str, bool]:
        """(text so far, whether the reply ended); raises the worker's error, if any."""
        await asyncio.wait_for(self._ready.wait(), timeout_s)
        with self._lock:
            text, self._pieces = "".join(self._pieces), []
            ended, error = self._ended, self._error
            self._ready.clear()
        if error is not None and not text:
            raise error
        if error is not None:  # deliver the text first, the error on the next take
            self._ready.set()
            return text, False
        return text, ended


@dataclass(eq=False)
class _Sequence:
    """One request inside the runtime."""

    request: GenerationRequest
    prompt: list[int]
    sink: _Sink
    cancel: threading.Event
    need: int  # KV positions it may use: prompt + the reply's tokens
    rng: torch.Generator
    detokenizer: IncrementalDetokenizer
    stops: StopStringFilter
    generated: list[int] = field(default_factory=list)
    computed: int = 0  # positions whose KV is in the slot
    slot: int = -1
    pending: int = -1  # the newest token, whose KV the next decode step computes
    started: float = field(default_factory=time.perf_counter)
    ended: bool = False

    @property
    def adapter(self) -> str | None:
        return self.request.adapter


class BatchedGenerator:
    """Implements :class:`botkit.generation.Generator` with continuous batching."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        config: RuntimeConfig | None = None,
        timeout_s: float = 120.0,
        threads: int = 0,
    ) -> None:
        if not supports(loaded.model):
            raise ModelError(
                f"the batched runtime does not support {type(loaded.model).__name__}; "
                "set [runtime] engine = \"simple\""
            )
        self._loaded = loaded
        self._config = config = config or RuntimeConfig()
        self._timeout_s = timeout_s
        self._threads = threads
        model_config = loaded.model.config
        heads = model_config.num_attention_heads
        kv_heads = model_config.num_key_value_heads
        head_dim = getattr(model_config, "head_dim", None) or model_config.hidden_size // heads
        layers = model_config.num_hidden_layers
        per_token = KVPool.bytes_per_token(layers, kv_heads, head_dim, loaded.dtype)
        budget = config.kv_cache_tokens or config.kv_cache_mb * 2**20 // per_token
        self._pool = KVPool(
            layers=layers, kv_heads=kv_heads, head_dim=head_dim, budget_tokens=budget,
            dtype=loaded.dtype, device=loaded.device,
        )
        self._prefix = (
            PrefixCache(budget_tokens=config.prefix_cache_mb * 2**20 // per_token)
            if config.prefix_cache else None
        )
        self._bank = LoraBank(loaded.model, base_weights_hash=loaded.weights_hash)
        self._forward = BatchedForward(loaded.model, self._pool)
        self._eos_ids = _eos_token_ids(loaded)
        self._text = ChatTokenizer(loaded.tokenizer)

        self._cv = threading.Condition()
        self._waiting: deque[_Sequence] = deque()  # guarded by _cv
        self._commands: deque[tuple[Callable[[], Any], Future[Any]]] = deque()  # by _cv
        self._decoding: list[_Sequence] = []  # slot i holds _decoding[i]  (worker only)
        self._prefilling: list[_Sequence] = []  # slot len(_decoding)+j   (worker only)
        self._finished: OrderedDict[str, FinishInfo] = OrderedDict()
        self._counters = {"steps": 0, "decode_steps": 0, "prefill_steps": 0, "max_batch": 0,
                          "tokens": 0, "busy_rejections": 0}
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="botkit-runtime", daemon=True)
        self._thread.start()

    @staticmethod
    def supports(model: Any) -> bool:
        return supports(model)

    # -- reporting ---------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self._loaded.model_id

    @property
    def context_window(self) -> int:
        return self._loaded.context_window

    @property
    def loaded(self) -> LoadedModel:
        return self._loaded

    @property
    def kv_budget_tokens(self) -> int:
        return self._pool.budget_tokens

    def finish_info(self, request_id: str) -> FinishInfo | None:
        return self._finished.get(request_id)

    def stats(self) -> dict[str, int | float]:
        with self._cv:
            queued = len(self._waiting)
        prefix = self._prefix
        return {
            **self._counters,
            "queued": queued,
            "running": len(self._decoding) + len(self._prefilling),
            "kv_tokens_budget": self._pool.budget_tokens,
            "kv_bytes": self._pool.nbytes,
            "kv_bytes_peak": self._pool.peak_bytes,
            "prefix_cache_hits": prefix.hits if prefix else 0,
            "prefix_tokens_reused": prefix.tokens_reused if prefix else 0,
            "prefix_cache_tokens": prefix.tokens if prefix else 0,
        }

    # -- the Generator protocol --------------------------------------------------------

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return len(self._text.prompt_ids(messages))

    def count_text(self, text: str) -> int:
        return self._text.count_text(text)

    def load_adapter(self, name: str, path: str) -> str:
        """Load (or replace) a LoRA adapter between two steps; running requests go on."""
        validate_adapter_dir(path, base_weights_hash=self._loaded.weights_hash)
        return self._call(lambda: self._load_adapter(name, path))

    def unload_adapter(self, name: str) -> None:
        self._call(lambda: self._unload_adapter(name))

    def _load_adapter(self, name: str, path: str) -> str:
        version = self._bank.load(name, path)
        if self._prefix is not None:
            self._prefix.forget_adapter(name)  # its cached KV belongs to the old weights
        return version

    def _unload_adapter(self, name: str) -> None:
        self._bank.unload(name)
        if self._prefix is not None:
            self._prefix.forget_adapter(name)

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the worker between two steps and wait for its result."""
        if self._closed:
            raise GenerationError("this generator is closed")
        future: Future[Any] = Future()
        with self._cv:
            self._commands.append((fn, future))
            self._cv.notify()
        return future.result()

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        if self._closed:
            raise GenerationError("this generator is closed")
        prompt = await asyncio.to_thread(self._text.prompt_ids, request.messages)
        room = self.context_window - len(prompt)
        if room <= 0:
            raise GenerationError(
                f"the prompt takes {len(prompt)} tokens but the context window holds "
                f"{self.context_window}; shorten the history or the system prompt"
            )
        max_new = min(request.sampling.max_new_tokens, room)
        need = len(prompt) + max_new
        if need > self._pool.budget_tokens:
            raise GenerationError(
                f"the request needs {need} tokens of KV cache but the budget is "
                f"{self._pool.budget_tokens} tokens; raise [runtime] kv_cache_mb"
            )
        rng = torch.Generator(device=self._loaded.device)
        if request.sampling.seed is None:
            rng.seed()
        else:
            rng.manual_seed(request.sampling.seed)
        seq = _Sequence(
            request=request, prompt=prompt, sink=_Sink(asyncio.get_running_loop()),
            cancel=threading.Event(), need=need, rng=rng,
            detokenizer=self._text.detokenizer(),
            stops=StopStringFilter(request.sampling.stop),
        )
        with self._cv:
            running = len(self._decoding) + len(self._prefilling)
            if running + len(self._waiting) >= self._config.max_concurrent + self._config.max_queue:
                self._counters["busy_rejections"] += 1
                raise GeneratorBusy(
                    f"busy: {running} requests are running and {len(self._waiting)} waiting; "
                    "retry later"
                )
            self._waiting.append(seq)
            self._cv.notify()
        try:
            while True:
                try:
                    text, ended = await seq.sink.take(self._timeout_s)
                except TimeoutError:
                    raise GenerationTimeout(
                        f"the model produced nothing for {self._timeout_s:g} s; it may be "
                        "overloaded (raise [model] generation_timeout_s if this machine is slow)"
                    ) from None
                if text:
                    yield text
                if ended:
                    return
        finally:
            seq.cancel.set()
            with self._cv:
                self._cv.notify()

    async def aclose(self) -> None:
        if self._closed:
            return
        with self._cv:
            self._closed = True
            self._cv.notify()
        await asyncio.to_thread(self._thread.join)

    async def __aenter__(self) -> BatchedGenerator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the worker --------------------------------------------------------------------

    def _work(self) -> None:
        if self._threads > 0:
            torch.set_num_threads(self._threads)
        while True:
            with self._cv:
                while not (self._closed or self._commands or self._waiting
                           or self._decoding or self._prefilling):
                    self._cv.wait()
                if self._closed:
                    break
                commands = list(self._commands)
                self._commands.clear()
            for fn, future in commands:
                try:
                    future.set_result(fn())
                except BaseException as exc:  # handed to the caller, who re-raises it
                    future.set_exception(exc)
            try:
                self._step()
            except Exception as exc:  # a bug or a torch failure: fail what runs, live on
                logger.exception("runtime step failed")
                error = GenerationError(f"generation failed: {type(exc).__name__}: {exc}")
                error.__cause__ = exc
                for seq in [*self._decoding, *self._prefilling]:
                    self._end(seq, "cancelled", error)
                self._decoding.clear()
                self._prefilling.clear()
        self._shutdown()

    def _shutdown(self) -> None:
        with self._cv:
            waiting = list(self._waiting)
            self._waiting.clear()
            commands = list(self._commands)
            self._commands.clear()
        closed = GenerationError("the generator was closed")
        for seq in [*self._decoding, *self._prefilling, *waiting]:
            self._end(seq, "cancelled", closed)
        for _fn, future in commands:
            future.set_exception(closed)

    def _step(self) -> None:
        self._counters["steps"] += 1
        loaded = set(self._bank.names)
        for seq in [*self._decoding, *self._prefilling]:
            error = None
            if seq.adapter is not None and seq.adapter not in loaded:
                error = GenerationError(f"the adapter {seq.adapter!r} was unloaded mid-reply")
            elif not seq.cancel.is_set():
                continue
            self._end(seq, "cancelled", error)
            if seq in self._decoding:
                self._remove_decoding(seq)
            else:
                self._remove_prefilling(seq)
        self._admit()
        if self._prefilling:
            self._prefill()
        if self._decoding:
            self._decode()

    def _admit(self) -> None:
        """Give waiting requests a slot while ``max_concurrent`` and the budget allow."""
        while True:
            with self._cv:
                if not self._waiting:
                    return
                seq = self._waiting[0]
                if seq.cancel.is_set():
                    self._waiting.popleft()
                    self._end(seq, "cancelled")
                    continue
                running = [*self._decoding, *self._prefilling]
                if len(running) >= self._config.max_concurrent:
                    return
                longest = max([s.need for s in running] + [seq.need])
                if not self._pool.fits(len(running) + 1, longest):
                    return  # it waits until enough of the budget is free
                self._waiting.popleft()
            try:
                if seq.adapter is not None:
                    self._bank.index(seq.adapter)  # an unknown adapter fails this request only
            except BotkitError as exc:
                self._end(seq, "cancelled", exc)
                continue
            self._pool.ensure(len(running) + 1, longest)
            seq.slot = len(running)
            self._prefilling.append(seq)

    def _rows(self, seqs: Sequence[_Sequence]) -> torch.Tensor | None:
        """The LoRA adapter index of each row, or None when every row is on the base model."""
        if not any(s.adapter for s in seqs):
            return None
        return torch.tensor([self._bank.index(s.adapter) for s in seqs],
                            device=self._loaded.device)

    def _prefill(self) -> None:
        """Compute the next prompt chunk of the newcomers, up to the per-step budget."""
        budget = self._config.prefill_chunk_tokens
        batch: list[tuple[_Sequence, int]] = []  # (sequence, tokens this step)
        for seq in self._prefilling:
            if budget <= 0:
                break
            if seq.computed == 0 and self._prefix is not None:
                hit = self._prefix.lookup(seq.adapter, seq.prompt)
                if hit is not None:
                    reused, keys, values = hit
                    self._pool.load_prefix(seq.slot, keys, values)
                    seq.computed = reused
            count = min(len(seq.prompt) - seq.computed, budget)
            batch.append((seq, count))
            budget -= count
        if not batch:
            return
        seqs = [seq for seq, _ in batch]
        width = max(count for _, count in batch)
        tokens = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T), right-padded
        for row, (seq, count) in enumerate(batch):
            tokens[row, :count] = torch.tensor(seq.prompt[seq.computed : seq.computed + count])
        device = self._loaded.device
        slots = [seq.slot for seq in seqs]
        logits = self._forward(
            tokens.to(device),
            torch.tensor([seq.computed for seq in seqs], device=device),
            torch.tensor([count for _, count in batch], device=device),
            torch.tensor(slots, device=device),
            contiguous=slots == list(range(slots[0], slots[0] + len(slots))),
            lora=self._bank, rows=self._rows(seqs),
        )  # (B, vocab)
        self._counters["prefill_steps"] += 1
        for row, (seq, count) in enumerate(batch):
            seq.computed += count
            if seq.computed < len(seq.prompt):
                continue
            if self._prefix is not None:
                keys, values = self._pool.read_prefix(seq.slot, seq.computed)
                self._prefix.insert(seq.adapter, seq.prompt, keys, values)
            self._promote(seq)
            token = self._sample([seq], logits[row : row + 1])[0]
            if self._accept(seq, token):
                self._remove_decoding(seq)

    def _decode(self) -> None:
        """One new token for every request past its prompt, in one forward pass."""
        seqs = list(self._decoding)
        device = self._loaded.device
        batch = len(seqs)
        self._counters["max_batch"] = max(self._counters["max_batch"], batch)
        logits = self._forward(
            torch.tensor([[seq.pending] for seq in seqs], device=device),  # (B, 1)
            torch.tensor([seq.computed for seq in seqs], device=device),
            torch.ones(batch, dtype=torch.long, device=device),
            torch.arange(batch, device=device),
            contiguous=True,
            lora=self._bank, rows=self._rows(seqs),
        )  # (B, vocab)
        self._counters["decode_steps"] += 1
        for seq in seqs:
            seq.computed += 1
        finished = [seq for seq, token in zip(seqs, self._sample(seqs, logits), strict=True)
                    if self._accept(seq, token)]
        for seq in reversed(finished):  # from the highest slot: fewer moves
            self._remove_decoding(seq)

    def _sample(self, seqs: Sequence[_Sequence], logits: torch.Tensor) -> list[int]:
        """The next token of each row, with that request's own sampling parameters."""
        if self._eos_ids and any(s.request.sampling.ignore_eos for s in seqs):
            # As transformers' min_new_tokens: EOS cannot be picked, the reply runs on.
            eos = torch.tensor(sorted(self._eos_ids), device=logits.device)
            ignoring = torch.tensor([s.request.sampling.ignore_eos for s in seqs],
                                    device=logits.device)
            logits = logits.clone()
            logits[:, eos] = logits[:, eos].masked_fill(ignoring[:, None], float("-inf"))
        greedy = [s.request.sampling.temperature <= 0
                  and s.request.sampling.repetition_penalty == 1.0 for s in seqs]
        tokens = logits.argmax(-1).tolist() if any(greedy) else [0] * len(seqs)  # (B,)
        for row, seq in enumerate(seqs):
            if not greedy[row]:
                seen = torch.tensor(seq.prompt + seq.generated, device=logits.device)
                tokens[row] = sample_next_token(logits[row], seen, seq.request.sampling, seq.rng)
        return tokens

    def _accept(self, seq: _Sequence, token: int) -> bool:
        """Take one new token; True when the request has ended."""
        if token in self._eos_ids:
            self._end(seq, "eos")
            return True
        seq.generated.append(token)
        seq.pending = token
        self._counters["tokens"] += 1
        text, stopped = seq.stops.push(seq.detokenizer.push(token))
        if text:
            seq.sink.put(text)
        if stopped:
            self._end(seq, "stop")
            return True
        if len(seq.generated) >= seq.need - len(seq.prompt):
            self._end(seq, "length")
            return True
        return False

    def _end(
        self, seq: _Sequence, reason: FinishReason, error: BaseException | None = None
    ) -> None:
        if seq.ended:
            return
        seq.ended = True
        if reason in {"eos", "length"}:
            # Held-back text (a partial character, the start of a stop string that never
            # came) is part of the reply.
            text, stopped = seq.stops.push(seq.detokenizer.flush())
            tail = text if stopped else text + seq.stops.flush()
            if tail:
                seq.sink.put(tail)
            if self._prefix is not None and seq.slot >= 0 and seq.computed > len(seq.prompt):
                # The conversation's next turn starts with this prompt and reply.
                keys, values = self._pool.read_prefix(seq.slot, seq.computed)
                tokens = (seq.prompt + seq.generated)[: seq.computed]
                self._prefix.insert(seq.adapter, tokens, keys, values)
        request_id = seq.request.request_id
        if request_id:
            self._finished[request_id] = FinishInfo(
                request_id=request_id, prompt_tokens=len(seq.prompt),
                completion_tokens=len(seq.generated), finish_reason=reason,
                seconds=time.perf_counter() - seq.started,
            )
            while len(self._finished) > _FINISHED_KEPT:
                self._finished.popitem(last=False)
        seq.sink.end(error)

    # -- slot bookkeeping: decoding requests in slots 0..D-1, prefilling ones after ----

    def _promote(self, seq: _Sequence) -> None:
        """Move a request whose prompt is done from the prefilling group to decoding."""
        first = self._prefilling[0]
        if first is not seq:
            length = max(first.computed, seq.computed)
            self._pool.swap_slots(first.slot, seq.slot, length)
            j = self._prefilling.index(seq)
            first.slot, seq.slot = seq.slot, first.slot
            self._prefilling[0], self._prefilling[j] = seq, first
        self._prefilling.pop(0)
        self._decoding.append(seq)

    def _remove_decoding(self, seq: _Sequence) -> None:
        last = self._decoding[-1]
        if last is not seq:
            self._pool.copy_slot(last.slot, seq.slot, last.computed)
            last.slot = seq.slot
            self._decoding[seq.slot] = last
        self._decoding.pop()
        if self._prefilling:  # keep the prefilling group right after the decoding one
            moved = self._prefilling.pop()
            free = len(self._decoding)
            if moved.slot != free:
                self._pool.copy_slot(moved.slot, free, moved.computed)
                moved.slot = free
            self._prefilling.insert(0, moved)
        seq.slot = -1

    def _remove_prefilling(self, seq: _Sequence) -> None:
        last = self._prefilling[-1]
        j = self._prefilling.index(seq)
        if last is not seq:
            self._pool.copy_slot(last.slot, seq.slot, last.computed)
            last.slot = seq.slot
            self._prefilling[j] = last
        self._prefilling.pop()
        seq.slot = -1
