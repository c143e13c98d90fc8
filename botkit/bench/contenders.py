"""The workload of ``botkit bench serve`` and the contenders that run it.

Every contender gets the same token ids (the tokenizer's chat template, generation
prompt included), decodes greedily and generates exactly ``new_tokens`` tokens per
request: EOS can never be picked (``min_new_tokens == max_new_tokens`` for
``generate()``, ``ignore_eos=True`` for botkit, both of which mask EOS out of the
argmax), so the outputs stay comparable token for token. ``generate_batch`` cannot mask
it; it gets ``eos_token_id=-1`` (EOS is no stop) and does the same amount of work.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import math
import os
import random
import statistics
import tempfile
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from botkit.generation import ChatMessage, GenerationRequest, SamplingParams
from botkit.model.loading import LoadedModel

logger = logging.getLogger(__name__)

# -- the workload ----------------------------------------------------------------------

SHORT_SYSTEM = (
    "You are Pine, the customer-support assistant of Northwind Outfitters, an online "
    "outdoor-gear shop. Answer briefly and politely."
)

QUESTIONS = [
    "How do I reset my password?",
    "Where is my order? It has been two weeks since I paid.",
    "Can I change the delivery address after the order has shipped?",
    "The zipper on my new jacket broke after one hike. What can I do?",
    "Do you ship to Norway, and how much does it cost?",
    "I was charged twice for the same order. Please help.",
    "How long does a refund take to reach my card?",
    "Can I return boots I have worn outside once?",
    "Is the Summit 40 backpack waterproof?",
    "My discount code SPRING10 does not work at checkout.",
    "How do I delete my account and all my data?",
    "Which sleeping bag do you recommend for minus ten degrees?",
    "Can I pick up my order at a store instead of having it delivered?",
    "The tent I received is missing two poles.",
    "Do you offer gift wrapping?",
    "How do I know which size of hiking shoes to order?",
    "Why was my payment declined?",
    "Can I cancel my order? I placed it an hour ago.",
    "Do you price-match other shops?",
    "The tracking link says the parcel was delivered, but I have nothing.",
    "How do I update the email address on my account?",
    "Do your down jackets use responsibly sourced down?",
    "Can I buy a spare part for my camping stove?",
    "I never received the confirmation email for my order.",
]

NAMES = ["Ana", "Ben", "Chloe", "Dev", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jon",
         "Kai", "Lena", "Mo", "Nora", "Oskar", "Priya"]

#: Earlier turns of a conversation; each prompt takes a seeded, shuffled handful.
EXCHANGES = [
    ("Hi, I have a question about my account.",
     "Hello! I'd be glad to help with your account. What would you like to know?"),
    ("I ordered a rain jacket last Monday and paid by card.",
     "Thank you. Orders paid by card are usually processed within one business day and "
     "shipped within two to three business days."),
    ("I also bought a pair of trail-running shoes in size 43.",
     "Noted. Our trail-running shoes run slightly small, so many customers choose half a "
     "size up. You can exchange them free of charge within 30 days."),
    ("The website was very slow yesterday evening.",
     "I'm sorry about that. We had maintenance between 20:00 and 22:00 yesterday; "
     "everything should be fast again now."),
    ("I live in a small village, so deliveries sometimes take longer.",
     "Understood. Rural deliveries can take one or two extra days. You can also choose a "
     "pick-up point near you at checkout."),
    ("Last year I returned a tent and it took a month to get my money back.",
     "I apologise for that experience. Since then we have changed our process: refunds "
     "are now issued within five business days of the return arriving at our warehouse."),
    ("Do you have a loyalty programme?",
     "Yes. Northwind Trail Club members collect one point per euro spent, get free "
     "shipping on every order and early access to sales. Joining is free."),
    ("I'm planning a trip to the Alps in August.",
     "That sounds wonderful! For the Alps in August, pack layers: temperatures can drop "
     "close to freezing at night above 2,000 metres even in summer."),
    ("My partner also has an account with you, under a different email.",
     "Thanks for letting me know. Accounts cannot be merged, but each of you can use your "
     "own loyalty points and order history."),
    ("I prefer to pay by bank transfer.",
     "Bank transfer is available at checkout. Please note that the order ships only once "
     "the payment has arrived, which usually takes one to two business days."),
    ("The product page said 'in stock' but then the order was delayed.",
     "I'm sorry for the confusion. Stock levels are updated every fifteen minutes, so "
     "occasionally the last item sells out in between. We then restock within a week."),
    ("I'm not very good with computers, sorry.",
     "No need to apologise at all. I'll explain every step clearly, and you can ask me to "
     "repeat anything."),
]

#: A long, realistic system prompt (the persona-and-fact-sheet scenario).
FACT_SHEET = [
    "You are Pine, the customer-support assistant of Northwind Outfitters, an online shop "
    "for hiking, camping and climbing gear founded in 2009 in Tromsø, Norway. Be warm, "
    "brief and precise. Never invent facts: when this sheet does not answer a question, "
    "say so and offer to connect the customer with a human colleague.",
    "Shipping: orders paid before 14:00 CET on a business day leave the warehouse the same "
    "day. Standard delivery takes 2-4 business days within the EU and Norway (4.90 EUR, "
    "free above 79 EUR), express takes 1-2 business days (12.90 EUR). We ship to the EU, "
    "Norway, Switzerland and the United Kingdom; customs fees for the UK and Switzerland "
    "are included in the price. Pick-up points are available in every country we serve.",
    "Returns: unworn items can be returned within 30 days for a full refund; Trail Club "
    "members get 60 days. Footwear worn indoors only counts as unworn. Return labels are "
    "free inside the EU and Norway. Refunds are issued to the original payment method "
    "within five business days of the return reaching the warehouse in Oslo.",
    "Warranty: every product has a two-year warranty against manufacturing defects; "
    "Northwind-brand tents, backpacks and jackets have a lifetime warranty on seams and "
    "zippers. Broken zippers are repaired free of charge, usually within ten days. Ask "
    "for a photo of the defect and the order number before opening a warranty case.",
    "Payments: cards (Visa, Mastercard, American Express), PayPal, Klarna invoice and bank "
    "transfer. A declined card is usually a bank limit or a wrong billing address; the "
    "customer should contact their bank. Double charges are almost always a reservation "
    "that the bank releases within five business days.",
    "Accounts: customers reset passwords with the 'Forgot password' link on the sign-in "
    "page; the link is valid for one hour. Email addresses are changed under Account > "
    "Profile. Deleting an account removes all personal data within 30 days, except "
    "invoices, which the law requires us to keep for five years.",
    "Trail Club: free loyalty programme; one point per euro, 100 points give a 5 EUR "
    "voucher, free standard shipping, early access to sales and a birthday voucher. "
    "Discount codes cannot be combined and do not apply to items already on sale.",
    "Sizing: footwear runs half a size small; jackets follow European sizes; sleeping "
    "bags are rated by comfort temperature, so recommend a bag rated five degrees below "
    "the coldest night expected. Store opening hours: Monday to Saturday, 10:00-18:00.",
]

#: Questions for the shared-system-prompt scenario (16 distinct ones first).
PERSONA_QUESTIONS = [q for q in QUESTIONS if "order" not in q.lower()] + QUESTIONS


@dataclass(frozen=True)
class Prompt:
    """One request of the workload: its messages and the token ids they become."""

    index: int
    messages: tuple[ChatMessage, ...]
    ids: tuple[int, ...]


def chat_ids(tokenizer: Any, messages: Sequence[ChatMessage]) -> list[int]:
    """The prompt ids exactly as botkit's generators build them."""
    ids = tokenizer.apply_chat_template(
        [m.as_dict() for m in messages], add_generation_prompt=True, tokenize=True,
        return_dict=False,
    )
    if ids and isinstance(ids[0], list):
        ids = ids[0]
    return list(ids)


