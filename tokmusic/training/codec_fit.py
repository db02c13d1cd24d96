"""Training an EnCodec-architecture codec from scratch (transformers ``EncodecModel``).

    codec = new_codec(sample_rate=16000, hop_length=320, n_q=4, n_coarse=2, codebook_size=256)   # codec_build
    trainer = CodecTrainer(codec, waves, TrainSettings(steps=3000))      # waves: mono float tensors [N]
    trainer.run(run_dir)                                                 # resumable; checkpoints under run_dir
    pipeline = with_codec(pipeline, trainer.codec)                       # codec_build: re-sizes coarse / fine

What one step does (EnCodec, Défossez et al. 2022, without its adversarial part):

    crops x [B, N] ──encoder──► e [B, D, T] ──RVQ (first n of n_q codebooks)──► q ──decoder──► x̂ [B, N]
    loss = 0.1 · |x - x̂|₁  +  Σ_scales ( |log mel x - log mel x̂|₁ + |…|₂² ) / #scales  +  Σ_l |r_l - q_l|² / n
           + |mean_c e|² + |var_c e - 1|²                        (e's per-channel statistics over the batch)

- Before the first step every convolution is rescaled on a batch of crops so that its outputs have zero mean
  and unit variance, and the decoder's output the input's loudness (``data_dependent_init``). Untrained, the
  encoder's outputs vary by ~1e-3 around an offset that the optimiser moves faster than EMA codebooks follow:
  on the demo chorales 1 of 256 codes stayed in use after 150 steps, 56–76 per codebook with the
  initialisation after 300 (and held-out mel distance 0.72 instead of 1.30). The latent term keeps e there.

- RVQ with straight-through gradients; each codebook l quantises the residual r_l left by the ones before it.
  Codebooks are not trained by gradients: they follow their assignments by exponential moving averages, the
  way k-means would (``cluster_size`` / ``embed_avg`` buffers of transformers' ``EncodecEuclideanCodebook``,
  decay 0.99, Laplace smoothing), and a code that is almost never chosen is moved onto a random residual of
  the batch. They start as k-means centroids of the untrained encoder's outputs on a few batches.
- Quantizer dropout (SoundStream): with probability ``quantizer_dropout`` a batch uses only its first n
  codebooks, n uniform in 1..n_q, so the first (coarse) codebooks decode well on their own.
- No adversarial loss and no discriminators: they double the cost of a step and need far more steps than a
  2-core CPU has. Measured on the demo chorales (16 kHz, default architecture, 1500 steps, 18 CPU minutes):
  held-out mel distance falls from 2.26 to 0.61 and 250 / 193 / 126 / 96 codes of the four codebooks are in
  use, but SI-SNR stays far below 0 dB (spectra, not waveforms) and the chroma agreement is ~0: the codec
  keeps loudness, timbre and pauses but not which notes play. EnCodec trains ~300k steps.

Every step's crops, dropout draw and dead-code picks come from a generator seeded by (seed, step), so a run
resumed from a checkpoint repeats an uninterrupted one bit for bit (on the same machine and thread count).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import EncodecModel

from ..codec import EncodecCodec
from ..errors import ConfigError, DataError
from ..evaluation.reconstruction import chroma_agreement, log_mels, mel_distance, si_snr
from ..fileio import load_tensors, read_json, save_tensors, write_json
from .checkpoints import checkpoint_dirs, optimizer_state, optimizer_tensors
from .codec_build import architecture_of
from .kmeans import fit_kmeans

@dataclass
class TrainSettings:
    """What a codec training run does; all but ``steps`` and ``save_every`` must stay the same to resume."""

    steps: int = 3000
    batch_size: int = 8
    crop_seconds: float = 1.0
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.9)  # EnCodec's
    clip_norm: float = 1.0
    wave_weight: float = 0.1
    mel_floor: float = 1e-5
    commit_weight: float = 1.0
    latent_weight: float = 1.0  # keeps the encoder's outputs at zero mean, unit variance per channel
    ema_decay: float = 0.99
    dead_threshold: float = 0.05  # a code hit fewer times than this per batch (EMA) is moved
    quantizer_dropout: float = 0.5
    init_batches: int = 8  # batches of encoder outputs that the k-means initialisation of the codebooks sees
    seed: int = 0
    save_every: int = 500
    keep_checkpoints: int = 2

    RESUME_KEYS = ("batch_size", "crop_seconds", "lr", "betas", "clip_norm", "wave_weight", "mel_floor", "commit_weight",
                   "latent_weight", "ema_decay", "dead_threshold", "quantizer_dropout", "init_batches", "seed")

    def check(self) -> None:
        for name in ("steps", "batch_size", "save_every", "keep_checkpoints", "init_batches"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if not self.crop_seconds > 0 or not self.lr > 0:
            raise ConfigError(f"crop_seconds and lr must be > 0, got {self.crop_seconds} and {self.lr}")
        if not 0 <= self.quantizer_dropout <= 1 or not 0 < self.ema_decay < 1:
            raise ConfigError("quantizer_dropout must lie in [0, 1] and ema_decay in (0, 1)")


class CropSampler:
    """Batches of random crops ``[B, N]`` from mono waveforms; batch s depends only on (seed, s).

    A crop starts anywhere in a clip, clips picked in proportion to their length (every second of the corpus is
    equally likely); a clip shorter than a crop is zero-padded.
    """

    def __init__(self, waves: list[torch.Tensor], crop: int, batch_size: int, seed: int):
        if not waves:
            raise DataError("no audio to train the codec on; check the manifest's train items")
        self.waves, self.crop, self.batch_size, self.seed = waves, crop, batch_size, seed
        self.weights = torch.tensor([max(1, w.numel() - crop + 1) for w in waves], dtype=torch.float64)

    def generator(self, step: int, stream: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 1_000_003 + step) * 4 + stream)

    def batch(self, step: int, stream: int = 0) -> torch.Tensor:
        g = self.generator(step, stream)
        out = torch.zeros(self.batch_size, self.crop)
        picks = torch.multinomial(self.weights, self.batch_size, replacement=True, generator=g)
        for row, i in enumerate(picks.tolist()):
            w = self.waves[i]
            start = int(torch.randint(int(self.weights[i]), (1,), generator=g))
            piece = w[start : start + self.crop]
            out[row, : piece.numel()] = piece
        return out


# ------------------------------------------------------------------------------------------------ quantizer
def _codebooks(model: EncodecModel):
    return [layer.codebook for layer in model.quantizer.layers]


@torch.no_grad()
def init_codebooks(model: EncodecModel, frames: torch.Tensor, frames_per_batch: int, seed: int = 0) -> None:
    """Set every codebook to k-means centroids of what it quantises: the encoder's output frames ``[M, D]`` for
    the first, then the residual each leaves. ``cluster_size`` starts at each centroid's share of a batch."""
    residual = frames.float()
    for i, book in enumerate(_codebooks(model)):
        k = book.embed.shape[0]
        g = torch.Generator().manual_seed(seed * 101 + i)
        if residual.shape[0] >= k:
            centroids = fit_kmeans(residual, k, iterations=20, batch_size=min(4096, residual.shape[0]), seed=seed + i)
        else:  # fewer frames than codes: random frames, jittered apart
            pick = torch.randint(residual.shape[0], (k,), generator=g)
            centroids = residual[pick] + 1e-3 * residual.std() * torch.randn(k, residual.shape[1], generator=g)
        ids = torch.cdist(residual, centroids).argmin(1)
        counts = torch.bincount(ids, minlength=k).float() * (frames_per_batch / residual.shape[0])
        book.embed.copy_(centroids)
        book.cluster_size.copy_(counts)
        book.embed_avg.copy_(centroids * counts[:, None])
        book.inited.fill_(1.0)
        residual = residual - centroids[ids]


