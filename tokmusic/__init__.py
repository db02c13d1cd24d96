"""tokmusic: music for a video.

    import tokmusic
    music = tokmusic.generate("clip.mp4", "slow melancholic piano")
    music.save("clip.wav")

Visual features -> semantic music tokens -> coarse EnCodec tokens -> fine EnCodec tokens -> waveform,
each step an encoder-decoder transformer (V2Meow, VidMuse).
"""

from __future__ import annotations

import importlib

from .errors import AudioError, CheckpointError, ConfigError, DataError, TokmusicError, VideoError

__version__ = "0.1.0"

# Heavy modules (torch models, transformers) load on first use, so `import tokmusic` stays quick.
_LAZY = {
    "generate": ("tokmusic.default", "generate"),
    "Pipeline": ("tokmusic.pipeline", "Pipeline"),
    "Music": ("tokmusic.music", "Music"),
    "testing": ("tokmusic.testing", None),
    "patterns": ("tokmusic.patterns", None),
    "metrics": ("tokmusic.metrics", None),
}

__all__ = [
    "AudioError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "Music",
    "Pipeline",
    "TokmusicError",
    "VideoError",
    "generate",
    "metrics",
    "patterns",
    "testing",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'tokmusic' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value
