"""Tiny pipelines with random weights and real components, for tests, examples and benchmarks.

    pipe = tokmusic.testing.tiny_pipeline(seed=0)   # builds in about a second on a CPU
    music = pipe.generate("clip.mp4", seed=1)

The music of a random pipeline is noise-like; every path it runs — video decoding, CLIP and motion features,
LST fusion, the three stages with their KV caches and patterns, sliding windows, EnCodec decoding — is real.
"""

from __future__ import annotations

import torch

from .cards import stage_config
from .pipeline import Pipeline
from .stage import Stage

# The "model" section of stages/<kind>-tiny.json (tests check that the files agree).
TINY_MODEL = {
    "semantic": {"d_model": 32, "n_heads": 2, "encoder_layers": 2, "decoder_layers": 2, "d_ff": 64,
                 "dropout": 0.0, "lst": {"width": 32, "n_heads": 2, "short_layers": 1, "long_layers": 1,
                                         "fusion_layers": 1, "long_frames": 8}},
    "coarse": {"d_model": 32, "n_heads": 2, "encoder_layers": 2, "decoder_layers": 2, "d_ff": 64,
               "dropout": 0.0, "lst": {"width": 32, "n_heads": 2, "short_layers": 1, "long_layers": 1,
                                       "fusion_layers": 1, "long_frames": 8}},
    "fine": {"d_model": 32, "n_heads": 2, "encoder_layers": 1, "decoder_layers": 2, "d_ff": 64, "dropout": 0.0},
}


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
    from .checkpoint import PipelineShape

    shape = PipelineShape.of(pipeline_parts["visual_encoder"], pipeline_parts["codec"],
                             pipeline_parts.get("control"), pipeline_parts["semantic_tokenizer"])
    cfg = stage_config({"kind": kind, "model": {**TINY_MODEL[kind], **overrides}}, shape)
    with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's random state
        torch.manual_seed(seed)
        return Stage(cfg).eval()


def tiny_pipeline(seed: int = 0, **stage_overrides) -> Pipeline:
    """A whole pipeline with random tiny weights; the same seed gives the same weights."""
    parts = tiny_parts(seed)
    stages = {kind: tiny_stage(kind, parts, seed + i, **stage_overrides.get(kind, {}))
              for i, kind in enumerate(("semantic", "coarse", "fine"))}
    return Pipeline(stages=stages, fps=2.0, **parts)


__all__ = ["TINY_MODEL", "tiny_parts", "tiny_stage", "tiny_pipeline"]