@torch.no_grad()
def data_dependent_init(model: EncodecModel, x: torch.Tensor) -> None:
    """Rescale every convolution of the encoder and decoder, in the order the signal meets them, so that on the
    crops x ``[B, N]`` each one's outputs have zero mean and unit variance (Salimans & Kingma's initialisation
    for weight-normed networks); the decoder's last convolution instead matches the loudness of x.

    An untrained SEANet encoder's outputs vary by ~1e-3 around an offset, and its decoder is ~10x too quiet.
    The optimiser then moves the offset faster than EMA codebooks can follow and every frame falls nearest one
    code (measured on the demo chorales: 1 of 256 codes in use after 150 steps). Rescaling only the last layer
    instead multiplies every earlier layer's updates by ~1000 and the latents blow up.
    """
    convs = [m for part in (model.encoder, model.decoder) for m in part.modules()
             if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))]

    def forward():
        e = model.encoder(x[:, None])
        return model.decoder(e)

    for i, conv in enumerate(convs):
        seen = []
        hook = conv.register_forward_hook(lambda module, args, out: seen.append(out))
        forward()
        hook.remove()
        out = seen[0]
        mean, std = out.mean((0, 2)), out.std((0, 2)).clamp_min(1e-8)
        if i == len(convs) - 1:  # the waveform: no offset, as loud as the input
            std = std / x.std().clamp_min(1e-8)
        conv.bias.sub_(mean)
        _scale_conv(conv, 1 / std)


