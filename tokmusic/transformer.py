"""The one transformer core behind every stage: pre-norm blocks, rotary positions, cross-attention, KV cache.

Positions are times. Self-attention rotates queries and keys by their own positions; cross-attention rotates
decoder queries by *their* times and memory keys by theirs, so a query at time t can find the memory at time t
(``Memory``). Memory entries without a time (a control token) are scored without rotation on either side.

Shapes: B batch, S query length, M memory (encoder) length, D model width, H heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .kv_cache import KVCache


@dataclass
class TransformerConfig:
    """Widths of a transformer stack. ``rope_base`` sets the rotary wavelengths."""

    d_model: int = 256
    n_heads: int = 4
    n_layers: int = 4
    d_ff: int = 1024
    dropout: float = 0.0
    rope_base: float = 10000.0


def rotary(positions: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation tables ``cos, sin: [B, 1, S, head_dim]`` for (possibly fractional) positions ``[B, S]``.

    Channels 2i and 2i+1 form a pair rotated by one angle: ``cos`` holds each pair's cosine twice and ``sin``
    its sine as (-sin, +sin), so ``apply_rotary`` is two products and a sum.
    """
    freqs = base ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    angles = (positions.float().unsqueeze(-1) * freqs).unsqueeze(1)  # [B, 1, S, head_dim/2]
    cos, sin = angles.cos(), angles.sin()
    return cos.repeat_interleave(2, -1), torch.stack((-sin, sin), -1).flatten(-2)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs of channels of ``x: [B, H, S, head_dim]`` by the angles of ``cos, sin`` (from ``rotary``):
    (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin)."""
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # (x1, x0) of every pair
    return (x.float() * cos + swapped.float() * sin).type_as(x)


@dataclass
class Memory:
    """What a decoder attends to: states ``x [B, M, D]``, ``valid [B, M]`` (False = padding, None = all real) and
    ``positions [B, M]`` in the decoder's time units (NaN = no time, e.g. a control token; None = no positions
    in cross-attention at all)."""

    x: torch.Tensor
    valid: torch.Tensor | None = None
    positions: torch.Tensor | None = None


class Attention(nn.Module):
    """Multi-head attention with rotary positions: self-attention (optionally cached) or cross-attention."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % n_heads or (d_model // n_heads) % 2:
            raise ValueError(f"d_model={d_model} must split into {n_heads} heads of even width")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.kv = nn.Linear(d_model, 2 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.dropout = dropout

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.n_heads, self.head_dim)).transpose(1, 2)  # [B, H, S, hd]

    def project_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(memory).chunk(2, dim=-1)
        return self.heads(k), self.heads(v)

    def memory_kv(self, memory: torch.Tensor, rope=None, timed: torch.Tensor | None = None):
        """Keys and values of ``memory [B, M, D]`` for cross-attention, rotated once to their positions.

        Keys of untimed entries (``timed [B, M]`` False) stay unrotated; every query then carries an unrotated
        copy of itself beside its rotated self (keys ``[B, H, M, 2 * hd]``: timed keys fill the first half,
        untimed ones the second), so an untimed score is position-free and a timed one purely relative. The
        values are then padded with zeros to the keys' width: with equal widths torch takes its fused attention
        kernel, not the generic one (2.4x faster for one decode query on a CPU); ``forward`` drops the padding.
        """
        k, v = self.project_kv(memory)
        if rope is None:
            return k, v
        rotated = apply_rotary(k, *rope)
        if timed is None:
            return rotated, v
        t = timed[:, None, :, None].to(k.dtype)
        return torch.cat([rotated * t, k * (1 - t)], -1), torch.cat([v, torch.zeros_like(v)], -1)

    def forward(
        self,
        x: torch.Tensor,
        *,
        memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
        cache_at: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x ``[B, S, D]`` at ``rope`` (its queries' positions). Self-attention without ``memory_kv``;
        cross-attention to ``memory_kv`` (from ``memory_kv()``) with it. mask broadcastable to
        ``[B, H, S, keys]``, True where attention is allowed. With ``cache``, new keys go after the cached ones,
        or to the slots ``cache_at`` when given."""
        q = self.heads(self.q(x))
        if memory_kv is None:
            k, v = self.project_kv(x)
            if rope is not None:
                q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
            if cache is not None:
                k, v = cache.update(k, v) if cache_at is None else cache.write(k, v, cache_at)
        else:
            k, v = memory_kv
            if rope is not None:
                rotated = apply_rotary(q, *rope)
                q = torch.cat([rotated, q], -1) if k.shape[-1] > q.shape[-1] else rotated
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal and mask is None, scale=self.head_dim**-0.5,
            dropout_p=self.dropout if self.training else 0.0,
        )[..., : self.head_dim]  # values padded by memory_kv: their padding scores into zeros
        return self.out(y.transpose(1, 2).flatten(2))


class Block(nn.Module):
    """Pre-norm block: self-attention, then (decoder only) cross-attention, then a GELU feed-forward."""

    def __init__(self, cfg: TransformerConfig, cross: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.self_attn = Attention(cfg.d_model, cfg.n_heads, cfg.dropout)
        self.cross = cross
        if cross:
            self.norm2 = nn.LayerNorm(cfg.d_model)
            self.cross_attn = Attention(cfg.d_model, cfg.n_heads, cfg.dropout)
        self.norm3 = nn.LayerNorm(cfg.d_model)
        self.ff = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.d_ff, cfg.d_model)
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, *, self_mask=None, is_causal=False, rope=None, cache=None, cache_at=None,
                memory_kv=None, memory_mask=None, cross_rope=None):
        x = x + self.drop(self.self_attn(self.norm1(x), mask=self_mask, is_causal=is_causal, rope=rope, cache=cache,
                                         cache_at=cache_at))
        if self.cross:
            h = self.norm2(x)
            x = x + self.drop(self.cross_attn(h, memory_kv=memory_kv, mask=memory_mask, rope=cross_rope))
        return x + self.drop(self.ff(self.norm3(x)))


def key_mask(valid: torch.Tensor | None) -> torch.Tensor | None:
    """Bool ``[B, M]`` (True = real token) -> attention mask ``[B, 1, 1, M]``."""
    return None if valid is None else valid[:, None, None, :]


class Transformer(nn.Module):
    """A stack of blocks with a final norm. ``cross=True`` makes it a decoder that attends to a ``Memory``."""

    def __init__(self, cfg: TransformerConfig, cross: bool = False):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList(Block(cfg, cross) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model)

    def rope(self, positions: torch.Tensor):
        return rotary(positions, self.cfg.d_model // self.cfg.n_heads, self.cfg.rope_base)

    def memory_kv(self, memory: Memory) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every layer's cross-attention keys and values of ``memory``, computed once."""
        rope = timed = None
        if memory.positions is not None:
            timed = ~torch.isnan(memory.positions)
            rope = self.rope(memory.positions.nan_to_num(0.0))
            timed = None if bool(timed.all()) else timed
        return [layer.cross_attn.memory_kv(memory.x, rope, timed) for layer in self.layers]

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        *,
        valid: torch.Tensor | None = None,
        causal: bool = False,
        memory: Memory | None = None,
        cross_positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x ``[B, S, D]`` at ``positions [B, S]``; ``valid [B, S]`` masks padded keys. A decoder attends to
        ``memory`` with its queries at ``cross_positions [B, S]`` (default: ``positions``)."""
        rope = self.rope(positions)
        s = x.shape[1]
        self_mask = key_mask(valid)
        if causal and self_mask is not None:
            self_mask = self_mask & torch.ones(s, s, dtype=torch.bool, device=x.device).tril()
        if self_mask is not None:
            # A query whose keys are all padding would produce NaN; let padded rows see themselves.
            self_mask = self_mask | torch.eye(s, dtype=torch.bool, device=x.device)
        memory_kv, mem_mask, cross_rope = [None] * len(self.layers), None, None
        if memory is not None:
            memory_kv, mem_mask = self.memory_kv(memory), key_mask(memory.valid)
            if memory.positions is not None:
                cross_rope = rope if cross_positions is None else self.rope(cross_positions)
        for layer, kv in zip(self.layers, memory_kv):
            x = layer(x, self_mask=self_mask, is_causal=causal, rope=rope, memory_kv=kv, memory_mask=mem_mask,
                      cross_rope=cross_rope)
        return self.norm(x)

    # -- incremental decoding -------------------------------------------------------------------------------
    def start(self, memory: Memory, max_len: int, cross_positions: torch.Tensor | None = None) -> "DecodeState":
        """Allocate caches for up to ``max_len`` steps, project the memory once for every layer and tabulate the
        rotations ``step_at`` reads: of slots 0..max_len-1 and, for a memory with times, of ``cross_positions
        [max_len]`` (where each step's query meets the memory; default: the slot itself)."""
        b = memory.x.shape[0]
        heads, head_dim = self.cfg.n_heads, self.cfg.d_model // self.cfg.n_heads
        device = memory.x.device
        caches = [KVCache(b, heads, max_len, head_dim, dtype=memory.x.dtype, device=device) for _ in self.layers]
        slots = self.rope(torch.arange(max_len, device=device, dtype=torch.float32)[None])  # [1, 1, max_len, hd]
        cross = None
        if memory.positions is not None:
            cross = slots if cross_positions is None else self.rope(cross_positions.float().view(1, max_len))
        return DecodeState(caches, self.memory_kv(memory), key_mask(memory.valid), slots, cross)

    def step(self, x: torch.Tensor, positions: torch.Tensor, state: "DecodeState",
             cross_positions: torch.Tensor | None = None) -> torch.Tensor:
        """Decode ``x [B, n, D]`` at ``positions [B, n]`` that follow the steps already in ``state``; causal within
        the n new steps. Queries meet the memory at ``cross_positions [B, n]`` (default: ``positions``)."""
        n = x.shape[1]
        past = state.caches[0].size
        mask = None
        if n > 1:
            keys = torch.arange(past + n, device=x.device)
            queries = torch.arange(past, past + n, device=x.device)
            mask = keys[None, :] <= queries[:, None]  # [n, past + n]
        rope = self.rope(positions)
        cross_rope = None
        if state.cross_rope is not None:
            cross_rope = rope if cross_positions is None else self.rope(cross_positions)
        for layer, cache, kv in zip(self.layers, state.caches, state.memory_kv):
            x = layer(x, self_mask=mask, rope=rope, cache=cache, memory_kv=kv, memory_mask=state.memory_mask,
                      cross_rope=cross_rope)
        return self.norm(x)

    def step_at(self, x: torch.Tensor, at: torch.Tensor, state: "DecodeState") -> torch.Tensor:
        """Decode one step ``x [B, 1, D]`` at cache slot and position ``at`` (Long ``[1]`` on x's device): the
        same as ``step``, but every shape is fixed (attention covers the whole cache, masked past ``at``) and the
        rotations come from the tables made by ``start``, so a caller can capture it in a CUDA graph and replay
        it with a new ``at``. Leaves ``state.size`` as it was."""
        slots = torch.arange(state.caches[0].max_len, device=x.device)
        mask = (slots <= at)[None, None, None, :]
        rope = tuple(table.index_select(2, at) for table in state.slot_rope)
        cross_rope = None if state.cross_rope is None else tuple(t.index_select(2, at) for t in state.cross_rope)
        for layer, cache, kv in zip(self.layers, state.caches, state.memory_kv):
            x = layer(x, self_mask=mask, rope=rope, cache=cache, cache_at=at, memory_kv=kv,
                      memory_mask=state.memory_mask, cross_rope=cross_rope)
        return self.norm(x)


@dataclass
class DecodeState:
    """Per-layer KV caches and the projected memory of one incremental decode."""

    caches: list[KVCache]
    memory_kv: list[tuple[torch.Tensor, torch.Tensor]]
    memory_mask: torch.Tensor | None
    slot_rope: tuple[torch.Tensor, torch.Tensor]  # rotations of slots 0..max_len-1, [1, 1, max_len, hd] each
    # where each slot's query meets the memory; None: the memory has no positions, queries are not rotated there
    cross_rope: tuple[torch.Tensor, torch.Tensor] | None

    @property
    def size(self) -> int:
        return self.caches[0].size
