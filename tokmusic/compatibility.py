"""Whether a stage fits a pipeline: the shape the pipeline's parts offer, and the rules a stage must meet."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .stage import STAGES, StageConfig


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
    fps: float | None = None  # frames per second read from the video

    @classmethod
    def of(cls, visual_encoder, codec, control=None, semantic_tokenizer=None, fps: float | None = None
           ) -> "PipelineShape":
        """The shape of a pipeline made of these parts, reading the video at ``fps``."""
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
            fps=None if fps is None else float(fps),
        )


def _expectations(cfg: StageConfig, shape: PipelineShape, stages: dict[str, StageConfig]) -> list[tuple[str, object, str, object]]:
    """(stage field, stage value, pipeline side, pipeline value) pairs that must agree."""
    pairs: list[tuple[str, object, str, object]] = []
    if cfg.visual_dim:
        pairs.append(("visual_dim", cfg.visual_dim, "visual encoder dim", shape.visual_dim))
        if cfg.visual_fps is not None and shape.fps is not None:
            pairs.append(("visual_fps", cfg.visual_fps, "pipeline fps", shape.fps))
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
