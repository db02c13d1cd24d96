"""Reconstruction metrics: exact values where they exist (identity, known SNRs, gain invariance)."""

from __future__ import annotations

import math

import torch

from tokmusic.evaluation.reconstruction import SCALES, log_mels, mel_distance, si_snr


def tone(n: int = 16_000, f: float = 440.0) -> torch.Tensor:
    return 0.5 * torch.sin(2 * math.pi * f * torch.arange(n) / 16_000)


def test_identical_signals():
    x = tone()
    assert mel_distance(x, x, 16_000) == 0.0
    assert si_snr(x, x) > 100


def test_si_snr_known_values_and_gain_invariance():
    x = tone()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    noise = noise - noise.mean()
    noise = noise - (noise @ x) / (x @ x) * x  # orthogonal to x: SNR is exactly the energy ratio
    noise = noise * (x.norm() / noise.norm()) * 10 ** (-10 / 20)  # 10 dB below
    assert abs(si_snr(x, x + noise) - 10.0) < 1e-4
    assert abs(si_snr(x, 3.0 * (x + noise)) - 10.0) < 1e-4
    assert si_snr(x, -x) > 100  # a negative gain is still a gain
    # [C, N] inputs are mixed to mono; lengths cut to the shorter
    assert abs(si_snr(torch.stack([x, x]), (x + noise)[: 12_000]) - si_snr(x[:12_000], (x + noise)[:12_000])) < 1e-9


def test_mel_distance_grows_with_the_difference():
    x = tone()
    near = mel_distance(x, x + 0.001 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1)), 16_000)
    far = mel_distance(x, tone(f=880.0), 16_000)
    assert 0 < near < far
    loud = 0.3 * torch.randn(16_000, generator=torch.Generator().manual_seed(2))  # no band near the floor
    assert abs(mel_distance(loud, 0.5 * loud, 16_000) - math.log(2)) < 1e-3  # a gain is a shift of the log


def test_log_mels_are_batched_and_differentiable():
    x = torch.randn(3, 4000, requires_grad=True)
    mels = log_mels(x, 16_000)
    assert len(mels) == len(SCALES) and all(m.shape[0] == 3 for m in mels)
    sum(m.mean() for m in mels).backward()
    assert bool(torch.isfinite(x.grad).all())


def test_chroma_agreement_hears_the_notes_not_the_key():
    from tokmusic.evaluation.reconstruction import chroma_agreement

    rate = 16_000
    g = torch.Generator().manual_seed(0)
    notes = 220 * 2 ** (torch.randint(0, 12, (40,), generator=g) / 12)  # 10 s, four notes a second
    f = notes.repeat_interleave(rate // 4)
    melody = 0.3 * torch.sin(2 * math.pi * torch.cumsum(f, 0) / rate)
    t = torch.arange(melody.numel()) / rate
    drone = sum(0.3 / 12 * torch.sin(2 * math.pi * float(n) * t) for n in notes.unique())  # every note at once
    assert chroma_agreement(melody, melody, rate) > 0.99
    assert chroma_agreement(melody, melody + 0.01 * torch.randn(melody.shape, generator=g), rate) > 0.9
    assert abs(chroma_agreement(melody, drone, rate)) < 0.15  # the right key, no notes
    assert abs(chroma_agreement(melody, melody.roll(rate // 8 * 13), rate)) < 0.3  # the right notes, wrong times
