"""Weight-free signal analysis for evaluation: resampling, log-mel, chroma, onset strength, peak picking.

Everything runs on `torch.stft` (no librosa, no torchaudio). Frame times are centred: frame t of a
hop-h analysis sits at t * h / sample_rate seconds. Resampling is tokmusic's polyphase `resample`.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ..resample import resample  # noqa: F401  (re-exported for the evaluation modules)

ANALYSIS_RATE = 22050  # music-structure analysis rate (Hz); plenty for beats, onsets and pitch classes
ONSET_HOP = 441  # 50 frames/s at ANALYSIS_RATE: 20 ms resolution for beats and onsets
ONSET_FFT = 1024
FLUX_FFT = 2048  # the onset envelope's window: 10.8 Hz bins see a sustained voice move by a semitone
FLUX_MELS = 192
CHROMA_HOP = 2205  # 10 frames/s is enough for harmony
CHROMA_FFT = 8192  # 2.7 Hz bins resolve semitones down to ~50 Hz


def to_mono(waveform) -> torch.Tensor:
    """Mix `waveform` [C, N] (or [N]) to float32 mono [N]."""
    w = torch.as_tensor(waveform, dtype=torch.float32)
    return w.mean(dim=0) if w.dim() == 2 else w.reshape(-1)


def power_spectrogram(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """|STFT|² of mono `x` [N] with a Hann window, centred frames -> [n_fft // 2 + 1, T]."""
    if x.shape[-1] < n_fft // 2 + 1:  # reflect padding needs more samples than half a window
        x = torch.nn.functional.pad(x, (0, n_fft // 2 + 1 - x.shape[-1]))
    spec = torch.stft(x, n_fft, hop_length=hop, window=torch.hann_window(n_fft), center=True, return_complex=True)
    return spec.abs().pow(2)


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int = 64, fmin: float = 30.0,
                   fmax: float | None = None) -> torch.Tensor:
    """Triangular HTK-mel filters [n_mels, n_fft // 2 + 1], each of unit area (so band energies compare).

    Cached: do not modify the returned tensor in place."""
    fmax = min(fmax or sample_rate / 2, sample_rate / 2)
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rise = (freqs[None] - lower) / (centre - lower)
    fall = (upper - freqs[None]) / (upper - centre)
    bank = np.clip(np.minimum(rise, fall), 0.0, None)
    bank /= np.maximum(bank.sum(axis=1, keepdims=True), 1e-12)
    return torch.from_numpy(bank).float()


@functools.lru_cache(maxsize=16)
def chroma_filterbank(sample_rate: int, n_fft: int, fmin: float = 55.0, fmax: float = 4200.0) -> torch.Tensor:
    """Pitch-class filters [12, n_fft // 2 + 1]: each bin goes to its nearest semitone, tapered off-centre.

    Row 0 is C. Bins between semitones count little, so a detuned partial does not smear across classes.
    """
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    bank = np.zeros((12, freqs.size))
    ok = (freqs >= fmin) & (freqs <= min(fmax, sample_rate / 2))
    midi = 69.0 + 12.0 * np.log2(freqs[ok] / 440.0)
    nearest = np.round(midi)
    weight = np.cos(np.pi * (midi - nearest)) ** 2  # 1 on the semitone, 0 half-way to the next
    bank[(nearest.astype(int) % 12), np.nonzero(ok)[0]] = weight
    return torch.from_numpy(bank).float()


def mel_db(power: torch.Tensor, sample_rate: int, n_fft: int, n_mels: int = 64, floor_db: float = 80.0) -> torch.Tensor:
    """Log-mel power in dB [n_mels, T] of a power spectrogram [n_fft // 2 + 1, T], floored `floor_db` below
    its maximum (silence stays finite)."""
    db = 10.0 * torch.log10((mel_filterbank(sample_rate, n_fft, n_mels) @ power).clamp_min(1e-10))
    return db.clamp_min(db.max() - floor_db)


def log_mel(x: torch.Tensor, sample_rate: int, n_fft: int = ONSET_FFT, hop: int = ONSET_HOP,
            n_mels: int = 64, floor_db: float = 80.0) -> torch.Tensor:
    """Log-mel power in dB [n_mels, T] of mono `x` [N] (see `mel_db`)."""
    return mel_db(power_spectrogram(x, n_fft, hop), sample_rate, n_fft, n_mels, floor_db)


def chroma(x: torch.Tensor, sample_rate: int, n_fft: int = CHROMA_FFT, hop: int = CHROMA_HOP) -> torch.Tensor:
    """Chromagram [12, T] (row 0 = C); each frame sums to 1, silent frames are all zero.

    Plain magnitudes, not log-compressed: compression lifts the overtones (the 3rd harmonic is a fifth
    up), which tips Krumhansl–Schmuckler towards the dominant key.
    """
    mag = power_spectrogram(x, n_fft, hop).sqrt()
    c = chroma_filterbank(sample_rate, n_fft) @ mag
    total = c.sum(dim=0, keepdim=True)
    # frames more than 60 dB below the loudest are silence, not a flat chord
    quiet = total <= max(float(total.max()) * 1e-3, 1e-8)
    return torch.where(quiet, torch.zeros_like(c), c / total.clamp_min(1e-12))


def spectral_flux(db: torch.Tensor) -> torch.Tensor:
    """Onset strength [T] of log-mel frames [n_mels, T]: mean positive change across bands.

    env[t] measures the energy rise between frames t-1 and t; env[0] = 0. Non-negative.
    """
    flux = torch.relu(db[:, 1:] - db[:, :-1]).mean(dim=0)
    return torch.cat([flux.new_zeros(1), flux])


def onset_strength(x: torch.Tensor, sample_rate: int, hop: int = ONSET_HOP, n_fft: int = FLUX_FFT,
                   n_mels: int = FLUX_MELS) -> torch.Tensor:
    """Onset-strength envelope [T] of mono `x` [N]: the spectral flux of a fine log-mel (192 bands over a
    2048-point window by default). Fine bands matter for sustained instruments: an organ's new chord barely
    changes the energy of a coarse band, but it moves energy between fine ones (on the demo corpus's held-out
    renderings the tempo estimate's octave errors fall from 2 in 32 with 64 bands over 1024 points to none)."""
    return spectral_flux(log_mel(x, sample_rate, n_fft, hop, n_mels=n_mels))


def pick_peaks(signal, pre_max: int = 3, post_max: int = 3, pre_avg: int = 10, post_avg: int = 10,
               delta: float = 0.07, wait: int = 3) -> np.ndarray:
    """Indices of peaks in a 1-d `signal` [T] (librosa-style rules on a signal scaled to [0, 1] by its
    99th percentile).

    A peak is the maximum of [t - pre_max, t + post_max], exceeds the mean of [t - pre_avg, t + post_avg]
    by `delta`, and lies at least `wait` frames after the previous peak.
    """
    s = np.asarray(signal, dtype=np.float64).reshape(-1)
    if s.size == 0 or s.max() - s.min() <= 1e-12:
        return np.zeros(0, dtype=np.int64)
    # scale by the 99th percentile, not the maximum: one huge peak (the first note after silence) must
    # not push every later onset under `delta`
    top = max(float(np.percentile(s, 99)), float(s.max()) * 1e-3)
    s = np.clip((s - s.min()) / max(top - s.min(), 1e-12), 0.0, 1.0)
    pad = np.pad(s, (pre_max, post_max), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(pad, pre_max + post_max + 1)
    is_max = s >= windows.max(axis=1)
    csum = np.concatenate([[0.0], np.cumsum(s)])
    idx = np.arange(s.size)
    lo, hi = np.clip(idx - pre_avg, 0, s.size), np.clip(idx + post_avg + 1, 0, s.size)
    local_mean = (csum[hi] - csum[lo]) / (hi - lo)
    candidates = np.nonzero(is_max & (s >= local_mean + delta))[0]
    peaks, last = [], -math.inf
    for t in candidates:
        if t - last > wait:
            peaks.append(t)
            last = t
    return np.asarray(peaks, dtype=np.int64)
