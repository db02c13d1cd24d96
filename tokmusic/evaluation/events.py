"""Matching event times (beats, onsets, cuts) within a tolerance: precision, recall, F1 and chance level."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EventScore:
    """One-to-one matching of estimated against reference event times."""

    precision: float
    recall: float
    f1: float
    matched: int
    n_reference: int
    n_estimated: int

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def count_matches(reference, estimated, tolerance: float) -> int:
    """Largest number of disjoint pairs (r, e) with |r - e| <= tolerance.

    On a line a greedy sweep is optimal: match each estimate (in time order) to the earliest unmatched
    reference still in reach; a reference that has fallen behind the window can never be matched later.
    """
    ref = np.sort(np.asarray(reference, dtype=np.float64).reshape(-1))
    est = np.sort(np.asarray(estimated, dtype=np.float64).reshape(-1))
    i = matched = 0
    for e in est:
        while i < ref.size and ref[i] < e - tolerance - 1e-9:
            i += 1
        if i < ref.size and ref[i] <= e + tolerance + 1e-9:
            matched += 1
            i += 1
    return matched


def event_f1(reference, estimated, tolerance: float = 0.07) -> EventScore:
    """Precision, recall and F1 of `estimated` times against `reference` times (seconds) within ±tolerance.

    Empty on both sides scores 1; one side empty scores 0 (nothing to find or nothing found).
    """
    n_ref, n_est = int(np.size(reference)), int(np.size(estimated))
    if n_ref == 0 and n_est == 0:
        return EventScore(1.0, 1.0, 1.0, 0, 0, 0)
    m = count_matches(reference, estimated, tolerance) if n_ref and n_est else 0
    precision = m / n_est if n_est else 0.0
    recall = m / n_ref if n_ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return EventScore(precision, recall, f1, m, n_ref, n_est)


def pooled_f1(scores: list[EventScore]) -> EventScore:
    """Micro-averaged score over clips: matches and counts summed before dividing."""
    m = sum(s.matched for s in scores)
    n_ref = sum(s.n_reference for s in scores)
    n_est = sum(s.n_estimated for s in scores)
    precision = m / n_est if n_est else 0.0
    recall = m / n_ref if n_ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return EventScore(precision, recall, f1, m, n_ref, n_est)


def chance_recall(estimated, duration: float, tolerance: float) -> float:
    """Recall that reference events placed uniformly at random in [0, duration] would get against `estimated`.

    It is the fraction of the clip covered by the ±tolerance windows around the estimates: a recall is
    only evidence of alignment where it clearly exceeds this.
    """
    if duration <= 0:
        return 0.0
    est = np.sort(np.asarray(estimated, dtype=np.float64).reshape(-1))
    covered, end = 0.0, 0.0
    for e in est:
        lo, hi = max(e - tolerance, end, 0.0), min(e + tolerance, duration)
        if hi > lo:
            covered += hi - lo
        end = max(end, hi)
    return covered / duration
