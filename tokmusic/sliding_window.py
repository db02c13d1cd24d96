"""Sliding-window generation for any length (VidMuse §4.6).

A stage generates ``window`` seconds at a time. The last ``overlap`` seconds of window i are the prompt of
window i+1, so each window after the first adds ``window - overlap`` new seconds; the last window is moved back
to full length where the sequence allows, so it has as much context as the others. Long-term visual features
stay the same for the whole video; short-term features and source tokens are cut to each window
(``windows.py``, ``conditioning.py``).
"""

from __future__ import annotations

from typing import Callable

import torch

from .conditioning import Conditioning
from .sampling import SamplingParams
from .stage import Stage
from .windows import stage_windows


def generate_long(
    stage: Stage,
    total: int,
    condition: Callable[[float, float], Conditioning],
    params: SamplingParams,
    generator: torch.Generator | None = None,
    on_step: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Generate ``total`` timesteps of ``stage``'s target window by window -> Long ``[K, total]``.

    ``condition(t0, t1)`` returns the stage's inputs for the window from t0 to t1 seconds.
    """
    return generate_long_batch(stage, total, condition, params, [generator], on_step)[0]


def generate_long_batch(
    stage: Stage,
    total: int,
    condition: Callable[[float, float], Conditioning],
    params: SamplingParams,
    generators: list[torch.Generator | None],
    on_step: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """N samples of ``total`` timesteps, decoded together window by window -> Long ``[N, K, total]``.

    ``condition(t0, t1)`` returns the inputs of the window from t0 to t1 seconds, batch 1 (all samples) or N
    (one per sample); sample n draws from ``generators[n]`` (``Stage.generate_batch``).
    """
    rate = stage.cfg.target_rate
    out = torch.zeros(len(generators), stage.cfg.target_codebooks, total, dtype=torch.long)
    for w in stage_windows(stage.cfg, total):
        cond = condition(w.start / rate, w.end / rate)
        prompts = out[..., w.start : w.start + w.prompt]
        out[..., w.start : w.end] = stage.generate_batch(cond, w.length, prompts, params, generators, on_step)
    return out
