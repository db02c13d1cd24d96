"""Long-short-term visual fusion (VidMuse §4.3).

Long-term: K frames sampled evenly over the whole video, the same for every window. Short-term: the frames of
the current window. Each is refined by a small transformer; the short-term tokens then attend to the long-term
ones by cross-attention, and a linear projection brings them to the stage's model width. With the long-term
branch switched off the module is a short-term refiner plus projection.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .transformer import Transformer, TransformerConfig


@dataclass
class LSTConfig:
    """Widths of the fusion module; ``long_frames`` is K, the long-term frames sampled over the video."""

    enabled: bool = True
    width: int = 256
    n_heads: int = 4
    short_layers: int = 2
    long_layers: int = 2
    fusion_layers: int = 1
    long_frames: int = 32
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def sample_long_term(features: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """K rows spread evenly over ``features [T, D]`` -> (``[K', D]``, their indices); K' = min(K, T)."""
    t = features.shape[0]
    if t <= k:
        index = torch.arange(t)
    else:
        index = torch.linspace(0, t - 1, k).round().long()
    return features[index], index


class LSTFusion(nn.Module):
    """Fuse short-term frames with long-term context.

    forward(short ``[B, Ts, Dv]``, short_valid ``[B, Ts]``, long ``[B, Tl, Dv]``, long_valid ``[B, Tl]``)
    -> ``[B, Ts, d_model]``. Short-term rotary positions are the frames' times in units of ``1 / rate``
    seconds (relative positions only matter, so ``rate`` sets the resolution); long-term positions are indices.
    """

    def __init__(self, visual_dim: int, d_model: int, cfg: LSTConfig, rate: float = 2.0):
        super().__init__()
        self.cfg = cfg
        self.rate = rate
        self.short_in = nn.Linear(visual_dim, cfg.width)
        block = dict(d_model=cfg.width, n_heads=cfg.n_heads, d_ff=4 * cfg.width, dropout=cfg.dropout)
        self.short = Transformer(TransformerConfig(n_layers=cfg.short_layers, **block))
        if cfg.enabled:
            self.long_in = nn.Linear(visual_dim, cfg.width)
            self.long = Transformer(TransformerConfig(n_layers=cfg.long_layers, **block))
            self.fusion = Transformer(TransformerConfig(n_layers=cfg.fusion_layers, **block), cross=True)
        self.out = nn.Linear(cfg.width, d_model)

    def forward(
        self,
        short: torch.Tensor,
        short_times: torch.Tensor,
        short_valid: torch.Tensor,
        long: torch.Tensor | None = None,
        long_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # short: [B, Ts, Dv] at short_times [B, Ts] seconds; long: [B, Tl, Dv]
        s = self.short(self.short_in(short), short_times * self.rate, valid=short_valid)
        if self.cfg.enabled:
            if long is None or long_valid is None:
                raise ValueError("LST fusion is enabled: long-term features are required")
            long_pos = torch.arange(long.shape[1], device=long.device).expand(long.shape[0], -1)
            l_ = self.long(self.long_in(long), long_pos, valid=long_valid)
            s = self.fusion(s, short_times * self.rate, valid=short_valid, memory=l_, memory_valid=long_valid)
        return self.out(s)