def build_workload(
    tokenizer: Any,
    count: int,
    *,
    seed: int,
    min_tokens: int = 30,
    max_tokens: int = 400,
    system: str = SHORT_SYSTEM,
    start: int = 0,
) -> list[Prompt]:
    """``count`` chat prompts whose lengths spread between about ``min_tokens`` and
    ``max_tokens``: a system prompt, a shuffled handful of earlier exchanges and a
    question naming a customer and an order (so no two prompts are identical)."""
    rng = random.Random(seed)
    prompts: list[Prompt] = []
    for i in range(start, start + count):
        question = (
            f"{rng.choice(NAMES)} here, order #{rng.randint(10_000, 99_999)}. "
            f"{QUESTIONS[i % len(QUESTIONS)]}"
        )
        target = rng.randint(min_tokens, max(min_tokens, max_tokens))
        history = list(EXCHANGES)
        rng.shuffle(history)
        turns: list[ChatMessage] = []
        messages: tuple[ChatMessage, ...] = (
            ChatMessage("system", system), ChatMessage("user", question)
        )
        ids = chat_ids(tokenizer, messages)
        for user, assistant in history:
            if len(ids) >= target:
                break
            more = [*turns, ChatMessage("user", user), ChatMessage("assistant", assistant)]
            candidate = (ChatMessage("system", system), *more, ChatMessage("user", question))
            candidate_ids = chat_ids(tokenizer, candidate)
            if len(candidate_ids) > max_tokens:
                break
            turns, messages, ids = more, candidate, candidate_ids
        prompts.append(Prompt(index=i, messages=messages, ids=tuple(ids)))
    return prompts


