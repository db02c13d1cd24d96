"""The control token: a joint text-audio embedding (CLAP through transformers `ClapModel`).

V2Meow §3.1: training conditions on the *audio* embedding of the target music, so no captions are needed;
inference conditions on the *text* embedding of the prompt. Both land in the same space, L2-normalised.

    control = ClapControl.from_pretrained("laion/clap-htsat-unfused")   # or a local directory
    c_train = control.embed_audio(music, 48_000)        # [C, N] -> float32 [dim]
    c_infer = control.embed_text(["slow melancholic piano"])   # -> float32 [1, dim]

Audio longer than the model's window (10 s for CLAP) is cut into evenly spaced full windows whose embeddings
are averaged and re-normalised, so the whole piece counts and the result is deterministic (the feature
extractor's own handling of long audio picks random crops).
"""

from __future__ import annotations

import abc
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor

from .errors import CheckpointError, ConfigError
from .fileio import fitting_pretrained
from .resample import resample
from .hf_loading import loading, no_progress_bars
from .schema import Registry, size

CONFIG_TYPE = "clap"
# Audio windows embedded per forward pass: bounds memory on long music.
WINDOW_BATCH = 8


def checked_prompts(texts) -> list[str]:
    """Prompts (a list, or one string) checked and stripped; ConfigError for an empty list, a non-string or an
    empty prompt."""
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, (list, tuple)) or not texts:
        raise ConfigError("embed_text: pass a non-empty list of prompts")
    for text in texts:
        if not isinstance(text, str):
            raise ConfigError(f"embed_text: prompts must be strings, got {type(text).__name__}")
        if not text.strip():
            raise ConfigError("prompt is empty; pass None for no prompt")
    return [text.strip() for text in texts]


