"""Music structure of one clip with no learned weights: tempo, beats, onsets, section changes, key, loudness.

    s = analyze_music(waveform, sample_rate)      # waveform [C, N] or [N]
    s.tempo, s.beats, s.onsets, s.sections, s.key
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .beats import LISTENER_PRIOR, estimate_tempo, track_beats
from .key import Key, estimate_key
from .spectral import (ANALYSIS_RATE, CHROMA_HOP, ONSET_FFT, ONSET_HOP, chroma, mel_db, onset_strength, pick_peaks,
                       power_spectrogram, resample, to_mono)

SECTION_RATE = 5.0  # frames/s of the self-similarity analysis behind section changes


@dataclass
class MusicStructure:
    """What `analyze_music` finds in one clip. Times are seconds from the clip's start."""

    duration: float
    tempo: float  # BPM, 0.0 when no pulse is found
    beats: np.ndarray  # float64 [B]
    onsets: np.ndarray  # float64 [O]
    sections: np.ndarray  # float64 [S], section boundaries (not including 0 and the end)
    key: Key | None
    chroma_mean: np.ndarray  # float64 [12], sums to 1 (all zero for silence)
    loudness_db: float  # RMS level in dBFS
    centroid_hz: float  # mean spectral centroid
    envelope: np.ndarray = field(repr=False)  # onset strength [T] at `fps`
    fps: float = ANALYSIS_RATE / ONSET_HOP

    @property
    def onset_rate(self) -> float:
        """Onsets per second."""
        return len(self.onsets) / self.duration if self.duration > 0 else 0.0

    def summary(self) -> dict:
        """JSON-able per-clip numbers (times rounded to milliseconds)."""
        return {
            "duration": round(self.duration, 3),
            "tempo_bpm": round(self.tempo, 2),
            "beats": [round(float(t), 3) for t in self.beats],
            "sections": [round(float(t), 3) for t in self.sections],
            "key": self.key.to_dict() if self.key else None,
            "loudness_db": round(self.loudness_db, 2),
            "centroid_hz": round(self.centroid_hz, 1),
            "onset_rate": round(self.onset_rate, 3),
        }


