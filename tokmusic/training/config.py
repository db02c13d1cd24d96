"""The "train" section of a stage card: optimisation, crops, checkpoints and logging settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import ConfigError
from ..schema import check_object, train_fields
from ..stage import StageConfig


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
        """The TrainConfig of a card's "train" object (None: all defaults); ConfigError naming ``where`` and the key."""
        data = {} if data is None else data
        check_object(data, train_fields(), where, "train")
        return cls(**data)

    def validate(self, where: str = "train config") -> None:
        """ConfigError unless every field has its type and range (``schema.TRAIN_RULES``)."""
        check_object(asdict(self), train_fields(), where, "train")

    def crop_for(self, stage: StageConfig, where: str = "train config") -> float:
        """The crop length for ``stage``: at least its generation window (a window never sees more)."""
        crop = stage.window if self.crop_seconds is None else float(self.crop_seconds)
        if stage.window > crop + 1e-9:
            raise ConfigError(f"{where}: the stage's window ({stage.window} s) is longer than train.crop_seconds "
                              f"({crop} s); raise crop_seconds or shorten model.window")
        return crop

    def to_dict(self) -> dict:
        return asdict(self)
