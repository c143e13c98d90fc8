"""LoRA weights of several adapters stacked, so one forward pass serves mixed batches.

Each persona may have its own LoRA adapter, and the serving runtime batches requests of
different personas together. peft can run a mixed batch (``adapter_names=``), but it
loops over the adapters in every LoRA layer, slicing the batch per adapter. Here, as in
S-LoRA and Punica (BGMV), every loaded adapter's ``A`` and ``B`` for one projection are
stacked into one tensor; a batch gathers each row's own pair and applies them all with
two ``torch.bmm`` calls::

    y = linear(x) + scale[rows] * (x @ A[rows].T) @ B[rows].T

Index 0 of every stack is all zeros: the base model. Adapters of different ranks are
zero-padded to the largest rank, which changes nothing (the padded columns of ``x @ A.T``
meet zero rows of ``B.T``).

The bank reads peft adapter directories itself and never wraps the model: the runtime
owns the forward pass and adds :meth:`LoraBank.delta` to the output of each base
``nn.Linear``. It covers Llama-family models: ``q,k,v,o_proj`` in ``self_attn`` and
``gate,up,down_proj`` in ``mlp``. Anything else an adapter changes (DoRA, embeddings,
``lm_head``, ``modules_to_save``) is refused when it loads, never half-applied.

Like :class:`~botkit.model.lora.AdapterSet`, a bank is owned by one thread (the model
worker); :meth:`LoraBank.load` builds the new stacks before it swaps them in.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from botkit.errors import AdapterError, ModelError
from botkit.model.lora import ADAPTER_CONFIG, AdapterInfo, _inspect_adapter_dir

logger = logging.getLogger(__name__)

#: The projections the bank can carry LoRA for, and the block each lives in.
MODULES = {
    "q_proj": "self_attn",
    "k_proj": "self_attn",
    "v_proj": "self_attn",
    "o_proj": "self_attn",
    "gate_proj": "mlp",
    "up_proj": "mlp",
    "down_proj": "mlp",
}
_LORA_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.(\w+)\.(\w+)\.lora_(A|B)\.weight$")
#: adapter_config.json settings that make an adapter more than plain LoRA on Linears.
_REFUSED_SETTINGS = {
    "use_dora": "uses DoRA",
    "modules_to_save": "replaces whole modules (modules_to_save)",
    "lora_bias": "trains a bias on lora_B (lora_bias)",
    "layer_replication": "replicates layers (layer_replication)",
    "trainable_token_indices": "trains token embeddings (trainable_token_indices)",
}

Key = tuple[int, str]  # (layer index, module name), e.g. (3, "q_proj")


@dataclass(frozen=True)
class _Adapter:
    info: AdapterInfo
    slot: int  # its index in every stack: 1, 2, ...
    weights: dict[Key, tuple[torch.Tensor, torch.Tensor, float]]  # A (r, in), B (out, r), scale


@dataclass(frozen=True)
class _Stack:
    """Every adapter's LoRA pair for one (layer, module); slot 0 is the base model."""

    a: torch.Tensor  # (N+1, r_max, in)
    b: torch.Tensor  # (N+1, out, r_max)
    scale: torch.Tensor  # (N+1,)
    ranks: tuple[int, ...]  # per slot; 0 where that adapter leaves the module alone
    touched: frozenset[int]  # the slots whose adapter targets this module