def novelty_curve(features: torch.Tensor, kernel_frames: int) -> np.ndarray:
    """Foote novelty [T] of features [D, T]: a Gaussian-tapered checkerboard kernel slid along the
    diagonal of the cosine self-similarity matrix. High where the past and the future differ."""
    f = features - features.mean(dim=1, keepdim=True)
    f = f / f.std(dim=1, keepdim=True).clamp_min(1e-6)
    f = torch.nn.functional.normalize(f.double(), dim=0)
    ssm = (f.T @ f).numpy()  # [T, T]
    half = max(1, kernel_frames // 2)
    ax = np.arange(-half, half) + 0.5
    taper = np.exp(-0.5 * (ax / (0.5 * half)) ** 2)
    # +1 within the past and within the future, -1 across them: high where each side is self-similar
    # but unlike the other
    kernel = np.outer(np.sign(ax), np.sign(ax)) * np.outer(taper, taper)
    padded = np.pad(ssm, half, mode="edge")
    n = ssm.shape[0]
    return np.array([np.sum(kernel * padded[t : t + 2 * half, t : t + 2 * half]) for t in range(n)])


def section_changes(mel: torch.Tensor, chroma_frames: torch.Tensor, kernel_seconds: float = 6.0) -> np.ndarray:
    """Section boundaries (seconds) from log-mel dB [n_mels, T] at 50 frames/s and chroma [12, T'] at
    10 frames/s: peaks of timbre+harmony novelty at least `kernel_seconds / 2` apart, away from the edges."""
    mel5 = _pool(mel, int(round(ANALYSIS_RATE / ONSET_HOP / SECTION_RATE)))
    chroma5 = _pool(chroma_frames, int(round(ANALYSIS_RATE / CHROMA_HOP / SECTION_RATE)))
    t = min(mel5.shape[1], chroma5.shape[1])
    kernel = int(round(kernel_seconds * SECTION_RATE))
    if t < kernel + 2:
        return np.zeros(0)
    features = torch.cat([mel5[:, :t] / 10.0, 3.0 * chroma5[:, :t]])  # dB steps and chroma shares, comparable
    nov = novelty_curve(features, kernel)
    half = kernel // 2
    nov[:half] = nov[-half:] = nov.min()  # a kernel hanging over an edge sees padding, not music
    peaks = pick_peaks(nov, pre_max=half, post_max=half, pre_avg=kernel, post_avg=kernel, delta=0.25, wait=half)
    peaks = peaks[(peaks >= half) & (peaks < t - half)]
    return peaks / SECTION_RATE


def _pool(frames: torch.Tensor, factor: int) -> torch.Tensor:
    """Average [D, T] over non-overlapping groups of `factor` frames -> [D, ceil(T / factor)]."""
    return torch.nn.functional.avg_pool1d(frames[None].float(), factor, ceil_mode=True)[0]


def analyze_music(waveform, sample_rate: int, sections: bool = True,
                  tempo_prior: tuple[float, float] = LISTENER_PRIOR) -> MusicStructure:
    """Tempo, beats, onsets, section changes, key, loudness and brightness of `waveform` [C, N] or [N].

    ``tempo_prior`` (BPM, width in octaves) is the tempo estimate's log-normal prior (``estimate_tempo``): it
    settles which octave of an ambiguous pulse is the beat."""
    x = resample(to_mono(waveform), sample_rate, ANALYSIS_RATE)
    sr = ANALYSIS_RATE
    fps = sr / ONSET_HOP
    power = power_spectrogram(x, ONSET_FFT, ONSET_HOP)  # [F, T], shared by section changes and brightness
    env = onset_strength(x, sr).numpy().astype(np.float64)
    tempo = estimate_tempo(env, fps, *tempo_prior)
    chroma_frames = chroma(x, sr)
    profile = chroma_frames.double().mean(dim=1).numpy()
    total = profile.sum()
    profile = profile / total if total > 0 else profile
    rms = float(x.double().pow(2).mean().sqrt()) if x.numel() else 0.0
    freqs = torch.linspace(0, sr / 2, power.shape[0])
    mag = power.sqrt()
    weight = mag.sum(dim=0)
    voiced = weight > 1e-6
    centroid = float(((freqs[:, None] * mag).sum(dim=0)[voiced] / weight[voiced]).mean()) if voiced.any() else 0.0
    return MusicStructure(
        duration=x.shape[0] / sr,
        tempo=float(tempo),
        beats=track_beats(env, fps, tempo) if tempo > 0 else np.zeros(0),
        onsets=pick_peaks(env) / fps,
        sections=section_changes(mel_db(power, sr, ONSET_FFT), chroma_frames) if sections else np.zeros(0),
        key=estimate_key(profile) if total > 0 else None,
        chroma_mean=profile,
        loudness_db=20.0 * np.log10(max(rms, 1e-10)),
        centroid_hz=centroid,
        envelope=env,
        fps=fps,
    )


def pause_ends(waveform, sample_rate: int, min_seconds: float = 0.2, floor_db: float = -25.0,
               hop_seconds: float = 0.02) -> np.ndarray:
    """Times (s) where the music resumes after a pause: a run of at least ``min_seconds`` whose level stays
    ``floor_db`` below the clip's loud level (its 90th-percentile frame RMS), ending before the clip does.

    A phrase that ends with a breath and a next phrase that starts after it give one time: the restart.
    """
    x = to_mono(waveform).double()
    hop = max(1, int(round(hop_seconds * sample_rate)))
    frames = x.shape[0] // hop
    if frames < 2:
        return np.zeros(0)
    rms = x[: frames * hop].view(frames, hop).pow(2).mean(dim=1).sqrt().numpy()
    level = 20 * np.log10(np.maximum(rms, 1e-10))
    quiet = level < np.percentile(level, 90) + floor_db
    need = max(1, int(round(min_seconds / hop_seconds)))
    ends, run = [], 0
    for i, q in enumerate(quiet):
        if q:
            run += 1
            continue
        if run >= need and i - run > 0:  # a pause inside the clip, not the lead-in
            ends.append(i * hop / sample_rate)
        run = 0
    return np.asarray(ends, dtype=np.float64)
