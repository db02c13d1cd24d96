"""The result of generation: a waveform with its sample rate."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ConfigError
from .fileio import check_output
from .schema import shown


@dataclass
class Music:
    """Generated music. ``waveform``: float32 ``[channels, samples]`` at ``sample_rate``."""

    waveform: torch.Tensor
    sample_rate: int

    def __post_init__(self):
        w = self.waveform
        if not isinstance(w, torch.Tensor) or not w.is_floating_point() or w.dim() != 2 or not w.shape[0]:
            got = f"{w.dtype} tensor of shape {list(w.shape)}" if isinstance(w, torch.Tensor) else type(w).__name__
            raise ConfigError(f"Music: waveform must be a float tensor [channels, samples], got a {got}")
        rate = self.sample_rate
        if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
            raise ConfigError(f"Music: sample_rate must be a positive integer (Hz), got {shown(rate)}")

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.waveform.shape[-1] / self.sample_rate

    def save(self, path: str | os.PathLike) -> None:
        """Write a .wav or .flac file (chosen by suffix), atomically."""
        from .audio import SAVE_FORMATS, save_audio

        save_audio(check_output(path, "music", tuple(SAVE_FORMATS)), self.waveform, self.sample_rate)

    def mux(self, video: str | os.PathLike, out: str | os.PathLike) -> None:
        """Write ``out``: the pictures of ``video`` with this music as its only soundtrack."""
        from .audio import MUX_FORMATS, mux

        out = check_output(out, "video with music", tuple(MUX_FORMATS))
        if not isinstance(video, (str, os.PathLike)):
            raise ConfigError(f"mux: video must be the path of the input video, got {shown(video)}")
        if out.resolve() == Path(video).resolve():
            raise ConfigError(f"{out}: the output would overwrite the input video; choose another path")
        mux(video, self.waveform, self.sample_rate, out)

    def __repr__(self) -> str:
        c, n = self.waveform.shape
        return f"Music({self.duration:.2f} s, {self.sample_rate} Hz, {c} channel{'s' if c > 1 else ''})"
