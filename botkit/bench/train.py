"""``botkit bench train``: LoRA training throughput, botkit's loop vs a plain padded loop.

Two contenders train the same LoRA layers (same initial weights, rank, learning rate,
batch size, maximum length, seed, dtype and data) for one epoch each:

1. ``botkit``: botkit's trainer as ``botkit train`` runs it: length-grouped batches,
   the output projection computed on the assistant tokens only, and the prefix every
   dialogue of a batch shares (the persona's system prompt) computed once per batch;
2. ``padded_loop`` (the baseline): the same trainer with random batches, full logits and
   no prefix sharing, i.e. a plain padded training loop
   (``grouping="random", selective_logits=False, share_prefix=False``).

The model is loaded, the data tokenized and the LoRA layers added once. Before every
timed epoch the LoRA weights go back to the same initial state and a fresh trainer
(optimizer, schedule) is built; two batches of forward and backward warm it up, and the
loss of those two fixed batches at the initial weights is compared between the
contenders (the same objective gives the same number). Passes alternate between the
contenders (A B, B A, ...) to spread the machine's noise over both. Throughput counts
non-padding tokens per second of training.

Progress goes to stderr, the table to stdout, everything to ``--json FILE``::

    botkit bench train --json train.json
    botkit bench train --quick

This module imports only the standard library at import time (the CLI builds its
parser from :func:`add_arguments`); torch comes with :func:`run`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from botkit.bench.serve import machine_info, process_peak_rss

CONTENDERS = ("botkit", "padded_loop")
LABELS = {
    "botkit": "botkit (length-grouped, selective logits, shared prefix)",
    "padded_loop": "plain padded loop (random, full logits)",
}
BASELINE = "plain padded loop (random batches, full logits, no prefix sharing)"
SETTINGS: dict[str, dict[str, Any]] = {
    "botkit": {"grouping": "length", "selective_logits": True, "share_prefix": True},
    "padded_loop": {"grouping": "random", "selective_logits": False, "share_prefix": False},
}
DEFAULT_DATA = "training/pine/train.jsonl"
DEFAULT_PERSONA = "personas/pine.toml"
REPO_ROOT = Path(__file__).resolve().parents[2]
WARMUP_BATCHES = 2
LOSS_FLAG = 0.05
"""Mean train losses further apart than this (relative) are flagged."""
MIB = 2**20


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", default="embedded", metavar="SOURCE",
                        help="model source, as [model] source (default: embedded)")
    parser.add_argument("--data", type=Path, metavar="FILE",
                        help=f"chat JSONL training data (default: {DEFAULT_DATA})")
    parser.add_argument("--persona-prompt", metavar="TEXT",
                        help="system prompt added to every dialogue (default: the "
                             f"system_prompt of {DEFAULT_PERSONA} if present, else none)")
    parser.add_argument("--dialogues", type=int, metavar="N",
                        help="train on the first N dialogues of the file (default 96)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size (default 8)")
    parser.add_argument("--max-length", type=int, default=512,
                        help="longest tokenized dialogue; longer ones are cut (default 512)")
    parser.add_argument("--repeats", type=int,
                        help="timed epochs per contender (default 3; median reported)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="float32",
                        help="base weights' dtype: float32 (default), bfloat16")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--cache-dir", default="data/models", type=Path, metavar="DIR",
                        help="converted-model cache (default: data/models)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 32 dialogues, 1 timed epoch per contender")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    return parser


def progress(message: str) -> None:
    print(f"[bench train {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- inputs ----------------------------------------------------------------------------


def _find(relative: str) -> Path | None:
    """``relative`` under the current directory, else under the repository."""
    for base in (Path.cwd(), REPO_ROOT):
        candidate = base / relative
        if candidate.is_file():
            return candidate
    return None


def resolve_data(given: Path | None) -> Path:
    from botkit.errors import DatasetError

    if given is not None:
        if not given.is_file():
            raise DatasetError(f"--data: no such file: {given}")
        return given
    found = _find(DEFAULT_DATA)
    if found is None:
        raise DatasetError(
            f"no training data: {DEFAULT_DATA} is neither under the current directory nor "
            f"under {REPO_ROOT}; give a chat JSONL file with --data FILE "
            "(rebuild Pine's with python training/pine/build.py)"
        )
    return found


def resolve_system_prompt(given: str | None) -> tuple[str, str]:
    """(system prompt, where it came from)."""
    if given is not None:
        return given, "--persona-prompt"
    found = _find(DEFAULT_PERSONA)
    if found is None:
        return "", "none (no personas/pine.toml)"
    with found.open("rb") as handle:
        prompt = tomllib.load(handle).get("system_prompt", "")
    return (prompt if isinstance(prompt, str) else ""), str(found)


def load_subset(tokenizer: Any, data: Path, dialogues: int, *, system_prompt: str,
                max_length: int) -> tuple[list[Any], Any]:
    """Tokenize the first ``dialogues`` non-empty lines of ``data``."""
    from botkit.training.data import build_examples

    lines = [line for line in data.read_text(encoding="utf-8").splitlines() if line.strip()]
    with tempfile.TemporaryDirectory(prefix="botkit-bench-train-") as tmp:
        part = Path(tmp) / data.name
        part.write_text("\n".join(lines[:dialogues]) + "\n", encoding="utf-8")
        return build_examples(tokenizer, part, system_prompt=system_prompt,
                              max_length=max_length)


# -- memory ----------------------------------------------------------------------------


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux 4.0+); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_since_reset() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


# -- figures ---------------------------------------------------------------------------


def batch_figures(examples: Sequence[Any], batches: Sequence[Sequence[int]],
                  selective: bool) -> dict[str, Any]:
    """Padding and output-projection work of one epoch's ``batches``."""
    from botkit.training.data import IGNORE_INDEX

    lengths = [len(e.input_ids) for e in examples]
    positions = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    tokens = sum(lengths[i] for b in batches for i in b)
    if selective:
        rows = sum(sum(1 for label in examples[i].labels[1:] if label != IGNORE_INDEX)
                   for b in batches for i in b)
    else:
        rows = sum(len(b) * (max(lengths[i] for i in b) - 1) for b in batches)
    return {
        "batches": len(batches),
        "tokens": tokens,
        "positions": positions,
        "padding_share": (positions - tokens) / positions if positions else 0.0,
        "lm_head_rows": rows,
    }