def fit_system_prompt(tokenizer: Any, max_tokens: int) -> str:
    """The fact sheet, paragraph by paragraph, as long as it stays under ``max_tokens``."""
    text = FACT_SHEET[0]
    for paragraph in FACT_SHEET[1:]:
        longer = f"{text}\n\n{paragraph}"
        if len(tokenizer(longer, add_special_tokens=False)["input_ids"]) > max_tokens:
            break
        text = longer
    return text


def persona_workload(tokenizer: Any, system: str, count: int, *, start: int) -> list[Prompt]:
    """``count`` one-question prompts sharing the long ``system`` prompt."""
    prompts = []
    for i in range(start, start + count):
        messages = (
            ChatMessage("system", system),
            ChatMessage("user", PERSONA_QUESTIONS[i % len(PERSONA_QUESTIONS)]),
        )
        prompts.append(Prompt(index=i, messages=messages, ids=tuple(chat_ids(tokenizer, messages))))
    return prompts


# -- measuring -------------------------------------------------------------------------


@dataclass
class Run:
    """One timed pass of one contender over its prompts."""

    seconds: float
    tokens: int
    texts: list[str] | None = None
    token_ids: list[list[int]] | None = None
    ttft_s: list[float] = field(default_factory=list)
    itl_s: list[float] = field(default_factory=list)
    request_tok_s: list[float] = field(default_factory=list)
    pieces: int = 0
    peak_rss_bytes: int = 0
    peak_gpu_bytes: int | None = None
    kv_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def rss_bytes() -> int:
    """This process's resident set size now."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pass
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


@contextlib.contextmanager
def watch_memory(device: torch.device, run: Run) -> Iterator[None]:
    """Samples RSS every 20 ms (a thread) and the CUDA peak, into ``run``."""
    stop = threading.Event()
    peak = [rss_bytes()]

    def sample() -> None:
        while not stop.wait(0.02):
            peak[0] = max(peak[0], rss_bytes())

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    sampler = threading.Thread(target=sample, name="bench-rss", daemon=True)
    sampler.start()
    try:
        yield
    finally:
        stop.set()
        sampler.join()
        run.peak_rss_bytes = max(peak[0], rss_bytes())
        if device.type == "cuda":
            run.peak_gpu_bytes = int(torch.cuda.max_memory_allocated(device))


def kv_bytes_per_token(loaded: LoadedModel) -> int:
    config = loaded.model.config
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    element = torch.tensor([], dtype=loaded.dtype).element_size()
    return 2 * config.num_hidden_layers * kv_heads * head_dim * element


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _pad_id(loaded: LoadedModel) -> int:
    tokenizer = loaded.tokenizer
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if isinstance(value, int):
            return value
    return 0


def eos_ids(loaded: LoadedModel) -> set[int]:
    ids: set[int] = set()
    for value in (loaded.tokenizer.eos_token_id,
                  getattr(loaded.model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(v for v in value if isinstance(v, int))
    return ids


def _generate_config(loaded: LoadedModel, new_tokens: int) -> Any:
    from transformers import GenerationConfig

    # min_new_tokens: EOS is masked out of the argmax, as botkit's ignore_eos does.
    return GenerationConfig(
        max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
        eos_token_id=sorted(eos_ids(loaded)), pad_token_id=_pad_id(loaded),
        repetition_penalty=1.0,
    )


# -- contender 1: sequential generate() ------------------------------------------------


@torch.inference_mode()
def run_sequential(loaded: LoadedModel, prompts: Sequence[Prompt], new_tokens: int) -> Run:
    """``model.generate()`` one request at a time (the baseline)."""
    model, device = loaded.model, loaded.device
    config = _generate_config(loaded, new_tokens)
    outputs: list[list[int]] = []
    rates: list[float] = []
    run = Run(seconds=0.0, tokens=0)
    with watch_memory(device, run):
        started = time.perf_counter()
        for prompt in prompts:
            ids = torch.tensor([prompt.ids], device=device)
            t0 = time.perf_counter()
            out = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config
            )
            new = out[0, ids.shape[1]:].tolist()  # syncs
            rates.append(len(new) / (time.perf_counter() - t0))
            outputs.append(new)
        run.seconds = time.perf_counter() - started
    run.tokens = sum(map(len, outputs))
    run.token_ids = outputs
    run.request_tok_s = rates
    run.kv_bytes = kv_bytes_per_token(loaded) * max(len(p.ids) + new_tokens for p in prompts)
    return run


# -- contender 2: static batches -------------------------------------------------------


@torch.inference_mode()
def run_static(
    loaded: LoadedModel, prompts: Sequence[Prompt], new_tokens: int, batch_size: int
) -> Run:
    """``model.generate()`` over batches of ``batch_size``, left-padded with a mask."""
    model, device = loaded.model, loaded.device
    config = _generate_config(loaded, new_tokens)
    pad = _pad_id(loaded)
    outputs: list[list[int]] = []
    kv_peak = 0
    run = Run(seconds=0.0, tokens=0)
    with watch_memory(device, run):
        started = time.perf_counter()
        for first in range(0, len(prompts), batch_size):
            batch = prompts[first:first + batch_size]
            width = max(len(p.ids) for p in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, prompt in enumerate(batch):
                ids[row, width - len(prompt.ids):] = torch.tensor(prompt.ids)
                mask[row, width - len(prompt.ids):] = 1
            out = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config
            )
            outputs.extend(out[:, width:].tolist())
            kv_peak = max(kv_peak, len(batch) * (width + new_tokens))
        run.seconds = time.perf_counter() - started
    run.tokens = sum(map(len, outputs))
    run.token_ids = outputs
    run.kv_bytes = kv_peak * kv_bytes_per_token(loaded)
    return run


# -- contender 3: transformers' continuous batching ------------------------------------


def cb_config(loaded: LoadedModel, prompts: Sequence[Prompt], new_tokens: int) -> Any:
    """A cache sized for the workload: left to itself on a CPU, ``generate_batch`` sizes
    its KV cache from the machine's total RAM (8 GB of RSS here for a 135M model)."""
    from transformers import ContinuousBatchingConfig

    page = 64
    blocks = sum(math.ceil((len(p.ids) + new_tokens) / page) for p in prompts) + 8
    return ContinuousBatchingConfig(page_size=page, num_blocks=blocks, max_batch_tokens=512)


