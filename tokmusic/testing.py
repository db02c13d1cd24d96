"""Tiny pipelines with random weights and real components, for tests, examples and benchmarks.

    pipe = tokmusic.testing.tiny_pipeline(seed=0)   # builds in about a second on a CPU
    music = pipe.generate("clip.mp4", seed=1)

The music of a random pipeline is noise-like; every path it runs — video decoding, CLIP and motion features,
LST fusion, the three stages with their KV caches and patterns, sliding windows, EnCodec decoding — is real.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .cards import read_card, stage_config
from .errors import ConfigError
from .pipeline import Pipeline
from .stage import Stage

# The tiny stage cards of the repository: the tiny pipeline's stages are built from these very files.
STAGES_DIR = Path(__file__).resolve().parents[1] / "stages"
TINY_FPS = 2.0  # frames per second a tiny pipeline reads


def tiny_card(kind: str) -> dict:
    """``stages/<kind>-tiny.json`` of the repository tokmusic was installed from (``pip install -e .``)."""
    path = STAGES_DIR / f"{kind}-tiny.json"
    if not path.is_file():
        raise ConfigError(f"{path}: the tiny stage card is missing; tokmusic.testing builds its stages from the "
                          "repository's stages/ folder, so install tokmusic from a checkout with `pip install -e .`")
    return read_card(path)


def tiny_parts(seed: int = 0) -> dict:
    """The tiny pipeline's fixed parts: visual encoder (tiny CLIP + motion), codec, control, semantic tokenizer."""
    from .codec import tiny_codec
    from .control import tiny_control
    from .semantic_tokenizer import tiny_semantic_tokenizer
    from .visual_encoders import ConcatEncoder, MotionEncoder, tiny_clip_encoder

    return {
        "visual_encoder": ConcatEncoder([tiny_clip_encoder(seed), MotionEncoder()]),
        "codec": tiny_codec(seed),
        "control": tiny_control(seed),
        "semantic_tokenizer": tiny_semantic_tokenizer(seed),
    }


def tiny_stage(kind: str, pipeline_parts: dict, seed: int = 0, **overrides) -> Stage:
    """A random tiny stage of ``kind`` that fits ``pipeline_parts``; ``overrides`` change card "model" keys."""
    from .compatibility import PipelineShape

    shape = PipelineShape.of(pipeline_parts["visual_encoder"], pipeline_parts["codec"],
                             pipeline_parts.get("control"), pipeline_parts["semantic_tokenizer"], TINY_FPS)
    card = tiny_card(kind)
    cfg = stage_config({**card, "model": {**card["model"], **overrides}}, shape, where=str(STAGES_DIR / kind))
    with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's random state
        torch.manual_seed(seed)
        return Stage(cfg).eval()


def tiny_pipeline(seed: int = 0, **stage_overrides) -> Pipeline:
    """A whole pipeline with random tiny weights; the same seed gives the same weights."""
    parts = tiny_parts(seed)
    stages = {kind: tiny_stage(kind, parts, seed + i, **stage_overrides.get(kind, {}))
              for i, kind in enumerate(("semantic", "coarse", "fine"))}
    return Pipeline(stages=stages, fps=TINY_FPS, **parts)


__all__ = ["tiny_card", "tiny_parts", "tiny_stage", "tiny_pipeline"]
