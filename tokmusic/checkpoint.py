"""Stage directories (``config.json`` + ``model.safetensors``) and the checks that a stage fits a pipeline."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError, ConfigError
from .fileio import atomic_dir, check_replaceable, load_tensors, read_json, refuse_pickles, save_tensors, write_json
from .stage import STAGES, Stage, StageConfig


def save_stage(stage: Stage, directory: str | os.PathLike) -> None:
    """Write ``stage`` to ``directory`` (replaced whole, atomically)."""
    check_replaceable(directory, "config.json", "stage directory")
    with atomic_dir(directory) as tmp:
        write_stage_files(stage, tmp)


def write_stage_files(stage: Stage, directory: Path) -> None:
    """Write a stage's two files into an existing directory (the caller makes it atomic)."""
    write_json(directory / "config.json", {"tokmusic_stage": stage.cfg.to_dict()})
    save_tensors(directory / "model.safetensors", stage.state_dict())


def read_stage_config(directory: str | os.PathLike) -> StageConfig:
    """The StageConfig of a stage directory; CheckpointError naming the file if it is not one."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: stage directory not found; pass a directory holding config.json "
                              "and model.safetensors")
    refuse_pickles(directory)
    data = read_json(directory / "config.json", "stage config")
    if "tokmusic_stage" not in data:
        raise CheckpointError(f"{directory / 'config.json'}: not a tokmusic stage config (no 'tokmusic_stage' key)")
    try:
        return StageConfig.from_dict(data["tokmusic_stage"], where=str(directory / "config.json"))
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None


def load_stage(directory: str | os.PathLike, kind: str | None = None) -> Stage:
    """Load a stage directory; with ``kind``, refuse a stage of another kind."""
    directory = Path(directory)
    cfg = read_stage_config(directory)
    if kind is not None and cfg.kind != kind:
        raise CheckpointError(f"{directory}: holds a {cfg.kind!r} stage where a {kind!r} stage is needed")
    state = load_tensors(directory / "model.safetensors")
    stage = Stage(cfg)
    missing, unexpected = stage.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{directory / 'model.safetensors'}: weights do not match config.json "
            f"(missing {sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]}); re-export the stage"
        )
    return stage.eval()


@dataclass(frozen=True)
class PipelineShape:
    """What the pipeline's fixed parts offer the stages; None where a part is absent."""

    visual_dim: int
    control_dim: int | None
    codebook_size: int
    n_coarse: int
    n_fine: int
    frame_rate: float
    semantic_vocab: int | None
    semantic_rate: float | None

    @classmethod
    def of(cls, visual_encoder, codec, control=None, semantic_tokenizer=None) -> "PipelineShape":
        """The shape of a pipeline made of these parts."""
        tok = semantic_tokenizer
        return cls(
            visual_dim=visual_encoder.dim,
            control_dim=None if control is None else control.dim,
            codebook_size=codec.codebook_size,
            n_coarse=codec.n_coarse,
            n_fine=codec.n_fine,
            frame_rate=codec.frame_rate,
            semantic_vocab=None if tok is None else tok.vocab_size,
            semantic_rate=None if tok is None else tok.frame_rate,
        )


def _expectations(cfg: StageConfig, shape: PipelineShape, stages: dict[str, StageConfig]) -> list[tuple[str, object, str, object]]:
    """(stage field, stage value, pipeline side, pipeline value) pairs that must agree."""
    pairs: list[tuple[str, object, str, object]] = []
    if cfg.visual_dim:
        pairs.append(("visual_dim", cfg.visual_dim, "visual encoder dim", shape.visual_dim))
    if cfg.control_dim and shape.control_dim is not None:
        pairs.append(("control_dim", cfg.control_dim, "text/audio embedder dim", shape.control_dim))
    semantic = stages.get("semantic")
    if cfg.kind == "semantic":
        if shape.semantic_vocab is not None:
            pairs.append(("target_vocab", cfg.target_vocab, "semantic tokenizer vocab_size", shape.semantic_vocab))
            pairs.append(("target_rate", cfg.target_rate, "semantic tokenizer frame_rate", shape.semantic_rate))
    elif cfg.kind == "coarse":
        pairs += [
            ("target_codebooks", cfg.target_codebooks, "codec n_coarse", shape.n_coarse),
            ("target_vocab", cfg.target_vocab, "codec codebook_size", shape.codebook_size),
            ("target_rate", cfg.target_rate, "codec frame_rate", shape.frame_rate),
        ]
        if cfg.source_vocab and semantic is not None:
            pairs.append(("source_vocab", cfg.source_vocab, "semantic stage target_vocab", semantic.target_vocab))
            pairs.append(("source_rate", cfg.source_rate, "semantic stage target_rate", semantic.target_rate))
        elif cfg.source_vocab and shape.semantic_vocab is not None:
            pairs.append(("source_vocab", cfg.source_vocab, "semantic tokenizer vocab_size", shape.semantic_vocab))
    else:
        pairs += [
            ("source_codebooks", cfg.source_codebooks, "codec n_coarse", shape.n_coarse),
            ("source_vocab", cfg.source_vocab, "codec codebook_size", shape.codebook_size),
            ("source_rate", cfg.source_rate, "codec frame_rate", shape.frame_rate),
            ("target_codebooks", cfg.target_codebooks, "codec n_fine", shape.n_fine),
            ("target_vocab", cfg.target_vocab, "codec codebook_size", shape.codebook_size),
            ("target_rate", cfg.target_rate, "codec frame_rate", shape.frame_rate),
        ]
    return pairs


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-6)
    return a == b


def compatibility_problems(name: str, cfg: StageConfig, shape: PipelineShape, stages: dict[str, StageConfig]) -> list[str]:
    """Reasons why stage ``cfg`` cannot serve as the pipeline's ``name`` stage (empty if it can)."""
    if name not in STAGES:
        return [f"unknown stage name {name!r}; choose one of {', '.join(STAGES)}"]
    if cfg.kind != name:
        return [f"it is a {cfg.kind!r} stage, not a {name!r} stage"]
    problems = [
        f"stage {field}={value} but {side}={expected}"
        for field, value, side, expected in _expectations(cfg, shape, stages)
        if not _same(value, expected)
    ]
    # the stage after this one reads its output
    if name == "semantic" and "coarse" in stages and stages["coarse"].source_vocab:
        coarse = stages["coarse"]
        if coarse.source_vocab != cfg.target_vocab:
            problems.append(f"stage target_vocab={cfg.target_vocab} but coarse stage source_vocab={coarse.source_vocab}")
        if not _same(coarse.source_rate, cfg.target_rate):
            problems.append(f"stage target_rate={cfg.target_rate} but coarse stage source_rate={coarse.source_rate}")
    return problems
