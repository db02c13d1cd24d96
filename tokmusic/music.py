"""The result of generation: a waveform with its sample rate."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class Music:
    """Generated music. ``waveform``: float32 ``[channels, samples]`` at ``sample_rate``."""

    waveform: torch.Tensor
    sample_rate: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.waveform.shape[-1] / self.sample_rate

    def save(self, path: str | os.PathLike) -> None:
        """Write a .wav or .flac file (chosen by suffix), atomically."""
        from .audio import save_audio

        save_audio(path, self.waveform, self.sample_rate)

    def mux(self, video: str | os.PathLike, out: str | os.PathLike) -> None:
        """Write ``out``: the pictures of ``video`` with this music as its only soundtrack."""
        from .audio import mux

        mux(video, self.waveform, self.sample_rate, out)

    def __repr__(self) -> str:
        c, n = self.waveform.shape
        return f"Music({self.duration:.2f} s, {self.sample_rate} Hz, {c} channel{'s' if c > 1 else ''})"
