"""Semantic tokens without a neural model: k-means ids over frames of chroma + log-mel + onset features.

    tok = spectral_tokenizer(vocab_size=512)            # random centroids; fit them with recipes/fit_semantic.py
    ids = tok.tokenize(waveform, sample_rate)          # [C, N] at any rate -> Long [T], T = tok.num_tokens(N, rate)

A drop-in for ``SemanticTokenizer`` (same methods; config type "spectral_kmeans") where no self-supervised audio
model is available offline. Each frame (``frame_rate`` per second, 25 by default) is

    chroma  [12]        pitch-class magnitudes of a 4096-point STFT (row 0 = C), log-compressed, unit length
    mel     [n_mels]    log-mel shape: band dB minus their mean, / (10 sqrt(n_mels)) (timbre, not loudness)
    level   [1]         the frame's power in dB re a full-scale sine, (dB + 50) / 25, clipped to [-2, 2]
    onset   [1]         spectral flux: mean dB rise over the previous frame / 10, clipped to [0, 3] (optional)

The blocks are scaled so that each moves a frame by about one unit, so harmony, timbre and loudness all shape the
clusters. Time alignment is SemanticTokenizer's: token t stands for [t, t + 1) / frame_rate seconds, every
analysis window is centred on that interval, and N samples give round(N * frame_rate / rate) tokens.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .centroid_tokens import CentroidTokenizer
from .errors import ConfigError
from .evaluation.spectral import chroma_filterbank, mel_filterbank
from .schema import Field, Registry, count, size

CONFIG_TYPE = "spectral_kmeans"
CHROMA_FFT = 4096  # 3.9 Hz bins at 16 kHz: semitones apart from ~65 Hz up
QUIET_DB = -60.0  # frames whose power is below this (dB re a full-scale sine) have no chroma
CHROMA_GAIN = 100.0  # log1p(gain * magnitude): compression of the chroma magnitudes


class SpectralTokenizer(CentroidTokenizer):
    """k-means ids over hand-made spectral frames (see the module docstring); centroids [K, dim] or None."""

    def __init__(self, centroids: torch.Tensor | None = None, *, sample_rate: int = 16_000, frame_rate: int = 25,
                 n_mels: int = 32, onset: bool = True, device: torch.device | str = "cpu") -> None:
        for name, value in (("sample_rate", sample_rate), ("frame_rate", frame_rate), ("n_mels", n_mels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"spectral tokenizer: {name} must be a positive integer, got {value!r}")
        if sample_rate % frame_rate:
            raise ConfigError(f"spectral tokenizer: sample_rate {sample_rate} is not a multiple of frame_rate "
                              f"{frame_rate}; the hop must be a whole number of samples")
        self.sample_rate, self.n_mels, self.onset = sample_rate, n_mels, bool(onset)
        self.frame_rate = float(frame_rate)
        self.stride = sample_rate // frame_rate  # hop in samples
        self.mel_fft = max(1024, 1 << math.ceil(math.log2(self.stride)))  # a window at least one hop long
        self.chroma_fft = max(CHROMA_FFT, self.mel_fft)
        self.dim = 12 + n_mels + 1 + int(self.onset)
        self._device = torch.device(device)
        self.centroids = None if centroids is None else self._check_centroids(centroids, "centroids")

    @property
    def device(self) -> torch.device:
        return self._device

    def feature_note(self) -> str:
        return (f"this tokenizer's frames are {self.dim} wide (12 chroma + {self.n_mels} mel + level"
                f"{' + onset' if self.onset else ''})")

    def to(self, device: torch.device | str) -> SpectralTokenizer:
        """Compute on `device` from now on (in place); returns self."""
        self._device = torch.device(device)
        if self.centroids is not None:
            self.centroids = self.centroids.to(self._device)
        return self

    def with_centroids(self, centroids: torch.Tensor) -> SpectralTokenizer:
        """A tokenizer with the same settings and new centroids [K, dim]."""
        return SpectralTokenizer(centroids, sample_rate=self.sample_rate, frame_rate=int(self.frame_rate),
                                 n_mels=self.n_mels, onset=self.onset, device=self._device)

    def _frames(self, x: torch.Tensor, n_fft: int, total: int) -> torch.Tensor:
        """|STFT| [n_fft // 2 + 1, total] of x [N], frame t centred on [t, t + 1) * stride, scaled so that a
        full-scale sine peaks at 1."""
        left = n_fft // 2 - self.stride // 2
        needed = (total - 1) * self.stride + n_fft
        x = torch.nn.functional.pad(x, (left, max(0, needed - left - x.shape[-1])))[:needed]
        window = torch.hann_window(n_fft, device=x.device)
        spec = torch.stft(x, n_fft, hop_length=self.stride, window=window, center=False, return_complex=True)
        return spec.abs() / (n_fft / 4)

    @torch.inference_mode()
    def features(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Waveform [C, N] (or [N]) at `sample_rate` -> float32 [T, dim] frames (mono, resampled)."""
        total = self.num_tokens(waveform.shape[-1] if isinstance(waveform, torch.Tensor) else 0, sample_rate)
        x = self._mono(waveform, sample_rate)
        if total == 0:
            return torch.zeros(0, self.dim, device=self._device)
        # loudness: dB of the frame's power re a full-scale sine (whose Hann main lobe sums to 1.5)
        power = self._frames(x, self.mel_fft, total).pow(2)  # [F, T]
        frame_db = 10 * torch.log10(power.sum(0) / 1.5 + 1e-10)  # [T]
        level = ((frame_db + 50) / 25).clamp(-2, 2)
        # mel shape: band dB (floored 80 dB below the frame) minus their mean: timbre without loudness
        bank = mel_filterbank(self.sample_rate, self.mel_fft, self.n_mels).to(x.device)
        db = 10 * torch.log10(bank @ power + 1e-12)  # [n_mels, T]
        db = torch.maximum(db, db.max(0).values - 80)
        shape = (db - db.mean(0)) / (10 * math.sqrt(self.n_mels))
        # chroma: log-compressed, unit length; none in quiet frames
        chroma = chroma_filterbank(self.sample_rate, self.chroma_fft).to(x.device) @ self._frames(
            x, self.chroma_fft, total)
        chroma = torch.log1p(CHROMA_GAIN * chroma)
        chroma = chroma / chroma.norm(dim=0, keepdim=True).clamp_min(1e-8)
        chroma = torch.where(frame_db[None] < QUIET_DB, torch.zeros_like(chroma), chroma)
        blocks = [chroma, shape, level[None]]
        if self.onset:
            rise = torch.relu(db[:, 1:] - db[:, :-1]).mean(0) / 10
            blocks.append(torch.cat([rise.new_zeros(1), rise]).clamp(0, 3)[None])
        return torch.cat(blocks).T.float().contiguous()

    # ----------------------------------------------------------------------------------------------- storage
    def to_config(self) -> dict:
        """JSON-able settings; the centroids are written by save()."""
        return {"type": CONFIG_TYPE, "sample_rate": self.sample_rate, "frame_rate": int(self.frame_rate),
                "n_mels": self.n_mels, "onset": self.onset, "vocab_size": self.vocab_size, "dim": self.dim}

    def save(self, directory: Path) -> None:
        """Write the centroids to directory/"centroids.safetensors" (nothing else is needed)."""
        self._save_centroids(directory)

    @classmethod
    def load(cls, directory: Path, config: dict) -> SpectralTokenizer:
        """Rebuild a tokenizer saved by save() with the settings of to_config()."""
        directory = Path(directory)
        options = {k: config[k] for k in ("sample_rate", "frame_rate", "n_mels", "onset") if k in config}
        return cls(**options)._load_centroids(directory, config)


FIELDS = {"sample_rate": size(), "frame_rate": size(1000), "n_mels": size(256), "onset": Field(bool),
          "vocab_size": count(), "dim": size()}


def register(registry: Registry) -> None:
    """Add the "spectral_kmeans" type to the semantic tokenizer registry."""
    registry.register(CONFIG_TYPE, SpectralTokenizer.load, FIELDS)


def spectral_tokenizer(vocab_size: int = 1024, *, seed: int = 0, **settings) -> SpectralTokenizer:
    """A fresh tokenizer with ``vocab_size`` random centroids (0: none); fit real ones with k-means
    (``recipes/fit_semantic.py``). ``settings`` go to SpectralTokenizer (sample_rate, frame_rate, n_mels, onset)."""
    tokenizer = SpectralTokenizer(**settings)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 0:
        raise ConfigError(f"vocab_size must be an integer >= 0, got {vocab_size!r}")
    if vocab_size == 0:
        return tokenizer
    g = torch.Generator().manual_seed(seed)
    return tokenizer.with_centroids(0.3 * torch.randn(vocab_size, tokenizer.dim, generator=g))