@torch.no_grad()
def _scale_conv(conv, factor: torch.Tensor) -> None:
    """Multiply a convolution's outputs by ``factor`` (one per output channel), weight norm or not. A transposed
    convolution's weight norm is per input channel: it takes the mean factor."""
    weight = conv.parametrizations.weight.original0 if hasattr(conv, "parametrizations") else conv.weight
    per_channel = weight.shape[0] == factor.numel() and not isinstance(conv, torch.nn.ConvTranspose1d)
    weight.mul_(factor.reshape(-1, 1, 1) if per_channel else factor.mean())
    conv.bias.mul_(factor if per_channel else factor.mean())


@torch.no_grad()
def _ema_update(book, x: torch.Tensor, ids: torch.Tensor, s: TrainSettings, g: torch.Generator) -> None:
    """One k-means-like EMA step of codebook ``book`` on frames x ``[M, D]`` assigned to ``ids [M]``."""
    k = book.embed.shape[0]
    counts = torch.bincount(ids, minlength=k).to(x.dtype)
    sums = torch.zeros_like(book.embed).index_add_(0, ids, x)
    book.cluster_size.mul_(s.ema_decay).add_(counts, alpha=1 - s.ema_decay)
    book.embed_avg.mul_(s.ema_decay).add_(sums, alpha=1 - s.ema_decay)
    n = book.cluster_size.sum()
    eps = 1e-5
    smoothed = (book.cluster_size + eps) / (n + k * eps) * n  # Laplace smoothing: no division by zero
    book.embed.copy_(book.embed_avg / smoothed[:, None])
    dead = (book.cluster_size < s.dead_threshold).nonzero().flatten()
    if dead.numel():  # dead codes restart on random frames of this batch, as if hit once
        fresh = x[torch.randint(x.shape[0], (dead.numel(),), generator=g)]
        book.embed[dead] = fresh
        book.embed_avg[dead] = fresh
        book.cluster_size[dead] = 1.0


