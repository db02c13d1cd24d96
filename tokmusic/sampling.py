"""Choosing the next token from logits: temperature, top-k, top-p and classifier-free guidance."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch

from .errors import ConfigError


@dataclass(frozen=True)
class SamplingParams:
    """How one stage samples. temperature 0 means greedy; top_k 0 and top_p 1.0 mean no truncation;
    cfg_scale 1.0 means no guidance (only stages with a control input use it)."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    cfg_scale: float = 1.0

    def __post_init__(self):
        for name in ("temperature", "top_p", "cfg_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int):
            raise ConfigError(f"top_k must be an integer, got {self.top_k!r}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.cfg_scale < 0:
            raise ConfigError(f"cfg_scale must be >= 0, got {self.cfg_scale}")

    def update(self, **overrides) -> "SamplingParams":
        names = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"unknown sampling option(s) {unknown}; known: {sorted(names)}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def guide(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance on logits: uncond + scale * (cond - uncond)."""
    return uncond + scale * (cond - uncond)


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one id per row of ``logits [N, V]`` -> Long ``[N]``."""
    logits = logits.float()
    if params.temperature == 0:
        return logits.argmax(-1)
    logits = logits / params.temperature
    if 0 < params.top_k < logits.shape[-1]:
        kth = logits.topk(params.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        drop = cumulative - sorted_logits.softmax(-1) >= params.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
