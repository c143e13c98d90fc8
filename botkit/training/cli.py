"""Arguments and handlers of ``botkit train``, ``eval``, ``data export`` and ``adapters``.

Kept out of :mod:`botkit.cli` so that the main parser stays readable; nothing here
imports torch until a command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from pathlib import Path
from typing import Any

from botkit.errors import BotkitError, TrainingError

# --- train ------------------------------------------------------------------------------


def add_train_arguments(sub: argparse.ArgumentParser) -> None:
    sub.epilog = (
        "Example: botkit train --persona pine --data training/pine/train.jsonl "
        "--valid training/pine/valid.jsonl --output personas/adapters/pine"
    )
    data = sub.add_argument_group("data")
    data.add_argument("--data", required=True, metavar="FILE",
                      help="training dialogues, JSONL (OpenAI \"messages\" or ShareGPT "
                           "\"conversations\" lines)")
    data.add_argument("--valid", metavar="FILE",
                      help="validation dialogues (default: hold out --val-fraction of --data)")
    data.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                      help="share of --data held out for validation without --valid (0.1)")
    data.add_argument("--persona", metavar="NAME",
                      help="its system prompt opens every dialogue that has none "
                           "(default: [bot] default_persona)")
    data.add_argument("--no-system-prompt", action="store_true",
                      help="train without adding the persona's system prompt")
    data.add_argument("--max-length", type=int, default=1024, metavar="N",
                      help="tokens per dialogue; longer ones are truncated and counted (1024)")
    out = sub.add_argument_group("output")
    out.add_argument("--output", "-o", metavar="DIR",
                     help="adapter directory (default: DATA_DIR/adapters/PERSONA)")
    out.add_argument("--resume", action="store_true",
                     help="continue the run in --output from its last checkpoint")
    out.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
    out.add_argument("--save-dtype", choices=("float32", "bfloat16"), default="float32",
                     help="precision of the saved adapter weights (bfloat16: half the size)")
    out.add_argument("--keep-checkpoints", action="store_true",
                     help="keep the last epoch's checkpoint after a finished run")
    lora = sub.add_argument_group("LoRA")
    lora.add_argument("--method", choices=("lora", "adalora"), default="lora",
                      help="lora (default) or adalora (rank budget re-allocated in training; "
                           "saved as a plain LoRA adapter)")
    lora.add_argument("--rank", "-r", type=int, default=16, help="LoRA rank (16)")
    lora.add_argument("--alpha", type=int, default=32, help="LoRA alpha (32)")
    lora.add_argument("--dropout", type=float, default=0.0, help="LoRA dropout (0)")
    lora.add_argument("--target-modules", metavar="A,B,...",
                      help="module names to adapt (default: every linear layer of the blocks)")
    loop = sub.add_argument_group("training loop")
    loop.add_argument("--epochs", type=int, default=3, help="maximum epochs (3)")
    loop.add_argument("--batch-size", type=int, default=8, help="dialogues per batch (8)")
    loop.add_argument("--grad-accum", type=int, default=1, metavar="N",
                      help="batches per optimizer step (1)")
    loop.add_argument("--lr", type=float, default=2e-4, help="peak learning rate (2e-4)")
    loop.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (0)")
    loop.add_argument("--warmup", type=float, default=0.05, metavar="RATIO",
                      help="share of steps with linear warm-up before the cosine decay (0.05)")
    loop.add_argument("--patience", type=int, default=2,
                      help="stop after this many epochs without a better validation loss; "
                           "0 never stops early (2)")
    loop.add_argument("--seed", type=int, default=0, help="random seed (0)")
    loop.add_argument("--grad-checkpointing", action="store_true",
                      help="recompute activations in the backward pass: less memory, slower")
    loop.add_argument("--grouping", choices=("length", "random"), default="length",
                      help="batch dialogues of similar length (default) or at random")
    hw = sub.add_argument_group("hardware")
    hw.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (auto)")
    hw.add_argument("--dtype", default="auto",
                    help="auto (bf16 on GPUs, fp32 on CPUs), float32 or bfloat16")
    hw.add_argument("--load-in-4bit", action="store_true",
                    help="QLoRA: 4-bit base weights (CUDA with bitsandbytes only)")
    hw.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_train(args: argparse.Namespace, config: Any) -> int:
    from botkit.app import load_personas
    from botkit.training.run import TrainJob, train
    from botkit.training.trainer import TrainSettings

    persona_name = args.persona or config.bot.default_persona
    persona = load_personas(config)[persona_name]
    targets = tuple(t.strip() for t in (args.target_modules or "").split(",") if t.strip())
    settings = TrainSettings(
        method=args.method, rank=args.rank, alpha=args.alpha, dropout=args.dropout,
        target_modules=targets, epochs=args.epochs, batch_size=args.batch_size,
        grad_accum=args.grad_accum, lr=args.lr, weight_decay=args.weight_decay,
        warmup_ratio=args.warmup, max_length=args.max_length, val_fraction=args.val_fraction,
        patience=args.patience, seed=args.seed, grad_checkpointing=args.grad_checkpointing,
        grouping=args.grouping, load_in_4bit=args.load_in_4bit,
    )
    output = Path(args.output) if args.output else config.data_dir / "adapters" / persona.name
    job = TrainJob(
        data=Path(args.data),
        valid=Path(args.valid) if args.valid else None,
        output=output,
        model_source=config.model.source,
        cache_dir=config.data_dir / "models",
        persona=persona.name,
        system_prompt="" if args.no_system_prompt else persona.system_prompt,
        settings=settings,
        device=args.device,
        dtype=args.dtype,
        resume=args.resume,
        overwrite=args.overwrite,
        keep_checkpoints=args.keep_checkpoints,
        save_dtype=args.save_dtype,
        progress=not args.no_progress,
        command="botkit " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["train"] else "",
    )
    print(f"training a {settings.method} adapter for persona {persona.name} on "
          f"{config.model.source}; loading the model...", flush=True)
    train(job, say=lambda line: print(line, flush=True))
    return 0


# --- eval -------------------------------------------------------------------------------


def add_eval_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--persona", metavar="NAME", help="persona to ask (default from config)")
    sub.add_argument("--questions", metavar="FILE",
                     help='JSONL of {"question": ..., "expect": REGEX}; a reply is correct '
                          "when the regex is found in it (case-insensitive)")
    sub.add_argument("--base", action="store_true",
                     help="ask the base model only (without the persona's adapter)")
    sub.add_argument("--adapter", metavar="DIR",
                     help="evaluate this adapter instead of the persona's")
    sub.add_argument("--system-prompt-file", metavar="FILE",
                     help="use this system prompt instead of the persona's (e.g. a fact sheet)")
    sub.add_argument("--heldout", metavar="FILE",
                     help="also report validation perplexity on this dialogue file (JSONL)")
    sub.add_argument("--max-new-tokens", type=int, default=96, metavar="N",
                     help="reply length limit per question (96)")
    sub.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    sub.add_argument("--show", action="store_true", help="print every question and reply")
    sub.add_argument("--record", action="store_true",
                     help="store the accuracy in the adapter's manifest (shown by "
                          "botkit adapters list)")


def run_eval(args: argparse.Namespace, config: Any) -> int:
    from botkit.training.evaluate import EvalJob, evaluate

    if not args.questions and not args.heldout:
        raise TrainingError("give --questions FILE, --heldout FILE, or both")
    job = EvalJob(
        persona=args.persona or config.bot.default_persona,
        questions=Path(args.questions) if args.questions else None,
        heldout=Path(args.heldout) if args.heldout else None,
        base_only=args.base,
        adapter=Path(args.adapter) if args.adapter else None,
        system_prompt_file=Path(args.system_prompt_file) if args.system_prompt_file else None,
        max_new_tokens=args.max_new_tokens,
        json_out=Path(args.json) if args.json else None,
        show=args.show,
        record=args.record,
    )
    evaluate(job, config, say=lambda line: print(line, flush=True))
    return 0


# --- data export ----------------------------------------------------------------------


def add_data_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--output", "-o", required=True, metavar="FILE", help="JSONL file to write")
    sub.add_argument("--persona", metavar="NAME", help="only this persona's conversations")
    sub.add_argument("--since", metavar="DATE",
                     help="only conversations active since DATE (YYYY-MM-DD or ISO time, UTC)")
    sub.add_argument("--agent-replies", action="store_true",
                     help="also export conversations a human agent answered (agents' replies "
                          "become the assistant turns)")
    sub.add_argument("--all", action="store_true",
                     help="every conversation up to its last bot reply, not only those with "
                          "positive feedback (a reply rated down still ends the dialogue)")


def run_data_export(args: argparse.Namespace, config: Any) -> int:
    from datetime import UTC, datetime

    since = None
    if args.since:
        try:
            since = datetime.fromisoformat(args.since)
        except ValueError:
            raise BotkitError(
                f"--since {args.since!r} is not a date; use YYYY-MM-DD or an ISO time"
            ) from None
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
    report = asyncio.run(_export(config, Path(args.output), args, since))
    if report.conversations == 0:
        print(f"no conversation qualified; wrote an empty {args.output}"
              + (f" ({report.skipped_opted_out} held back by users' opt-out)"
                 if report.skipped_opted_out else ""))
        return 0
    print(f"wrote {report.conversations} dialogues ({report.turns} turns) to {args.output}; "
          f"{report.skipped_opted_out} conversation(s) held back by users' opt-out")
    return 0


async def _export(config: Any, out: Path, args: argparse.Namespace, since: Any) -> Any:
    from botkit.app import open_store
    from botkit.training.export import export_dialogues

    store = await open_store(config)
    try:
        return await export_dialogues(
            store, out, persona=args.persona, since=since, feedback=not args.all,
            agent_replies=args.agent_replies,
        )
    finally:
        await store.close()


# --- LoRA adapters ----------------------------------------------------------------------


def lora_adapter_dirs(config: Any, extra: list[Path]) -> list[tuple[Path, str]]:
    """(directory, who uses it) for every LoRA adapter botkit can find."""
    from botkit.model.lora import ADAPTER_CONFIG
    from botkit.personas import PersonaRegistry

    found: dict[Path, list[str]] = {}
    try:
        personas = PersonaRegistry.from_dir(config.bot.personas_dir)
    except BotkitError:
        personas = PersonaRegistry({})
    for persona in personas.values():
        if persona.adapter is not None:
            found.setdefault(Path(persona.adapter).resolve(), []).append(f"persona {persona.name}")
    for root in [config.data_dir / "adapters", *extra]:
        if root.is_dir():
            for file in sorted(root.glob(f"**/{ADAPTER_CONFIG}")):
                if "checkpoints" not in file.parts:
                    found.setdefault(file.parent.resolve(), [])
    return [(path, ", ".join(users) or "unused") for path, users in sorted(found.items())]


def print_lora_adapters(config: Any, extra: list[Path]) -> None:
    from botkit.model.lora import validate_adapter_dir

    adapters = lora_adapter_dirs(config, extra)
    print("LoRA adapters:")
    if not adapters:
        print(f"  none (train one with botkit train; looked in {config.data_dir / 'adapters'} "
              "and the personas)")
        return
    for path, users in adapters:
        try:
            info = validate_adapter_dir(path)
        except BotkitError as exc:
            print(f"  {_short(path)}  BROKEN: {exc}  [{users}]")
            continue
        manifest = info.manifest or {}
        metrics = manifest.get("metrics") or {}
        base = manifest.get("base_model") or info.base_model
        details = [f"version {info.version}", f"base {base}"]
        if "val_loss" in metrics:
            details.append(f"val loss {metrics['val_loss']:.3f}")
        evaluation = manifest.get("eval") or {}
        if "accuracy" in evaluation:
            details.append(f"eval accuracy {evaluation['accuracy']:.0%}")
        print(f"  {_short(path)}  {', '.join(details)}  [{users}]")


def _short(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def run_merge(args: argparse.Namespace, config: Any) -> int:
    from botkit.training.merge import merge_adapter

    base = merge_adapter(
        Path(args.adapter), Path(args.output), base_source=args.base,
        default_source=config.model.source, cache_dir=config.data_dir / "models",
    )
    print(f"merged {args.adapter} into {base}; wrote {args.output} "
          "(load it with [model] source = that directory)")
    return 0
