"""Semantic tokens: nearest-centroid (k-means) ids over frames of a self-supervised audio model.

    tok = SemanticTokenizer.from_pretrained("dir-or-hub-id", layer=6, centroids="centroids.safetensors")
    ids = tok.tokenize(waveform, sample_rate)      # [C, N] at any rate -> Long [T], T = tok.num_tokens(N, rate)

The model is any transformers AutoModel with a wav2vec2-style convolutional feature encoder (HuBERT, wav2vec2,
MERT-style); features are `hidden_states[layer]`.

Time alignment: token t stands for [t, t + 1) / frame_rate seconds, and every input of N samples gives exactly
round(N * frame_rate / rate) tokens. The audio is padded by half the encoder's excess receptive field on the
left (so frame t is centred on its interval) and as far as needed on the right, then cut to those T frames.

Long audio runs in windows of `chunk_seconds` of tokens plus `context_seconds` on each side; only the middle
of a window is kept. The convolutional front end then sees exactly the samples it sees in one pass; the
transformer layers attend within the window only (the models are trained on crops of a few seconds).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from transformers import AutoModel, PreTrainedModel

from .centroid_tokens import CentroidTokenizer
from .errors import CheckpointError, ConfigError
from .fileio import fitting_pretrained, load_tensors
from .hf_loading import loading, no_progress_bars
from .schema import Field, Registry, count, number, positive, size

CONFIG_TYPE = "ssl_kmeans"
MODEL_DIR = "model"


class SemanticTokenizer(CentroidTokenizer):
    """k-means ids over `hidden_states[layer]` of a self-supervised audio model.

    centroids: float [K, D] with D the model's hidden size (None: features only, until centroids are fitted
    and set with with_centroids). sample_rate: the rate the model expects. normalize: zero-mean, unit-variance
    input over the whole waveform (as the model's feature extractor does when `do_normalize` is set).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        layer: int,
        centroids: torch.Tensor | None,
        sample_rate: int,
        *,
        normalize: bool = False,
        chunk_seconds: float = 10.0,
        context_seconds: float = 2.0,
    ) -> None:
        config = getattr(model, "config", None)
        strides, kernels = getattr(config, "conv_stride", None), getattr(config, "conv_kernel", None)
        if not strides or not kernels or len(strides) != len(kernels):
            raise ConfigError(
                f"{type(model).__name__}: no convolutional feature encoder (config.conv_stride / conv_kernel); "
                "use a HuBERT / wav2vec2-style model"
            )
        self.model = model.eval()
        self.dim = int(config.hidden_size)
        layers = int(config.num_hidden_layers)
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= layers:
            raise ConfigError(f"layer={layer!r}: this model has hidden states 0..{layers}; pick one of those")
        self.layer = layer
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
            raise ConfigError(f"sample_rate={sample_rate!r}: must be a positive integer number of Hz")
        self.sample_rate = sample_rate
        self.normalize = bool(normalize)
        # One frame per `stride` samples; a frame sees `receptive` samples.
        self.stride = int(math.prod(strides))
        receptive, jump = 1, 1
        for kernel, stride in zip(kernels, strides):
            receptive += (int(kernel) - 1) * jump
            jump *= int(stride)
        self.receptive = receptive
        self.frame_rate = sample_rate / self.stride
        limits = (("chunk_seconds", chunk_seconds, 1 / self.frame_rate), ("context_seconds", context_seconds, 0))
        for name, value, low in limits:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low:
                raise ConfigError(f"{name}={value!r}: must be a number of seconds >= {low:g}")
        self.chunk_seconds, self.context_seconds = float(chunk_seconds), float(context_seconds)
        self.chunk_frames = max(1, round(chunk_seconds * self.frame_rate))
        self.context_frames = round(context_seconds * self.frame_rate)
        self.centroids = None if centroids is None else self._check_centroids(centroids, "centroids")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def feature_note(self) -> str:
        return f"the model's hidden states are {self.dim} wide"

    def to(self, device: torch.device | str) -> SemanticTokenizer:
        """Move model and centroids to `device` (in place); returns self."""
        self.model.to(device)
        if self.centroids is not None:
            self.centroids = self.centroids.to(device)
        return self

    def with_centroids(self, centroids: torch.Tensor) -> SemanticTokenizer:
        """A tokenizer sharing this model, with new centroids [K, D]."""
        return SemanticTokenizer(
            self.model,
            self.layer,
            centroids,
            self.sample_rate,
            normalize=self.normalize,
            chunk_seconds=self.chunk_seconds,
            context_seconds=self.context_seconds,
        )

    @torch.no_grad()
    def features(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Waveform [C, N] (or [N]) at `sample_rate` -> float32 [T, D], hidden_states[layer] (mono, resampled)."""
        x = self._prepare(waveform, sample_rate)  # [N'] at self.sample_rate
        total = self.num_tokens(waveform.shape[-1], sample_rate)
        out = torch.empty(total, self.dim, dtype=torch.float32, device=self.device)
        if total == 0:
            return out
        # Pad so that exactly `total` frames come out, frame t centred on its interval.
        left = (self.receptive - self.stride) // 2
        needed = (total - 1) * self.stride + self.receptive
        x = torch.nn.functional.pad(x, (left, max(0, needed - left - x.shape[-1])))[:needed]
        dtype = next(self.model.parameters()).dtype
        for start in range(0, total, self.chunk_frames):
            end = min(total, start + self.chunk_frames)
            w0, w1 = max(0, start - self.context_frames), min(total, end + self.context_frames)
            window = x[w0 * self.stride : (w1 - 1) * self.stride + self.receptive]
            hidden = self.model(window[None].to(dtype), output_hidden_states=True).hidden_states[self.layer][0]
            if hidden.shape[0] != w1 - w0:  # the model's encoder does not follow conv_stride / conv_kernel
                raise ConfigError(
                    f"{type(self.model).__name__}: {window.shape[-1]} samples gave {hidden.shape[0]} frames, "
                    f"expected {w1 - w0} from its conv_stride / conv_kernel"
                )
            out[start:end] = hidden[start - w0 : end - w0].float()
        return out

    def _prepare(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Check, mix to mono, resample and (optionally) normalise -> float32 [N'] on the model's device."""
        x = self._mono(waveform, sample_rate)
        if self.normalize and x.numel():
            x = (x - x.mean()) / torch.sqrt(x.var(correction=0) + 1e-7)
        return x

    # ----------------------------------------------------------------------------------------------- storage

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        layer: int,
        centroids: torch.Tensor | str | os.PathLike | None = None,
        *,
        sample_rate: int | None = None,
        normalize: bool | None = None,
        **kwargs,
    ) -> SemanticTokenizer:
        """Load the model (local directory or hub id, safetensors only) and centroids (tensor or .safetensors).

        sample_rate / normalize default to the model's preprocessor_config.json (sampling_rate, do_normalize),
        else 16 kHz and False. kwargs go to __init__.
        """
        model = _load_model(name_or_path)
        preprocessor = _preprocessor_settings(name_or_path)
        sample_rate = sample_rate if sample_rate is not None else int(preprocessor.get("sampling_rate", 16_000))
        normalize = normalize if normalize is not None else bool(preprocessor.get("do_normalize", False))
        tokenizer = cls(model, layer, None, sample_rate, normalize=normalize, **kwargs)
        if centroids is None:
            return tokenizer
        if isinstance(centroids, torch.Tensor):
            return tokenizer.with_centroids(centroids)
        path = Path(centroids)
        tensors = load_tensors(path)
        if len(tensors) != 1:
            raise CheckpointError(f"{path}: expected one tensor (the centroids [K, D]), found {sorted(tensors)}")
        tokenizer.centroids = tokenizer._check_centroids(next(iter(tensors.values())), str(path), CheckpointError)
        return tokenizer

    def to_config(self) -> dict:
        """JSON-able settings; model and centroids are written by save()."""
        return {
            "type": CONFIG_TYPE,
            "layer": self.layer,
            "sample_rate": self.sample_rate,
            "normalize": self.normalize,
            "chunk_seconds": self.chunk_seconds,
            "context_seconds": self.context_seconds,
            "vocab_size": self.vocab_size,
            "dim": self.dim,
        }

    def save(self, directory: Path) -> None:
        """Write the model to directory/"model" and the centroids to directory/"centroids.safetensors"."""
        directory = Path(directory)
        with no_progress_bars():
            self.model.save_pretrained(str(directory / MODEL_DIR), safe_serialization=True)
        self._save_centroids(directory)

    @classmethod
    def load(cls, directory: Path, config: dict) -> SemanticTokenizer:
        """Rebuild a tokenizer saved by save() with the settings of to_config()."""
        directory = Path(directory)
        REGISTRY.check(config, f"{directory}: semantic tokenizer config", expect=CONFIG_TYPE)
        model_dir = directory / MODEL_DIR
        if not model_dir.is_dir():
            raise CheckpointError(f"{model_dir}: the model directory is missing; save the tokenizer again")
        model = _load_model(model_dir)
        layers = int(model.config.num_hidden_layers)
        if not isinstance(config["layer"], int) or not 0 <= config["layer"] <= layers:
            raise CheckpointError(
                f"{model_dir / 'config.json'}: the model has hidden states 0..{layers} but the tokenizer uses "
                f"layer {config['layer']!r}; the directory holds another model"
            )
        options = {k: config[k] for k in ("normalize", "chunk_seconds", "context_seconds") if k in config}
        tokenizer = cls(model, config["layer"], None, config["sample_rate"], **options)
        return tokenizer._load_centroids(directory, config)