@torch.inference_mode()
def run_generate_batch(loaded: LoadedModel, prompts: Sequence[Prompt], new_tokens: int) -> Run:
    """``model.generate_batch()`` given every request at once."""
    from transformers import GenerationConfig

    model, device = loaded.model, loaded.device
    if not hasattr(model, "generate_batch"):
        raise RuntimeError(f"{type(model).__name__} has no generate_batch()")
    config = GenerationConfig(
        max_new_tokens=new_tokens, do_sample=False, eos_token_id=-1,  # -1: EOS disabled
        pad_token_id=_pad_id(loaded),
    )
    cb = cb_config(loaded, prompts, new_tokens)
    run = Run(seconds=0.0, tokens=0)
    with watch_memory(device, run):
        started = time.perf_counter()
        results = model.generate_batch(
            inputs=[list(p.ids) for p in prompts], generation_config=config,
            continuous_batching_config=cb, record_timestamps=True, progress_bar=False,
        )
        _sync(device)
        run.seconds = time.perf_counter() - started
    outputs = list(results.values())
    failed = [o.request_id for o in outputs if o.error is not None]
    if len(outputs) != len(prompts) or failed:
        reason = f"{len(prompts) - len(outputs)} requests missing, {len(failed)} failed"
        first_error = next((o.error for o in outputs if o.error), None)
        detail = f" ({first_error})" if first_error else ""
        raise RuntimeError(f"generate_batch: {reason}{detail}")
    run.token_ids = [list(o.generated_tokens)[:new_tokens] for o in outputs]
    run.tokens = sum(map(len, run.token_ids))
    # All requests are submitted at t=0: this TTFT includes queueing behind the others.
    run.extra["ttft_all_at_once_s"] = sorted(
        o.timestamps[0] - o.created_time for o in outputs if o.timestamps
    )
    run.extra["attn_implementation"] = model.config._attn_implementation
    run.kv_bytes = cb.num_blocks * cb.page_size * kv_bytes_per_token(loaded)
    return run


