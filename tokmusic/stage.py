"""The three token stages as one encoder–decoder model configured three ways.

    semantic : encoder(control, LST(visual))           -> decoder -> semantic ids   [1, T_s]
    coarse   : encoder(control, LST(visual), semantic) -> decoder -> coarse codes   [N_c, T_a]
    fine     : encoder(coarse codes)                   -> decoder -> fine codes     [N_f, T_a]

The encoder's inputs are segments laid end to end, each with a learned segment embedding; rotary positions
along the encoder are *times* (seconds from the window's start * ``target_rate``), so a frame and a token at the
same instant sit at the same position. The decoder predicts the target codes in a codebook pattern
(``patterns.py``), all codebooks of a step at once; in cross-attention each step's query stands at its
timestep (``Pattern.step_times``) and meets the memory on the same clock, so output at time t lines up with
input at time t for every pattern, window and rate. The control token has no time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .conditioning import Conditioning
from .decoding import capture, compile_enabled, cuda_graphs_enabled
from .errors import ConfigError
from .lst_fusion import LSTConfig, LSTFusion
from .patterns import get_pattern
from .schema import check_stage_config
from .sampling import SamplingParams, guide, sample
from .transformer import Memory, Transformer, TransformerConfig
from .windows import token_count

STAGES = ("semantic", "coarse", "fine")
FORMAT_VERSION = 1
DEFAULT_TEMPERATURE = {"semantic": 1.0, "coarse": 0.95, "fine": 0.4}  # V2Meow §4.1
DEFAULT_WINDOW = {"semantic": (10.0, 5.0), "coarse": (10.0, 5.0), "fine": (3.0, 1.0)}  # (window, overlap) s

_CONTROL, _VISUAL, _SOURCE = 0, 1, 2
@dataclass
class StageConfig:
    """Everything that defines a stage: widths, inputs, target, pattern and generation defaults.

    Inputs are switched on by a non-zero width: ``visual_dim`` (LST over visual features), ``control_dim``
    (one control token), ``source_vocab`` (tokens of the previous stage at ``source_rate`` per second).
    The target is ``target_codebooks`` streams of ids in ``[0, target_vocab)`` at ``target_rate`` per second.
    ``visual_fps``: the frames per second its visual features were read at in training (the pipeline's fps);
    a pipeline reading another rate refuses the stage. Null where not recorded.
    ``control_dropout`` / ``visual_dropout``: the probability that a training crop's control / video is replaced
    by a learned null (for classifier-free guidance). With ``visual_dropout`` > 0 guidance also runs without a
    prompt: the unguided row has neither control nor video, so ``cfg_scale`` strengthens what the video says.
    """

    kind: str
    target_vocab: int
    target_codebooks: int
    target_rate: float
    d_model: int = 256
    n_heads: int = 4
    encoder_layers: int = 4
    decoder_layers: int = 4
    d_ff: int = 1024
    dropout: float = 0.1
    visual_dim: int = 0
    lst: LSTConfig = field(default_factory=LSTConfig)
    visual_fps: float | None = None
    control_dim: int = 0
    control_dropout: float = 0.1
    visual_dropout: float = 0.0
    source_vocab: int = 0
    source_codebooks: int = 1
    source_rate: float = 0.0
    pattern: str = "delay"
    pattern_kwargs: dict = field(default_factory=dict)
    window: float | None = None
    overlap: float | None = None
    temperature: float | None = None
    top_k: int = 0
    top_p: float = 1.0
    cfg_scale: float = 3.0
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        if isinstance(self.lst, dict):
            try:
                self.lst = LSTConfig(**self.lst)
            except TypeError as exc:
                raise ConfigError(f"stage {self.kind!r}: bad 'lst' section ({exc})") from None
        if self.kind in STAGES:
            win, ovl = DEFAULT_WINDOW[self.kind]
            self.window = win if self.window is None else self.window
            self.overlap = ovl if self.overlap is None else self.overlap
            if self.temperature is None:
                self.temperature = DEFAULT_TEMPERATURE[self.kind]
        self.validate()

    def validate(self) -> None:
        """ConfigError unless every field has its type and range (``schema.py``) and the fields agree."""
        where = f"stage {self.kind!r}"
        check_stage_config(asdict(self), where)
        if self.kind not in STAGES:
            raise ConfigError(f"stage kind must be one of {STAGES}, got {self.kind!r}")
        if self.format_version != FORMAT_VERSION:
            raise ConfigError(f"{where}: format_version is {self.format_version}; this tokmusic reads stage format "
                              f"version {FORMAT_VERSION}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ConfigError(f"{where}: d_model={self.d_model} must split into n_heads={self.n_heads} even-width heads")
        for name in ("short_channels", "long_channels"):
            channels = getattr(self.lst, name)
            if self.visual_dim and channels is not None and not 0 <= channels[0] < channels[1] <= self.visual_dim:
                raise ConfigError(f"{where}: lst.{name}={channels} must be [first, last) with 0 <= first < last "
                                  f"<= visual_dim={self.visual_dim}")
        if self.target_rate <= 0:
            raise ConfigError(f"{where}: target_rate must be > 0, got {self.target_rate}")
        if not 0 <= self.overlap < self.window:
            raise ConfigError(f"{where}: need 0 <= overlap < window, got window={self.window}, overlap={self.overlap}")
        if token_count(self.window, self.target_rate) - round(self.overlap * self.target_rate) < 1:
            raise ConfigError(f"{where}: window - overlap must hold at least one token at {self.target_rate}/s")
        if not (0.0 <= self.dropout < 1.0 and 0.0 <= self.control_dropout <= 1.0 and 0.0 <= self.visual_dropout < 1.0):
            raise ConfigError(f"{where}: dropout, control_dropout and visual_dropout must be probabilities "
                              "(visual_dropout below 1)")
        if self.visual_dropout and not self.visual_dim:
            raise ConfigError(f"{where}: visual_dropout needs a visual input (visual_dim > 0)")
        if self.source_vocab and self.source_rate <= 0:
            raise ConfigError(f"{where}: source_rate must be > 0 when source_vocab is set")
        if not (self.visual_dim or self.control_dim or self.source_vocab):
            raise ConfigError(f"{where}: needs at least one input (visual_dim, control_dim or source_vocab)")
        if self.visual_dim and (self.lst.width % self.lst.n_heads or (self.lst.width // self.lst.n_heads) % 2):
            raise ConfigError(f"{where}: lst.width={self.lst.width} must split into lst.n_heads={self.lst.n_heads} "
                              "even-width heads")
        if self.kind == "semantic" and self.target_codebooks != 1:
            raise ConfigError(f"{where}: semantic tokens are one stream; target_codebooks must be 1")
        if self.kind == "fine" and not self.source_vocab:
            raise ConfigError(f"{where}: the fine stage reads coarse codes; set source_vocab and source_codebooks")
        SamplingParams(self.temperature, self.top_k, self.top_p, self.cfg_scale)
        get_pattern(self.pattern, self.target_codebooks, **self.pattern_kwargs)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "stage config", key: str = "") -> "StageConfig":
        """The StageConfig of a JSON object; ConfigError naming ``where`` (a file) and the key (under ``key``)."""
        check_stage_config(data, where, key)
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def sampling(self) -> SamplingParams:
        return SamplingParams(self.temperature, self.top_k, self.top_p, self.cfg_scale)


def _dropped(cond: Conditioning, mask: str, p: float, rows: int, device: torch.device,
             spared: torch.Tensor | None = None) -> Conditioning:
    """``cond`` with its row mask ``mask`` (``control_valid`` or ``visual_present``) turned False in each row with
    probability ``p`` (that row then reads the learned null), except in the ``spared [B]`` rows."""
    keep = torch.rand(rows, device=device) >= p
    if spared is not None:
        keep = keep | spared.to(device)
    present = getattr(cond, mask)
    return Conditioning(**{**vars(cond), mask: keep if present is None else present & keep})


class Stage(nn.Module):
    """One token stage: ``loss`` for training, ``generate`` for one window of inference."""

    def __init__(self, cfg: StageConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        block = dict(d_model=d, n_heads=cfg.n_heads, d_ff=cfg.d_ff, dropout=cfg.dropout)
        self.encoder = Transformer(TransformerConfig(n_layers=cfg.encoder_layers, **block))
        self.decoder = Transformer(TransformerConfig(n_layers=cfg.decoder_layers, **block), cross=True)
        self._compiled_step_at: Callable | None = None  # made on first use when TOKMUSIC_COMPILE=1
        self.segment = nn.Embedding(3, d)
        if cfg.visual_dim:
            self.lst = LSTFusion(cfg.visual_dim, d, cfg.lst)
            if cfg.visual_dropout:
                self.null_visual = nn.Parameter(torch.zeros(d))  # every frame of a dropped video
        if cfg.control_dim:
            self.control_proj = nn.Linear(cfg.control_dim, d)
            self.null_control = nn.Parameter(torch.zeros(d))
        if cfg.source_vocab:
            self.source_emb = nn.ModuleList(nn.Embedding(cfg.source_vocab, d) for _ in range(cfg.source_codebooks))
        k, v = cfg.target_codebooks, cfg.target_vocab
        self.pattern = get_pattern(cfg.pattern, k, empty_id=v, **cfg.pattern_kwargs)
        self.target_emb = nn.ModuleList(nn.Embedding(v + 1, d) for _ in range(k))  # + the empty id
        self.head = nn.Linear(d, k * v)

    # -- encoder --------------------------------------------------------------------------------------------
    def encode(self, cond: Conditioning) -> Memory:
        """Conditioning -> the decoder's memory: states ``[B, M, D]``, validity ``[B, M]`` and positions ``[B, M]``
        (times in target timesteps from the window's start; NaN for the timeless control token)."""
        cfg = self.cfg
        b = cond.batch_size()
        device = self.segment.weight.device
        parts, positions, valids, kinds = [], [], [], []
        if cfg.control_dim:
            null = self.null_control.expand(b, -1)
            if cond.control is None:
                token = null
            else:
                present = torch.ones(b, dtype=torch.bool, device=device) if cond.control_valid is None else cond.control_valid
                token = torch.where(present[:, None], self.control_proj(cond.control), null)
            parts.append(token[:, None])
            positions.append(torch.full((b, 1), float("nan"), device=device))
            valids.append(torch.ones(b, 1, dtype=torch.bool, device=device))
            kinds.append(_CONTROL)
        if cfg.visual_dim:
            if cond.visual is None:
                raise ValueError(f"stage {cfg.kind!r} needs visual features")
            start = torch.zeros(b, device=device) if cond.window_start is None else cond.window_start.float()
            times = cond.visual_times.float()
            frames = self.lst(cond.visual, times + start[:, None], cond.visual_valid,
                              cond.long, cond.long_times, cond.long_valid)
            if cond.visual_present is not None:
                if not cfg.visual_dropout:
                    raise ValueError(f"stage {cfg.kind!r} was built without visual_dropout: it has no null video")
                frames = torch.where(cond.visual_present[:, None, None], frames, self.null_visual.to(frames.dtype))
            parts.append(frames)
            positions.append(times * cfg.target_rate)
            valids.append(cond.visual_valid)
            kinds.append(_VISUAL)
        if cfg.source_vocab:
            if cond.source is None:
                raise ValueError(f"stage {cfg.kind!r} needs source tokens")
            src = cond.source  # [B, Ks, Ts]
            parts.append(sum(emb(src[:, i]) for i, emb in enumerate(self.source_emb)))
            t = torch.arange(src.shape[-1], device=device, dtype=torch.float32).expand(b, -1) / cfg.source_rate
            if cond.source_start is not None:
                t = t + cond.source_start.float()[:, None]
            positions.append(t * cfg.target_rate)
            valids.append(cond.source_valid)
            kinds.append(_SOURCE)
        parts = [p + self.segment.weight[kind] for p, kind in zip(parts, kinds)]
        x, pos, valid = torch.cat(parts, 1), torch.cat(positions, 1), torch.cat(valids, 1)
        # the encoder's self-attention has no timeless slot: the control token sits just before the window
        x = self.encoder(x, pos.nan_to_num(-1.0), valid=valid)
        return Memory(x, valid, pos)

    # -- decoder --------------------------------------------------------------------------------------------
    def embed_targets(self, column: torch.Tensor) -> torch.Tensor:
        """Target ids ``[B, K, S]`` (empty id allowed) -> summed embeddings ``[B, S, D]``."""
        return sum(emb(column[:, i]) for i, emb in enumerate(self.target_emb))

    def logits_of(self, h: torch.Tensor) -> torch.Tensor:
        """Decoder states ``[B, S, D]`` -> logits ``[B, K, S, V]``."""
        k, v = self.cfg.target_codebooks, self.cfg.target_vocab
        return self.head(h).unflatten(-1, (k, v)).transpose(1, 2)

    def forward(self, cond: Conditioning, target: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits in pattern order: target ``[B, K, T]`` -> ``[B, K, S, V]``."""
        memory = self.encode(cond)
        seq = self.pattern.build(target)  # [B, K, S]
        inputs = torch.cat([torch.full_like(seq[..., :1], self.cfg.target_vocab), seq[..., :-1]], -1)
        b, s = seq.shape[0], seq.shape[-1]
        positions = torch.arange(s, device=seq.device).expand(b, -1)
        times = self.pattern.step_times(target.shape[-1]).to(seq.device).expand(b, -1)
        h = self.decoder(self.embed_targets(inputs), positions, causal=True, memory=memory, cross_positions=times)
        return self.logits_of(h)

    def loss(self, cond: Conditioning, target: torch.Tensor, target_valid: torch.Tensor | None = None,
             keep_control: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy over the pattern's valid positions of real (unpadded) timesteps.

        target Long ``[B, K, T]``; target_valid Bool ``[B, T]``. In training mode the control input is dropped
        with probability ``control_dropout`` (for classifier-free guidance), except in the rows where
        ``keep_control [B]`` is True (the manifest's ``keep_control``), and the video with probability
        ``visual_dropout`` (in every row).
        """
        rows, device = target.shape[0], target.device
        if self.training and self.cfg.control_dim and cond.control is not None and self.cfg.control_dropout > 0:
            cond = _dropped(cond, "control_valid", self.cfg.control_dropout, rows, device, spared=keep_control)
        if self.training and self.cfg.visual_dropout > 0:
            cond = _dropped(cond, "visual_present", self.cfg.visual_dropout, rows, device)
        if target_valid is not None:  # padded timesteps read as "empty", as unknown codes do in generation
            target = target.masked_fill(~target_valid[:, None, :], self.cfg.target_vocab)
        logits = self(cond, target)  # [B, K, S, V]
        layout = self.pattern.layout(target.shape[-1]).to(target.device)  # [K, S]
        mask = (layout >= 0).expand(target.shape[0], -1, -1)
        if target_valid is not None:
            mask = mask & target_valid.gather(1, layout.clamp(min=0).flatten().expand(target.shape[0], -1)).view_as(mask)
        labels = self.pattern.build(target)
        return F.cross_entropy(logits[mask], labels[mask])

    # -- generation -----------------------------------------------------------------------------------------
    def generate(
        self,
        cond: Conditioning,
        timesteps: int,
        prompt: torch.Tensor | None = None,
        params: SamplingParams | None = None,
        generator: torch.Generator | None = None,
        on_step: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """Sample ``timesteps`` of target codes for one conditioning (batch 1) -> Long ``[K, T]``.

        prompt Long ``[K, P]`` fixes the first P timesteps (the overlap with the previous window). With
        ``params.cfg_scale != 1`` and a control input present, logits are guided against the null control; a
        stage trained with ``visual_dropout`` is guided against neither control nor video, prompt or not.
        ``on_step(n)`` is told of every n pattern steps done. Runs in eval mode (no dropout) whatever the
        stage's mode, and restores it.
        """
        prompts = None if prompt is None else prompt[None]
        return self.generate_batch(cond, timesteps, prompts, params, [generator], on_step)[0]

    def generate_batch(
        self,
        cond: Conditioning,
        timesteps: int,
        prompts: torch.Tensor | None = None,
        params: SamplingParams | None = None,
        generators: list[torch.Generator | None] | None = None,
        on_step: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """N samples decoded together, one step for all of them -> Long ``[N, K, T]``.

        ``cond`` has batch 1 (every sample reads it) or N (one conditioning each); prompts Long ``[N, K, P]``;
        ``generators`` one per sample (N = its length; default: N = cond's batch, unseeded). Sample n draws from
        ``generators[n]`` alone, so it is the sample ``generate(cond_n, timesteps, prompts[n], params,
        generators[n])`` would give, up to the rounding of matrix products over more rows. At two rows a step
        streams every weight for little arithmetic; N samples share that stream.
        """
        n = len(generators) if generators is not None else cond.batch_size()
        generators = list(generators) if generators is not None else [None] * n
        if cond.batch_size() not in (1, n) or (prompts is not None and prompts.shape[0] != n):
            raise ValueError(f"{n} samples need a conditioning of batch 1 or {n} and prompts [{n}, K, P]")
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                return self._generate(cond, timesteps, prompts, params or self.cfg.sampling(), generators, on_step)
        finally:
            self.train(was_training)

    def _step_at(self) -> Callable:
        """The decoder's fixed-shape step; with ``TOKMUSIC_COMPILE=1`` compiled, once per stage."""
        if not compile_enabled():
            return self.decoder.step_at
        if self._compiled_step_at is None:
            self._compiled_step_at = torch.compile(self.decoder.step_at, dynamic=False)
        return self._compiled_step_at

    def _generate(self, cond, timesteps, prompts, params, generators, on_step) -> torch.Tensor:
        cfg = self.cfg
        k_, v_ = cfg.target_codebooks, cfg.target_vocab
        n = len(generators)
        if cond.batch_size() != n:
            cond = cond.repeat(n)
        prompted = bool(cfg.control_dim) and cond.control is not None
        guided = (prompted or cfg.visual_dropout > 0) and params.cfg_scale != 1.0
        if guided:  # rows 0..n-1 as given, rows n..2n-1 with the null control (and the null video)
            pair = Conditioning(**{k: None if v is None else torch.cat([v, v]) for k, v in vars(cond).items()})
            for name, tensor in (("control_valid", cond.control if prompted else None),
                                 ("visual_present", cond.visual if cfg.visual_dropout > 0 else None)):
                if tensor is not None:
                    own = getattr(cond, name)
                    own = torch.ones(n, dtype=torch.bool) if own is None else own.bool().cpu()
                    setattr(pair, name, torch.cat([own, torch.zeros_like(own)]).to(tensor.device))
            cond = pair
        memory = self.encode(cond)
        device, rows = memory.x.device, memory.x.shape[0]

        layout = self.pattern.layout(timesteps)  # [K, S]
        steps = layout.shape[1]
        known = torch.full((n, k_, timesteps), -1, dtype=torch.long)
        if prompts is not None and prompts.shape[-1]:
            known[..., : prompts.shape[-1]] = prompts[..., :timesteps].cpu()
        valid = layout >= 0
        seq = torch.where(valid, known.gather(2, layout.clamp(min=0).expand(n, -1, -1)), -1)  # [n, K, S]
        todo = valid & (seq < 0)  # positions to sample (decided on the host, once)
        seq = torch.where(valid, seq, v_).to(device)  # empty id where nothing is held
        need = todo.flatten(0, 1).any(0)  # [S]: steps that sample anything
        if not need.any():
            if on_step is not None:
                on_step(steps)
            return self.pattern.revert(seq)
        first = int(need.nonzero()[0])
        if on_step is not None:
            on_step(first)

        def embed(columns: torch.Tensor) -> torch.Tensor:  # [n, K, s] -> [rows, s, D]
            x = self.embed_targets(columns)
            return torch.cat([x, x]) if guided else x

        def mixed(h: torch.Tensor) -> torch.Tensor:  # [rows, 1, D] -> logits [n, K, V], guided, in float32
            logits = self.logits_of(h)[:, :, 0].float()
            return guide(logits[:n], logits[n:], params.cfg_scale) if guided else logits

        times = self.pattern.step_times(timesteps).to(device).float()  # [S] where each step meets the memory
        state = self.decoder.start(memory, max_len=steps, cross_positions=times)
        inputs = torch.cat([torch.full_like(seq[..., :1], v_), seq[..., :first]], -1)  # columns feeding 0..first
        positions = torch.arange(first + 1, device=device).expand(rows, -1)
        h = self.decoder.step(embed(inputs), positions, state, times[: first + 1].expand(rows, -1))[:, -1:]

        # one decode step with fixed shapes: columns [n, K] in, logits [n, K, V] out, for cache slot at [1]
        column, at = seq[..., 0].clone(), torch.zeros(1, dtype=torch.long, device=device)

        step_at = self._step_at()

        def step() -> torch.Tensor:
            x = embed(column.unsqueeze(-1))
            return mixed(step_at(x, at, state))

        if steps - first > 1 and device.type == "cuda" and cuda_graphs_enabled():
            at.fill_(first + 1)
            step = capture(step)
        sampled_at = need.tolist()  # which steps sample anything: decided once, on the host
        todo = todo.to(device)
        logits = mixed(h)
        for s in range(first, steps):
            if sampled_at[s]:
                drawn = torch.stack([sample(logits[i], params, g) for i, g in enumerate(generators)])
                seq[..., s] = torch.where(todo[..., s], drawn, seq[..., s])
            if on_step is not None:
                on_step(1)
            if s + 1 < steps:
                column.copy_(seq[..., s])
                at.fill_(s + 1)
                logits = step()
        return self.pattern.revert(seq)