# Semantic tokenizer configs by "type" (the semantic_tokenizer entry of pipeline.json).
REGISTRY = Registry("semantic tokenizer")
REGISTRY.register(CONFIG_TYPE, SemanticTokenizer.load, {
    "layer": count(required=True), "sample_rate": size(required=True), "normalize": Field(bool),
    "chunk_seconds": positive(), "context_seconds": number(0),
    # what the saved centroids give; compared with them when present (vocab_size 0: no centroids yet)
    "vocab_size": count(), "dim": size(),
})


def from_config(config: dict, directory: Path | None, *, where: str | None = None, key: str = "") -> SemanticTokenizer:
    """Rebuild a tokenizer from to_config() output and the `directory` save() wrote; errors name `where` and `key`."""
    return REGISTRY.load(config, directory, where=where, key=key)


def _load_model(name_or_path: str | os.PathLike) -> PreTrainedModel:
    """AutoModel from a local directory or hub id; pickles refused, failures as CheckpointError."""
    with loading(name_or_path, "an audio model") as source, fitting_pretrained(AutoModel, source):
        return AutoModel.from_pretrained(source, use_safetensors=True)


def _preprocessor_settings(name_or_path: str | os.PathLike) -> dict:
    """sampling_rate / do_normalize from the model's preprocessor_config.json, or {} when it has none."""
    from transformers import AutoFeatureExtractor

    try:
        extractor = AutoFeatureExtractor.from_pretrained(str(name_or_path))
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {k: getattr(extractor, k) for k in ("sampling_rate", "do_normalize") if hasattr(extractor, k)}