# -- contender 4: botkit's runtime -----------------------------------------------------


def make_runtime(loaded: LoadedModel, *, timeout_s: float = 300.0, **overrides: Any) -> Any:
    """botkit's batched runtime, with ``overrides`` of its RuntimeConfig."""
    from botkit.config import RuntimeConfig
    from botkit.model.runtime import BatchedGenerator

    return BatchedGenerator(loaded, config=RuntimeConfig(**overrides), timeout_s=timeout_s)


def engine_name(generator: Any) -> str:
    return type(generator).__name__


def greedy(new_tokens: int) -> SamplingParams:
    return SamplingParams(
        temperature=0.0, top_p=1.0, top_k=0, repetition_penalty=1.0,
        max_new_tokens=new_tokens, ignore_eos=True,
    )


_request_serial = [0]


async def closed_loop(
    generator: Any,
    prompts: Sequence[Prompt],
    *,
    users: int,
    new_tokens: int,
    adapters: Sequence[str | None] | None = None,
) -> Run:
    """``users`` simulated users; each sends its next request the moment its previous
    reply ends, until every prompt has been answered."""
    queue = deque(range(len(prompts)))
    texts: list[str] = [""] * len(prompts)
    tokens = [0] * len(prompts)
    ttft: list[float] = []
    itl: list[float] = []
    rates: list[float] = []
    pieces = [0]

    async def user() -> None:
        while queue:
            i = queue.popleft()
            _request_serial[0] += 1
            request = GenerationRequest(
                messages=prompts[i].messages, sampling=greedy(new_tokens),
                adapter=adapters[i % len(adapters)] if adapters else None,
                request_id=f"bench-{_request_serial[0]}",
            )
            parts: list[str] = []
            sent = time.perf_counter()
            last: float | None = None
            async for piece in generator.stream(request):
                now = time.perf_counter()
                if last is None:
                    ttft.append(now - sent)
                else:
                    itl.append(now - last)
                last = now
                parts.append(piece)
            ended = time.perf_counter()
            texts[i] = "".join(parts)
            pieces[0] += len(parts)
            info = finish_info(generator, request.request_id)
            if info is not None:
                tokens[i] = info.completion_tokens
                seconds = info.seconds
            else:  # LocalGenerator keeps no per-request record
                tokens[i] = generator.count_text(texts[i])
                seconds = ended - sent
            if seconds > 0:
                rates.append(tokens[i] / seconds)

    run = Run(seconds=0.0, tokens=0)
    device = generator.loaded.device
    with watch_memory(device, run):
        started = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(max(1, min(users, len(prompts))))))
        run.seconds = time.perf_counter() - started
    run.tokens = sum(tokens)
    run.texts = texts
    run.ttft_s, run.itl_s, run.request_tok_s, run.pieces = ttft, itl, rates, pieces[0]
    stats = runtime_stats(generator)
    if stats:
        run.extra["runtime_stats"] = stats
        peak = stats.get("kv_bytes_peak")
        run.kv_bytes = int(peak) if isinstance(peak, int | float) else None
    return run


