"""Test media made on the fly with PyAV: small videos with known frames, tones, audio-only files.

Every frame of a video made by `make_video` has a uniform background whose grey level encodes the frame's
index (`frame_level(i)`), plus a white square that moves right by `SQUARE_STEP` pixels per frame, so tests
can tell which frame a decoder returned and motion features have something to see.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

SQUARE_STEP = 2  # pixels the square moves right per frame

# container suffix -> (video codec, audio codec, audio sample rate)
CODECS = {
    ".mp4": ("libx264", "aac", 44100),
    ".mov": ("libx264", "aac", 44100),
    ".mkv": ("libx264", "aac", 44100),
    ".webm": ("libvpx", "libopus", 48000),
    ".avi": ("mpeg4", "pcm_s16le", 44100),
}
AUDIO_CODECS = {".m4a": "aac", ".mp3": "mp3", ".ogg": "libopus", ".wav": "pcm_s16le", ".flac": "flac"}


def frame_level(i: int) -> int:
    """Background grey level of frame `i` (distinct for 0 <= i < 25, wraps after)."""
    return 16 + 9 * (i % 25)


def level_index(level: float) -> int:
    """Inverse of `frame_level` (mod 25): the frame index whose background is nearest `level`."""
    return int(round((float(level) - 16) / 9))


def frame_image(i: int, height: int, width: int) -> np.ndarray:
    """Frame `i` as uint8 [height, width, 3]: grey background plus a moving white square."""
    img = np.full((height, width, 3), frame_level(i), np.uint8)
    side = max(2, min(height, width) // 4)
    x = (i * SQUARE_STEP) % max(1, width - side)
    y = (height - side) // 2
    img[y : y + side, x : x + side] = 255
    return img


def vfr_times(seconds: float, fps: float) -> list[float]:
    """Frame times of a variable-frame-rate video: intervals cycle through 0.5, 1.0, 1.5 times 1/fps."""
    times, t, k = [], 0.0, 0
    while t < seconds - 1e-9:
        times.append(round(t, 3))
        t += (0.5, 1.0, 1.5)[k % 3] / fps
        k += 1
    return times


def make_tone(seconds: float, sample_rate: int = 16000, freq: float = 440.0, channels: int = 1,
              amplitude: float = 0.5) -> np.ndarray:
    """A sine tone as float32 [channels, samples]; channel c has frequency freq * (c + 1)."""
    n = int(round(seconds * sample_rate))
    t = np.arange(n, dtype=np.float64) / sample_rate
    rows = [amplitude * np.sin(2 * math.pi * freq * (c + 1) * t) for c in range(channels)]
    return np.stack(rows).astype(np.float32)


def _encode_audio(container, stream, tone: np.ndarray, sample_rate: int) -> None:
    """Encode float32 [channels, samples] through `stream`, converting to its format and frame size."""
    layout = "mono" if tone.shape[0] == 1 else "stereo"
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone), format="fltp", layout=layout)
    frame.sample_rate = sample_rate
    frame.pts = 0
    frame.time_base = Fraction(1, sample_rate)
    size = stream.codec_context.frame_size or 1024
    resampler = av.AudioResampler(format=stream.codec_context.format, layout=stream.codec_context.layout,
                                  rate=stream.codec_context.sample_rate, frame_size=size)
    done = 0
    for out in resampler.resample(frame) + resampler.resample(None):
        out.pts, out.time_base = done, Fraction(1, stream.codec_context.sample_rate)
        done += out.samples
        for packet in stream.encode(out):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def make_video(path: str | Path, seconds: float, fps: float = 10, size: tuple[int, int] = (48, 64),
               with_audio: bool = False, rotation: int | None = None, vfr: bool = False,
               audio_seconds: float | None = None) -> Path:
    """Write a test video of `seconds` at `fps`; codec and container follow the suffix (see CODECS).

    size is (height, width) of the stored picture; rotation (counter-clockwise degrees, PyAV's convention)
    is written as display-matrix side data; vfr uses the frame times of `vfr_times`. A key frame starts each
    second. With audio, a stereo tone (440 Hz left, 880 Hz right) of `audio_seconds` (default: `seconds`)
    is added. Returns the path.
    """
    path = Path(path)
    vcodec, acodec, sr = CODECS[path.suffix.lower()]
    height, width = size
    rate = Fraction(fps).limit_denominator(1000)
    if vfr:
        times = vfr_times(seconds, fps)
    else:
        times = [i / fps for i in range(int(math.ceil(seconds * fps - 1e-9)))]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(vcodec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        time_base = Fraction(1, 1000) if vfr else 1 / rate
        stream.codec_context.time_base = time_base
        stream.codec_context.gop_size = max(1, int(round(fps)))  # a key frame each second, so seeks matter
        if vcodec == "libx264":
            stream.options = {"crf": "8", "preset": "ultrafast"}
        elif vcodec == "libvpx":
            stream.options = {"crf": "4", "b": "2M", "deadline": "realtime", "cpu-used": "8"}
        else:
            stream.options = {"qscale": "2"}
        if rotation:
            stream.set_display_rotation(rotation)
        audio = None
        if with_audio:
            audio = container.add_stream(acodec, rate=sr)
            audio.layout = "stereo"
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(frame_image(i, height, width), format="rgb24")
            frame.pts = int(round(t / time_base))
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        if audio is not None:
            tone = make_tone(seconds if audio_seconds is None else audio_seconds, sr, channels=2)
            _encode_audio(container, audio, tone, sr)
    return path


def make_audio(path: str | Path, seconds: float, sample_rate: int = 44100, channels: int = 2,
               freq: float = 440.0) -> Path:
    """Write an audio-only file of a tone (codec by suffix, see AUDIO_CODECS); returns the path."""
    path = Path(path)
    codec = AUDIO_CODECS[path.suffix.lower()]
    if codec == "libopus":
        sample_rate = 48000
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=sample_rate)
        stream.layout = "mono" if channels == 1 else "stereo"
        _encode_audio(container, stream, make_tone(seconds, sample_rate, freq, channels), sample_rate)
    return path
