"""``botkit train``: data file in, adapter directory out, with a report along the way.

:func:`train` is the whole command minus argument parsing, so tests and scripts call
it directly. It checks the cheap things first (settings, data, disk space, output
directory), then loads the model, trains, and writes the adapter with its manifest,
``metrics.json`` and ``loss_curve.png``.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from botkit import __version__
from botkit.errors import TrainingError
from botkit.training.artifacts import (
    CHECKPOINTS,
    METRICS,
    PLOT,
    latest_checkpoint,
    load_checkpoint,
    lora_state,
    plot_losses,
    save_adapter,
    save_checkpoint,
    write_json_atomic,
)
from botkit.training.data import (
    DatasetReport,
    Example,
    build_examples,
    read_dialogues,
    split_examples,
)
from botkit.training.trainer import EpochResult, RunState, Trainer, TrainSettings

logger = logging.getLogger(__name__)

MIN_FREE_BYTES = 200 * 1024 * 1024


@dataclass
class TrainJob:
    """One ``botkit train`` invocation."""

    data: Path
    output: Path
    model_source: str = "embedded"
    cache_dir: Path = Path("data/models")
    valid: Path | None = None
    persona: str = ""
    system_prompt: str = ""
    settings: TrainSettings = field(default_factory=TrainSettings)
    device: str = "auto"
    dtype: str = "auto"
    resume: bool = False
    overwrite: bool = False
    keep_checkpoints: bool = False
    save_dtype: str = "float32"
    """Precision of the saved adapter weights: float32, or bfloat16 for half the size."""
    progress: bool = True
    command: str = ""
    """The command line that started the run, recorded in the manifest."""


@dataclass
class TrainOutcome:
    output: Path
    state: RunState
    train_report: DatasetReport
    valid_report: DatasetReport | None
    seconds: float
    manifest: dict[str, Any]


def train(job: TrainJob, *, say: Callable[[str], None] = print) -> TrainOutcome:
    """Run ``job``; ``say`` receives the lines a user reads (one per epoch, the summary)."""
    settings = job.settings
    settings.check()
    if job.resume and settings.method == "adalora":
        raise TrainingError(
            "--resume does not work with --method adalora: AdaLoRA's rank allocation is not "
            "checkpointed; start the run over (with --overwrite)"
        )
    if job.save_dtype not in ("float32", "bfloat16"):
        raise TrainingError(f"--save-dtype must be float32 or bfloat16, not {job.save_dtype!r}")
    started = time.perf_counter()
    # A malformed data file fails before the model spends seconds loading.
    read_dialogues(job.data)
    if job.valid is not None:
        read_dialogues(job.valid)
    _check_output(job)

    import warnings

    import torch

    from botkit.model.device import choose_device, dtype_name

    # transformers' deprecation notices about its own internals are not the user's business.
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    from botkit.model.loading import load_model

    device = choose_device(job.device)
    if settings.load_in_4bit and device.type != "cuda":
        raise TrainingError("--load-in-4bit (QLoRA) needs a CUDA GPU; this machine has none")
    # bf16 base weights on GPUs. On CPUs fp32: bf16 matrix products measured six times
    # slower than fp32 for training on an AVX-512-bf16 CPU (docs/training.md).
    dtype = job.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device.type == "cuda" else "float32"
    loaded = load_model(
        job.model_source, device=str(device), dtype=dtype, cache_dir=job.cache_dir
    )
    tokenizer = loaded.tokenizer
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    if pad_id is None:
        raise TrainingError(f"{loaded.model_id}'s tokenizer has neither a pad nor an EOS token")

    train_examples, train_report = build_examples(
        tokenizer, job.data, system_prompt=job.system_prompt, max_length=settings.max_length
    )
    valid_report: DatasetReport | None = None
    if job.valid is not None:
        valid_examples, valid_report = build_examples(
            tokenizer, job.valid, system_prompt=job.system_prompt, max_length=settings.max_length
        )
    else:
        train_examples, valid_examples = split_examples(
            train_examples, settings.val_fraction, settings.seed
        )
    say(_data_line("train", train_report, len(train_examples)))
    if valid_report is not None:
        say(_data_line("validation", valid_report, len(valid_examples)))
    else:
        say(f"validation: {len(valid_examples)} dialogues held out of the training file "
            f"(--val-fraction {settings.val_fraction})")

    torch.manual_seed(settings.seed)
    model = loaded.model
    if settings.load_in_4bit:
        model = _load_4bit(model)
    steps_per_epoch = math.ceil(math.ceil(len(train_examples) / settings.batch_size)
                                / settings.grad_accum)
    from botkit.training.trainer import wrap_for_training

    peft_model = wrap_for_training(
        model, settings, total_steps=steps_per_epoch * settings.epochs, base_name=loaded.model_id
    )
    autocast = torch.bfloat16 if device.type == "cuda" and dtype == "bfloat16" else None

    identity = {
        "settings": asdict(settings),
        "data_sha256": train_report.sha256,
        "valid_sha256": valid_report.sha256 if valid_report else None,
        "base_weights_hash": loaded.weights_hash,
        "system_prompt": job.system_prompt,
    }

    def on_epoch(result: EpochResult, state: RunState) -> None:
        # The checkpoint is on disk before the line is printed: what the user reads as
        # done is done, even if Ctrl-C comes next.
        save_checkpoint(
            job.output, result.epoch, peft_model=peft_model, optimizer=trainer.optimizer,
            scheduler=trainer.scheduler, state={**identity, "run": asdict(state)},
        )
        if state.best_epoch == result.epoch:
            config, tensors = lora_state(peft_model, settings.method)
            save_adapter(job.output / CHECKPOINTS / "best", config, tensors, None)
        say(result.line(settings.epochs) + f"  ({result.tokens_per_s:.0f} tok/s, "
            f"{result.seconds:.0f} s)")
        if state.stopped_early:
            say(f"stopping early: validation loss has not improved for {state.bad_epochs} "
                f"epoch(s) (best: epoch {state.best_epoch})")

    trainer = Trainer(
        peft_model, settings, train_examples, valid_examples, pad_id=pad_id, device=device,
        autocast_dtype=autocast, on_epoch=on_epoch, progress=job.progress and sys.stderr.isatty(),
    )
    if job.resume:
        _resume(job, trainer, identity, say)

    try:
        state = trainer.run()
    except KeyboardInterrupt:
        done = trainer.state.epoch
        if settings.method == "adalora":
            hint = "AdaLoRA runs cannot be resumed; start over with --overwrite"
        elif done:
            hint = f"the checkpoint of epoch {done} is intact; continue with --resume"
        else:
            hint = "no epoch had finished, so there is no checkpoint yet"
        raise TrainingError(f"training interrupted during epoch {done + 1}; {hint}") from None

    best_dir = job.output / CHECKPOINTS / "best"
    if not (best_dir / "adapter_model.safetensors").is_file():
        raise TrainingError(f"no adapter was saved in {best_dir}; the run did not finish an epoch")
    seconds = time.perf_counter() - started
    best = next(row for row in state.history if row["epoch"] == state.best_epoch)
    last = state.history[-1]
    metrics = {
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "stopped_early": state.stopped_early,
        "train_loss": best["train_loss"],
        "val_loss": best["val_loss"],
        "val_ppl": best["val_ppl"],
        "tokens_per_s": sum(r["tokens_per_s"] for r in state.history) / len(state.history),
        "history": state.history,
        "seconds": round(seconds, 1),
        "last_epoch": last,
    }
    manifest = {
        "format": 1,
        "botkit_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "base_model": loaded.model_id,
        "base_source": job.model_source,
        "base_weights_hash": loaded.weights_hash,
        "chat_template": tokenizer.chat_template,
        "persona": job.persona or None,
        "system_prompt": job.system_prompt,
        "method": settings.method,
        "hyperparameters": asdict(settings),
        "data": {
            "train": train_report.as_dict(),
            "valid": valid_report.as_dict() if valid_report else None,
            "train_dialogues": len(train_examples),
            "valid_dialogues": len(valid_examples),
        },
        "metrics": {k: v for k, v in metrics.items() if k not in ("history", "last_epoch")},
        "device": str(device),
        "dtype": dtype_name(loaded.dtype),
        "torch": torch.__version__,
        "command": job.command,
    }
    import json

    config = json.loads((best_dir / "adapter_config.json").read_text(encoding="utf-8"))
    from safetensors.torch import load_file

    save_as = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(job.save_dtype)
    if save_as is None:
        raise TrainingError(f"--save-dtype must be float32 or bfloat16, not {job.save_dtype!r}")
    tensors = {k: v.to(save_as) for k, v in
               load_file(str(best_dir / "adapter_model.safetensors")).items()}
    manifest["saved_dtype"] = job.save_dtype
    save_adapter(job.output, config, tensors, manifest)
    write_json_atomic(job.output / METRICS, {
        **metrics, "data": manifest["data"], "hyperparameters": manifest["hyperparameters"],
    })
    plot = plot_losses(state.history, job.output / PLOT,
                       title=f"{job.persona or job.data.name} on {loaded.model_id}")
    if not job.keep_checkpoints:
        shutil.rmtree(job.output / CHECKPOINTS, ignore_errors=True)
    say(f"best epoch {state.best_epoch}: val loss {best['val_loss']:.3f}, "
        f"val ppl {best['val_ppl']:.2f}; trained in {_duration(seconds)}")
    say(f"adapter written to {job.output}" + (f" (loss curve: {plot.name})" if plot else ""))
    return TrainOutcome(job.output, state, train_report, valid_report, seconds, manifest)


def _data_line(label: str, report: DatasetReport, used: int) -> str:
    line = (f"{label}: {report.dialogues} dialogues in {report.path}, {used} used, "
            f"{report.tokens} tokens ({report.target_tokens} trained on)")
    if report.truncated:
        line += f"; {report.truncated} longer than --max-length were truncated"
    if report.without_targets:
        line += f"; {report.without_targets} without an assistant turn were skipped"
    return line


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _check_output(job: TrainJob) -> None:
    out = job.output
    if out.exists() and not out.is_dir():
        raise TrainingError(f"--output {out} is a file, not a directory")
    if job.resume:
        if latest_checkpoint(out) is None:
            raise TrainingError(f"nothing to resume: {out} holds no checkpoint")
    elif out.is_dir() and any(out.iterdir()):
        if not job.overwrite:
            raise TrainingError(
                f"{out} is not empty; add --resume to continue a run there, --overwrite "
                "to replace it, or choose another --output"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out).free
    if free < MIN_FREE_BYTES:
        raise TrainingError(
            f"only {free // (1024 * 1024)} MB free on the disk of {out}; training needs at "
            f"least {MIN_FREE_BYTES // (1024 * 1024)} MB for checkpoints and the adapter"
        )


def _resume(
    job: TrainJob, trainer: Trainer, identity: dict[str, Any], say: Callable[[str], None]
) -> None:
    checkpoint = latest_checkpoint(job.output)
    assert checkpoint is not None  # _check_output made sure
    state, tensors, extra = load_checkpoint(checkpoint)
    changed = [key for key, value in identity.items() if state.get(key) != _roundtrip(value)]
    if changed:
        raise TrainingError(
            f"cannot resume from {checkpoint}: the run used different "
            f"{', '.join(changed)}; resume with the same data and options, or start over "
            "with --overwrite"
        )
    trainer.restore(state, tensors, extra)
    say(f"resuming after epoch {trainer.state.epoch} from {checkpoint}")


def _roundtrip(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


def _load_4bit(model: Any) -> Any:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise TrainingError(
            "--load-in-4bit needs bitsandbytes: pip install bitsandbytes"
        ) from None
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    location = model.config._name_or_path
    quantized = AutoModelForCausalLM.from_pretrained(
        location,
        quantization_config=BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        ),
        device_map={"": 0},
    )
    del model
    return prepare_model_for_kbit_training(quantized)


__all__ = ["Example", "TrainJob", "TrainOutcome", "train"]
