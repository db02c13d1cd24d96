"""Audio–visual alignment scores that need no joint embedding space.

- event alignment: do video cuts land on beats / onsets / section changes, do motion peaks land on onsets
  (precision, recall, F1 within a tolerance, pooled over clips, with the recall chance would give);
- curve correlation: Pearson correlation of the video's motion curve with the music's onset strength;
- similarity structure: do similar videos get similar music (correlation of the two sets' cosine
  similarity matrices; any audio and any visual embedder, since only within-modality similarities are used).
"""

from __future__ import annotations

import numpy as np

from ..metrics import correlation, cosine_similarities
from .events import chance_recall, event_f1, pooled_f1
from .structure import MusicStructure
from .video_events import VideoStructure

CURVE_RATE = 10.0  # frames/s at which motion and onset strength are compared


def _on_grid(times: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """`values` sampled at `times`, averaged into bins centred on `grid` (linear interpolation when sparse)."""
    return np.interp(grid, times, values) if times.size > 1 else np.zeros_like(grid)


def curve_correlation(music: MusicStructure, video: VideoStructure) -> float:
    """Correlation of onset strength with the motion curve over their common duration, both smoothed to
    CURVE_RATE so that a motion peak and an onset a frame apart still count as together."""
    duration = min(music.duration, video.duration)
    if duration < 2.0 / CURVE_RATE:
        return 0.0
    grid = np.arange(0.0, duration, 1.0 / CURVE_RATE)
    env_t = np.arange(music.envelope.size) / music.fps
    # box-average the 50 fps envelope over each grid step before sampling, or it aliases
    width = max(1, int(round(music.fps / CURVE_RATE)))
    env = np.convolve(music.envelope, np.ones(width) / width, mode="same")
    return correlation(_on_grid(env_t, env, grid), _on_grid(video.times, video.motion, grid))


def _clip_events(music: MusicStructure, video: VideoStructure) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    end = min(music.duration, video.duration) + 1e-6
    cuts, peaks = video.cuts[video.cuts <= end], video.motion_peaks[video.motion_peaks <= end]
    return {
        "cut_beat": (cuts, music.beats[music.beats <= end]),
        "cut_onset": (cuts, music.onsets[music.onsets <= end]),
        "cut_section": (cuts, music.sections[music.sections <= end]),
        "motion_onset": (peaks, music.onsets[music.onsets <= end]),
    }


def av_alignment(pairs: list[tuple[MusicStructure, VideoStructure]], tolerance: float = 0.1,
                 section_tolerance: float = 1.0) -> dict:
    """Event and curve alignment of music with its video, pooled over `pairs` of (music, video).

    Reference events are the video's (cuts, motion peaks); estimates are the music's. `chance_recall`
    is what randomly placed video events would score; compare recall against it.
    """
    if not pairs:
        return {}
    scores: dict[str, list] = {}
    chance: dict[str, list[float]] = {}
    for music, video in pairs:
        duration = min(music.duration, video.duration)
        for key, (ref, est) in _clip_events(music, video).items():
            tol = section_tolerance if key == "cut_section" else tolerance
            scores.setdefault(key, []).append(event_f1(ref, est, tol))
            if ref.size:  # chance is weighted like the pooled recall: by the number of reference events
                chance.setdefault(key, []).extend([chance_recall(est, duration, tol)] * ref.size)
    out = {}
    for key, items in scores.items():
        pooled = pooled_f1(items).to_dict()
        pooled["chance_recall"] = round(float(np.mean(chance[key])), 4) if chance.get(key) else None
        pooled["tolerance"] = section_tolerance if key == "cut_section" else tolerance
        out[key] = pooled
    out["motion_onset_correlation"] = round(float(np.mean([curve_correlation(m, v) for m, v in pairs])), 4)
    out["clips"] = len(pairs)
    return out


def similarity_structure(audio, visual) -> float:
    """Correlation between the cosine similarities of all clip pairs (i < j) in the audio embeddings
    [N, Da] and in the visual embeddings [N, Dv]. 1: the music's similarities mirror the videos'."""
    a, v = np.asarray(audio, dtype=np.float64), np.asarray(visual, dtype=np.float64)
    n = a.shape[0]
    i, j = np.triu_indices(n, k=1)
    # centre each set first: raw embeddings often share a large common direction that makes every
    # similarity close to 1
    a, v = a - a.mean(axis=0), v - v.mean(axis=0)
    return correlation(cosine_similarities(a[i], a[j]), cosine_similarities(v[i], v[j]))
