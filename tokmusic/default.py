"""``tokmusic.generate`` and the default pipeline it uses when none is given.

    music = tokmusic.generate("clip.mp4", "slow melancholic piano", seed=1)

The default pipeline is built once, on first use, and kept for the life of the process.
"""

from __future__ import annotations

import os
import warnings

from .errors import ConfigError
from .music import Music
from .pipeline import Pipeline
from .schema import check_generate_arguments, shown

_DEFAULT: Pipeline | None = None
DEFAULT_PIPELINE_NOTE = (
    "no trained default pipeline is bundled yet: using tokmusic.testing.tiny_pipeline() (random weights, "
    "noise-like music); pass a trained pipeline directory for real music"
)


def default_pipeline() -> Pipeline:
    """The bundled default pipeline.

    No trained bundle ships yet, so this is ``tokmusic.testing.tiny_pipeline()``: random weights, real
    components. Its music is noise-like; it exercises the whole path end to end.
    """
    global _DEFAULT
    if _DEFAULT is None:
        from .testing import tiny_pipeline

        warnings.warn(DEFAULT_PIPELINE_NOTE, stacklevel=3)
        _DEFAULT = tiny_pipeline(seed=0)
    return _DEFAULT


def generate(video: str | os.PathLike, prompt: str | None = None, *, pipeline=None, seed: int | None = None,
             seconds: float | None = None, progress: bool = True, **sampling) -> Music:
    """Music for ``video``: see ``Pipeline.generate``. ``pipeline``: None (the default pipeline), a directory
    path, or a ``Pipeline``."""
    from .video import probe

    check_generate_arguments(prompt=prompt, seed=seed, seconds=seconds, progress=progress)
    if pipeline is not None and not isinstance(pipeline, (Pipeline, str, os.PathLike)):
        raise ConfigError(f"pipeline must be None, a directory path or a tokmusic.Pipeline, not {shown(pipeline)}")
    probe(video)  # a bad video fails before any model loads
    if pipeline is None:
        pipe = default_pipeline()
    elif isinstance(pipeline, Pipeline):
        pipe = pipeline
    else:
        pipe = Pipeline.from_pretrained(pipeline)
    return pipe.generate(video, prompt, seed=seed, seconds=seconds, progress=progress, **sampling)


__all__ = ["generate", "default_pipeline", "DEFAULT_PIPELINE_NOTE"]
