"""Weight-free music structure: beats, onsets, sections, key, and event matching, on synthetic audio with
known answers. The synthesis helpers here are shared with test_evaluation_command.py."""

import itertools

import numpy as np
import pytest
import torch

from tokmusic.evaluation.beats import estimate_tempo, track_beats
from tokmusic.evaluation.events import chance_recall, count_matches, event_f1, pooled_f1
from tokmusic.evaluation.key import (MAJOR_PROFILE, MINOR_PROFILE, Key, estimate_key, harmonic_template,
                                     key_agreement)
from tokmusic.evaluation.spectral import ANALYSIS_RATE, chroma, onset_strength, pick_peaks
from tokmusic.evaluation.structure import analyze_music

SR = ANALYSIS_RATE
MAJOR = [[0, 4, 7], [5, 9, 12], [7, 11, 14], [0, 4, 7]]  # I IV V I
MINOR = [[0, 3, 7], [5, 8, 12], [7, 11, 14], [0, 3, 7]]  # i iv V i


def click_track(times, seconds: float, sr: int = SR, freq: float = 1000.0) -> np.ndarray:
    """Decaying 10-ms tone bursts starting at `times` (seconds), float32 [N]."""
    x = np.zeros(int(round(seconds * sr)))
    t = np.arange(int(0.01 * sr)) / sr
    burst = np.sin(2 * np.pi * freq * t) * np.exp(-t / 0.003)
    for c in times:
        i = int(round(c * sr))
        x[i : i + burst.size] += burst[: max(0, x.size - i)]
    return (0.5 * x).astype(np.float32)


def note(midi: int, seconds: float, sr: int = SR, decay: float = 1.5) -> np.ndarray:
    """A piano-ish tone: four harmonics at 1/h amplitude, fast attack, exponential decay."""
    t = np.arange(int(round(seconds * sr))) / sr
    f = 440.0 * 2 ** ((midi - 69) / 12)
    return sum(np.sin(2 * np.pi * f * h * t) / h for h in range(1, 5)) * np.exp(-t / decay) * np.minimum(1, t / 0.005)


def progression(tonic: int, mode: str, chord_seconds: float = 1.0, repeats: int = 2, sr: int = SR) -> np.ndarray:
    """I-IV-V-I (or i-iv-V-i) with a bass note, float32 [N] peaking at 0.5."""
    chords = (MAJOR if mode == "major" else MINOR) * repeats
    base = 48 + tonic
    x = np.concatenate([sum(note(base + d, chord_seconds, sr) for d in c) + note(base - 12 + c[0], chord_seconds, sr)
                        for c in chords])
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


# --- event matching ----------------------------------------------------------------------------------

def _max_matching(ref, est, tol) -> int:
    """Bipartite maximum matching by augmenting paths (Kuhn), as an independent check of the greedy sweep."""
    match: dict[int, int] = {}

    def augment(i, seen):
        for j, r in enumerate(ref):
            if abs(r - est[i]) <= tol + 1e-9 and j not in seen:
                seen.add(j)
                if j not in match or augment(match[j], seen):
                    match[j] = i
                    return True
        return False

    return sum(augment(i, set()) for i in range(len(est)))


def test_event_f1_exact_values():
    s = event_f1([1.0, 2.0, 3.0, 4.0], [1.05, 2.2, 3.0, 3.02, 9.0], tolerance=0.1)
    # 1.05 -> 1.0, 3.0 -> 3.0; 3.02 cannot reuse 3.0; 2.2 and 9.0 are too far
    assert (s.matched, s.precision, s.recall) == (2, 2 / 5, 2 / 4)
    assert s.f1 == pytest.approx(2 * 0.4 * 0.5 / 0.9)
    assert event_f1([], [], 0.1).f1 == 1.0
    assert event_f1([1.0], [], 0.1).f1 == 0.0 and event_f1([], [1.0], 0.1).precision == 0.0
    pooled = pooled_f1([event_f1([1.0], [1.0], 0.1), event_f1([1.0, 2.0, 3.0], [5.0], 0.1)])
    assert (pooled.matched, pooled.precision, pooled.recall) == (1, 0.5, 0.25)


def test_greedy_matching_is_maximal():
    rng = np.random.default_rng(0)
    for _ in range(200):
        ref = np.round(rng.uniform(0, 3, rng.integers(0, 7)), 2)
        est = np.round(rng.uniform(0, 3, rng.integers(0, 7)), 2)
        assert count_matches(ref, est, 0.3) == _max_matching(list(ref), list(est), 0.3)


def test_chance_recall_is_covered_fraction():
    assert chance_recall([1.0, 5.0], 10.0, 0.5) == pytest.approx(0.2)
    assert chance_recall([1.0, 1.5], 10.0, 0.5) == pytest.approx(0.15)  # windows overlap: [0.5, 2.0]
    assert chance_recall([0.2], 10.0, 0.5) == pytest.approx(0.07)  # clipped at the clip start
    assert chance_recall([], 10.0, 0.5) == 0.0


# --- beats and onsets --------------------------------------------------------------------------------

@pytest.mark.parametrize("bpm,start", [(120, 0.3), (93, 0.5), (150, 0.1), (70, 1.0)])
def test_beats_of_click_track(bpm, start):
    truth = np.arange(start, 20.0, 60.0 / bpm)
    x = torch.from_numpy(click_track(truth, 20.0))
    env = onset_strength(x, SR).numpy()
    fps = SR / 441
    tempo = estimate_tempo(env, fps)
    assert tempo == pytest.approx(bpm, rel=0.01)
    score = event_f1(truth, track_beats(env, fps, tempo), tolerance=0.07)
    assert score.f1 == 1.0, score