def summarize(name: str, passes: list[dict[str, Any]], figures: dict[str, Any]) -> dict[str, Any]:
    rates = [p["tok_s"] for p in passes]
    seconds = [p["seconds"] for p in passes]
    losses = [p["train_loss"] for p in passes]
    rss = [p["peak_rss_bytes"] for p in passes if p["peak_rss_bytes"] is not None]
    gpu = [p["peak_gpu_bytes"] for p in passes if p["peak_gpu_bytes"] is not None]
    return {
        "status": "ok",
        "label": LABELS[name],
        "settings": SETTINGS[name],
        "runs": len(passes),
        **figures,
        "tok_s": statistics.median(rates),
        "tok_s_min": min(rates),
        "tok_s_max": max(rates),
        "tok_s_all": rates,
        "seconds": statistics.median(seconds),
        "seconds_min": min(seconds),
        "seconds_max": max(seconds),
        "train_loss": statistics.fmean(losses),
        "train_loss_all": losses,
        "initial_loss": passes[0]["initial_loss"],
        "peak_rss_mb": max(rss) / MIB if rss else None,
        "peak_rss_how": "kernel peak-RSS mark reset before each timed epoch (VmHWM), max "
                        "over passes" if rss else None,
        "process_peak_rss_mb_cumulative": max(p["process_peak_rss_bytes"] for p in passes) / MIB,
        "peak_gpu_mb": max(gpu) / MIB if gpu else None,
    }


def _relative(a: float, b: float) -> float:
    scale = max(abs(a), abs(b))
    return abs(a - b) / scale if scale else 0.0


