"""Window arithmetic shared by training and generation: which tokens and frames a span of time holds.

A window of a stage is a span of its target-token grid ``[start, end)``; in seconds it runs from ``start / rate``
to ``end / rate``. Training crops and generation windows are both cut with these functions, so a model sees
the same inputs for the same span either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


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
    """Tokens covering ``seconds`` at ``rate`` per second (at least one). The one formula for a length in
    tokens: a video's total, a generation window, an overlap and a training crop all use it."""
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


def stage_windows(cfg, total: int) -> list[Window]:
    """The windows a stage of config ``cfg`` generates ``total`` timesteps in: its window and overlap in tokens."""
    window = token_count(cfg.window, cfg.target_rate)
    overlap = round(cfg.overlap * cfg.target_rate)
    return plan_windows(total, window, min(overlap, window - 1))


def total_steps(stage, total: int) -> int:
    """Decoder steps ``stage`` takes for ``total`` timesteps window by window (for progress bars)."""
    return sum(stage.pattern.num_steps(w.length) for w in stage_windows(stage.cfg, total))
