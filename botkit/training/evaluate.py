"""``botkit eval``: does the adapter know what it was trained on?

A questions file holds one ``{"question": ..., "expect": REGEX}`` per line (other keys,
such as ``"fact"``, are carried into the results). Each question is asked greedily as a
new single-turn conversation with the persona's system prompt, once through the
persona's adapter and once through the bare base model, and a reply counts as
correct when ``expect`` is found in it, case-insensitively. The serving runtime
answers all questions at once, batched, exactly as it would serve users.

With ``--heldout``, the loss and perplexity of the assistant turns of a dialogue file
are measured too, with and without the adapter.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botkit.errors import DatasetError, TrainingError
from botkit.generation import ChatMessage, GenerationRequest, SamplingParams
from botkit.training.data import read_jsonl

ADAPTER, BASE = "adapter", "base"
_LOADED_AS = "candidate"
"""Name the evaluated adapter is loaded under. Not "eval": peft keeps adapters in
``ModuleDict``s, which refuse a name that is already a module attribute (``eval``)."""


@dataclass(frozen=True)
class Question:
    question: str
    expect: re.Pattern[str]
    extra: dict[str, Any]
    source: str

    def check(self, reply: str) -> bool:
        return self.expect.search(reply) is not None


@dataclass
class EvalJob:
    persona: str
    questions: Path | None = None
    heldout: Path | None = None
    base_only: bool = False
    adapter: Path | None = None
    system_prompt_file: Path | None = None
    max_new_tokens: int = 96
    json_out: Path | None = None
    show: bool = False
    record: bool = False
    """Store the accuracy in the adapter's manifest (``botkit adapters list`` shows it)."""


def read_questions(path: str | Path) -> list[Question]:
    """The questions of a JSONL file; a malformed line or regex fails with its line number."""
    file = Path(path).expanduser()
    questions = []
    for where, record in read_jsonl(file, "questions file"):
        if not isinstance(record, dict):
            raise DatasetError(f"{where}: expected an object with \"question\" and \"expect\"")
        question, expect = record.get("question"), record.get("expect")
        if not isinstance(question, str) or not question.strip():
            raise DatasetError(f"{where}: \"question\" must be a non-empty string")
        if not isinstance(expect, str) or not expect:
            raise DatasetError(f"{where}: \"expect\" must be a regular expression string")
        try:
            pattern = re.compile(expect, re.IGNORECASE)
        except re.error as exc:
            raise DatasetError(
                f"{where}: \"expect\" is not a valid regular expression: {exc}"
            ) from None
        extra = {k: v for k, v in record.items() if k not in ("question", "expect")}
        questions.append(Question(question.strip(), pattern, extra, where))
    if not questions:
        raise DatasetError(f"{file} holds no questions")
    return questions


async def ask_all(
    generator: Any,
    system_prompt: str,
    questions: Sequence[Question],
    *,
    adapter: str | None,
    max_new_tokens: int,
) -> list[str]:
    """Every question's greedy reply, all submitted at once (the runtime batches them)."""
    sampling = SamplingParams(
        temperature=0.0, top_p=1.0, top_k=0, repetition_penalty=1.0,
        max_new_tokens=max_new_tokens,
    )

    async def one(index: int, question: Question) -> str:
        messages = (ChatMessage("system", system_prompt), ChatMessage("user", question.question))
        request = GenerationRequest(
            messages=messages, sampling=sampling, adapter=adapter, request_id=f"eval-{index}"
        )
        return "".join([chunk async for chunk in generator.stream(request)]).strip()

    return list(await asyncio.gather(*(one(i, q) for i, q in enumerate(questions))))


