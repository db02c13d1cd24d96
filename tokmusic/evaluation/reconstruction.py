"""How close a reconstruction is to its reference: multi-scale log-mel distance, SI-SNR, note agreement.

    d = mel_distance(reference, estimate, sample_rate)   # 0 = identical spectra; lower is better
    s = si_snr(reference, estimate)                      # dB; higher is better, invariant to gain
    c = chroma_agreement(reference, estimate, sample_rate)   # 1 = the same notes, 0 = only the same key

Both compare waveforms sample-aligned (a codec's output against its input); `log_mels` is differentiable and
batched, so the codec trainer's spectral loss is the very quantity `mel_distance` reports.
"""

from __future__ import annotations

import torch

from .spectral import chroma, mel_filterbank

# Window sizes of the multi-scale analysis (hop = window / 4): 16 ms .. 128 ms at 16 kHz.
SCALES = (256, 512, 1024, 2048)
# Added to mel magnitudes (a full-scale sine's peak is 0.5) before the log: -100 dB, so silence stays finite and
# differences far below the music (a codec's faint hiss in a pause) count little.
LOG_FLOOR = 1e-5


def _mels_for(n_fft: int) -> int:
    """Mel bands of a window: few for short windows (their bins are wide), up to 80."""
    return min(80, n_fft // 8)


def log_mels(x: torch.Tensor, sample_rate: int, scales: tuple[int, ...] = SCALES,
             floor: float = LOG_FLOOR) -> list[torch.Tensor]:
    """Natural-log mel magnitudes of waveforms x ``[B, N]`` at each window size (hop: a quarter window, frames
    centred, zero-padded ends) -> ``[B, n_mels, T]`` each."""
    out = []
    for n_fft in scales:
        window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
        pad = n_fft // 2
        xp = torch.nn.functional.pad(x, (pad, pad)) if x.shape[-1] > pad else \
            torch.nn.functional.pad(x, (pad, pad + n_fft))  # reflect would fail on a very short input
        spec = torch.stft(xp, n_fft, hop_length=n_fft // 4, window=window, center=False, return_complex=True)
        bank = mel_filterbank(sample_rate, n_fft, _mels_for(n_fft), 0.0).to(x.device, x.dtype)
        # |STFT| / window sum (a sine of amplitude a peaks at a / 2), with a finite gradient at 0
        magnitude = (spec.real.pow(2) + spec.imag.pow(2) + 1e-12).sqrt() / window.sum()
        out.append(torch.log(bank @ magnitude + floor))
    return out


def _pair(reference, estimate) -> tuple[torch.Tensor, torch.Tensor]:
    """Both as float64 ``[B, N]`` (mono: channels averaged), cut to the shorter length."""
    def flat(w):
        w = torch.as_tensor(w).detach().double().cpu()
        return w[None] if w.dim() == 1 else w.mean(0, keepdim=True) if w.dim() == 2 else w.flatten(0, -2)

    ref, est = flat(reference), flat(estimate)
    n = min(ref.shape[-1], est.shape[-1])
    return ref[..., :n], est[..., :n]


def mel_distance(reference, estimate, sample_rate: int, scales: tuple[int, ...] = SCALES) -> float:
    """Mean absolute difference of natural-log mel magnitudes, averaged over `scales` (window sizes).

    reference, estimate: waveforms [N] or [C, N] (channels averaged), same sample rate; compared over the shorter
    length. 0 for identical signals; ~0.1 is hard to hear apart, several units is another sound.
    """
    ref, est = _pair(reference, estimate)
    pairs = zip(log_mels(ref, sample_rate, scales), log_mels(est, sample_rate, scales))
    return float(sum((a - b).abs().mean() for a, b in pairs) / len(scales))


def si_snr(reference, estimate, eps: float = 1e-8) -> float:
    """Scale-invariant signal-to-noise ratio in dB (Le Roux et al. 2019), both signals made zero-mean.

    The estimate is projected onto the reference; the rest counts as noise. Needs sample alignment: a phase
    shift or a delay lowers it even when the spectra match (mel_distance does not mind those).
    """
    ref, est = _pair(reference, estimate)
    ref, est = ref - ref.mean(-1, keepdim=True), est - est.mean(-1, keepdim=True)
    target = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps) * ref
    noise = est - target
    ratio = (target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps)
    return float((10 * torch.log10(ratio)).mean())


def chroma_agreement(reference, estimate, sample_rate: int) -> float:
    """Do the notes change the way the reference's do? Pearson correlation, over the frames where both sound,
    of the two chromagrams after each pitch class's mean over the clip is taken away.

    Taking the means away removes the key: a drone on the clip's average chord scores ~0 however close its
    spectrum (mel_distance forgives that), the reference itself 1. NaN when fewer than two frames sound.
    """
    ref, est = _pair(reference, estimate)
    a, b = chroma(ref.mean(0).float(), sample_rate), chroma(est.mean(0).float(), sample_rate)
    t = min(a.shape[1], b.shape[1])
    a, b = a[:, :t], b[:, :t]
    both = (a.sum(0) > 0) & (b.sum(0) > 0)
    if int(both.sum()) < 2:
        return float("nan")
    a, b = a[:, both], b[:, both]
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12))