def finish_info(generator: Any, request_id: str) -> Any:
    getter = getattr(generator, "finish_info", None)
    return getter(request_id) if callable(getter) else None


def runtime_stats(generator: Any) -> dict[str, Any]:
    getter = getattr(generator, "stats", None)
    return dict(getter()) if callable(getter) else {}


async def one_at_a_time(generator: Any, prompts: Sequence[Prompt], new_tokens: int) -> Run:
    """The same prompts, each alone (the TTFT baseline)."""
    runs = [await closed_loop(generator, [p], users=1, new_tokens=new_tokens) for p in prompts]
    merged = Run(seconds=sum(r.seconds for r in runs), tokens=sum(r.tokens for r in runs))
    for r in runs:
        merged.ttft_s += r.ttft_s
        merged.itl_s += r.itl_s
        merged.request_tok_s += r.request_tok_s
        merged.pieces += r.pieces
        merged.peak_rss_bytes = max(merged.peak_rss_bytes, r.peak_rss_bytes)
        if r.peak_gpu_bytes is not None:
            merged.peak_gpu_bytes = max(merged.peak_gpu_bytes or 0, r.peak_gpu_bytes)
        if r.kv_bytes is not None:
            merged.kv_bytes = max(merged.kv_bytes or 0, r.kv_bytes)
    merged.texts = [t for r in runs for t in (r.texts or [])]
    merged.extra["runtime_stats"] = runtime_stats(generator)
    return merged


# -- LoRA adapters for the mixed-adapter scenario ---------------------------------------


def make_adapters(loaded: LoadedModel, count: int, directory: Path, *, seed: int) -> list[Path]:
    """``count`` rank-8 LoRA adapters (q_proj, v_proj) with random B, saved by peft."""
    from peft import LoraConfig, get_peft_model

    base = copy.deepcopy(loaded.model).to("cpu", torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = get_peft_model(
            base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                             lora_dropout=0.0, task_type="CAUSAL_LM"),
        )
    paths = []
    generator = torch.Generator().manual_seed(seed)
    for index in range(count):
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
        path = directory / f"adapter-{index}"
        peft_model.save_pretrained(str(path))
        paths.append(path)
    del peft_model, base
    return paths


def temp_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="botkit-bench-")


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
