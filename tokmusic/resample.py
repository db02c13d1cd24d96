"""Band-limited resampling in torch: a Kaiser-windowed sinc applied polyphase, one conv1d for all phases.

For rates orig = down * g and new = up * g, output sample m = q * up + j lies at input position
q * down + j * down / up, so

    y[q * up + j] = sum_i x[q * down + i] * h(j * down / up - i)

Each phase j is one fixed kernel over the input; a strided conv1d with `up` output channels evaluates all of
them, and interleaving the channels gives y. h is an ideal low-pass (cut just below the lower Nyquist
frequency, so downsampling does not alias) tapered by a Kaiser window.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from .errors import ConfigError

# Largest number of phases (new rate / gcd) accepted: the kernel bank grows with it.
MAX_PHASES = 4096


def resample(
    waveform: torch.Tensor,
    orig_rate: int,
    new_rate: int,
    *,
    zeros: int = 24,
    rolloff: float = 0.945,
    beta: float = 8.6,
) -> torch.Tensor:
    """Resample `waveform` [..., N] from `orig_rate` to `new_rate` Hz -> [..., ceil(N * new_rate / orig_rate)].

    zeros: zero crossings of the sinc kept on each side (longer = sharper filter, slower).
    rolloff: cut-off as a fraction of the lower Nyquist frequency. beta: Kaiser window shape (8.6 ~ -90 dB).
    Computes in float32 (float64 input stays float64); equal rates return the input unchanged.
    """
    for name, rate in (("orig_rate", orig_rate), ("new_rate", new_rate)):
        if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
            raise ConfigError(f"resample: {name} must be a positive integer number of Hz, got {rate!r}")
    if not torch.is_floating_point(waveform):
        raise ConfigError(f"resample: waveform must be a float tensor, got {waveform.dtype}")
    if orig_rate == new_rate:
        return waveform
    g = math.gcd(orig_rate, new_rate)
    up, down = new_rate // g, orig_rate // g
    if up > MAX_PHASES:
        raise ConfigError(
            f"resample: {orig_rate} Hz -> {new_rate} Hz needs {up} filter phases (more than {MAX_PHASES}); "
            "pick rates with a larger common divisor"
        )
    dtype = waveform.dtype if waveform.dtype == torch.float64 else torch.float32
    shape, n = waveform.shape[:-1], waveform.shape[-1]
    out_len = -(-n * up // down)
    if n == 0:
        return waveform.new_zeros(*shape, 0, dtype=dtype)
    x = waveform.reshape(-1, 1, n).to(dtype)

    kernels, half = _phase_kernels(up, down, zeros, rolloff, beta)
    kernels = kernels.to(device=x.device, dtype=dtype)
    # Pad so every output position sees its full kernel: `half` before, `half + down` after.
    x = F.pad(x, (half, half + down))
    y = F.conv1d(x, kernels, stride=down)  # [B, up, Q]
    y = y.transpose(1, 2).reshape(x.shape[0], -1)[:, :out_len]
    return y.reshape(*shape, out_len)


@functools.lru_cache(maxsize=16)
def _phase_kernels(up: int, down: int, zeros: int, rolloff: float, beta: float) -> tuple[torch.Tensor, int]:
    """The `up` polyphase kernels [up, 1, 2 * half + down] and the half-width `half` in input samples.

    Cached: building them costs more than filtering a few seconds of audio. Callers must not modify them.
    """
    cutoff = 0.5 * rolloff * min(1.0, up / down)  # cycles per input sample
    half = math.ceil(zeros / (2.0 * cutoff))
    taps = torch.arange(-half, half + down, dtype=torch.float64)  # input offsets i
    phase = torch.arange(up, dtype=torch.float64)[:, None] * down / up
    t = phase - taps[None, :]  # [up, taps]: distance from the output position, in input samples
    window = torch.special.i0(beta * torch.sqrt((1.0 - (t / half) ** 2).clamp(min=0.0))) / torch.special.i0(
        torch.tensor(beta, dtype=torch.float64)
    )
    window = torch.where(t.abs() <= half, window, torch.zeros_like(window))
    h = 2.0 * cutoff * torch.sinc(2.0 * cutoff * t) * window
    return h[:, None, :], half
