"""A stage's inputs for one window, assembled the same way for training crops and for generation.

``Track`` holds what a whole video offers a stage (its frames, the long-term frames, the source tokens, the
control); ``window_inputs`` cuts one span ``[t0, t1)`` out of it; ``collate_inputs`` pads several spans into a
batch whose keys are ``Conditioning``'s fields. ``training/dataset.py`` and ``Pipeline.generate`` both go
through these three, so a span gives identical tensors in training and at inference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import torch

from .lst_fusion import sample_long_term
from .windows import source_window, visual_window

if TYPE_CHECKING:
    from .stage import StageConfig

# Times stay float32 whatever the stage's dtype: in bf16, 9.96 s rounds to 9.9375 s and frames land on the
# wrong positions.
TIME_FIELDS = ("visual_times", "long_times", "window_start", "source_start")


@dataclass
class Conditioning:
    """A batch of stage inputs (fields a stage does not use stay None).

    visual ``[B, Tv, Dv]`` at visual_times ``[B, Tv]`` seconds from the window start, visual_valid ``[B, Tv]``;
    long ``[B, Tl, Dv]`` at long_times ``[B, Tl]`` seconds in the video, long_valid ``[B, Tl]``; window_start
    ``[B]`` seconds from the video's start to the window's (None: 0); visual_present ``[B]`` (False -> the null
    video, in stages trained with ``visual_dropout``; None: all present); control ``[B, Dc]``, control_valid ``[B]``
    (False -> null token); source Long ``[B, Ks, Ts]``, source_valid ``[B, Ts]``, source_start ``[B]`` seconds
    from the window start to the first source token (None: 0).
    """

    visual: torch.Tensor | None = None
    visual_times: torch.Tensor | None = None
    visual_valid: torch.Tensor | None = None
    long: torch.Tensor | None = None
    long_times: torch.Tensor | None = None
    long_valid: torch.Tensor | None = None
    window_start: torch.Tensor | None = None
    visual_present: torch.Tensor | None = None
    control: torch.Tensor | None = None
    control_valid: torch.Tensor | None = None
    source: torch.Tensor | None = None
    source_valid: torch.Tensor | None = None
    source_start: torch.Tensor | None = None

    def batch_size(self) -> int:
        for value in (self.visual, self.source, self.control):
            if value is not None:
                return value.shape[0]
        raise ValueError("empty conditioning")

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Conditioning":
        """Move every tensor to ``device``; floating-point ones other than times are also cast to ``dtype``."""
        def move(name: str, v: torch.Tensor | None):
            if v is None:
                return None
            cast = dtype is not None and v.is_floating_point() and name not in TIME_FIELDS
            return v.to(device, dtype) if cast else v.to(device)
        return Conditioning(**{k: move(k, v) for k, v in vars(self).items()})

    def repeat(self, n: int) -> "Conditioning":
        return Conditioning(**{k: None if v is None else v.repeat_interleave(n, 0) for k, v in vars(self).items()})


@dataclass
class Track:
    """What one whole video offers a stage, before it is cut into windows.

    features ``[T, Dv]`` at times ``[T]`` (seconds); source Long ``[Ks, Ts]`` at ``source_rate`` per second;
    control ``[Dc]`` for every window (a prompt), or ``control_of(t0, t1) -> [Dc]`` for each window's own (the
    audio embedding of the music in the span, in training).
    """

    features: torch.Tensor | None = None
    times: torch.Tensor | None = None
    source: torch.Tensor | None = None
    source_rate: float = 0.0
    control: torch.Tensor | None = None
    control_of: Callable[[float, float], torch.Tensor] | None = None
    _long: dict = field(default_factory=dict, repr=False)

    def long_term(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The K long-term frames ``[K', Dv]`` and their times ``[K']``, sampled once for the whole video."""
        if k not in self._long:
            long, index = sample_long_term(self.features, k)
            self._long[k] = (long, self.times[index].float())
        return self._long[k]


def window_inputs(cfg: "StageConfig", track: Track, t0: float, t1: float) -> dict[str, torch.Tensor]:
    """The unbatched inputs of stage ``cfg`` for the span ``[t0, t1)`` seconds of ``track``."""
    out = {"window_start": torch.tensor(t0, dtype=torch.float32)}
    if cfg.visual_dim:
        if track.features is None:
            raise ValueError(f"stage {cfg.kind!r} needs visual features")
        out["visual"], out["visual_times"] = visual_window(track.features, track.times, t0, t1)
        if cfg.lst.enabled:
            out["long"], out["long_times"] = track.long_term(cfg.lst.long_frames)
    if cfg.control_dim:
        control = track.control_of(t0, t1) if track.control_of is not None else track.control
        if control is not None:
            out["control"] = control.reshape(-1)
    if cfg.source_vocab:
        if track.source is None:
            raise ValueError(f"stage {cfg.kind!r} needs source tokens")
        out["source"], start = source_window(track.source, track.source_rate, t0, t1)
        out["source_start"] = torch.tensor(start, dtype=torch.float32)
    return out


def pad_stack(tensors: list[torch.Tensor], dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack along a new batch dim, zero-padding ``dim`` (of the unbatched tensors) -> (batch, valid [B, L])."""
    length = max(t.shape[dim] for t in tensors)
    out, valid = [], torch.zeros(len(tensors), length, dtype=torch.bool)
    for i, t in enumerate(tensors):
        pad = [0, 0] * (t.dim() - 1 - dim % t.dim()) + [0, length - t.shape[dim]]
        out.append(torch.nn.functional.pad(t, pad))
        valid[i, : t.shape[dim]] = True
    return torch.stack(out), valid


def collate_inputs(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Pad ``window_inputs`` of several spans into a batch keyed by ``Conditioning``'s fields."""
    batch: dict[str, torch.Tensor] = {"window_start": torch.stack([s["window_start"] for s in samples])}
    if "visual" in samples[0]:
        batch["visual"], batch["visual_valid"] = pad_stack([s["visual"] for s in samples], 0)
        batch["visual_times"], _ = pad_stack([s["visual_times"] for s in samples], 0)
    if "long" in samples[0]:
        batch["long"], batch["long_valid"] = pad_stack([s["long"] for s in samples], 0)
        batch["long_times"], _ = pad_stack([s["long_times"] for s in samples], 0)
    controls = [s.get("control") for s in samples]
    if any(c is not None for c in controls):  # a sample without one gets the null control
        known = next(c for c in controls if c is not None)
        batch["control"] = torch.stack([known.new_zeros(known.shape) if c is None else c for c in controls])
        batch["control_valid"] = torch.tensor([c is not None for c in controls])
    if "source" in samples[0]:
        batch["source"], batch["source_valid"] = pad_stack([s["source"] for s in samples], -1)
        batch["source_start"] = torch.stack([s["source_start"] for s in samples])
    return batch
