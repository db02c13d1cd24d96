"""The polyphase windowed-sinc resampler: lengths, frequency kept, aliasing removed."""

from __future__ import annotations

import math

import pytest
import torch

from tokmusic.errors import ConfigError
from tokmusic.resample import resample


def sine(freq: float, rate: int, seconds: float = 1.0) -> torch.Tensor:
    t = torch.arange(int(seconds * rate), dtype=torch.float64) / rate
    return torch.sin(2 * math.pi * freq * t)


@pytest.mark.parametrize("orig, new", [(44_100, 16_000), (16_000, 48_000), (48_000, 16_000), (22_050, 24_000)])
def test_sine_keeps_its_frequency(orig, new):
    y = resample(sine(1000.0, orig).float(), orig, new)
    assert y.dtype == torch.float32 and y.shape == (math.ceil(orig * new / orig),)
    expected = sine(1000.0, new)
    inner = slice(new // 20, -new // 20)  # away from the zero-padded edges
    assert (y[inner].double() - expected[inner]).abs().max() < 1e-4
    spectrum = torch.fft.rfft(y.double()).abs()
    assert int(spectrum.argmax()) == 1000  # 1 s of signal: bin k is k Hz


def test_downsampling_removes_what_would_alias():
    # 12 kHz at 48 kHz would fold to 4 kHz at 16 kHz; the low-pass removes it (> 90 dB down).
    y = resample(sine(12_000.0, 48_000).float(), 48_000, 16_000)
    assert y[1000:-1000].abs().max() < 3e-5
    assert resample(sine(5_000.0, 48_000).float(), 48_000, 16_000)[1000:-1000].abs().max() > 0.99


@pytest.mark.parametrize("n", [0, 1, 7, 441, 1000])
def test_lengths_and_batch_shape(n):
    x = torch.randn(2, 3, n)
    y = resample(x, 44_100, 16_000)
    assert y.shape == (2, 3, math.ceil(n * 160 / 441))
    if n:
        torch.testing.assert_close(y[1, 2], resample(x[1, 2], 44_100, 16_000))


def test_same_rate_and_errors():
    x = torch.randn(100)
    assert resample(x, 16_000, 16_000) is x
    assert resample(x.double(), 16_000, 8_000).dtype == torch.float64
    with pytest.raises(ConfigError, match="float"):
        resample(torch.zeros(10, dtype=torch.int16), 16_000, 8_000)
    with pytest.raises(ConfigError, match="orig_rate"):
        resample(x, 0, 8_000)
    with pytest.raises(ConfigError, match="phases"):
        resample(x, 44_100, 44_101)
