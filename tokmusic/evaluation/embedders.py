"""Audio embedders for evaluation, behind one interface, loaded by name, local directory or hub id.

    emb = load_audio_embedder("spectral")            # weight-free log-mel + chroma statistics
    emb = load_audio_embedder("path/to/clap")        # transformers ClapModel (audio and text)
    emb.embed(waveform, sample_rate) -> [D]          # waveform [C, N]; one vector per clip
    emb.embed_windows(waveform, sample_rate) -> [W, D]   # one per window of `window_seconds` (FAD pools these)

    clf = load_classifier("path/to/ast")             # any AutoModelForAudioClassification -> probabilities [C]
    clf = load_classifier("pitch-class")             # weight-free: the clip's pitch-class distribution [12]
"""

from __future__ import annotations


import torch

from ..errors import CheckpointError
from ..hf_loading import loading
from .spectral import (ANALYSIS_RATE, CHROMA_HOP, ONSET_FFT, ONSET_HOP, chroma, log_mel, resample, spectral_flux,
                       to_mono)

class AudioEmbedder:
    """One vector per window of `window_seconds`; a clip's embedding is the mean of its windows.

    Subclasses set `name`, `dim`, `sample_rate`, `window_seconds` and implement `_embed_chunks`.
    """

    name: str = "audio-embedder"
    dim: int = 0
    sample_rate: int = 16000
    window_seconds: float = 10.0
    kind: str = "embedding"  # "embedding" | "probabilities"

    def describe(self) -> dict:
        """What produced the numbers: recorded beside every metric in the report."""
        return {"name": self.name, "kind": self.kind, "dim": self.dim, "sample_rate": self.sample_rate,
                "window_seconds": self.window_seconds}

    def _bounds(self, n: int) -> list[tuple[int, int]]:
        """Non-overlapping windows [start, end) of an n-sample clip; a last partial window counts if it is
        at least half a window (or the whole clip)."""
        size = max(1, int(round(self.window_seconds * self.sample_rate)))
        bounds = [(i * size, (i + 1) * size) for i in range(n // size)]
        if n % size and (n % size >= size // 2 or not bounds):
            bounds.append((n - n % size, n))
        return bounds

    def _chunks(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x[a:b] for a, b in self._bounds(x.shape[0])]

    def embed_windows(self, waveform, sample_rate: int) -> torch.Tensor:
        """Embeddings [W, D] (float32) of the windows of `waveform` [C, N] or [N] at `sample_rate`."""
        x = resample(to_mono(waveform), sample_rate, self.sample_rate)
        return self._embed_chunks(self._chunks(x)).float()

    def embed(self, waveform, sample_rate: int) -> torch.Tensor:
        """Clip embedding [D]: the mean over windows."""
        return self.embed_windows(waveform, sample_rate).mean(dim=0)

    def _embed_chunks(self, chunks: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


class SpectralEmbedder(AudioEmbedder):
    """Weight-free: per 1-s window, mean and std of 64 log-mel bands and 12 chroma bins, plus onset-flux
    mean/std and loudness. Crude next to CLAP or VGGish, but it needs nothing and is deterministic."""

    name = "spectral"
    sample_rate = ANALYSIS_RATE  # same rate as the structure analysis: a clip is decoded once, never resampled
    window_seconds = 1.0
    dim = 64 * 2 + 12 * 2 + 3

    def embed_windows(self, waveform, sample_rate: int) -> torch.Tensor:
        # one STFT per clip, pooled per window: per-window STFTs would redo the edge padding every second
        x = resample(to_mono(waveform), sample_rate, self.sample_rate)
        mel_hop, chroma_hop = ONSET_HOP, CHROMA_HOP  # 50 and 10 frames/s
        db = log_mel(x, self.sample_rate, n_fft=ONSET_FFT, hop=mel_hop, n_mels=64, floor_db=100.0)  # [64, T]
        ch = chroma(x, self.sample_rate, n_fft=4096, hop=chroma_hop)  # [12, T']
        flux = spectral_flux(db)
        rows = []
        for a, b in self._bounds(x.shape[0]):
            m = db[:, a // mel_hop : max(a // mel_hop + 1, b // mel_hop)]
            c = ch[:, a // chroma_hop : max(a // chroma_hop + 1, b // chroma_hop)]
            f = flux[a // mel_hop : max(a // mel_hop + 1, b // mel_hop)]
            loud = 10.0 * torch.log10(x[a:b].double().pow(2).mean().clamp_min(1e-10)).float()
            rows.append(torch.cat([m.mean(1), m.std(1, unbiased=False), c.mean(1), c.std(1, unbiased=False),
                                   f.mean()[None], f.std(unbiased=False)[None], loud[None]]))
        return torch.stack(rows)


class PitchClassEmbedder(AudioEmbedder):
    """Weight-free stand-in for a classifier: the clip's pitch-class distribution [12] (C first, sums to 1),
    so KL divergence compares harmonic content when no AudioSet-style classifier is at hand."""

    name = "pitch-class"
    sample_rate = ANALYSIS_RATE
    window_seconds = 10.0
    dim = 12
    kind = "probabilities"
    labels = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

    def _embed_chunks(self, chunks: list[torch.Tensor]) -> torch.Tensor:
        rows = []
        for x in chunks:
            p = chroma(x, self.sample_rate).double().mean(dim=1)
            rows.append(p / p.sum() if p.sum() > 0 else torch.full((12,), 1 / 12, dtype=torch.float64))
        return torch.stack(rows)


def _hf_load(loader, spec: str, **kwargs):
    with loading(spec, "a model for this role", "config.json and model.safetensors (+ processor files)") as source:
        return loader(source, **kwargs)


def _pooled(output) -> torch.Tensor:
    """transformers 4.x returns a tensor from get_*_features, 5.x an output whose pooler_output is it."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class HFAudioEmbedder(AudioEmbedder):
    """Any transformers audio model: the mean of its last hidden states over time (HuBERT, MERT, AST...)."""

    batch_size = 8

    def __init__(self, spec: str, device: torch.device | str | None = None, model_class=None):
        from transformers import AutoFeatureExtractor, AutoModel

        self.name = spec
        self.device = torch.device(device) if device is not None else default_device()
        self.extractor = _hf_load(AutoFeatureExtractor.from_pretrained, spec)
        self.model = _hf_load((model_class or AutoModel).from_pretrained, spec, use_safetensors=True)
        self.model.eval().to(self.device)
        self.sample_rate = int(self.extractor.sampling_rate)
        if getattr(self.extractor, "nb_max_samples", None):
            self.window_seconds = self.extractor.nb_max_samples / self.sample_rate
        elif self.model.config.model_type == "audio-spectrogram-transformer":
            self.window_seconds = self.extractor.max_length / 100.0  # AST frames are 10 ms
        self.dim = self._output_dim()

    def _output_dim(self) -> int:
        return int(self.model.config.hidden_size)

    def _features(self, chunks: list[torch.Tensor]) -> dict:
        arrays = [c.numpy() for c in chunks]
        inputs = self.extractor(arrays, sampling_rate=self.sample_rate, return_tensors="pt")
        return {k: v.to(self.device) for k, v in inputs.items() if isinstance(v, torch.Tensor)}

    def _forward(self, inputs: dict) -> torch.Tensor:
        return self.model(**inputs).last_hidden_state.mean(dim=1)

    @torch.inference_mode()
    def _embed_chunks(self, chunks: list[torch.Tensor]) -> torch.Tensor:
        # only the last window can be shorter: batch the full ones without padding, the short one alone
        n_full = sum(1 for c in chunks if c.numel() == chunks[0].numel())
        batches = [chunks[i : min(i + self.batch_size, n_full)] for i in range(0, n_full, self.batch_size)]
        batches += [chunks[n_full:]] if n_full < len(chunks) else []
        return torch.cat([self._forward(self._features(b)).float().cpu() for b in batches])


class ClapEmbedder(HFAudioEmbedder):
    """CLAP (transformers ClapModel): audio and text in one space, for FAD-CLAP and text–music consistency."""

    def __init__(self, spec: str, device: torch.device | str | None = None):
        from transformers import AutoTokenizer, ClapModel

        super().__init__(spec, device, model_class=ClapModel)
        self.tokenizer = _hf_load(AutoTokenizer.from_pretrained, spec)
        self.fusion = bool(getattr(self.model.config.audio_config, "enable_fusion", False))

    def _output_dim(self) -> int:
        return int(self.model.config.projection_dim)

    def _features(self, chunks: list[torch.Tensor]) -> dict:
        arrays = [c.numpy() for c in chunks]
        inputs = self.extractor(arrays, sampling_rate=self.sample_rate, return_tensors="pt", padding="repeatpad",
                                truncation="fusion" if self.fusion else "rand_trunc")
        return {k: v.to(self.device) for k, v in inputs.items() if isinstance(v, torch.Tensor)}

    def _forward(self, inputs: dict) -> torch.Tensor:
        return _pooled(self.model.get_audio_features(**inputs))

    @torch.inference_mode()
    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """Text embeddings [B, D] in the audio embeddings' space."""
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items()}
        return _pooled(self.model.get_text_features(**tokens)).float().cpu()


class AudioClassifierEmbedder(HFAudioEmbedder):
    """Class probabilities [C] (softmax of the logits, averaged over windows) of any
    AutoModelForAudioClassification, for KL divergence as in AudioLDM / MusicGen / VidMuse."""

    kind = "probabilities"

    def __init__(self, spec: str, device: torch.device | str | None = None):
        from transformers import AutoModelForAudioClassification

        super().__init__(spec, device, model_class=AutoModelForAudioClassification)
        id2label = getattr(self.model.config, "id2label", None) or {}
        self.labels = tuple(str(id2label.get(i, i)) for i in range(self.dim))

    def _output_dim(self) -> int:
        return int(self.model.config.num_labels)

    def _forward(self, inputs: dict) -> torch.Tensor:
        return torch.softmax(self.model(**inputs).logits.double(), dim=-1)


def _model_type(spec: str) -> tuple[str, list[str]]:
    from transformers import AutoConfig

    config = _hf_load(AutoConfig.from_pretrained, spec)
    return config.model_type, list(getattr(config, "architectures", None) or [])


def load_audio_embedder(spec: str, device: torch.device | str | None = None) -> AudioEmbedder:
    """"spectral" or "pitch-class" (weight-free), or a directory / hub id: a CLAP model gives a ClapEmbedder
    (audio and text), any other transformers audio model its mean last hidden state."""
    if spec == "spectral":
        return SpectralEmbedder()
    if spec == "pitch-class":
        return PitchClassEmbedder()
    model_type, _ = _model_type(spec)
    return ClapEmbedder(spec, device) if model_type == "clap" else HFAudioEmbedder(spec, device)


def load_classifier(spec: str, device: torch.device | str | None = None) -> AudioEmbedder:
    """"pitch-class" (weight-free), or a directory / hub id of an AutoModelForAudioClassification."""
    if spec == "pitch-class":
        return PitchClassEmbedder()
    _, architectures = _model_type(spec)
    if architectures and not any(a.endswith("ForAudioClassification") for a in architectures):
        raise CheckpointError(
            f"{spec}: is a {architectures[0]}, not an audio classifier; pass a model saved from an "
            "AutoModelForAudioClassification (e.g. an AudioSet AST), or 'pitch-class'"
        )
    return AudioClassifierEmbedder(spec, device)

