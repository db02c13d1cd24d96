"""Key and mode from a chroma profile (Krumhansl–Schmuckler with overtone-aware templates), and how well two
keys agree (MIREX scoring)."""

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


# semitones above the fundamental of harmonics 1..8, folded into one octave
HARMONIC_OFFSETS = (0, 0, 7, 0, 4, 7, 10, 0)
HARMONICS, HARMONIC_DECAY = 6, 0.9


def harmonic_template(profile, harmonics: int = HARMONICS, decay: float = HARMONIC_DECAY) -> np.ndarray:
    """What a chromagram of music in this key looks like: every pitch class of `profile` [12] also sounds
    its overtones (harmonic h weighted decay^(h-1)), so the 3rd harmonic feeds the fifth above.

    Matching plain profiles against audio chroma confuses a key with its dominant; templates that expect
    the overtones do not (Gómez 2006). Tuned on Bach chorales rendered with a General MIDI soundfont.
    """
    out = np.zeros(12)
    for h in range(1, harmonics + 1):
        out += decay ** (h - 1) * np.roll(np.asarray(profile, dtype=np.float64), HARMONIC_OFFSETS[h - 1])
    return out


def key_correlations(profile, harmonics: int = HARMONICS, decay: float = HARMONIC_DECAY) -> np.ndarray:
    """Correlations [24] of a 12-bin pitch-class `profile` with every key's template: 0-11 major C..B,
    12-23 minor. `harmonics=1` gives the plain Krumhansl–Schmuckler method (for symbolic profiles)."""
    p = np.asarray(profile, dtype=np.float64).reshape(12)
    major = harmonic_template(MAJOR_PROFILE, harmonics, decay)
    minor = harmonic_template(MINOR_PROFILE, harmonics, decay)
    templates = np.stack([np.roll(major, t) for t in range(12)] + [np.roll(minor, t) for t in range(12)])
    templates = templates - templates.mean(axis=1, keepdims=True)
    centred = p - p.mean()
    denom = np.linalg.norm(templates, axis=1) * np.linalg.norm(centred)
    return templates @ centred / np.maximum(denom, 1e-12)


def estimate_key(profile, harmonics: int = HARMONICS, decay: float = HARMONIC_DECAY) -> Key | None:
    """The best-correlating key of a pitch-class `profile` [12] (e.g. mean audio chroma); None for a flat one.

    Pass `harmonics=1` for a profile of notes rather than of sound (e.g. counted from a score).
    """
    p = np.asarray(profile, dtype=np.float64).reshape(12)
    if p.max() - p.min() <= 1e-9:
        return None
    corr = key_correlations(p, harmonics, decay)
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
