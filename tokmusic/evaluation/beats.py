"""Tempo estimation and beat tracking from an onset-strength envelope (Ellis 2007), no learned weights.

    env = onset_strength(mono, sr)                   # [T] at fps = sr / hop
    bpm = estimate_tempo(env, fps)
    beats = track_beats(env, fps, bpm)               # seconds, float64 [B]

Tempo: autocorrelation of the envelope weighted by a log-normal prior around 120 BPM (listeners' preferred
tempo region), peak refined by parabolic interpolation. Beats: dynamic programming that trades onset
strength at each beat against deviation of the inter-beat interval from the tempo's period.
"""

from __future__ import annotations

import numpy as np

MIN_BPM, MAX_BPM = 30.0, 300.0
LISTENER_PRIOR = (120.0, 1.0)  # the tempo prior's centre (BPM) and width (octaves): listeners' preferred region


def estimate_tempo(envelope, fps: float, prior_bpm: float = LISTENER_PRIOR[0],
                   prior_octaves: float = LISTENER_PRIOR[1]) -> float:
    """Global tempo in BPM of an onset envelope [T] sampled at `fps` frames/s; 0.0 when it has no pulse."""
    env = np.asarray(envelope, dtype=np.float64)
    env = env - env.mean()
    n = env.size
    min_lag = max(1, int(np.floor(60.0 * fps / MAX_BPM)))
    max_lag = min(n - 2, int(np.ceil(60.0 * fps / MIN_BPM)))
    if max_lag <= min_lag + 1 or not np.any(env):
        return 0.0
    spec = np.fft.rfft(env, 2 * n)  # zero-padded: linear (not circular) autocorrelation
    acf = np.fft.irfft(spec * np.conj(spec))[: max_lag + 2]
    acf /= np.arange(n, n - acf.size, -1)  # unbiased: long lags sum fewer products
    lags = np.arange(min_lag, max_lag + 1)
    bpms = 60.0 * fps / lags
    prior = np.exp(-0.5 * (np.log2(bpms / prior_bpm) / prior_octaves) ** 2)
    score = acf[lags] * prior
    if score.max() <= 0:
        return 0.0
    i = int(np.argmax(score))
    lag = float(lags[i])
    if 0 < i < score.size - 1:  # parabolic refinement between integer lags
        a, b, c = score[i - 1], score[i], score[i + 1]
        denom = a - 2 * b + c
        if denom < 0:
            lag += 0.5 * (a - c) / denom
    return 60.0 * fps / lag


def _smooth(env: np.ndarray, width: float) -> np.ndarray:
    """Convolve with a Gaussian of std `width` frames (keeps the envelope's peaks where they are)."""
    half = max(1, int(np.ceil(3 * width)))
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / max(width, 1e-3)) ** 2)
    return np.convolve(env, kernel / kernel.sum(), mode="same")


def track_beats(envelope, fps: float, bpm: float | None = None, tightness: float = 100.0,
                trim: bool = True) -> np.ndarray:
    """Beat times in seconds (float64 [B], increasing) of an onset envelope [T] at `fps` frames/s.

    `bpm` defaults to `estimate_tempo(envelope, fps)`. `tightness` weighs tempo regularity against onset
    strength. With `trim`, weak beats at the start and end (silence, fade-outs) are dropped.
    """
    env = np.asarray(envelope, dtype=np.float64)
    if bpm is None:
        bpm = estimate_tempo(env, fps)
    if bpm <= 0 or env.size < 4 or env.std() <= 1e-12:
        return np.zeros(0)
    period = 60.0 * fps / bpm
    local = _smooth(env, period / 32.0)
    local = local / local.std()
    n = local.size
    # candidate predecessors of frame t: t - 2P .. t - P/2, scored by log-interval deviation from P
    offsets = np.arange(-int(round(2 * period)), -int(round(period / 2)) + 1)
    penalty = -tightness * np.log(-offsets / period) ** 2
    cumulative = np.empty(n)
    backlink = np.full(n, -1, dtype=np.int64)
    for t in range(n):
        prev = t + offsets
        valid = prev >= 0
        if not valid.any():
            cumulative[t] = local[t]
            continue
        cand = cumulative[prev[valid]] + penalty[valid]
        j = int(np.argmax(cand))
        # a chain is only worth extending if the predecessor helps; otherwise t starts a new chain
        if cand[j] > 0:
            cumulative[t] = local[t] + cand[j]
            backlink[t] = prev[valid][j]
        else:
            cumulative[t] = local[t]
    # last beat: the latest local maximum of the cumulative score that is not much below the typical one
    interior = np.nonzero((cumulative[1:-1] >= cumulative[:-2]) & (cumulative[1:-1] >= cumulative[2:]))[0] + 1
    if interior.size == 0:
        interior = np.array([int(np.argmax(cumulative))])
    good = interior[cumulative[interior] >= 0.5 * np.median(cumulative[interior])]
    t = int(good[-1] if good.size else interior[-1])
    beats = []
    while t >= 0:
        beats.append(t)
        t = int(backlink[t])
    frames = np.asarray(beats[::-1], dtype=np.int64)
    if trim and frames.size:
        frames = _trim_weak(frames, local)
    return frames / fps


def _trim_weak(frames: np.ndarray, local: np.ndarray) -> np.ndarray:
    """Drop leading and trailing beats whose onset strength is below half the RMS of all beats."""
    strength = local[frames]
    if strength.size >= 5:
        strength = np.convolve(strength, np.hanning(5)[1:-1] / np.hanning(5)[1:-1].sum(), mode="same")
    threshold = 0.5 * np.sqrt(np.mean(strength ** 2))
    strong = np.nonzero(strength >= threshold)[0]
    if strong.size == 0:
        return frames[:0]
    return frames[strong[0] : strong[-1] + 1]