class LoraBank:
    """Stacked LoRA weights of several adapters, for mixed-adapter batches."""

    def __init__(self, model: Any, *, base_weights_hash: str | None = None) -> None:
        self._linears = _find_linears(model)
        first = next(iter(self._linears.values())).weight
        self._dtype, self._device = first.dtype, first.device
        self._num_layers = 1 + max(layer for layer, _ in self._linears)
        self._base_weights_hash = base_weights_hash
        self._adapters: dict[str, _Adapter] = {}
        self._stacks: dict[Key, _Stack] = {}
        # The slots a rows tensor holds, read once per tensor rather than once per call.
        self._rows_seen: torch.Tensor | None = None
        self._rows_version = -1
        self._rows_slots: frozenset[int] = frozenset()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._adapters)

    def info(self, name: str) -> AdapterInfo:
        return self._known(name).info

    def load(self, name: str, path: str | Path) -> str:
        """Load the adapter at ``path`` under ``name``; returns its version.

        A name already in use keeps its index and gets the new weights once they have
        passed every check; if they fail, the old adapter stays loaded and unchanged.
        """
        info, tensors = _inspect_adapter_dir(path, base_weights_hash=self._base_weights_hash)
        config = json.loads((info.path / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        weights = self._read_lora(info.path, config, tensors)
        old = self._adapters.get(name)
        adapters = dict(self._adapters)
        adapters[name] = _Adapter(info, old.slot if old else _free_slot(adapters), weights)
        try:
            stacks = self._build_stacks(adapters)
        except RuntimeError as exc:  # out of memory, most likely
            raise AdapterError(f"could not load the adapter in {info.path}: {exc}") from exc
        self._adapters, self._stacks = adapters, stacks
        self._rows_seen = None
        logger.info("loaded adapter %r version %s from %s", name, info.version, info.path)
        return info.version

    def unload(self, name: str) -> None:
        """Forget the adapter ``name``; the other adapters keep their indices."""
        self._known(name)
        adapters = {n: a for n, a in self._adapters.items() if n != name}
        self._stacks = self._build_stacks(adapters)
        self._adapters = adapters
        self._rows_seen = None
        logger.info("unloaded adapter %r", name)

    def index(self, name: str | None) -> int:
        """The row index for ``name`` in :meth:`delta`'s ``rows``: 0 for the base model.

        An adapter keeps its index until it is unloaded; a later load may reuse it.
        """
        return 0 if name is None else self._known(name).slot

    def delta(
        self, layer: int, module: str, x: torch.Tensor, rows: torch.Tensor
    ) -> torch.Tensor | None:
        """The LoRA contribution to add to the output of ``layers[layer].<module>``.

        ``x`` (B, T, in) is the input of that Linear and ``rows`` (B,) each row's index
        from :meth:`index`. Returns (B, T, out), or None when no row's adapter targets
        this module, which costs a dict look-up and a set intersection.

        ``rows`` is read once per tensor object: pass one tensor per forward pass and
        build a new one for the next, rather than editing it in place (an in-place edit
        under ``torch.inference_mode`` cannot be noticed).
        """
        stack = self._stacks.get((layer, module))
        if stack is None:
            return None
        slots = self._slots_in(rows)
        if not slots & stack.touched:
            return None
        if len(slots) == 1:  # one adapter for the whole batch: plain matmuls at its own rank
            (slot,) = slots
            rank = stack.ranks[slot]
            a = stack.a[slot, :rank]  # (r, in)
            b = stack.b[slot, :, :rank]  # (out, r)
            h = (x.to(a.dtype) @ a.T) * stack.scale[slot]  # (B, T, r)
            return h @ b.T  # (B, T, out)
        a = stack.a[rows]  # (B, r_max, in)
        b = stack.b[rows]  # (B, out, r_max)
        h = torch.bmm(x.to(a.dtype), a.transpose(1, 2))  # (B, T, r_max)
        h = h * stack.scale[rows].view(-1, 1, 1)  # (B, T, r_max), base rows all zero
        return torch.bmm(h, b.transpose(1, 2))  # (B, T, out)

    # -- internals -----------------------------------------------------------------

    def _known(self, name: str) -> _Adapter:
        if name not in self._adapters:
            loaded = ", ".join(sorted(self._adapters)) or "none"
            raise AdapterError(f"no adapter named {name!r} is loaded (loaded: {loaded})")
        return self._adapters[name]

    def _slots_in(self, rows: torch.Tensor) -> frozenset[int]:
        # The runtime passes the same rows tensor to every Linear of a forward pass, so
        # it is read back (a device sync on GPU) once per pass, not 7 times per layer.
        # Holding a reference keeps its identity unique; _version catches in-place edits,
        # except on inference tensors, which have no version counter.
        version = -1 if rows.is_inference() else rows._version
        if rows is not self._rows_seen or version != self._rows_version:
            slots = frozenset(int(i) for i in rows.tolist())
            live = {0} | {a.slot for a in self._adapters.values()}
            if not slots <= live:
                raise AdapterError(
                    f"rows hold adapter indices {sorted(slots - live)} that no loaded "
                    "adapter has; take indices from LoraBank.index() after each load/unload"
                )
            self._rows_seen, self._rows_version, self._rows_slots = rows, version, slots
        return self._rows_slots

    def _read_lora(
        self, directory: Path, config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
    ) -> dict[Key, tuple[torch.Tensor, torch.Tensor, float]]:
        """Check an adapter's config and tensors against the base model; return its pairs."""
        for setting, what in _REFUSED_SETTINGS.items():
            if config.get(setting):
                raise AdapterError(
                    f"adapter in {directory} {what}, which botkit's LoRA bank cannot apply; "
                    "retrain it as plain LoRA"
                )
        matches = {key: _LORA_KEY.search(key) for key in tensors}
        others = {_module_of(k) for k, m in matches.items() if not m or MODULES.get(m[3]) != m[2]}
        if others:
            raise AdapterError(
                f"adapter in {directory} changes {', '.join(sorted(others))}; botkit's LoRA "
                f"bank applies LoRA to {', '.join(MODULES)} only (not embed_tokens or "
                "lm_head); retrain it with target_modules among those"
            )
        pairs: dict[Key, dict[str, torch.Tensor]] = {}
        for key, match in matches.items():
            assert match is not None  # every key was checked above
            layer = int(match[1])
            if layer >= self._num_layers:
                raise AdapterError(
                    f"adapter in {directory} targets layer {layer}, but the base model has "
                    f"{self._num_layers} layers; it was made for another model"
                )
            pairs.setdefault((layer, match[3]), {})[match[4]] = tensors[key]

        alpha = float(config.get("lora_alpha", 8))
        alpha_pattern = config.get("alpha_pattern") or {}
        weights: dict[Key, tuple[torch.Tensor, torch.Tensor, float]] = {}
        for (layer, module), pair in sorted(pairs.items()):
            path = f"model.layers.{layer}.{MODULES[module]}.{module}"
            if set(pair) != {"A", "B"}:
                raise AdapterError(f"adapter in {directory} has only lora_A or lora_B for {path}")
            a, b = pair["A"], pair["B"]
            linear = self._linears[(layer, module)]
            rank = a.shape[0]
            if (
                a.ndim != 2
                or b.ndim != 2
                or a.shape[1] != linear.in_features
                or tuple(b.shape) != (linear.out_features, rank)
            ):
                raise AdapterError(
                    f"adapter in {directory} does not fit the base model: {path} has lora_A "
                    f"{list(a.shape)} and lora_B {list(b.shape)}, but maps "
                    f"{linear.in_features} -> {linear.out_features} features; "
                    "it was made for another model"
                )
            if not config.get("rank_pattern") and rank != config.get("r", rank):
                raise AdapterError(
                    f"adapter in {directory} says r={config.get('r')} but {path} has rank {rank}"
                )
            if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
                raise AdapterError(f"adapter in {directory} has NaN or infinite weights in {path}")
            module_alpha = float(_pattern_value(alpha_pattern, path, alpha))
            # peft's scaling: alpha / r, or alpha / sqrt(r) for rank-stabilised LoRA.
            scale = module_alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
            weights[(layer, module)] = (a.to(self._dtype), b.to(self._dtype), scale)
        return weights

    def _build_stacks(self, adapters: Mapping[str, _Adapter]) -> dict[Key, _Stack]:
        """Stack every adapter's pair per (layer, module), on the CPU, then move each."""
        size = 1 + max((a.slot for a in adapters.values()), default=0)  # N+1
        keys = sorted({key for adapter in adapters.values() for key in adapter.weights})
        stacks: dict[Key, _Stack] = {}
        for key in keys:
            linear = self._linears[key]
            owners = [a for a in adapters.values() if key in a.weights]
            r_max = max(a.weights[key][0].shape[0] for a in owners)
            stack_a = torch.zeros(size, r_max, linear.in_features, dtype=self._dtype)
            stack_b = torch.zeros(size, linear.out_features, r_max, dtype=self._dtype)
            ranks, scales = [0] * size, [0.0] * size
            for adapter in owners:
                lora_a, lora_b, scale = adapter.weights[key]
                rank = lora_a.shape[0]
                stack_a[adapter.slot, :rank] = lora_a  # (r, in)
                stack_b[adapter.slot, :, :rank] = lora_b  # (out, r)
                ranks[adapter.slot], scales[adapter.slot] = rank, scale
            stacks[key] = _Stack(
                a=stack_a.to(self._device),
                b=stack_b.to(self._device),
                scale=torch.tensor(scales, dtype=self._dtype, device=self._device),
                ranks=tuple(ranks),
                touched=frozenset(a.slot for a in owners),
            )
        return stacks


def _find_linears(model: Any) -> dict[Key, torch.nn.Linear]:
    """The base model's seven projections per layer, which LoRA deltas are added to."""
    try:
        layers = model.get_submodule("model.layers")
    except AttributeError:
        raise ModelError(
            f"LoraBank needs a Llama-family model (model.model.layers); got {type(model).__name__}"
        ) from None
    linears: dict[Key, torch.nn.Linear] = {}
    for layer, block in enumerate(layers):
        for module, parent in MODULES.items():
            linear = getattr(getattr(block, parent, None), module, None)
            if not isinstance(linear, torch.nn.Linear):
                raise ModelError(
                    f"layer {layer}'s {parent}.{module} is {type(linear).__name__}, not a "
                    "torch.nn.Linear; LoraBank needs the plain model, not one wrapped by peft"
                )
            linears[(layer, module)] = linear
    if not linears:
        raise ModelError(f"{type(model).__name__} has no decoder layers")
    return linears


def _module_of(key: str) -> str:
    """The module a state-dict key belongs to, as the base model names it."""
    module = key.removeprefix("base_model.model.")
    return re.sub(r"\.(lora_\w+|base_layer|modules_to_save)\b.*$", "", module)


def _free_slot(adapters: Mapping[str, _Adapter]) -> int:
    used = {a.slot for a in adapters.values()}
    return next(slot for slot in range(1, len(used) + 2) if slot not in used)


def _pattern_value(patterns: Mapping[str, Any], module_path: str, default: Any) -> Any:
    """A per-module override from peft's ``alpha_pattern``, matched as peft matches it."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", module_path):
            return value
    return default