def evaluate(job: EvalJob, config: Any, *, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run ``job`` and return (and optionally write) its report."""
    from botkit.app import load_personas

    persona = load_personas(config)[job.persona]
    questions = read_questions(job.questions) if job.questions else []
    if job.system_prompt_file is not None:
        try:
            system_prompt = job.system_prompt_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise TrainingError(f"cannot read the system prompt file: {exc}") from exc
        prompt_source = str(job.system_prompt_file)
    else:
        system_prompt, prompt_source = persona.system_prompt, f"persona {persona.name}"
    adapter_path = job.adapter or persona.adapter
    if job.base_only:
        adapter_path = None
    variants = [ADAPTER, BASE] if adapter_path is not None else [BASE]
    if adapter_path is None and not job.base_only:
        say(f"persona {persona.name} has no adapter; evaluating the base model only")

    report: dict[str, Any] = {
        "persona": persona.name,
        "model": config.model.source,
        "adapter": str(adapter_path) if adapter_path else None,
        "system_prompt": prompt_source,
        "questions_file": str(job.questions) if job.questions else None,
        "decoding": "greedy",
    }
    if questions:
        answers = asyncio.run(_answers(config, system_prompt, questions, adapter_path,
                                       variants, job.max_new_tokens, say))
        report.update(_score(questions, answers, variants))
        _print_table(report, variants, say, show=job.show)
    if job.heldout is not None:
        report["heldout"] = heldout_perplexity(config, job.heldout, system_prompt, adapter_path)
        for name, row in report["heldout"].items():
            say(f"held-out {name}: loss {row['loss']:.3f}, perplexity {row['perplexity']:.2f} "
                f"over {row['tokens']} assistant tokens")
    if job.json_out is not None:
        job.json_out.parent.mkdir(parents=True, exist_ok=True)
        job.json_out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n",
                                encoding="utf-8")
        say(f"wrote {job.json_out}")
    if job.record and questions and adapter_path is not None:
        _record_in_manifest(Path(adapter_path), job.questions, report)
    return report


async def _answers(
    config: Any, system_prompt: str, questions: Sequence[Question], adapter_path: Path | None,
    variants: Sequence[str], max_new_tokens: int, say: Callable[[str], None],
) -> dict[str, list[str]]:
    from botkit.app import load_generator

    say(f"loading {config.model.source}...")
    # Every question is queued at once: the last one waits for all the others, which the
    # serving timeout (meant for one user's reply) must not count against it.
    model = dataclasses.replace(
        config.model, generation_timeout_s=max(config.model.generation_timeout_s, 3600.0)
    )
    generator = await load_generator(dataclasses.replace(config, model=model))
    try:
        if adapter_path is not None:
            await asyncio.to_thread(generator.load_adapter, _LOADED_AS, str(adapter_path))
        answers = {}
        for variant in variants:
            started = time.perf_counter()
            answers[variant] = await ask_all(
                generator, system_prompt, questions,
                adapter=_LOADED_AS if variant == ADAPTER else None, max_new_tokens=max_new_tokens,
            )
            say(f"{variant}: {len(questions)} questions answered in "
                f"{time.perf_counter() - started:.0f} s")
        return answers
    finally:
        await generator.aclose()


def _score(
    questions: Sequence[Question], answers: dict[str, list[str]], variants: Sequence[str]
) -> dict[str, Any]:
    results = []
    for index, question in enumerate(questions):
        row: dict[str, Any] = {"question": question.question, "expect": question.expect.pattern,
                               **question.extra}
        row["replies"] = {v: answers[v][index] for v in variants}
        row["correct"] = {v: question.check(answers[v][index]) for v in variants}
        results.append(row)
    summary = {}
    for variant in variants:
        correct = sum(row["correct"][variant] for row in results)
        summary[variant] = {"correct": correct, "total": len(results),
                            "accuracy": correct / len(results)}
    return {"accuracy": summary[variants[0]]["accuracy"], "variants": summary,
            "results": results}


def _print_table(
    report: dict[str, Any], variants: Sequence[str], say: Callable[[str], None], *, show: bool
) -> None:
    width = 60
    say(f"{'question':<{width}}  " + "  ".join(f"{v:>7}" for v in variants))
    for row in report["results"]:
        text = row["question"]
        if len(text) > width:
            text = text[: width - 3] + "..."
        marks = "  ".join(f"{'yes' if row['correct'][v] else 'no':>7}" for v in variants)
        say(f"{text:<{width}}  {marks}")
        if show:
            for v in variants:
                say(f"    {v}: {row['replies'][v]}")
    accuracy = "  ".join(f"{report['variants'][v]['accuracy']:>7.0%}" for v in variants)
    say(f"{'accuracy':<{width}}  {accuracy}")


def _record_in_manifest(adapter: Path, questions: Path | None, report: dict[str, Any]) -> None:
    """Keep the latest eval score in the adapter's manifest (``botkit adapters list`` shows it)."""
    from botkit.model.lora import MANIFEST
    from botkit.training.artifacts import write_json_atomic
    from botkit.training.data import file_sha256

    manifest_file = adapter / MANIFEST
    if not manifest_file.is_file() or questions is None:
        return
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    variants = report["variants"]
    manifest["eval"] = {
        "questions_file": str(questions),
        "questions_sha256": file_sha256(questions),
        "accuracy": variants[ADAPTER]["accuracy"],
        "base_accuracy": variants.get(BASE, {}).get("accuracy"),
        "questions": variants[ADAPTER]["total"],
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomic(manifest_file, manifest)


def heldout_perplexity(
    config: Any, path: Path, system_prompt: str, adapter_path: Path | None
) -> dict[str, dict[str, float]]:
    """Loss and perplexity of the assistant turns of ``path``, base and adapter."""
    import torch

    from botkit.model.loading import load_model
    from botkit.model.lora import AdapterSet
    from botkit.training.data import build_examples, iter_batches

    loaded = load_model(config.model.source, device=config.model.device, dtype="float32",
                        cache_dir=config.data_dir / "models")
    examples, _ = build_examples(loaded.tokenizer, path, system_prompt=system_prompt,
                                 max_length=loaded.context_window)
    tokenizer = loaded.tokenizer
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    adapters = AdapterSet(loaded.model, base_weights_hash=loaded.weights_hash)
    names: list[tuple[str, str | None]] = [(BASE, None)]
    if adapter_path is not None:
        adapters.load(_LOADED_AS, adapter_path)
        names.insert(0, (ADAPTER, _LOADED_AS))
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    batches = [order[i : i + 8] for i in range(0, len(order), 8)]
    out = {}
    for label, name in names:
        total, count = 0.0, 0
        with torch.no_grad(), adapters.use(name) as model:
            for ids, mask, labels in iter_batches(examples, batches, pad_id):
                ids, mask, labels = (t.to(loaded.device) for t in (ids, mask, labels))
                logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
                total += float(torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1),
                    ignore_index=-100, reduction="sum",
                ))
                count += int((labels[:, 1:] != -100).sum())
        loss = total / max(count, 1)
        out[label] = {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": count}
    return out
