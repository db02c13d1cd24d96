"""Acoustic tokens: EnCodec (transformers `EncodecModel`) as a codec between waveforms and RVQ codes.

    codes = codec.encode(waveform)   # float [C, N] -> Long [n_q, T], T = ceil(N / hop_length)
    audio = codec.decode(codes)      # Long [n_q, T] -> float32 [C, T * hop_length]

Codebooks 0..n_coarse-1 are the "coarse" codes (stage 2), n_coarse..n_q-1 the "fine" ones (stage 3).

Long audio runs in windows: each window holds `chunk_frames` frames of output plus `context_frames` frames
of context on each side, and only its middle is kept. Window edges lie on multiples of hop_length, so frame t
of a window is frame t of the whole signal; the convolutions see the same samples as in one pass and the
context absorbs their receptive field. EnCodec's LSTMs see the whole past in one pass but only the window here,
so chunked results match one pass to the LSTM's memory fading over `context_frames` (see tests/test_codec.py).

Models that normalise their input (the 48 kHz one) are fed the waveform divided by its RMS over the whole
signal; the tokens hold no loudness, so decode returns audio at RMS ~NORMALISED_LEVEL.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from transformers import EncodecConfig, EncodecModel

from .errors import CheckpointError, ConfigError
from .fileio import fitting_pretrained
from .hf_loading import loading, no_progress_bars
from .schema import Registry, count, size

CONFIG_TYPE = "encodec"
# Output RMS of a normalising model's decode (-20 dBFS): leaves headroom for peaks.
NORMALISED_LEVEL = 0.1
# Defaults for models without their own chunk length: 20 s kept per window, 1 s of context each side.
DEFAULT_CHUNK_SECONDS = 20.0
DEFAULT_CONTEXT_SECONDS = 1.0


class EncodecCodec:
    """EnCodec with a fixed number of codebooks `n_q`, split into `n_coarse` coarse and `n_fine` fine ones.

    n_q: codebooks used (None: as many as the model's largest bandwidth gives); it must be one a bandwidth of
    the model gives. chunk_frames / context_frames: window sizes for long audio (None: from the model's own
    chunk length if it has one, else 20 s and 1 s).
    """

    def __init__(
        self,
        model: EncodecModel,
        n_coarse: int,
        n_q: int | None = None,
        *,
        chunk_frames: int | None = None,
        context_frames: int | None = None,
    ) -> None:
        if not isinstance(model, EncodecModel):
            raise ConfigError(f"EncodecCodec needs a transformers EncodecModel, got {type(model).__name__}")
        self.model = model.eval()
        config = model.config
        self.sample_rate = int(config.sampling_rate)
        self.channels = int(config.audio_channels)
        self.hop_length = int(math.prod(config.upsampling_ratios))
        self.frame_rate = self.sample_rate / self.hop_length
        self.codebook_size = int(config.codebook_size)
        self.normalize = bool(config.normalize)

        offered: dict[int, float] = {}
        for bandwidth in config.target_bandwidths:
            count = model.quantizer.get_num_quantizers_for_bandwidth(bandwidth)
            if count <= len(model.quantizer.layers):
                offered.setdefault(count, bandwidth)
        if not offered:
            raise ConfigError(f"EnCodec model: no bandwidth in {list(config.target_bandwidths)} fits its quantizer")
        if n_q is None:
            n_q = max(offered)
        if isinstance(n_q, bool) or not isinstance(n_q, int) or n_q not in offered:
            raise ConfigError(
                f"n_q={n_q!r}: this EnCodec model's bandwidths {list(config.target_bandwidths)} kbps give "
                f"{sorted(offered)} codebooks; pick one of those"
            )
        if isinstance(n_coarse, bool) or not isinstance(n_coarse, int) or not 1 <= n_coarse <= n_q - 1:
            raise ConfigError(
                f"n_coarse={n_coarse!r}: must be an integer in 1..{n_q - 1} (n_q={n_q}) so that both the coarse "
                "and the fine stage get at least one codebook"
            )
        self.n_q, self.n_coarse, self.n_fine = n_q, n_coarse, n_q - n_coarse
        self.bandwidth = float(offered[n_q])

        if chunk_frames is None or context_frames is None:
            default_chunk, default_context = self._default_windows()
            chunk_frames = default_chunk if chunk_frames is None else chunk_frames
            context_frames = default_context if context_frames is None else context_frames
        for name, value, low in (("chunk_frames", chunk_frames, 1), ("context_frames", context_frames, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name}={value!r}: must be an integer >= {low}")
        self.chunk_frames, self.context_frames = chunk_frames, context_frames

    def _default_windows(self) -> tuple[int, int]:
        chunk_length = self.model.config.chunk_length
        if chunk_length is not None:
            # Keep windows (chunk + both contexts) within the length the model was built for.
            window = max(3, chunk_length // self.hop_length)
            context = max(1, window // 6)
            return window - 2 * context, context
        return (
            max(1, round(DEFAULT_CHUNK_SECONDS * self.frame_rate)),
            max(1, round(DEFAULT_CONTEXT_SECONDS * self.frame_rate)),
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> EncodecCodec:
        """Move the model to `device` (in place); returns self."""
        self.model.to(device)
        return self

    def num_frames(self, num_samples: int) -> int:
        """Codes for `num_samples` samples at sample_rate: ceil(num_samples / hop_length)."""
        return -(-int(num_samples) // self.hop_length)

    def _windows(self, total: int):
        """(kept start, kept end, window start, window end) in frames, covering 0..total."""
        for start in range(0, total, self.chunk_frames):
            end = min(total, start + self.chunk_frames)
            yield start, end, max(0, start - self.context_frames), min(total, end + self.context_frames)

    @torch.inference_mode()
    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        """Waveform float [C, N] (or [N]) at sample_rate -> codes Long [n_q, ceil(N / hop_length)].

        C may be `channels`; a mono model averages any C, a stereo model duplicates C = 1.
        """
        x = self._check_waveform(waveform)  # [channels, N]
        n = x.shape[-1]
        total = self.num_frames(n)
        codes = torch.empty(self.n_q, total, dtype=torch.long, device=x.device)
        if total == 0:
            return codes
        if self.normalize:
            scale = x.mean(0).pow(2).mean().sqrt() + 1e-8
            x = x / scale
        hop = self.hop_length
        for start, end, w0, w1 in self._windows(total):
            embeddings = self.model.encoder(x[None, :, w0 * hop : min(n, w1 * hop)])  # [1, D, w1 - w0]
            window_codes = self.model.quantizer.encode(embeddings, self.bandwidth)  # [n_q, 1, w1 - w0]
            codes[:, start:end] = window_codes[:, 0, start - w0 : end - w0]
        return codes

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes Long [K, T] -> waveform float32 [channels, T * hop_length].

        K is normally n_q; K < n_q decodes the first K codebooks only (a lower bandwidth, e.g. coarse only).
        """
        codes = self._check_codes(codes)
        total = codes.shape[-1]
        hop = self.hop_length
        out = torch.empty(self.channels, total * hop, dtype=torch.float32, device=codes.device)
        for start, end, w0, w1 in self._windows(total):
            embeddings = self.model.quantizer.decode(codes[:, None, w0:w1])  # [1, D, w1 - w0]
            audio = self.model.decoder(embeddings)  # [1, channels, (w1 - w0) * hop]
            out[:, start * hop : end * hop] = audio[0, :, (start - w0) * hop : (end - w0) * hop].float()
        if self.normalize:
            out = out * NORMALISED_LEVEL
        return out

    def _check_waveform(self, waveform: torch.Tensor) -> torch.Tensor:
        if not isinstance(waveform, torch.Tensor):
            raise ConfigError(f"encode: waveform must be a torch.Tensor [C, N], got {type(waveform).__name__}")
        if not torch.is_floating_point(waveform):
            raise ConfigError(
                f"encode: waveform must be float samples in [-1, 1], got {waveform.dtype}; "
                "divide integer PCM by its full scale first"
            )
        if waveform.dim() == 1:
            waveform = waveform[None]
        if waveform.dim() != 2:
            raise ConfigError(f"encode: waveform must be [C, N], got shape {tuple(waveform.shape)}")
        c = waveform.shape[0]
        if c != self.channels:
            if self.channels == 1 and c > 1:
                waveform = waveform.mean(0, keepdim=True)
            elif self.channels == 2 and c == 1:
                waveform = waveform.expand(2, -1)
            else:
                raise ConfigError(f"encode: waveform has {c} channels; this codec takes {self.channels}")
        if not bool(torch.isfinite(waveform).all()):
            raise ConfigError("encode: waveform holds NaN or infinite samples")
        param = next(self.model.parameters())
        return waveform.to(device=param.device, dtype=param.dtype)

    def _check_codes(self, codes: torch.Tensor) -> torch.Tensor:
        if not isinstance(codes, torch.Tensor):
            raise ConfigError(f"decode: codes must be a torch.Tensor [n_q, T], got {type(codes).__name__}")
        if torch.is_floating_point(codes) or codes.dtype == torch.bool or codes.is_complex():
            raise ConfigError(f"decode: codes must be an integer tensor (torch.long), got {codes.dtype}")
        if codes.dim() != 2 or not 1 <= codes.shape[0] <= self.n_q:
            raise ConfigError(
                f"decode: codes must be [K, T] with 1 <= K <= n_q={self.n_q}, got shape {tuple(codes.shape)}"
            )
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ConfigError(
                f"decode: code ids must lie in 0..{self.codebook_size - 1}, "
                f"found {int(codes.min())}..{int(codes.max())}"
            )
        return codes.to(device=self.device, dtype=torch.long)

    # ----------------------------------------------------------------------------------------------- storage

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        n_coarse: int,
        n_q: int | None = None,
        **kwargs,
    ) -> EncodecCodec:
        """Load an EnCodec model (local directory or hub id, safetensors only); kwargs go to __init__."""
        return cls(_load_encodec(name_or_path), n_coarse, n_q, **kwargs)

    def to_config(self) -> dict:
        """JSON-able settings; the weights are written by save()."""
        return {
            "type": CONFIG_TYPE,
            "n_q": self.n_q,
            "n_coarse": self.n_coarse,
            "chunk_frames": self.chunk_frames,
            "context_frames": self.context_frames,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "hop_length": self.hop_length,
            "codebook_size": self.codebook_size,
        }

    def save(self, directory: Path) -> None:
        """Write the EnCodec model (config.json + model.safetensors) into the existing `directory`."""
        with no_progress_bars():
            self.model.save_pretrained(str(directory), safe_serialization=True)

    @classmethod
    def load(cls, directory: Path, config: dict) -> EncodecCodec:
        """Rebuild a codec saved by save() with the settings of to_config()."""
        REGISTRY.check(config, f"{directory}: codec config", expect=CONFIG_TYPE)
        codec = cls(
            _load_encodec(directory),
            config["n_coarse"],
            config.get("n_q"),
            chunk_frames=config.get("chunk_frames"),
            context_frames=config.get("context_frames"),
        )
        for key in ("sample_rate", "channels", "hop_length", "codebook_size"):
            if key in config and config[key] != getattr(codec, key):
                raise CheckpointError(
                    f"{Path(directory) / 'config.json'}: the model has {key}={getattr(codec, key)} but the codec "
                    f"config says {config[key]}; the directory holds another model — save the codec again"
                )
        return codec


