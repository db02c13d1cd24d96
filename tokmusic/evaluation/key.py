"""Key and mode from a chroma profile (Krumhansl–Schmuckler), and how well two keys agree (MIREX scoring)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PITCH_CLASSES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

# Krumhansl & Kessler (1982) probe-tone ratings, tonic first
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


@dataclass(frozen=True)
class Key:
    """A musical key: tonic pitch class (0 = C) and mode; `score` is the profile correlation in [-1, 1]."""

    tonic: int
    mode: str  # "major" | "minor"
    score: float = 1.0

    @property
    def name(self) -> str:
        """Readable name, e.g. "F# minor"."""
        return f"{PITCH_CLASSES[self.tonic]} {self.mode}"

    def to_dict(self) -> dict:
        return {"name": self.name, "tonic": self.tonic, "mode": self.mode, "score": round(self.score, 4)}


def key_correlations(profile) -> np.ndarray:
    """Correlations [24] of a 12-bin pitch-class `profile` with every key: 0-11 major C..B, 12-23 minor."""
    p = np.asarray(profile, dtype=np.float64).reshape(12)
    rows = [np.roll(MAJOR_PROFILE, t) for t in range(12)] + [np.roll(MINOR_PROFILE, t) for t in range(12)]
    templates = np.stack(rows)
    templates = templates - templates.mean(axis=1, keepdims=True)
    centred = p - p.mean()
    denom = np.linalg.norm(templates, axis=1) * np.linalg.norm(centred)
    return templates @ centred / np.maximum(denom, 1e-12)


def estimate_key(profile) -> Key | None:
    """The best-correlating key of a pitch-class `profile` [12] (e.g. mean chroma); None for a flat profile."""
    p = np.asarray(profile, dtype=np.float64).reshape(12)
    if p.max() - p.min() <= 1e-9:
        return None
    corr = key_correlations(p)
    best = int(np.argmax(corr))
    return Key(tonic=best % 12, mode="major" if best < 12 else "minor", score=float(corr[best]))


def key_agreement(estimated: Key, reference: Key) -> float:
    """MIREX key score: 1 same key, 0.5 a fifth away (same mode), 0.3 relative, 0.2 parallel, else 0."""
    if estimated.mode == reference.mode:
        interval = (estimated.tonic - reference.tonic) % 12
        if interval == 0:
            return 1.0
        return 0.5 if interval in (5, 7) else 0.0
    major, minor = (estimated, reference) if estimated.mode == "major" else (reference, estimated)
    if (major.tonic - minor.tonic) % 12 == 3:  # C major / A minor
        return 0.3
    return 0.2 if major.tonic == minor.tonic else 0.0
