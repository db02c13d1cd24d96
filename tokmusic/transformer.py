"""The one transformer core behind every stage: pre-norm blocks, rotary positions, cross-attention, KV cache.

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
    """cos, sin ``[B, 1, S, head_dim/2]`` for (possibly fractional) positions ``[B, S]``."""
    freqs = base ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    angles = positions.float().unsqueeze(-1) * freqs  # [B, S, head_dim/2]
    return angles.cos().unsqueeze(1), angles.sin().unsqueeze(1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs of channels of ``x: [B, H, S, head_dim]`` by the angles of ``cos, sin``."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
    return out.type_as(x)


class Attention(nn.Module):
    """Multi-head attention; self-attention gets rotary positions and an optional KV cache."""

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

    def forward(
        self,
        x: torch.Tensor,
        *,
        memory: torch.Tensor | None = None,
        memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """x ``[B, S, D]``; memory ``[B, M, D]`` for cross-attention (or its precomputed ``memory_kv``);
        mask broadcastable to ``[B, H, S, keys]`` with True where attention is allowed."""
        q = self.heads(self.q(x))
        if memory_kv is not None:
            k, v = memory_kv
        else:
            k, v = self.project_kv(x if memory is None else memory)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        if cache is not None:
            k, v = cache.update(k, v)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal and mask is None,
            dropout_p=self.dropout if self.training else 0.0,
        )
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

    def forward(self, x, *, self_mask=None, is_causal=False, rope=None, cache=None,
                memory=None, memory_kv=None, memory_mask=None):
        x = x + self.drop(self.self_attn(self.norm1(x), mask=self_mask, is_causal=is_causal, rope=rope, cache=cache))
        if self.cross:
            h = self.norm2(x)
            x = x + self.drop(self.cross_attn(h, memory=memory, memory_kv=memory_kv, mask=memory_mask))
        return x + self.drop(self.ff(self.norm3(x)))


def key_mask(valid: torch.Tensor | None) -> torch.Tensor | None:
    """Bool ``[B, M]`` (True = real token) -> attention mask ``[B, 1, 1, M]``."""
    return None if valid is None else valid[:, None, None, :]


class Transformer(nn.Module):
    """A stack of blocks with a final norm. ``cross=True`` makes it a decoder that attends to a memory."""

    def __init__(self, cfg: TransformerConfig, cross: bool = False):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList(Block(cfg, cross) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model)

    def rope(self, positions: torch.Tensor):
        return rotary(positions, self.cfg.d_model // self.cfg.n_heads, self.cfg.rope_base)

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        *,
        valid: torch.Tensor | None = None,
        causal: bool = False,
        memory: torch.Tensor | None = None,
        memory_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x ``[B, S, D]`` at ``positions [B, S]``; ``valid [B, S]`` masks padded keys (non-causal use)."""
        rope = self.rope(positions)
        self_mask = key_mask(valid)
        if self_mask is not None:
            # A query whose keys are all padding would produce NaN; let padded rows see themselves.
            self_mask = self_mask | torch.eye(x.shape[1], dtype=torch.bool, device=x.device)
        mem_mask = key_mask(memory_valid)
        for layer in self.layers:
            x = layer(x, self_mask=self_mask, is_causal=causal, rope=rope, memory=memory, memory_mask=mem_mask)
        return self.norm(x)

    # -- incremental decoding -------------------------------------------------------------------------------
    def start(self, memory: torch.Tensor, memory_valid: torch.Tensor | None, max_len: int) -> "DecodeState":
        """Allocate caches for up to ``max_len`` steps and project the memory once for every layer."""
        b = memory.shape[0]
        heads, head_dim = self.cfg.n_heads, self.cfg.d_model // self.cfg.n_heads
        caches = [KVCache(b, heads, max_len, head_dim, dtype=memory.dtype, device=memory.device) for _ in self.layers]
        memory_kv = [layer.cross_attn.project_kv(memory) for layer in self.layers]
        return DecodeState(caches, memory_kv, key_mask(memory_valid))

    def step(self, x: torch.Tensor, positions: torch.Tensor, state: "DecodeState") -> torch.Tensor:
        """Decode ``x [B, n, D]`` that follow the steps already in ``state``; causal within the n new steps."""
        n = x.shape[1]
        past = state.caches[0].size
        mask = None
        if n > 1:
            keys = torch.arange(past + n, device=x.device)
            queries = torch.arange(past, past + n, device=x.device)
            mask = keys[None, :] <= queries[:, None]  # [n, past + n]
        rope = self.rope(positions)
        for layer, cache, kv in zip(self.layers, state.caches, state.memory_kv):
            x = layer(x, self_mask=mask, rope=rope, cache=cache, memory_kv=kv, memory_mask=state.memory_mask)
        return self.norm(x)


@dataclass
class DecodeState:
    """Per-layer KV caches and the projected memory of one incremental decode."""

    caches: list[KVCache]
    memory_kv: list[tuple[torch.Tensor, torch.Tensor]]
    memory_mask: torch.Tensor | None

    @property
    def size(self) -> int:
        return self.caches[0].size