# Codec configs by "type" (the codec entry of pipeline.json).
REGISTRY = Registry("codec")
REGISTRY.register(CONFIG_TYPE, EncodecCodec.load, {
    "n_q": size(1024, null=True),  # null: as many as the largest bandwidth gives
    "n_coarse": size(1024, required=True),
    "chunk_frames": size(null=True),  # null: from the model's chunk length
    "context_frames": count(null=True),
    # what the saved model gives; compared with it when present
    "sample_rate": size(), "channels": size(2), "hop_length": size(), "codebook_size": size(),
})


def from_config(config: dict, directory: Path | None, *, where: str | None = None, key: str = "") -> EncodecCodec:
    """Rebuild a codec from to_config() output and the `directory` save() wrote; errors name `where` and `key`."""
    return REGISTRY.load(config, directory, where=where, key=key)


def _load_encodec(name_or_path: str | os.PathLike) -> EncodecModel:
    """EncodecModel from a local directory or hub id; pickles refused, failures as CheckpointError."""
    with loading(name_or_path, "an EnCodec model") as source, fitting_pretrained(EncodecModel, source):
        return EncodecModel.from_pretrained(source, use_safetensors=True)


def tiny_codec(seed: int = 0) -> EncodecCodec:
    """A random tiny EnCodec: 16 kHz mono, hop 320 (50 codes/s), 4 codebooks of 64, n_coarse 2; for tests.

    Each codebook is drawn from a Gaussian fitted to what it quantises (the encoder's output on a seeded
    signal, then the residual left by the codebooks before it), so codes vary with the audio instead of
    collapsing onto a single entry.
    """
    config = EncodecConfig(
        sampling_rate=16_000,
        audio_channels=1,
        target_bandwidths=[0.6, 1.2],  # 300 bit/s per codebook of 64 at 50 Hz -> 2 and 4 codebooks
        upsampling_ratios=[8, 5, 4, 2],
        num_filters=4,
        hidden_size=16,
        codebook_size=64,
        num_lstm_layers=1,
        num_residual_layers=1,
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = EncodecModel(config).eval()
    t = torch.arange(2 * config.sampling_rate) / config.sampling_rate
    tone = torch.sin(2 * math.pi * (110 + 400 * t) * t)
    signal = 0.5 * tone + 0.1 * torch.randn(t.shape, generator=generator)
    with torch.no_grad():
        residual = model.encoder(signal[None, None]).transpose(1, 2).reshape(-1, config.hidden_size)
        for layer in model.quantizer.layers:
            noise = torch.randn(config.codebook_size, config.hidden_size, generator=generator)
            entries = residual.mean(0) + residual.std(0) * noise
            layer.codebook.embed.copy_(entries)
            layer.codebook.embed_avg.copy_(entries)
            residual = residual - layer.codebook.decode(layer.codebook.encode(residual[None]))[0]
    return EncodecCodec(model, n_coarse=2)