def quantize(model: EncodecModel, e: torch.Tensor, n: int, settings: TrainSettings | None = None,
             g: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Residual VQ of encoder output e ``[B, D, T]`` with the first ``n`` codebooks.

    Returns (quantized ``[B, D, T]`` with straight-through gradients, commitment loss, codes Long ``[n, B, T]``).
    With ``settings`` the codebooks take an EMA step on what they were given (training).
    """
    b, d, t = e.shape
    residual = e.transpose(1, 2).reshape(-1, d)  # [B*T, D]
    total = torch.zeros_like(residual)
    commit = e.new_zeros(())
    codes = []
    for book in _codebooks(model)[:n]:
        embed = book.embed
        ids = (residual.detach().pow(2).sum(1, keepdim=True) - 2 * residual.detach() @ embed.T
               + embed.pow(2).sum(1)[None]).argmin(1)
        q = embed[ids]
        commit = commit + F.mse_loss(residual, q)
        if settings is not None:
            _ema_update(book, residual.detach(), ids, settings, g)
        total = total + q
        residual = residual - q
        codes.append(ids.view(b, t))
    flat = e.transpose(1, 2).reshape(-1, d)
    quantized = flat + (total - flat).detach()
    return quantized.view(b, t, d).transpose(1, 2), commit / n, torch.stack(codes)


def reconstruct(model: EncodecModel, x: torch.Tensor, n: int, settings=None, g=None):
    """Crops x ``[B, N]`` -> (reconstruction ``[B, N]``, commitment loss, latent loss).

    The latent loss is how far the encoder's outputs are from zero mean and unit variance per channel.
    """
    e = model.encoder(x[:, None])
    q, commit, _ = quantize(model, e, n, settings, g)
    latent = e.mean((0, 2)).pow(2).mean() + (e.var((0, 2)) - 1).pow(2).mean()
    return model.decoder(q)[:, 0, : x.shape[-1]], commit, latent


def spectral_loss(x: torch.Tensor, y: torch.Tensor, sample_rate: int, floor: float = 1e-5) -> torch.Tensor:
    """Multi-scale log-mel L1 + L2 (mean over window sizes); ``floor``: added to mel magnitudes before the log."""
    pairs = list(zip(log_mels(x, sample_rate, floor=floor), log_mels(y, sample_rate, floor=floor)))
    return sum((a - b).abs().mean() + (a - b).pow(2).mean() for a, b in pairs) / len(pairs)


# ------------------------------------------------------------------------------------------------- trainer
class CodecTrainer:
    """Trains ``codec.model`` in place, on its device, on ``waves`` (mono float tensors ``[N]`` at the codec's
    sample rate, kept on the CPU)."""

    def __init__(self, codec: EncodecCodec, waves: list[torch.Tensor], settings: TrainSettings):
        settings.check()
        if codec.channels != 1:
            raise ConfigError("codec training takes mono codecs only (audio_channels 1)")
        self.codec, self.model, self.s = codec, codec.model, settings
        self.sampler = CropSampler(waves, round(settings.crop_seconds * codec.sample_rate), settings.batch_size,
                                   settings.seed)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=settings.lr, betas=settings.betas)
        self.step = 0
        self.codebooks_ready = False
        self.first_step = 0
        self.state: dict = {}  # JSON-able extras saved with checkpoints (e.g. metrics before training)

    def init_codebooks(self) -> None:
        """Data-dependent initialisation of the convolutions, then a k-means start of the codebooks on
        ``init_batches`` batches of the encoder's outputs."""
        data_dependent_init(self.model, self.sampler.batch(0, stream=3).to(self.codec.device))
        with torch.no_grad():
            frames = [self.model.encoder(self.sampler.batch(i, stream=2).to(self.codec.device)[:, None])
                      .transpose(1, 2).flatten(0, 1).cpu() for i in range(self.s.init_batches)]
        per_batch = frames[0].shape[0]
        init_codebooks(self.model, torch.cat(frames), per_batch, self.s.seed)
        self.codebooks_ready = True

    def train_step(self) -> dict[str, float]:
        """One optimisation step (step number ``self.step``) -> its losses."""
        s, model = self.s, self.model
        model.train()
        x = self.sampler.batch(self.step).to(self.codec.device)
        g = self.sampler.generator(self.step, stream=1)  # on the CPU, wherever the model is
        n = self.codec.n_q
        if float(torch.rand((), generator=g)) < s.quantizer_dropout:
            n = int(torch.randint(1, self.codec.n_q + 1, (), generator=g))
        y, commit, latent = reconstruct(model, x, n, s, g)
        wave = (x - y).abs().mean()
        mel = spectral_loss(x, y, self.codec.sample_rate, s.mel_floor)
        loss = s.wave_weight * wave + mel + s.commit_weight * commit + s.latent_weight * latent
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if s.clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.clip_norm)
        self.optimizer.step()
        self.step += 1
        model.eval()
        values = {"loss": loss, "mel": mel, "wave": wave, "commit": commit, "latent": latent}
        return {**{k: float(v.detach()) for k, v in values.items()}, "n_q": n}

    # -- checkpoints -------------------------------------------------------------------------------------------
    def settings_key(self) -> dict:
        return {"architecture": architecture_of(self.codec),
                **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.s).items()
                   if k in TrainSettings.RESUME_KEYS}}

    def save(self, run_dir: Path) -> Path:
        """Write ``run_dir/checkpoints/step-N`` whole (temp dir + rename) and keep the newest ``keep_checkpoints``."""
        root = Path(run_dir) / "checkpoints"
        final, tmp = root / f"step-{self.step:08d}", root / f".step-{self.step:08d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_tensors(tmp / "model.safetensors", self.model.state_dict())
        tensors, rest = optimizer_tensors(self.optimizer.state_dict())
        save_tensors(tmp / "optimizer.safetensors", tensors)
        write_json(tmp / "optimizer.json", rest)
        write_json(tmp / "state.json", {"step": self.step, "settings": self.settings_key(), **self.state})
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in checkpoint_dirs(run_dir)[: -self.s.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def load(self, directory: Path) -> None:
        """Continue from a checkpoint written by ``save``; ConfigError if it was made with other settings."""
        state = read_json(directory / "state.json", "codec training state")
        # a setting added after the checkpoint was written had its default then
        defaults = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(TrainSettings()).items()}
        saved, now = {**defaults, **state.get("settings", {})}, self.settings_key()
        changed = sorted(k for k in now if saved.get(k) != now[k])
        if changed:
            raise ConfigError(f"{directory}: this run was started with other settings ({', '.join(changed)}: "
                              f"{[saved.get(k) for k in changed]} then, {[now[k] for k in changed]} now); resume "
                              "with the same ones or start a new --run directory")
        self.model.load_state_dict(load_tensors(directory / "model.safetensors"))
        self.optimizer.load_state_dict(optimizer_state(load_tensors(directory / "optimizer.safetensors"),
                                                       read_json(directory / "optimizer.json", "optimizer state")))
        self.step = int(state["step"])
        self.codebooks_ready = True
        self.state = {k: v for k, v in state.items() if k not in ("step", "settings")}

    def run(self, run_dir: Path | None = None, *, progress: bool = True, log=None) -> None:
        """Train up to ``settings.steps`` (resuming from the newest checkpoint in ``run_dir``, if any)."""
        done = checkpoint_dirs(run_dir) if run_dir is not None else []
        if done:
            self.load(done[-1])
        elif not self.codebooks_ready:
            self.init_codebooks()
        self.first_step = self.step  # where this call started (after a resume)
        with tqdm(total=self.s.steps, initial=min(self.step, self.s.steps), desc="codec", unit="step",
                  disable=not progress) as bar:
            while self.step < self.s.steps:
                losses = self.train_step()
                bar.update(1)
                bar.set_postfix(loss=f"{losses['loss']:.3f}", mel=f"{losses['mel']:.3f}")
                if log is not None:
                    log(self.step, losses)
                if run_dir is not None and (self.step % self.s.save_every == 0 or self.step == self.s.steps):
                    self.save(run_dir)


