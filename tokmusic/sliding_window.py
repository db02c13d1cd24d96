"""Sliding-window generation for any length (VidMuse §4.6).

A stage generates ``window`` seconds at a time. The last ``overlap`` seconds of window i are the prompt of
window i+1, so each window after the first adds ``window - overlap`` new seconds; the last window is moved back
to full length where the sequence allows, so it has as much context as the others. Long-term visual features
stay the same for the whole video; short-term features and source tokens are cut to each window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .sampling import SamplingParams
from .stage import Conditioning, Stage


@dataclass(frozen=True)
class Window:
    """Tokens ``[start, end)`` of one window; the first ``prompt`` of them are already known."""

    start: int
    end: int
    prompt: int

    @property
    def length(self) -> int:
        return self.end - self.start


def plan_windows(total: int, window: int, overlap: int) -> list[Window]:
    """Cover ``total`` tokens with windows of ``window`` tokens overlapping by ``overlap``."""
    if window < 1 or not 0 <= overlap < window:
        raise ValueError(f"need window >= 1 and 0 <= overlap < window, got {window}, {overlap}")
    windows: list[Window] = []
    done = 0
    start = 0
    while done < total:
        end = min(start + window, total)
        if end == total and windows:
            start = max(0, total - window)
        windows.append(Window(start, end, done - start))
        done = end
        start = end - overlap
    return windows


def token_count(seconds: float, rate: float) -> int:
    """Tokens covering ``seconds`` at ``rate`` per second (at least one)."""
    return max(1, math.ceil(seconds * rate - 1e-6))


def visual_window(features: torch.Tensor, timestamps: torch.Tensor, t0: float, t1: float):
    """The frames with ``t0 <= time < t1`` -> (features ``[n, D]``, times from t0 ``[n]``); at least one frame."""
    inside = (timestamps >= t0 - 1e-6) & (timestamps < t1 - 1e-6)
    if not inside.any():  # a window shorter than the frame interval: take the frame showing at t0
        inside = torch.zeros_like(inside)
        inside[int(torch.searchsorted(timestamps, torch.tensor(t0, dtype=timestamps.dtype), right=True)) - 1] = True
    return features[inside], (timestamps[inside] - t0).float()


def token_span(total: int, rate: float, t0: float, t1: float) -> tuple[int, int]:
    """Indices ``[i0, i1)`` of the tokens (of ``total`` at ``rate`` per second) in ``[t0, t1)``; at least one."""
    i0 = min(round(t0 * rate), total - 1)
    return i0, max(min(round(t1 * rate), total), i0 + 1)


def token_window(tokens: torch.Tensor, rate: float, t0: float, t1: float) -> torch.Tensor:
    """Tokens ``[K, T]`` at ``rate`` per second -> those of ``[t0, t1)`` ``[K, n]`` (at least one)."""
    i0, i1 = token_span(tokens.shape[-1], rate, t0, t1)
    return tokens[:, i0:i1]


def source_window(tokens: torch.Tensor, rate: float, t0: float, t1: float) -> tuple[torch.Tensor, float]:
    """Source tokens of ``[t0, t1)`` and the time of the first one from t0 (seconds; off the window's grid
    when the rates differ, e.g. semantic tokens at 25/s for a coarse window starting on an odd 50/s frame)."""
    i0, i1 = token_span(tokens.shape[-1], rate, t0, t1)
    return tokens[:, i0:i1], i0 / rate - t0


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
    rate = stage.cfg.target_rate
    out = torch.zeros(stage.cfg.target_codebooks, total, dtype=torch.long)
    for w in stage_windows(stage, total):
        cond = condition(w.start / rate, w.end / rate)
        prompt = out[:, w.start : w.start + w.prompt]
        out[:, w.start : w.end] = stage.generate(cond, w.length, prompt, params, generator, on_step)
    return out


def stage_windows(stage: Stage, total: int) -> list[Window]:
    """The windows ``stage`` generates ``total`` timesteps in: its card's window and overlap in tokens."""
    cfg = stage.cfg
    window = max(1, round(cfg.window * cfg.target_rate))
    return plan_windows(total, window, min(round(cfg.overlap * cfg.target_rate), window - 1))


def total_steps(stage: Stage, total: int) -> int:
    """Decoder steps ``generate_long`` takes for ``total`` timesteps (for progress bars)."""
    return sum(stage.pattern.num_steps(w.length) for w in stage_windows(stage, total))
