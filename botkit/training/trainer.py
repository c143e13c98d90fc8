"""The LoRA training loop behind ``botkit train``.

What makes it fast on a CPU, compared with a plain padded loop over the same data:

- **length-grouped batches**: dialogues of similar length share a batch, so almost no
  compute goes into padding;
- **logits only where the loss is taken**: the output projection (vocabulary-sized:
  a fifth of a 135M model's work per token) runs on the assistant tokens only, not on
  the system prompt, the user's turns and the padding;
- **the shared prefix computed once per batch**: every dialogue of a persona opens with
  the same system prompt, so a batch runs that prefix through the model once and lets
  every row attend to its keys and values (gradients flow back through them), instead
  of computing the same tokens batch-size times.

Everything else is the usual recipe: AdamW over the LoRA weights, linear warm-up then
cosine decay, gradient accumulation, gradient clipping, early stopping on the
validation loss, and a checkpoint per epoch.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from botkit.errors import TrainingError
from botkit.training.data import IGNORE_INDEX, Example, iter_batches, length_grouped_batches
from botkit.training.data import random_batches as plain_batches

logger = logging.getLogger(__name__)

METHODS = ("lora", "adalora")
MIN_SHARED_PREFIX = 8
"""Shorter common prefixes are computed per row: the saving would not pay for the split."""


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters; every one is recorded in the adapter's manifest."""

    method: str = "lora"
    """``lora`` or ``adalora`` (rank budget re-allocated while training)."""
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    """LoRA dropout. 0 by default: on a CPU its random masks cost more than they help
    on the small data sets a support bot is trained on."""
    target_modules: tuple[str, ...] = ()
    """Module names to adapt; empty means every linear layer of the decoder blocks."""
    epochs: int = 3
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    max_grad_norm: float = 1.0
    max_length: int = 1024
    val_fraction: float = 0.1
    patience: int = 2
    """Epochs without a better validation loss before stopping; 0 never stops early."""
    seed: int = 0
    grad_checkpointing: bool = False
    grouping: str = "length"
    """``length`` (botkit's) or ``random`` (a plain padded loop, the benchmark baseline)."""
    selective_logits: bool = True
    """Compute the output projection on the assistant tokens only."""
    share_prefix: bool = True
    """Run a prefix common to a whole batch (the system prompt) once per batch."""
    load_in_4bit: bool = False

    def check(self) -> None:
        if self.method not in METHODS:
            raise TrainingError(f"unknown method {self.method!r}; choose one of {METHODS}")
        if self.grouping not in ("length", "random"):
            raise TrainingError(f"unknown grouping {self.grouping!r}; use length or random")
        for name in ("rank", "alpha", "epochs", "batch_size", "grad_accum", "max_length"):
            if getattr(self, name) < 1:
                raise TrainingError(f"{name.replace('_', '-')} must be at least 1")
        if not 0 <= self.dropout < 1:
            raise TrainingError("dropout must be in [0, 1)")
        if self.lr <= 0:
            raise TrainingError("the learning rate must be positive")


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    val_loss: float
    val_ppl: float
    tokens_per_s: float
    """Non-padding tokens processed per second of training (forward and backward)."""
    seconds: float
    lr: float

    def line(self, epochs: int) -> str:
        return (
            f"epoch {self.epoch}/{epochs}  train loss {self.train_loss:.3f}  "
            f"val loss {self.val_loss:.3f}  val ppl {self.val_ppl:.2f}"
        )


@dataclass
class RunState:
    """What a checkpoint records so that ``--resume`` continues the same run."""

    epoch: int = 0
    global_step: int = 0
    best_val_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False


def default_target_modules(model: Any) -> list[str]:
    """Every linear layer's name inside the decoder blocks (not the output projection)."""
    names: set[str] = set()
    output = model.get_output_embeddings()
    for path, module in model.named_modules():
        if module is output or not path:
            continue
        if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D":
            names.add(path.rpartition(".")[2])
    if not names:
        raise TrainingError(f"{type(model).__name__} has no linear layers LoRA can adapt")
    return sorted(names)