# ------------------------------------------------------------------------------------------ data and results
def load_waves(items, sample_rate: int, *, progress: bool = False) -> tuple[list[torch.Tensor], list[dict]]:
    """Each manifest item's music, mono at ``sample_rate`` -> (waves ``[N]``, failures {"line", "video", "reason"})."""
    from ..audio import load_audio

    waves, failed = [], []
    for item in tqdm(items, desc="audio", unit="item", disable=not progress):
        try:
            wave = load_audio(item.music_path, sample_rate, 1)[0]
        except Exception as exc:  # one unreadable file must not stop the run
            failed.append({"line": item.line, "video": str(item.video), "reason": f"{type(exc).__name__}: {exc}"})
            continue
        if wave.numel() == 0:
            failed.append({"line": item.line, "video": str(item.video), "reason": "no samples"})
            continue
        waves.append(wave.contiguous())
    return waves, failed


def evaluate_codec(codec: EncodecCodec, waves: list[torch.Tensor], max_seconds: float | None = 30.0) -> dict:
    """Mean multi-scale mel distance, SI-SNR (dB) and chroma agreement (do the notes survive?) of the codec's
    reconstruction of ``waves`` (their first ``max_seconds``), over all its n_q codebooks and over the coarse
    ones alone."""
    out = {"mel_distance": 0.0, "si_snr": 0.0, "chroma_agreement": 0.0, "coarse_mel_distance": 0.0,
           "coarse_si_snr": 0.0, "coarse_chroma_agreement": 0.0, "items": len(waves)}
    if not waves:
        return out
    for wave in waves:
        x = wave if max_seconds is None else wave[: round(max_seconds * codec.sample_rate)]
        codes = codec.encode(x[None])
        for prefix, k in (("", codec.n_q), ("coarse_", codec.n_coarse)):
            y = codec.decode(codes[:k])[0, : x.numel()]
            out[prefix + "mel_distance"] += mel_distance(x, y, codec.sample_rate) / len(waves)
            out[prefix + "si_snr"] += si_snr(x, y) / len(waves)
            agreement = chroma_agreement(x, y, codec.sample_rate)
            out[prefix + "chroma_agreement"] += (0.0 if math.isnan(agreement) else agreement) / len(waves)
    return out
