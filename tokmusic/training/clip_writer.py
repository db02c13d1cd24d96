"""Writing corpus clips: pictures from a function and a mono soundtrack, muxed into one file with PyAV."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np


def write_av(path: str | Path, frames: int, image: Callable[[int], np.ndarray], wave: np.ndarray, fps: int,
             size: int | tuple[int, int], sample_rate: int, audio_codec: str = "aac") -> None:
    """Write ``frames`` pictures ``image(i)`` (uint8 ``[H, W, 3]``) at ``fps`` and the mono float32 ``wave``.

    ``size`` is the side of a square picture or ``(height, width)``. Use ``audio_codec="alac"`` for a
    sample-exact soundtrack (AAC delays and colours it).
    """
    import av

    height, width = (size, size) if isinstance(size, int) else size
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height = width, height
        video.pix_fmt = "yuv420p"
        video.options = {"preset": "ultrafast"}
        audio = container.add_stream(audio_codec, rate=sample_rate)
        audio.layout = "mono"
        for i in range(frames):
            for packet in video.encode(av.VideoFrame.from_ndarray(image(i), format="rgb24")):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave, dtype=np.float32)[None], format="fltp",
                                           layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = sample_rate, 0, Fraction(1, sample_rate)
        resampler = av.AudioResampler(format=audio.codec_context.format, layout="mono", rate=sample_rate,
                                      frame_size=audio.codec_context.frame_size or 1024)
        for out in resampler.resample(frame) + resampler.resample(None):
            out.pts = None
            for packet in audio.encode(out):
                container.mux(packet)
        for packet in audio.encode(None):
            container.mux(packet)
