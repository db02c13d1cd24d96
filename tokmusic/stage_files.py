"""Stage directories: ``config.json`` (``{"tokmusic_stage": StageConfig}``) + ``model.safetensors``."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .errors import CheckpointError, ConfigError
from .fileio import (atomic_dir, check_replaceable, check_tensor_shapes, load_tensors, read_json, refuse_pickles,
                     save_tensors, write_json)
from .schema import Field, check_object
from .stage import Stage, StageConfig

CONFIG = "config.json"
WEIGHTS = "model.safetensors"


def save_stage(stage: Stage, directory: str | os.PathLike) -> None:
    """Write ``stage`` to ``directory`` (replaced whole, atomically)."""
    from .quantize import refuse_saving_quantized

    refuse_saving_quantized(stage)
    check_replaceable(directory, CONFIG, "stage directory")
    with atomic_dir(directory) as tmp:
        write_stage_files(stage, tmp)


def write_stage_files(stage: Stage, directory: Path) -> None:
    """Write a stage's two files into an existing directory (the caller makes it atomic)."""
    write_json(directory / CONFIG, {"tokmusic_stage": stage.cfg.to_dict()})
    save_tensors(directory / WEIGHTS, stage.state_dict())


def read_stage_config(directory: str | os.PathLike) -> StageConfig:
    """The StageConfig of a stage directory; CheckpointError naming the file and key if it is not one."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: stage directory not found; pass a directory holding {CONFIG} "
                              f"and {WEIGHTS}")
    refuse_pickles(directory)
    path = directory / CONFIG
    data = read_json(path, "stage config")
    try:
        check_object(data, {"tokmusic_stage": Field(dict, required=True)}, str(path))
        return StageConfig.from_dict(data["tokmusic_stage"], where=str(path), key="tokmusic_stage")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None


def load_stage(directory: str | os.PathLike, kind: str | None = None, cfg: StageConfig | None = None) -> Stage:
    """Load a stage directory; with ``kind``, refuse a stage of another kind. ``cfg``: its config, already read.

    The weights are compared with the shapes the config gives before any memory is allocated for them, so a
    config.json that does not describe its weights (however large it claims the model is) is a CheckpointError.
    """
    directory = Path(directory)
    cfg = read_stage_config(directory) if cfg is None else cfg
    if kind is not None and cfg.kind != kind:
        raise CheckpointError(f"{directory}: holds a {cfg.kind!r} stage where a {kind!r} stage is needed")
    config, weights = directory / CONFIG, directory / WEIGHTS
    expected = {name: tuple(t.shape) for name, t in _build(cfg, config, torch.device("meta")).state_dict().items()}
    check_tensor_shapes(weights, expected, config)
    state = load_tensors(weights)
    stage = _build(cfg, config)
    try:
        stage.load_state_dict(state)
    except RuntimeError as exc:  # shapes were checked: only dtypes that do not convert are left
        raise CheckpointError(f"{weights}: {str(exc).splitlines()[0][:200]}; re-export the stage") from None
    return stage.eval()


def _build(cfg: StageConfig, config: Path, device: torch.device | None = None) -> Stage:
    """Stage(cfg), on ``device`` (meta: shapes only, nothing allocated); CheckpointError if cfg cannot be built."""
    try:
        if device is None:
            return Stage(cfg)
        with device:
            return Stage(cfg)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{config}: cannot build the stage it describes ({exc})") from None
