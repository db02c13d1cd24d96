"""``tokmusic.generate`` and the default pipeline it uses when none is given.

    music = tokmusic.generate("clip.mp4", "slow melancholic piano", seed=1)

The default pipeline is built once, on first use, and kept for the life of the process.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from .errors import ConfigError
from .music import Music
from .pipeline import Pipeline
from .schema import check_generate_arguments, shown

# The demo bundle: a whole pipeline trained on tokmusic's demo world (recipes/build_demo.py). Its trained parts
# are safetensors in this folder; the pretrained ones (EfficientNet-Lite0, MiniLM) are read from their packages.
BUNDLE_DIR = Path(__file__).resolve().parent / "pretrained" / "demo"
_DEFAULT: Pipeline | None = None
DEFAULT_PIPELINE_NOTE = (
    "the default pipeline is the demo bundle: trained on soundfont-rendered Bach chorales paired with photographs "
    "(a demo world, not a general music model)"
)
NO_BUNDLE_NOTE = (
    f"the default pipeline's bundle is missing ({BUNDLE_DIR}; build it with recipes/build_demo.py --install): "
    "using tokmusic.testing.tiny_pipeline() (random weights, noise-like music); pass a trained pipeline directory"
)


def default_pipeline() -> Pipeline:
    """The bundled default pipeline, loaded on first use and kept for the life of the process.

    It is the demo bundle (``tokmusic/pretrained/demo``): a whole pipeline trained on the demo world of
    ``recipes/demo_corpus.py`` by ``recipes/build_demo.py``, where the camera's motion sets a Bach chorale's
    tempo, cuts start phrases and the colour grade picks piano or organ. It follows all three on held-out clips
    (README, "The demo bundle", has the figures); for music of the real world, pass a pipeline trained on real
    music. If the bundle is missing, this is ``tokmusic.testing.tiny_pipeline()`` with a warning.
    """
    global _DEFAULT
    if _DEFAULT is None:
        if (BUNDLE_DIR / "pipeline.json").is_file():
            _DEFAULT = Pipeline.from_pretrained(BUNDLE_DIR)
        else:
            from .testing import tiny_pipeline

            warnings.warn(NO_BUNDLE_NOTE, stacklevel=4)  # the caller of tokmusic.generate
            _DEFAULT = tiny_pipeline(seed=0)
    return _DEFAULT


def generate(video: str | os.PathLike, prompt: str | None = None, *, pipeline=None, seed: int | None = None,
             seconds: float | None = None, progress: bool = True, **sampling) -> Music:
    """Music for ``video``: see ``Pipeline.generate``. ``pipeline``: None (the default pipeline), a directory
    path, or a ``Pipeline``."""
    from .video import probe

    check_generate_arguments(prompt=prompt, seed=seed, seconds=seconds, progress=progress)
    check_pipeline_argument(pipeline)
    probe(video)  # a bad video fails before any model loads
    pipe = resolve_pipeline(pipeline)
    return pipe.generate(video, prompt, seed=seed, seconds=seconds, progress=progress, **sampling)


def check_pipeline_argument(pipeline) -> None:
    """ConfigError unless ``pipeline`` is None, a directory path or a ``Pipeline``."""
    if pipeline is not None and not isinstance(pipeline, (Pipeline, str, os.PathLike)):
        raise ConfigError(f"pipeline must be None, a directory path or a tokmusic.Pipeline, not {shown(pipeline)}")


def resolve_pipeline(pipeline, *, warn_missing: bool = True) -> Pipeline:
    """The pipeline a ``pipeline=`` argument names: None -> the default pipeline, a directory -> loaded from
    it, a ``Pipeline`` -> itself. ``warn_missing=False``: no warning when the default bundle is missing (for
    callers that tell the user themselves, as the command line does)."""
    check_pipeline_argument(pipeline)
    if pipeline is None:
        if warn_missing:
            return default_pipeline()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="the default pipeline's bundle is missing")
            return default_pipeline()
    if isinstance(pipeline, Pipeline):
        return pipeline
    return Pipeline.from_pretrained(pipeline)


__all__ = ["generate", "default_pipeline", "resolve_pipeline", "BUNDLE_DIR", "DEFAULT_PIPELINE_NOTE"]
