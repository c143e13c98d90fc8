"""One forward pass for a batch of requests that sit at different positions.

transformers' ``model(...)`` assumes the rows of a batch share one cache layout. The
runtime needs more: every row has its own length, its KV lives in its own slot of the
:class:`~botkit.model.kv_cache.KVPool`, and every row may use its own LoRA adapter. So
this module runs the decoder itself, layer by layer, with the model's own modules
(embeddings, norms, projections, rotary embedding, MLP activation) and weights:

    x = embed(tokens)                                   # (B, T, C)
    for each layer:
        q, k, v = proj(norm(x)) (+ LoRA per row)        # (B, H|Hkv, T, D)
        rotate q, k; write k, v into the pool slots
        attend over the pool's first L positions        # (B, H, T, D)
        x = x + o_proj(...); x = x + mlp(norm(x))
    logits = lm_head(norm(x)[last valid position])      # (B, vocab)

It supports the Llama family (Llama, Mistral, Qwen2, SmolLM): pre-norm blocks with
``q/k/v/o_proj`` and a gated ``gate/up/down_proj`` MLP, grouped-query attention and
rotary position embeddings.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F  # noqa: N812 (the usual name)

from botkit.model.kv_cache import KVPool

SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2"})


class LoraDeltas(Protocol):
    """What the forward pass needs from a LoRA bank (see ``lora_bank.LoraBank``)."""

    def delta(
        self, layer: int, module: str, x: torch.Tensor, rows: torch.Tensor
    ) -> torch.Tensor | None: ...


def supports(model: Any) -> bool:
    """Whether :class:`BatchedForward` can run this transformers model."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in SUPPORTED_MODEL_TYPES:
        return False
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return False  # attention over a window: this runtime attends to every position
    try:
        layer = model.model.layers[0]
        needed = (
            layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
            layer.self_attn.o_proj, layer.mlp.gate_proj, layer.mlp.up_proj,
            layer.mlp.down_proj, layer.mlp.act_fn, layer.input_layernorm,
            layer.post_attention_layernorm, model.model.rotary_emb, model.model.norm,
        )
    except AttributeError:
        return False
    return all(part is not None for part in needed) and not hasattr(layer.self_attn, "q_norm")


class BatchedForward:
    """Runs a Llama-family model over rows at their own positions, KV in a pool."""

    def __init__(self, model: Any, pool: KVPool) -> None:
        config = model.config
        self.model = model
        self.decoder = model.model
        self.layers = list(model.model.layers)
        self.pool = pool
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scaling = self.layers[0].self_attn.scaling
        # PyTorch's CPU attention kernel is several times slower in bf16 than in fp32
        # (3.4 ms vs 0.5 ms per layer for a 16-row decode step here), so on the CPU the
        # attention runs in fp32; the projections, which dominate, stay in bf16.
        weight = self.layers[0].self_attn.q_proj.weight
        low_precision_cpu = weight.device.type == "cpu" and weight.dtype != torch.float32
        self.attention_dtype = torch.float32 if low_precision_cpu else None

    def _linear(
        self,
        layer: int,
        name: str,
        module: torch.nn.Linear,
        x: torch.Tensor,
        lora: LoraDeltas | None,
        rows: torch.Tensor | None,
    ) -> torch.Tensor:
        y = module(x)
        if lora is not None and rows is not None:
            delta = lora.delta(layer, name, x, rows)
            if delta is not None:
                y = y + delta
        return y

    @torch.inference_mode()
    def __call__(
        self,
        tokens: torch.Tensor,
        start: torch.Tensor,
        lengths: torch.Tensor,
        slots: torch.Tensor,
        *,
        contiguous: bool,
        lora: LoraDeltas | None = None,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits of each row's last valid token.

        tokens (B, T): new tokens, right-padded; start (B,): position of each row's
        first new token (= tokens already in its slot); lengths (B,): valid new tokens
        per row; slots (B,): the pool slot of each row, which ``contiguous`` says are
        ``slots[0], slots[0]+1, ...`` (a view instead of a gather); rows (B,): LoRA
        adapter index per row for ``lora``. Returns (B, vocab) in float32.
        """
        B, T = tokens.shape
        device = tokens.device
        steps = torch.arange(T, device=device)  # (T,)
        positions = start[:, None] + steps[None, :]  # (B, T)
        total = int((start + lengths).max())  # positions each row attends to, at most
        key_positions = torch.arange(total, device=device)  # (L,)
        # A query at position p sees keys 0..p of its own row: causal, per row.
        mask = key_positions[None, None, None, :] <= positions[:, None, :, None]  # (B,1,T,L)

        x = self.decoder.embed_tokens(tokens)  # (B, T, C)
        cos, sin = self.decoder.rotary_emb(x, positions)  # (B, T, D) each
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, T, D)
        first = int(slots[0])
        for index, layer in enumerate(self.layers):
            attn, mlp = layer.self_attn, layer.mlp
            h = layer.input_layernorm(x)
            q = self._linear(index, "q_proj", attn.q_proj, h, lora, rows)
            k = self._linear(index, "k_proj", attn.k_proj, h, lora, rows)
            v = self._linear(index, "v_proj", attn.v_proj, h, lora, rows)
            q = q.view(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
            k = k.view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
            v = v.view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)

            pool_k, pool_v = self.pool.keys[index], self.pool.values[index]  # (S, Hkv, Lcap, D)
            if T == 1:  # decode: one new position per row, written in one indexed copy
                pool_k[slots, :, start] = k[:, :, 0]
                pool_v[slots, :, start] = v[:, :, 0]
            else:
                for row in range(B):
                    slot, begin, n = int(slots[row]), int(start[row]), int(lengths[row])
                    pool_k[slot, :, begin : begin + n] = k[row, :, :n]
                    pool_v[slot, :, begin : begin + n] = v[row, :, :n]
            if contiguous:
                keys = pool_k[first : first + B, :, :total]  # (B, Hkv, L, D), a view
                values = pool_v[first : first + B, :, :total]
            else:
                keys = pool_k[slots, :, :total]  # a gathered copy
                values = pool_v[slots, :, :total]

            out = self._attend(q, keys, values, mask)  # (B, H, T, D)
            out = out.transpose(1, 2).reshape(B, T, self.heads * self.head_dim)  # (B, T, H*D)
            x = x + self._linear(index, "o_proj", attn.o_proj, out, lora, rows)

            h = layer.post_attention_layernorm(x)
            gate = self._linear(index, "gate_proj", mlp.gate_proj, h, lora, rows)
            up = self._linear(index, "up_proj", mlp.up_proj, h, lora, rows)
            hidden = mlp.act_fn(gate) * up  # (B, T, F)
            x = x + self._linear(index, "down_proj", mlp.down_proj, hidden, lora, rows)

        last = x[torch.arange(B, device=device), lengths - 1]  # (B, C)
        return self.model.lm_head(self.decoder.norm(last)).float()  # (B, vocab)

    def _attend(
        self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Grouped-query attention of q (B, H, T, D) over keys/values (B, Hkv, L, D)."""
        if self.attention_dtype is None:
            return F.scaled_dot_product_attention(
                q, keys, values, attn_mask=mask, scale=self.scaling, enable_gqa=True
            )
        dtype = self.attention_dtype
        out = F.scaled_dot_product_attention(
            q.to(dtype), keys.to(dtype), values.to(dtype),
            attn_mask=mask, scale=self.scaling, enable_gqa=True,
        )
        return out.to(q.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding, as transformers' ``apply_rotary_pos_emb``."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin
