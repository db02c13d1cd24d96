"""Exponential moving average of a module's weights, kept in float32."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """shadow <- d * shadow + (1 - d) * weights after every optimizer step, with d warmed up as
    ``min(decay, (1 + n) / (10 + n))`` so early averages are not dominated by the random initialisation."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = float(decay)
        self.updates = 0
        self.shadow = {k: v.detach().float().clone() for k, v in module.state_dict().items() if v.is_floating_point()}

    def current_decay(self) -> float:
        n = self.updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        d = self.current_decay()
        state = module.state_dict()
        for name, value in self.shadow.items():
            weight = state[name].detach()
            if value.device != weight.device:  # the model moved (accelerator.prepare): follow it once
                value = self.shadow[name] = value.to(weight.device)
            value.lerp_(weight.float(), 1.0 - d)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, tensors: dict[str, torch.Tensor], updates: int) -> None:
        for name, value in self.shadow.items():
            value.copy_(tensors[name])
        self.updates = int(updates)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Load the averaged weights into ``module`` (same architecture)."""
        state = module.state_dict()
        for name, value in self.shadow.items():
            state[name].copy_(value.to(state[name].dtype))