# -- the run ---------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Run the benchmark the parsed ``args`` describe; returns the exit status."""
    from dataclasses import asdict, replace

    import torch
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    from botkit.errors import TrainingError
    from botkit.model.device import dtype_name
    from botkit.model.loading import load_model
    from botkit.training.data import IGNORE_INDEX, iter_batches
    from botkit.training.trainer import Trainer, TrainSettings, wrap_for_training

    dialogues = args.dialogues or (32 if args.quick else 96)
    repeats = args.repeats or (1 if args.quick else 3)
    if dialogues < 1 or repeats < 1:
        raise TrainingError("--dialogues and --repeats must be at least 1")
    data = resolve_data(args.data)
    system_prompt, prompt_source = resolve_system_prompt(args.persona_prompt)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    progress(f"loading {args.model} ({args.device}, {args.dtype})")
    loaded = load_model(args.model, device=args.device, dtype=args.dtype,
                        cache_dir=args.cache_dir)
    tokenizer, device = loaded.tokenizer, loaded.device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
        else tokenizer.eos_token_id
    if pad_id is None:
        raise TrainingError(f"{loaded.model_id}'s tokenizer has neither a pad nor an EOS token")
    examples, data_report = load_subset(tokenizer, data, dialogues, system_prompt=system_prompt,
                                        max_length=args.max_length)
    progress(f"{len(examples)} examples from the first {dialogues} dialogues of {data}")

    base = TrainSettings(rank=args.rank, alpha=2 * args.rank, epochs=1,
                         batch_size=args.batch_size, max_length=args.max_length, seed=args.seed)
    settings = {name: replace(base, **SETTINGS[name]) for name in CONTENDERS}
    for s in settings.values():
        s.check()
    torch.manual_seed(args.seed)
    steps = -(-len(examples) // args.batch_size)
    peft_model = wrap_for_training(loaded.model, base, total_steps=steps,
                                   base_name=loaded.model_id)
    initial = {k: v.detach().clone() for k, v in get_peft_model_state_dict(
        peft_model, save_embedding_layers=False).items()}
    autocast = torch.bfloat16 if device.type == "cuda" and loaded.dtype == torch.bfloat16 \
        else None
    size = args.batch_size
    warm = [list(range(i, min(i + size, len(examples))))
            for i in range(0, min(len(examples), WARMUP_BATCHES * size), size)]
    warm_targets = sum(int((labels[:, 1:] != IGNORE_INDEX).sum())
                       for _, _, labels in iter_batches(examples, warm, pad_id))
    can_reset_rss = reset_peak_rss()

    system_tokens = (len(tokenizer(system_prompt, add_special_tokens=False)["input_ids"])
                     if system_prompt else 0)
    lengths = sorted(len(e.input_ids) for e in examples)
    report: dict[str, Any] = {
        "benchmark": "train",
        "command": " ".join(["botkit", *sys.argv[1:]])
        if Path(sys.argv[0]).name == "botkit" else " ".join(sys.argv),
        "baseline": BASELINE,
        "machine": machine_info(loaded),
        "model": loaded.model_id,
        "device": str(device),
        "dtype": dtype_name(loaded.dtype),
        "settings": {
            "train": asdict(base),
            "contenders": SETTINGS,
            "data": str(data),
            "data_sha256": _sha256(data),
            "dialogues": dialogues,
            "examples": len(examples),
            "truncated": data_report.truncated,
            "without_targets": data_report.without_targets,
            "tokens": data_report.tokens,
            "target_tokens": data_report.target_tokens,
            "example_tokens": {"min": lengths[0], "median": lengths[len(lengths) // 2],
                               "max": lengths[-1]},
            "system_prompt_source": prompt_source,
            "system_prompt_tokens": system_tokens,
            "repeats": repeats,
            "epochs_per_pass": 1,
            "warmup": f"{len(warm)} batches of forward+backward (first examples in file order), "
                      "untimed, gradients discarded",
            "order": "alternating: botkit first in even repeats, padded loop first in odd",
            "lora_reset": "LoRA weights restored to one saved initial state before each pass; "
                          "fresh optimizer and schedule",
            "tokens_per_s": "non-padding tokens per second of one training epoch "
                            "(forward, backward, optimizer)",
            "autocast": str(autocast) if autocast else None,
        },
        "results": {},
        "ratios": {},
    }

    def save(partial: bool) -> None:
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            body = {**report, "partial": True} if partial else report
            args.json.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")

    def one_pass(name: str) -> tuple[dict[str, Any], Any]:
        set_peft_model_state_dict(peft_model, initial)
        torch.manual_seed(args.seed)
        trainer = Trainer(peft_model, settings[name], examples, [], pad_id=pad_id,
                          device=device, autocast_dtype=autocast, progress=False)
        peft_model.train()
        warm_loss = 0.0
        for ids, mask, labels in iter_batches(examples, warm, pad_id):
            loss = trainer.loss_sum(ids, mask, labels)
            (loss / max(warm_targets, 1)).backward()
            warm_loss += float(loss.detach())
        trainer.optimizer.zero_grad(set_to_none=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        if can_reset_rss:
            reset_peak_rss()
        result = trainer.train_epoch(1)
        gpu = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        figures = {
            "tok_s": result.tokens_per_s,
            "seconds": result.seconds,
            "train_loss": result.train_loss,
            "initial_loss": warm_loss / max(warm_targets, 1),
            "peak_rss_bytes": peak_rss_since_reset() if can_reset_rss else None,
            "process_peak_rss_bytes": process_peak_rss(),
            "peak_gpu_bytes": gpu,
        }
        return figures, trainer

    passes: dict[str, list[dict[str, Any]]] = {name: [] for name in CONTENDERS}
    batches: dict[str, dict[str, Any]] = {}
    for repeat in range(repeats):
        order = CONTENDERS if repeat % 2 == 0 else CONTENDERS[::-1]
        for name in order:
            progress(f"{name}: pass {repeat + 1}/{repeats}")
            figures, trainer = one_pass(name)
            passes[name].append(figures)
            if name not in batches:
                batches[name] = batch_figures(examples, trainer.batches(1),
                                              settings[name].selective_logits)
            progress(f"{name}: {figures['seconds']:.1f} s, {figures['tok_s']:.1f} tok/s, "
                     f"train loss {figures['train_loss']:.4f}")
            del trainer
            report["results"] = {n: summarize(n, passes[n], batches[n])
                                 for n in CONTENDERS if passes[n]}
            save(partial=True)

    results = report["results"]
    top, bottom = results["botkit"]["tok_s"], results["padded_loop"]["tok_s"]
    report["ratios"] = {"vs_padded_loop": top / bottom if bottom else None}
    init_diff = _relative(results["botkit"]["initial_loss"], results["padded_loop"]["initial_loss"])
    train_diff = _relative(results["botkit"]["train_loss"], results["padded_loop"]["train_loss"])
    tolerance = 1e-3 if loaded.dtype == torch.float32 else 2e-2
    report["correctness"] = {
        "initial_loss_relative_difference": init_diff,
        "initial_loss_tolerance": tolerance,
        "initial_loss_match": init_diff <= tolerance,
        "initial_loss_how": "summed cross-entropy per target token of the warm-up batches at the "
                            "initial LoRA weights, same batches for both contenders",
        "train_loss_relative_difference": train_diff,
        "train_loss_flagged": train_diff > LOSS_FLAG,
        "train_loss_how": f"mean train loss of the epoch; flagged above {LOSS_FLAG:.0%} relative "
                          "(batches differ, so the numbers differ a little)",
    }
    report["peak_rss_process_mb"] = process_peak_rss() / MIB
    print_report(report)
    save(partial=False)
    if args.json:
        print(f"wrote {args.json}")
    return 0 if report["correctness"]["initial_loss_match"] else 1


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- output ----------------------------------------------------------------------------


def print_report(report: dict[str, Any]) -> None:
    m, s = report["machine"], report["settings"]
    t = s["train"]
    print(f"botkit bench train: {report['model']} on {report['device']}, {report['dtype']}")
    print(f"machine: {m['processor']}, {m['cores']} cores ({m['torch_threads']} torch threads), "
          f"flags {' '.join(m['cpu_flags']) or '-'}, GPU {m['gpu'] or 'none'}; "
          f"python {m['python']}, torch {m['torch']}, transformers {m['transformers']}, "
          f"peft {m['peft']}")
    ex = s["example_tokens"]
    print(f"data: {s['data']}, first {s['dialogues']} dialogues -> {s['examples']} examples "
          f"({s['truncated']} truncated), {s['tokens']} tokens ({s['target_tokens']} trained "
          f"on), {ex['min']}-{ex['max']} tokens each (median {ex['median']}); system prompt "
          f"{s['system_prompt_tokens']} tokens from {s['system_prompt_source']}")
    print(f"training: LoRA r={t['rank']} alpha={t['alpha']} on every linear layer, lr "
          f"{t['lr']}, batch {t['batch_size']}, max length {t['max_length']}, seed {t['seed']}; "
          f"{s['repeats']} timed epoch(s) per contender after a warm-up (median; spread = "
          "min-max), contenders alternating")
    print(f"baseline: {report['baseline']}")
    print()
    header = (f"{'contender':<42}{'tok/s':>8}{'spread':>15}{'seconds':>9}{'batches':>8}"
              f"{'padding':>8}{'lm-head rows':>13}{'train loss':>11}{'init loss':>10}"
              f"{'RSS MiB':>8}{'cum RSS':>8}")
    print(header)
    print("-" * len(header))
    for row in report["results"].values():
        spread = f"{row['tok_s_min']:.1f}-{row['tok_s_max']:.1f}"
        rss = "-" if row["peak_rss_mb"] is None else f"{row['peak_rss_mb']:.0f}"
        print(f"{row['label']:<42}{row['tok_s']:>8.1f}{spread:>15}{row['seconds']:>9.1f}"
              f"{row['batches']:>8}{row['padding_share']:>8.1%}{row['lm_head_rows']:>13}"
              f"{row['train_loss']:>11.4f}{row['initial_loss']:>10.4f}{rss:>8}"
              f"{row['process_peak_rss_mb_cumulative']:>8.0f}")
    print("(tok/s: non-padding tokens per second of one epoch. padding: padded share of the "
          "positions of its batches. lm-head rows: positions the output projection runs on. "
          "RSS MiB: peak during its timed epochs (kernel mark reset before each); cum RSS: the "
          "process's peak so far, read after its last pass, cumulative)")
    if report["results"].get("padded_loop", {}).get("peak_gpu_mb") is not None:
        for name, row in report["results"].items():
            print(f"peak GPU allocated, {name}: {row['peak_gpu_mb']:.0f} MiB")
    c = report["correctness"]
    print(f"same objective: loss at the initial weights on the same {s['warmup'].split()[0]} "
          f"batches differs by {c['initial_loss_relative_difference']:.2e} relative "
          f"({'ok' if c['initial_loss_match'] else 'MISMATCH'}, tolerance "
          f"{c['initial_loss_tolerance']:.0e}); mean train loss of the epoch differs by "
          f"{c['train_loss_relative_difference']:.2%}"
          + (f" (FLAGGED: over {LOSS_FLAG:.0%})" if c["train_loss_flagged"] else ""))
    print()
    ratio = report["ratios"]["vs_padded_loop"]
    print("ratios (baseline named on the right):")
    print(f"  {'vs_padded_loop':<18}{'-' if ratio is None else f'{ratio:.2f}x':>8}   botkit tok/s "
          f"/ {BASELINE} tok/s")
    print(f"process peak RSS: {report['peak_rss_process_mb']:.0f} MiB")


# -- entry points ----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(
        prog="python -m botkit.bench.train", description=(__doc__ or "").splitlines()[0]))
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