def test_onsets_of_irregular_clicks():
    truth = np.array([0.25, 0.6, 0.75, 1.4, 2.05, 2.3, 3.5, 3.62, 4.4])
    s = analyze_music(click_track(truth, 5.0), SR)
    score = event_f1(truth, s.onsets, tolerance=0.03)
    assert score.f1 == 1.0, (s.onsets, score)


def test_silence_has_no_tempo_beats_or_key():
    s = analyze_music(np.zeros((2, SR * 3), np.float32), SR)
    assert (s.tempo, len(s.beats), len(s.onsets), s.key) == (0.0, 0, 0, None)
    assert s.duration == pytest.approx(3.0)
    assert s.summary()["key"] is None


def test_pick_peaks():
    signal = np.zeros(50)
    signal[[5, 20, 22, 40]] = [1.0, 0.8, 0.9, 0.05]
    # 20 loses to its neighbour 22; 40 is below delta above the local mean
    np.testing.assert_array_equal(pick_peaks(signal, delta=0.1), [5, 22])
    assert pick_peaks(np.ones(10)).size == 0


# --- key and sections --------------------------------------------------------------------------------

def test_key_of_synthesised_chord_progressions_in_all_24_keys():
    found = {}
    for tonic, mode in itertools.product(range(12), ("major", "minor")):
        profile = chroma(torch.from_numpy(progression(tonic, mode, 0.5)), SR).mean(dim=1).numpy()
        key = estimate_key(profile)
        found[(tonic, mode)] = (key.tonic, key.mode)
    assert found == {k: k for k in found}


def test_templates_recover_every_key_exactly():
    np.testing.assert_array_equal(harmonic_template(MAJOR_PROFILE, harmonics=1), MAJOR_PROFILE)
    # the overtones of the tonic triad's root land on the fifth: (C, G, C, E) for harmonics 1, 3, 4, 5
    np.testing.assert_allclose(harmonic_template(np.eye(12)[0], 5, 0.5), np.eye(12)[0] * (1 + 0.5 + 0.125)
                               + np.eye(12)[7] * 0.25 + np.eye(12)[4] * 0.0625)
    for tonic, (mode, profile) in itertools.product(range(12), (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE))):
        heard = estimate_key(np.roll(harmonic_template(profile), tonic))
        assert (heard.tonic, heard.mode) == (tonic, mode) and heard.score == pytest.approx(1.0)
        written = estimate_key(np.roll(profile, tonic), harmonics=1)
        assert (written.tonic, written.mode) == (tonic, mode) and written.score == pytest.approx(1.0)


def test_key_agreement_mirex_weights():
    c_major, a_minor = Key(0, "major"), Key(9, "minor")
    assert key_agreement(c_major, Key(0, "major")) == 1.0
    assert key_agreement(Key(7, "major"), c_major) == 0.5 == key_agreement(Key(5, "major"), c_major)
    assert key_agreement(a_minor, c_major) == 0.3 == key_agreement(c_major, a_minor)
    assert key_agreement(Key(0, "minor"), c_major) == 0.2
    assert key_agreement(Key(2, "major"), c_major) == 0.0
    assert c_major.name == "C major" and Key(6, "minor").name == "F# minor"
    assert estimate_key(np.ones(12)) is None


def test_section_change_between_two_contrasting_parts():
    rng = np.random.default_rng(0)
    a = np.concatenate([progression(0, "major", 0.75)] * 3)  # 18 s of slow C major
    b = np.concatenate([progression(6, "minor", 0.5)] * 4)  # 16 s of faster F# minor with noise hits
    t = np.arange(b.size) / SR
    b = 0.6 * b + 0.3 * rng.standard_normal(b.size) * (np.mod(t, 0.25) < 0.03)
    x = np.concatenate([a / np.abs(a).max(), b / np.abs(b).max()]).astype(np.float32) * 0.5
    s = analyze_music(x, SR)
    boundary = a.size / SR
    assert s.sections.size == 1 and abs(s.sections[0] - boundary) <= 0.4, s.sections
    assert s.key is not None


def test_pause_ends_finds_where_the_music_resumes_after_each_breath():
    from tokmusic.evaluation.structure import pause_ends

    # three phrases of a sustained chord, with 0.4 s and 0.3 s breaths; a 0.05 s dip is not a pause
    phrase = np.concatenate([note(60, 2.0, decay=5.0) + note(64, 2.0, decay=5.0)])
    gap = lambda s: np.zeros(int(s * SR))  # noqa: E731
    x = np.concatenate([gap(0.5), phrase, gap(0.4), phrase[: SR], gap(0.05), phrase[SR:], gap(0.3), phrase, gap(0.5)])
    ends = pause_ends(torch.from_numpy(x.astype(np.float32)), SR)
    expected = [0.5 + 2.0 + 0.4, 0.5 + 2.0 + 0.4 + 2.0 + 0.05 + 0.3]
    assert ends.shape == (2,)
    np.testing.assert_allclose(ends, expected, atol=0.03)
    assert pause_ends(torch.zeros(SR), SR).size == 0  # silence has no phrase to resume
