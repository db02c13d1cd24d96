"""The "train" section of a stage card: optimisation, crops, checkpoints and logging settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..errors import ConfigError
from ..stage import StageConfig

MIXED_PRECISION = ("auto", "no", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Training settings (card key "train"); every field has a default, a card overrides some.

    ``max_steps`` optimizer steps of ``batch_size`` crops per process times ``grad_accum``; cosine decay from
    ``lr`` to ``lr * min_lr_ratio`` after ``warmup_steps`` of linear warm-up. ``crop_seconds`` defaults to the
    stage's generation window. ``mixed_precision`` "auto": bf16 on a GPU that has it, else what ``accelerate
    launch`` was told (default no).
    """

    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: list = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 500
    max_steps: int = 100_000
    min_lr_ratio: float = 0.1
    batch_size: int = 8
    grad_accum: int = 1
    clip_norm: float = 1.0
    ema_decay: float = 0.999
    crop_seconds: float | None = None
    mixed_precision: str = "auto"
    save_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 50
    eval_every: int = 500
    eval_items: int = 64
    seed: int = 0
    num_workers: int = 2
    log_with: str = "tensorboard"
    init_from: str | None = None

    @classmethod
    def from_dict(cls, data: dict | None, where: str = "train config") -> "TrainConfig":
        data = dict(data or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown} in 'train'; allowed: {sorted(names)}")
        try:
            cfg = cls(**data)
        except TypeError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        cfg.validate(where)
        return cfg

    def validate(self, where: str = "train config") -> None:
        def bad(key: str, need: str):
            raise ConfigError(f"{where}: train.{key} must be {need}, got {getattr(self, key)!r}")

        for key in ("max_steps", "batch_size", "grad_accum", "save_every", "keep_checkpoints", "log_every"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                bad(key, "a positive integer")
        for key in ("warmup_steps", "num_workers", "seed", "eval_every", "eval_items"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                bad(key, "an integer >= 0")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            bad("lr", "> 0")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            bad("weight_decay", ">= 0")
        if not (isinstance(self.betas, (list, tuple)) and len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas)):
            bad("betas", "two numbers in [0, 1)")
        if not 0 <= self.min_lr_ratio <= 1:
            bad("min_lr_ratio", "in [0, 1]")
        if not self.clip_norm >= 0:
            bad("clip_norm", ">= 0 (0 switches clipping off)")
        if not 0 <= self.ema_decay < 1:
            bad("ema_decay", "in [0, 1) (0 switches EMA off)")
        if self.crop_seconds is not None and not self.crop_seconds > 0:
            bad("crop_seconds", "> 0 seconds")
        if self.mixed_precision not in MIXED_PRECISION:
            bad("mixed_precision", f"one of {MIXED_PRECISION}")
        if self.log_with not in ("tensorboard", "none"):
            bad("log_with", "'tensorboard' or 'none'")

    def crop_for(self, stage: StageConfig, where: str = "train config") -> float:
        """The crop length for ``stage``: at least its generation window (a window never sees more)."""
        crop = stage.window if self.crop_seconds is None else float(self.crop_seconds)
        if stage.window > crop + 1e-9:
            raise ConfigError(f"{where}: the stage's window ({stage.window} s) is longer than train.crop_seconds "
                              f"({crop} s); raise crop_seconds or shorten model.window")
        return crop

    def to_dict(self) -> dict:
        return asdict(self)