def wrap_for_training(
    model: Any, settings: TrainSettings, *, total_steps: int, base_name: str
) -> Any:
    """The model with fresh trainable LoRA (or AdaLoRA) layers; base weights frozen."""
    from peft import AdaLoraConfig, LoraConfig, TaskType, get_peft_model

    targets = list(settings.target_modules) or default_target_modules(model)
    common: dict[str, Any] = {
        "task_type": TaskType.CAUSAL_LM,
        "target_modules": targets,
        "lora_alpha": settings.alpha,
        "lora_dropout": settings.dropout,
        "fan_in_fan_out": type(model).__name__.startswith("GPT2"),
    }
    if settings.method == "adalora":
        config: Any = AdaLoraConfig(
            init_r=settings.rank,
            target_r=max(1, settings.rank // 2),
            tinit=max(1, total_steps // 10),
            tfinal=max(1, total_steps // 5),
            deltaT=max(1, total_steps // 20),
            total_step=max(total_steps, 3),
            **common,
        )
    else:
        config = LoraConfig(r=settings.rank, **common)
    if settings.grad_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    try:
        with warnings.catch_warnings():
            # transformers' deprecation notices about its own internals, raised inside peft.
            warnings.simplefilter("ignore", FutureWarning)
            peft_model = get_peft_model(model, config)
    except ValueError as exc:
        raise TrainingError(f"cannot add LoRA layers to {base_name}: {exc}") from exc
    peft_model.peft_config["default"].base_model_name_or_path = base_name
    # Adapter weights train in fp32 even over bf16 base weights.
    for param in peft_model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    return peft_model


class Trainer:
    """Runs epochs over tokenized examples; reports through callbacks, prints nothing."""

    def __init__(
        self,
        peft_model: Any,
        settings: TrainSettings,
        train: Sequence[Example],
        valid: Sequence[Example],
        *,
        pad_id: int,
        device: torch.device,
        autocast_dtype: torch.dtype | None = None,
        on_epoch: Callable[[EpochResult, RunState], None] | None = None,
        progress: bool = True,
    ) -> None:
        settings.check()
        self.model = peft_model
        self.settings = settings
        self.train_examples = list(train)
        self.valid_examples = list(valid)
        self.pad_id = pad_id
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.on_epoch = on_epoch
        self.progress = progress
        self.state = RunState()
        base = peft_model.get_base_model()
        self._decoder = base.get_decoder()
        self._lm_head = base.get_output_embeddings()
        # transformers 5 renamed the decoder's past_key_values argument to cache.
        parameters = inspect.signature(self._decoder.forward).parameters
        self._cache_kwarg = "cache" if "cache" in parameters else "past_key_values"
        params = [p for p in peft_model.parameters() if p.requires_grad]
        if not params:
            raise TrainingError("the model has no trainable LoRA weights")
        self.optimizer = torch.optim.AdamW(
            params, lr=settings.lr, weight_decay=settings.weight_decay
        )
        self.steps_per_epoch = self.steps_in_epoch()
        total = self.steps_per_epoch * settings.epochs
        warmup = int(total * settings.warmup_ratio)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: _warmup_cosine(step, warmup, total)
        )

    def steps_in_epoch(self) -> int:
        batches = math.ceil(len(self.train_examples) / self.settings.batch_size)
        return math.ceil(batches / self.settings.grad_accum)

    def batches(self, epoch: int) -> list[list[int]]:
        seed = self.settings.seed * 1000 + epoch
        if self.settings.grouping == "length":
            lengths = [len(e.input_ids) for e in self.train_examples]
            return length_grouped_batches(lengths, self.settings.batch_size, seed=seed)
        return plain_batches(len(self.train_examples), self.settings.batch_size, seed=seed)

    # -- the loss ------------------------------------------------------------------

    def loss_sum(self, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Summed cross-entropy over the target tokens of one padded batch."""
        ids, mask, labels = ids.to(self.device), mask.to(self.device), labels.to(self.device)
        targets = labels[:, 1:]  # (B, T-1): token t+1 is predicted at position t
        with self._autocast():
            if self.settings.selective_logits:
                hidden = self._hidden(ids, mask)  # (B, T, C)
                keep = targets != IGNORE_INDEX
                logits = self._lm_head(hidden[:, :-1][keep])  # (N, V), N = target tokens
                flat_targets = targets[keep]
            else:
                logits = self.model(input_ids=ids, attention_mask=mask).logits[:, :-1]
                logits = logits.reshape(-1, logits.shape[-1])  # (B*(T-1), V)
                flat_targets = targets.reshape(-1)
        return torch.nn.functional.cross_entropy(
            logits.float(), flat_targets, ignore_index=IGNORE_INDEX, reduction="sum"
        )

    def _hidden(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The decoder's last hidden states, the batch's common prefix computed once."""
        prefix = self._shared_prefix(ids, mask)
        if prefix == 0:
            return self._decoder(input_ids=ids, attention_mask=mask).last_hidden_state
        batch, width = ids.shape
        head = self._decoder(input_ids=ids[:1, :prefix], use_cache=True)
        cache = head.get("cache") or head.get("past_key_values")
        cache.batch_repeat_interleave(batch)  # (1, H, P, D) -> (B, H, P, D), differentiable
        positions = torch.arange(prefix, width, device=ids.device).expand(batch, -1)
        tail = self._decoder(
            input_ids=ids[:, prefix:], attention_mask=mask, position_ids=positions,
            use_cache=True, **{self._cache_kwarg: cache},
        ).last_hidden_state  # (B, T-P, C)
        return torch.cat([head.last_hidden_state.expand(batch, -1, -1), tail], dim=1)

    def _shared_prefix(self, ids: torch.Tensor, mask: torch.Tensor) -> int:
        """Length of the prefix every row shares, or 0 when sharing it is not worth it."""
        if not self.settings.share_prefix or self.settings.grad_checkpointing or len(ids) < 2:
            return 0
        same = (ids == ids[:1]).all(dim=0) & mask.bool().all(dim=0)  # (T,)
        differs = (~same).nonzero()
        length = int(differs[0]) if len(differs) else ids.shape[1]
        length = min(length, int(mask.sum(dim=1).min()) - 1)  # every row keeps a token
        return length if length >= MIN_SHARED_PREFIX else 0

    def _autocast(self) -> Any:
        if self.autocast_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _adalora_penalty(self) -> torch.Tensor | None:
        """AdaLoRA's orthogonality regulariser (peft adds it only when it computes the loss)."""
        if self.settings.method != "adalora":
            return None
        weight = self.model.peft_config["default"].orth_reg_weight
        total: torch.Tensor | None = None
        count = 0
        for name, param in self.model.named_parameters():
            if ("lora_A" in name or "lora_B" in name) and param.requires_grad:
                cov = param @ param.T if "lora_A" in name else param.T @ param
                eye = torch.eye(*cov.size(), device=cov.device, dtype=cov.dtype)
                term = torch.norm(cov - eye, p="fro")
                total = term if total is None else total + term
                count += 1
        return None if total is None else weight * total / count

    # -- epochs --------------------------------------------------------------------

    def run(self) -> RunState:
        """Train from ``state.epoch + 1`` to the last epoch or an early stop."""
        settings = self.settings
        for epoch in range(self.state.epoch + 1, settings.epochs + 1):
            result = self.train_epoch(epoch)
            self.state.epoch = epoch
            self.state.history.append(asdict(result))
            if result.val_loss < self.state.best_val_loss - 1e-6:
                self.state.best_val_loss = result.val_loss
                self.state.best_epoch = epoch
                self.state.bad_epochs = 0
            else:
                self.state.bad_epochs += 1
            if settings.patience and self.state.bad_epochs >= settings.patience:
                self.state.stopped_early = epoch < settings.epochs
            if self.on_epoch is not None:
                self.on_epoch(result, self.state)
            if self.state.stopped_early:
                break
        return self.state

    def train_epoch(self, epoch: int) -> EpochResult:
        from tqdm.auto import tqdm

        settings = self.settings
        self.model.train()
        batches = self.batches(epoch)
        self.optimizer.zero_grad(set_to_none=True)  # nothing computed before counts
        groups = [
            batches[i : i + settings.grad_accum]
            for i in range(0, len(batches), settings.grad_accum)
        ]
        loss_total, target_total, seen_tokens = 0.0, 0, 0
        started = time.perf_counter()
        bar = tqdm(
            total=len(batches), desc=f"epoch {epoch}/{settings.epochs}", unit="batch",
            disable=not self.progress, leave=False, dynamic_ncols=True,
        )
        try:
            for group in groups:
                group_targets = sum(
                    self.train_examples[i].target_tokens for batch in group for i in batch
                )
                for ids, mask, labels in iter_batches(self.train_examples, group, self.pad_id):
                    with self._memory_guard():
                        loss = self.loss_sum(ids, mask, labels)
                        (loss / group_targets).backward()
                    loss_total += float(loss.detach())
                    seen_tokens += int(mask.sum())
                    bar.update(1)
                penalty = self._adalora_penalty()
                if penalty is not None:
                    penalty.backward()
                target_total += group_targets
                if settings.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(
                        [p for p in self.model.parameters() if p.requires_grad],
                        settings.max_grad_norm,
                    )
                self.optimizer.step()
                self.scheduler.step()
                self.state.global_step += 1
                if settings.method == "adalora":
                    self.model.base_model.update_and_allocate(self.state.global_step)
                self.optimizer.zero_grad(set_to_none=True)
                elapsed = time.perf_counter() - started
                bar.set_postfix(
                    loss=f"{loss_total / max(target_total, 1):.3f}",
                    tok_s=f"{seen_tokens / max(elapsed, 1e-9):.0f}",
                )
        finally:
            bar.close()
        seconds = time.perf_counter() - started
        val_loss = self.evaluate(self.valid_examples)
        return EpochResult(
            epoch=epoch,
            train_loss=loss_total / max(target_total, 1),
            val_loss=val_loss,
            val_ppl=math.exp(min(val_loss, 50.0)),
            tokens_per_s=seen_tokens / max(seconds, 1e-9),
            seconds=seconds,
            lr=float(self.scheduler.get_last_lr()[0]),
        )

    @torch.no_grad()
    def evaluate(self, examples: Sequence[Example]) -> float:
        """Mean loss per assistant token over ``examples``."""
        if not examples:
            return math.nan
        self.model.eval()
        lengths = [len(e.input_ids) for e in examples]
        order = sorted(range(len(examples)), key=lambda i: lengths[i])
        batches = [
            order[i : i + self.settings.batch_size]
            for i in range(0, len(order), self.settings.batch_size)
        ]
        total, count = 0.0, 0
        for ids, mask, labels in iter_batches(examples, batches, self.pad_id):
            with self._memory_guard():
                total += float(self.loss_sum(ids, mask, labels))
            count += int((labels[:, 1:] != IGNORE_INDEX).sum())
        self.model.train()
        return total / max(count, 1)

    @contextlib.contextmanager
    def _memory_guard(self) -> Iterator[None]:
        try:
            yield
        except (torch.OutOfMemoryError, MemoryError) as exc:
            raise TrainingError(
                f"ran out of memory with batch size {self.settings.batch_size} and maximum "
                f"length {self.settings.max_length}; lower --batch-size (raise --grad-accum to "
                "keep the effective batch), lower --max-length, or add --grad-checkpointing"
            ) from exc

    # -- resume --------------------------------------------------------------------

    def restore(self, state: dict[str, Any], tensors: dict[str, torch.Tensor], extra: Any) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.model, tensors)
        self.optimizer.load_state_dict(extra["optimizer"])
        self.scheduler.load_state_dict(extra["scheduler"])
        torch.set_rng_state(extra["torch_rng"])
        run = state["run"]
        self.state = RunState(
            epoch=run["epoch"],
            global_step=run["global_step"],
            best_val_loss=run["best_val_loss"],
            best_epoch=run["best_epoch"],
            bad_epochs=run["bad_epochs"],
            history=list(run["history"]),
        )


def _warmup_cosine(step: int, warmup: int, total: int) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
