"""KV memory for the batched runtime: a slot pool for running requests and a prefix cache.

The pool holds one *slot* per running request: the keys and values of every layer for
that request's tokens, in two tensors of shape ``(layers, slots, kv_heads, length,
head_dim)``. The runtime keeps the decoding requests in slots ``0..B-1`` so that a
decode step reads a plain view ``pool[:, :B, :, :L]``, never a gathered copy; a request
that leaves has the last one moved into its place.

Memory is bounded: the pool never holds more than ``budget_tokens`` token positions
(slots x length), which admission control checks before a request gets a slot.

The prefix cache keeps the KV of prompts already computed (a persona's system prompt,
the earlier turns of a conversation) and hands out the longest common token prefix:
attention is causal, so the KV of the first ``n`` tokens depends on those tokens only,
whatever followed them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class KVPool:
    """Per-layer keys and values of the running requests, one slot each."""

    LENGTH_STEP = 64  # grow the length dimension in steps of this many positions

    def __init__(
        self,
        *,
        layers: int,
        kv_heads: int,
        head_dim: int,
        budget_tokens: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.layers, self.kv_heads, self.head_dim = layers, kv_heads, head_dim
        self.budget_tokens = budget_tokens
        self.dtype, self.device = dtype, device
        self.keys = self._empty(0, 0)  # (layers, slots, kv_heads, length, head_dim)
        self.values = self._empty(0, 0)
        self.peak_bytes = 0

    @staticmethod
    def bytes_per_token(layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
        """Keys plus values of one token position in every layer."""
        return 2 * layers * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()

    def _empty(self, slots: int, length: int) -> torch.Tensor:
        shape = (self.layers, slots, self.kv_heads, length, self.head_dim)
        return torch.zeros(shape, dtype=self.dtype, device=self.device)

    @property
    def slots(self) -> int:
        return self.keys.shape[1]

    @property
    def length(self) -> int:
        return self.keys.shape[3]

    @property
    def nbytes(self) -> int:
        return self.keys.numel() * self.keys.element_size() * 2

    def fits(self, slots: int, length: int) -> bool:
        """Whether ``slots`` requests of up to ``length`` positions fit the budget."""
        return slots * length <= self.budget_tokens

    def ensure(self, slots: int, length: int) -> None:
        """Grow (never shrink) to at least ``slots`` x ``length``, keeping the contents."""
        if slots <= self.slots and length <= self.length:
            return
        new_slots = max(slots, self.slots)
        new_length = max(round_up(length, self.LENGTH_STEP), self.length)
        if not self.fits(new_slots, new_length):  # the rounding must not break the budget
            new_length = max(length, self.length)
        keys, values = self._empty(new_slots, new_length), self._empty(new_slots, new_length)
        keys[:, : self.slots, :, : self.length] = self.keys
        values[:, : self.slots, :, : self.length] = self.values
        self.keys, self.values = keys, values
        self.peak_bytes = max(self.peak_bytes, self.nbytes)

    def copy_slot(self, source: int, target: int, length: int) -> None:
        """Copy the first ``length`` positions of slot ``source`` into slot ``target``."""
        if source != target and length > 0:
            self.keys[:, target, :, :length] = self.keys[:, source, :, :length]
            self.values[:, target, :, :length] = self.values[:, source, :, :length]

    def swap_slots(self, a: int, b: int, length: int) -> None:
        if a != b and length > 0:
            for tensor in (self.keys, self.values):
                held = tensor[:, a, :, :length].clone()
                tensor[:, a, :, :length] = tensor[:, b, :, :length]
                tensor[:, b, :, :length] = held

    def load_prefix(self, slot: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Put cached ``keys``/``values`` (layers, kv_heads, n, head_dim) at positions 0..n-1."""
        n = keys.shape[2]
        self.keys[:, slot, :, :n] = keys
        self.values[:, slot, :, :n] = values

    def read_prefix(self, slot: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A copy of positions 0..n-1 of ``slot``: (layers, kv_heads, n, head_dim) twice."""
        return (
            self.keys[:, slot, :, :n].clone(),
            self.values[:, slot, :, :n].clone(),
        )


@dataclass
class _Entry:
    tokens: tuple[int, ...]
    keys: torch.Tensor  # (layers, kv_heads, T, head_dim)
    values: torch.Tensor


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class PrefixCache:
    """Least-recently-used store of computed KV, looked up by longest common prefix.

    Entries are kept per adapter: the same tokens give other keys and values under
    another LoRA adapter.
    """

    def __init__(self, *, budget_tokens: int, min_tokens: int = 16) -> None:
        self.budget_tokens = budget_tokens
        self.min_tokens = min_tokens  # shorter matches are not worth a copy
        self._entries: OrderedDict[tuple[str | None, tuple[int, ...]], _Entry] = OrderedDict()
        self.tokens = 0
        self.hits = 0
        self.tokens_reused = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(
        self, adapter: str | None, prompt: Sequence[int]
    ) -> tuple[int, torch.Tensor, torch.Tensor] | None:
        """The longest cached prefix of ``prompt``: (length, keys, values), or None.

        The caller always leaves at least the prompt's last token to compute, since
        its logits are needed for the first reply token.
        """
        best: tuple[int, tuple[str | None, tuple[int, ...]]] | None = None
        limit = len(prompt) - 1
        for key, entry in self._entries.items():
            if key[0] != adapter:
                continue
            n = min(common_prefix_length(entry.tokens, prompt), limit)
            if n >= self.min_tokens and (best is None or n > best[0]):
                best = (n, key)
        if best is None:
            return None
        n, key = best
        self._entries.move_to_end(key)
        entry = self._entries[key]
        self.hits += 1
        self.tokens_reused += n
        return n, entry.keys[:, :, :n], entry.values[:, :, :n]

    def insert(
        self, adapter: str | None, tokens: Sequence[int], keys: torch.Tensor, values: torch.Tensor
    ) -> None:
        """Remember the KV of ``tokens``; entries that are prefixes of them are dropped."""
        tokens = tuple(tokens)
        if len(tokens) < self.min_tokens or len(tokens) > self.budget_tokens:
            return
        for (entry_adapter, entry_tokens) in self._entries:
            if entry_adapter == adapter and entry_tokens[: len(tokens)] == tokens:
                return  # a longer entry already holds these positions
        for key in [
            k for k, e in self._entries.items()
            if k[0] == adapter and tokens[: len(e.tokens)] == e.tokens
        ]:
            self._drop(key)
        self._entries[(adapter, tokens)] = _Entry(tokens, keys, values)
        self.tokens += len(tokens)
        while self.tokens > self.budget_tokens:
            self._drop(next(iter(self._entries)))

    def forget_adapter(self, adapter: str) -> None:
        for key in [k for k in self._entries if k[0] == adapter]:
            self._drop(key)

    def _drop(self, key: tuple[str | None, tuple[int, ...]]) -> None:
        entry = self._entries.pop(key)
        self.tokens -= len(entry.tokens)