def tiny_semantic_tokenizer(seed: int = 0) -> SemanticTokenizer:
    """A random tiny HuBERT at 16 kHz, 25 tokens/s (strides 5*4*4*2*2*2 = 640), layer 1 of 2, K = 32; for tests.

    The centroids are feature frames of a seeded signal, so ids vary with the audio.
    """
    from transformers import HubertConfig, HubertModel

    config = HubertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16, 16, 16, 16, 16),
        conv_stride=(5, 4, 4, 2, 2, 2),
        conv_kernel=(10, 4, 4, 2, 2, 2),
        feat_extract_norm="layer",  # per-frame norms: the front end has a finite receptive field
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HubertModel(config).eval()
    tokenizer = SemanticTokenizer(model, 1, None, 16_000)
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(2 * 16_000) / 16_000
    signal = 0.5 * torch.sin(2 * math.pi * (200 + 300 * t) * t) + 0.2 * torch.randn(t.shape, generator=generator)
    feats = tokenizer.features(signal, 16_000)  # [50, 32]
    pick = torch.randperm(feats.shape[0], generator=generator)[:32]
    return tokenizer.with_centroids(feats[pick])


# The model-free backend (chroma + log-mel frames) lives in its own module and registers itself here.
from .spectral_tokenizer import register as _register_spectral  # noqa: E402

_register_spectral(REGISTRY)
