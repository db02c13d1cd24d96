"""Visual events of a video with no learned weights: shot cuts, a motion curve and its peaks.

    v = analyze_video("clip.mp4")
    v.cuts, v.motion_peaks          # seconds
    v.times, v.motion               # [N] frame times and mean absolute frame difference (0..1)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import VideoError
from .spectral import pick_peaks

CUT_FPS = 25.0  # analysis rate: a cut is placed at most 40 ms late
CUT_SIZE = 64
HIST_BINS = 8


@dataclass
class VideoStructure:
    """What `analyze_video` finds. Times are seconds from the video's first frame."""

    duration: float
    cuts: np.ndarray  # float64 [K]: time of the first frame of each new shot
    motion_peaks: np.ndarray  # float64 [P]
    times: np.ndarray = field(repr=False)  # float64 [N]
    motion: np.ndarray = field(repr=False)  # float64 [N], 0 for frame 0 and at cuts
    features: np.ndarray = field(repr=False)  # float64 [D], weight-free summary of the whole video

    def summary(self) -> dict:
        """JSON-able per-video numbers."""
        return {
            "duration": round(self.duration, 3),
            "cuts": [round(float(t), 3) for t in self.cuts],
            "motion_peaks": [round(float(t), 3) for t in self.motion_peaks],
            "mean_motion": round(float(self.motion.mean()) if self.motion.size else 0.0, 4),
        }


def read_frames(path: str | Path, fps: float, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Chunks of (frames uint8 [n, size, size, 3], timestamps float64 [n]) sampled at `fps` (tokmusic.video)."""
    from ..video import read_frames as _read

    for frames, times in _read(path, fps=fps, size=size):
        yield np.asarray(frames), np.asarray(times, dtype=np.float64)


def _histograms(frames: np.ndarray) -> np.ndarray:
    """Per-channel colour histograms [n, 3 * HIST_BINS] of frames [n, H, W, 3], each channel summing to 1."""
    n = frames.shape[0]
    bins = (frames.astype(np.int64) * HIST_BINS) // 256  # [n, H, W, 3]
    flat = bins.reshape(n, -1, 3) + np.arange(3) * HIST_BINS
    hist = np.stack([np.bincount(f.reshape(-1), minlength=3 * HIST_BINS) for f in flat]).astype(np.float64)
    return hist / (flat.shape[1])


def histogram_change(hist: np.ndarray) -> np.ndarray:
    """Change [N] of colour histograms [N, 3 * bins] from the previous frame: half L1 distance per channel,
    averaged over channels, in [0, 1]; 0 for frame 0."""
    if hist.shape[0] < 2:
        return np.zeros(hist.shape[0])
    dist = 0.5 * np.abs(np.diff(hist, axis=0)).reshape(hist.shape[0] - 1, 3, -1).sum(axis=2).mean(axis=1)
    return np.concatenate([[0.0], dist])


def detect_cuts(change: np.ndarray, threshold: float = 0.15) -> np.ndarray:
    """Frame indices where a new shot starts, from a frame-to-frame change curve [N] in [0, 1].

    A cut is a one-frame spike: at least `threshold`, at least `threshold` above the median change of the
    six frames on either side (so fast motion, which changes every frame, is not a cut), and the
    largest change among its neighbours.
    """
    cuts = []
    for t in range(1, change.size):
        around = np.concatenate([change[max(1, t - 6) : t], change[t + 1 : t + 7]])
        background = float(np.median(around)) if around.size else 0.0
        peak = change[t] == change[max(1, t - 1) : t + 2].max()
        if peak and change[t] >= threshold and change[t] >= background + threshold:
            cuts.append(t)
    return np.asarray(cuts, dtype=np.int64)


def analyze_video(path: str | Path, fps: float = CUT_FPS, size: int = CUT_SIZE) -> VideoStructure:
    """Cuts, motion curve, motion peaks and a weight-free feature vector of the video at `path`.

    Frames stream through chunk by chunk: only histograms [N, 24] and the motion curve [N] are kept.
    """
    hists, motions, stamps = [], [], []
    previous = None  # last grey frame of the previous chunk
    grey_sum = grey_sq = 0.0
    grey_n = 0
    for frames, times in read_frames(path, fps, size):
        grey = frames.astype(np.float32).mean(axis=3) / 255.0  # [n, H, W]
        hists.append(_histograms(frames))
        stamps.append(times)
        seq = grey if previous is None else np.concatenate([previous[None], grey])
        diffs = np.abs(np.diff(seq, axis=0)).mean(axis=(1, 2)).astype(np.float64)
        motions.append(np.concatenate([[0.0], diffs]) if previous is None else diffs)
        previous = grey[-1]
        grey_sum += float(grey.sum(dtype=np.float64))
        grey_sq += float(np.square(grey, dtype=np.float64).sum())
        grey_n += grey.size
    if not stamps:
        raise VideoError(f"{path}: no frames decoded; the video is empty or unreadable")
    hist, times, motion = np.concatenate(hists), np.concatenate(stamps), np.concatenate(motions)
    # colour histograms miss cuts between shots of similar colours; pixel differences miss cuts to a
    # shifted view of the same scene: use both
    cut_idx = detect_cuts(0.5 * (histogram_change(hist) + motion))
    motion[cut_idx] = 0.0  # a shot change is not movement
    smooth = np.convolve(motion, np.hanning(5) / np.hanning(5).sum(), mode="same")
    wait = max(1, int(round(0.25 * fps)))
    peaks = pick_peaks(smooth, pre_max=wait, post_max=wait, pre_avg=3 * wait, post_avg=3 * wait, delta=0.1, wait=wait)
    step = float(np.median(np.diff(times))) if times.size > 1 else 1.0 / fps
    duration = float(times[-1] + step)
    grey_mean = grey_sum / grey_n
    grey_std = float(np.sqrt(max(grey_sq / grey_n - grey_mean ** 2, 0.0)))
    features = np.concatenate([
        hist.mean(axis=0), hist.std(axis=0),
        [motion.mean(), motion.std(), grey_mean, grey_std, len(cut_idx) / max(duration, 1e-6)],
    ])
    return VideoStructure(duration=duration, cuts=times[cut_idx], motion_peaks=times[peaks], times=times,
                          motion=motion, features=features)
