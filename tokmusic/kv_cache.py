"""A static key/value cache for incremental decoding: buffers allocated once, filled step by step."""

from __future__ import annotations

import torch
from torch import nn


class KVCache(nn.Module):
    """Preallocated keys and values ``[B, H, max_len, head_dim]`` for one attention layer.

    ``update`` writes new keys/values after the ones already held and returns views of everything so far;
    ``write`` puts them at slots given by a tensor and returns the whole buffers (the caller masks the slots not
    yet written), so a decode step has the same shapes every time and can be captured in a CUDA graph. Nothing
    is reallocated during generation.
    """

    def __init__(self, batch: int, heads: int, max_len: int, head_dim: int, *, dtype: torch.dtype, device=None):
        super().__init__()
        shape = (batch, heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.size = 0

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def reset(self) -> None:
        self.size = 0

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``k, v: [B, H, n, head_dim]``; return all keys and values held ``[B, H, size, head_dim]``."""
        n = k.shape[2]
        if self.size + n > self.max_len:
            raise RuntimeError(f"KV cache full: {self.size} + {n} > {self.max_len}")
        self.k[:, :, self.size : self.size + n] = k
        self.v[:, :, self.size : self.size + n] = v
        self.size += n
        return self.k[:, :, : self.size], self.v[:, :, : self.size]

    def write(self, k: torch.Tensor, v: torch.Tensor, at: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Put ``k, v: [B, H, n, head_dim]`` at slots ``at`` (Long ``[n]``, on the cache's device); return the
        whole buffers ``[B, H, max_len, head_dim]``."""
        self.k.index_copy_(2, at, k)
        self.v.index_copy_(2, at, v)
        return self.k, self.v