class ControlEmbedder(abc.ABC):
    """A joint text-audio embedding: both sides give L2-normalised float32 vectors of width `dim`.

    A subclass sets ``dim``, ``sample_rate`` (its audio rate) and ``window`` (samples its audio model takes at
    once) and implements ``_embed_windows``; the base class cuts audio into windows and averages them.
    """

    dim: int
    sample_rate: int
    window: int

    @abc.abstractmethod
    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """Prompts -> float32 [B, dim], L2-normalised. An empty prompt raises ConfigError."""

    def embed_prompt(self, texts: list[str]) -> torch.Tensor:
        """Prompts -> the float32 [B, dim] control a stage is conditioned on. Here the text embedding itself; an
        embedder with a prompt prior (``SentenceAudioControl``) maps it to where the training music lies."""
        return self.embed_text(texts)

    @abc.abstractmethod
    def _embed_windows(self, windows: list[torch.Tensor]) -> torch.Tensor:
        """Mono float32 windows [n] (at most ``window`` samples each) -> L2-normalised float32 [len, dim]."""

    @abc.abstractmethod
    def to_config(self) -> dict:
        """JSON-able settings with a "type" key."""

    @abc.abstractmethod
    def save(self, directory: Path) -> None:
        """Write weights and files into the existing `directory`."""

    @torch.inference_mode()
    def embed_audio(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Waveform [C, N] (or [N]) at `sample_rate` -> float32 [dim], L2-normalised (mean over windows)."""
        windows = self._windows(self._mono(waveform, sample_rate, "embed_audio"))
        embeddings = torch.cat([self._embed_windows(windows[i : i + WINDOW_BATCH])
                                for i in range(0, len(windows), WINDOW_BATCH)])
        return F.normalize(embeddings.mean(0), dim=-1)

    @torch.inference_mode()
    def embed_audio_chunks(self, waveform: torch.Tensor, sample_rate: int, hop: float) -> torch.Tensor:
        """Waveform [C, N] (or [N]) -> float32 [ceil(seconds / hop), dim]: one L2-normalised embedding per chunk.

        Row i embeds the consecutive chunk [i * hop, (i + 1) * hop) seconds the way `embed_audio` embeds a whole
        waveform (a chunk longer than the model's window is averaged over windows); the windows of all chunks go
        through the model together, WINDOW_BATCH at a time. A last chunk cut short by the end of the audio is
        taken from the audio's last `hop` seconds, so no row embeds a sliver.
        """
        if isinstance(hop, bool) or not isinstance(hop, (int, float)) or not 0 < hop < float("inf"):
            raise ConfigError(f"embed_audio_chunks: hop must be a number of seconds > 0, got {hop!r}")
        x = self._mono(waveform, sample_rate, "embed_audio_chunks")  # [n] at the model's rate
        seconds = waveform.shape[-1] / sample_rate
        count = max(1, int(-(-(seconds - 1e-6) // hop)))  # ceil, forgiving float error in seconds / hop
        size = max(1, round(hop * self.sample_rate))
        windows, owner = [], []  # every chunk's windows, flattened; owner[j] = the chunk of window j
        for i in range(count):
            start = max(0, min(i * size, x.shape[0] - size))
            for w in self._windows(x[start : start + size]):
                windows.append(w)
                owner.append(i)
        embeddings = torch.cat([self._embed_windows(windows[i : i + WINDOW_BATCH])
                                for i in range(0, len(windows), WINDOW_BATCH)])  # [windows, dim]
        sums = torch.zeros(count, self.dim, device=embeddings.device)
        sums.index_add_(0, torch.tensor(owner, device=embeddings.device), embeddings)
        return F.normalize(sums, dim=-1)

    def _mono(self, waveform: torch.Tensor, sample_rate: int, what: str) -> torch.Tensor:
        """Checked [C, N] / [N] float -> mono float32 [n] at the model's rate, on the CPU."""
        tensor = isinstance(waveform, torch.Tensor)
        if not tensor or not torch.is_floating_point(waveform):
            got = waveform.dtype if tensor else type(waveform).__name__
            raise ConfigError(f"{what}: waveform must be a float tensor [C, N], got {got}")
        if waveform.dim() not in (1, 2):
            raise ConfigError(f"{what}: waveform must be [C, N], got shape {tuple(waveform.shape)}")
        if waveform.shape[-1] == 0:
            raise ConfigError(f"{what}: waveform is empty (0 samples)")
        if not bool(torch.isfinite(waveform).all()):
            raise ConfigError(f"{what}: waveform holds NaN or infinite samples")
        x = waveform.detach().float().cpu()
        x = x.mean(0) if x.dim() == 2 else x
        return resample(x, sample_rate, self.sample_rate)

    def _windows(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Evenly spaced full windows covering x [N]; x itself when it fits in one."""
        n = x.shape[0]
        if n <= self.window:
            return [x]
        count = -(-n // self.window)
        starts = torch.linspace(0, n - self.window, count).round().long().tolist()
        return [x[s : s + self.window] for s in starts]


class ClapControl(ControlEmbedder):
    """CLAP: `ClapModel` with its processor (tokenizer + ClapFeatureExtractor)."""

    def __init__(self, model: ClapModel, processor: ClapProcessor) -> None:
        if not isinstance(model, ClapModel):
            raise ConfigError(f"ClapControl needs a transformers ClapModel, got {type(model).__name__}")
        extractor = getattr(processor, "feature_extractor", None)
        if not isinstance(extractor, ClapFeatureExtractor) or getattr(processor, "tokenizer", None) is None:
            raise ConfigError("ClapControl needs a ClapProcessor with a tokenizer and a ClapFeatureExtractor")
        if extractor.feature_size != model.config.audio_config.num_mel_bins:
            raise ConfigError(
                f"CLAP processor makes {extractor.feature_size} mel bins but the model takes "
                f"{model.config.audio_config.num_mel_bins}; they belong to different checkpoints"
            )
        self.model = model.eval()
        self.processor = processor
        self.dim = int(model.config.projection_dim)
        self.sample_rate = int(extractor.sampling_rate)
        self.window = int(extractor.nb_max_samples)  # samples per audio window at sample_rate
        self.fusion = bool(model.config.audio_config.enable_fusion)
        positions = int(model.config.text_config.max_position_embeddings) - 2  # RoBERTa offsets by pad id + 1
        self.max_text_tokens = min(positions, int(getattr(processor.tokenizer, "model_max_length", positions)))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> ClapControl:
        """Move the model to `device` (in place); returns self."""
        self.model.to(device)
        return self

    @torch.inference_mode()
    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """Prompts (a list, or one string) -> float32 [B, dim], L2-normalised."""
        texts = checked_prompts(texts)
        inputs = self.processor.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_text_tokens,
            return_tensors="pt",
        ).to(self.device)
        features = self.model.get_text_features(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        ).pooler_output
        return F.normalize(features.float(), dim=-1)

    def _embed_windows(self, windows: list[torch.Tensor]) -> torch.Tensor:
        # The extractor draws from numpy's global generator (to flag a "longer" clip); keep callers' draws intact.
        state = np.random.get_state()
        try:
            inputs = self.processor.feature_extractor(
                [w.numpy().astype(np.float64) for w in windows],
                sampling_rate=self.sample_rate,
                truncation="fusion" if self.fusion else "rand_trunc",
                return_tensors="pt",
            )
        finally:
            np.random.set_state(state)
        features = inputs["input_features"].to(self.device, self.model.dtype)
        # Windows never exceed the model's length; a single fused clip is flagged "longer" by the extractor,
        # so flag every window the same way instead of one at random.
        is_longer = torch.full((len(windows), 1), self.fusion, dtype=torch.bool, device=self.device)
        output = self.model.get_audio_features(input_features=features, is_longer=is_longer).pooler_output
        return F.normalize(output.float(), dim=-1)

    # ----------------------------------------------------------------------------------------------- storage

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike) -> ClapControl:
        """Load ClapModel + ClapProcessor from a local directory or hub id (safetensors only)."""
        return cls(*_load_clap(name_or_path))

    def to_config(self) -> dict:
        """JSON-able settings; model and processor files are written by save()."""
        return {"type": CONFIG_TYPE, "dim": self.dim, "sample_rate": self.sample_rate}

    def save(self, directory: Path) -> None:
        """Write model.safetensors + config.json and the processor's files into the existing `directory`."""
        with no_progress_bars():
            self.model.save_pretrained(str(directory), safe_serialization=True)
            self.processor.save_pretrained(str(directory))

    @classmethod
    def load(cls, directory: Path, config: dict) -> ClapControl:
        """Rebuild an embedder saved by save() with the settings of to_config()."""
        REGISTRY.check(config, f"{directory}: control config", expect=CONFIG_TYPE)
        model, processor = _load_clap(directory)
        try:
            control = cls(model, processor)
        except (ValueError, TypeError) as exc:  # settings in the processor files that are not numbers
            raise CheckpointError(f"{directory}: the CLAP files hold settings that do not work ({exc}); "
                                  "save the embedder again") from None
        for key in ("dim", "sample_rate"):
            if key in config and config[key] != getattr(control, key):
                raise CheckpointError(
                    f"{Path(directory)}: the CLAP files give {key}={getattr(control, key)} but the control config "
                    f"says {config[key]}; the directory holds another model — save it again"
                )
        return control


# Control configs by "type" (the control entry of pipeline.json); dim and sample_rate are compared with the files.
REGISTRY = Registry("control")
REGISTRY.register(CONFIG_TYPE, ClapControl.load, {"dim": size(), "sample_rate": size()})


def _load_sentence_audio(directory: Path, config: dict) -> ControlEmbedder:
    from .sentence_control import SentenceAudioControl  # imported when used: it imports this module

    return SentenceAudioControl.load(directory, config)


# frozen MiniLM text encoder + a trained audio tower (sentence_control.py)
REGISTRY.register("sentence_audio", _load_sentence_audio, {"dim": size(), "sample_rate": size()})


def from_config(config: dict, directory: Path | None, *, where: str | None = None, key: str = "") -> ControlEmbedder:
    """Rebuild an embedder from to_config() output and the `directory` save() wrote; errors name `where` and `key`."""
    return REGISTRY.load(config, directory, where=where, key=key)


def _load_clap(name_or_path: str | os.PathLike) -> tuple[ClapModel, ClapProcessor]:
    """ClapModel + ClapProcessor from a local directory or hub id; pickles refused, failures as CheckpointError."""
    needs = "config.json, model.safetensors and the processor files (processor_config.json, tokenizer files)"
    with loading(name_or_path, "a CLAP model", needs) as source, fitting_pretrained(ClapModel, source):
        return ClapModel.from_pretrained(source, use_safetensors=True), ClapProcessor.from_pretrained(source)


def _tiny_tokenizer():
    """A byte-level BPE (RoBERTa layout) over the 256 byte symbols, built offline: every text tokenizes."""
    from tokenizers import pre_tokenizers
    from transformers import RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}  # RoBERTa's ids; CLAP's text config expects pad = 1
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    vocab["<mask>"] = len(vocab)
    return RobertaTokenizer(vocab=vocab, merges=[], model_max_length=64)


def tiny_control(seed: int = 0) -> ClapControl:
    """A random tiny CLAP (2-layer text tower, 2-stage audio tower, dim 16, 48 kHz, 2 s windows); for tests."""
    tokenizer = _tiny_tokenizer()
    extractor = ClapFeatureExtractor(feature_size=16, sampling_rate=48_000, hop_length=480, max_length_s=2)
    config = ClapConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 66,
        },
        audio_config={
            "num_mel_bins": 16,
            "spec_size": 64,  # 64 / 16 mel bins: up to 256 frames = 2.55 s at hop 480
            "window_size": 4,
            "patch_embeds_hidden_size": 16,
            "depths": [1, 1],
            "num_attention_heads": [2, 2],
            "hidden_size": 32,  # patch_embeds_hidden_size * 2 ** (stages - 1)
            "enable_fusion": False,
        },
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClapModel(config).eval()
    return ClapControl(model, ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer))
