"""Audio I/O: decode any audio (or a video's soundtrack) with PyAV, write .wav/.flac, put music into a video.

    wave = load_audio("clip.mp4", sample_rate=32000)        # float32 [1, samples], the video's own music
    save_audio("music.flac", wave, 32000)
    mux("clip.mp4", wave, 32000, "clip-with-music.mp4")      # pictures copied as they are, new soundtrack
"""

from __future__ import annotations

import itertools
import math
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile
import torch

from .errors import AudioError, VideoError
from .fileio import atomic_file
from .video import _open, _video_stream, probe

SAVE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}
_SUBTYPES = {"WAV": ("PCM_16", "PCM_24", "FLOAT"), "FLAC": ("PCM_16", "PCM_24")}
_LAYOUTS = {1: "mono", 2: "stereo"}
# output suffix -> (muxer, audio codec, audio rates or None for AAC's, fallback video codec, video codecs the
# muxer takes as a copy or None for all it lists: a format's supported_codecs is wider than what its muxer
# writes, e.g. mov lists vp8 but fails on it)
MUX_FORMATS = {
    ".mp4": ("mp4", "aac", None, "libx264", {"h264", "hevc", "mpeg4", "av1", "vp9"}),
    ".m4v": ("mp4", "aac", None, "libx264", {"h264", "hevc", "mpeg4", "av1", "vp9"}),
    ".mov": ("mov", "aac", None, "libx264", {"h264", "hevc", "mpeg4", "prores", "mjpeg"}),
    ".mkv": ("matroska", "aac", None, "libx264", None),
    ".webm": ("webm", "libopus", (48000,), "libvpx-vp9", {"vp8", "vp9", "av1"}),
}
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)


def _audio_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory; pass an audio or video file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: the file is empty (0 bytes); re-copy or re-download it")
    return path


# Seconds decoded before `start` after a seek: AAC/Opus frames overlap, so the first frame after a seek is wrong.
_PREROLL = 0.5


class _Resampler:
    """Resample to float32 at `sample_rate`, then mix to `channels` as a mean (not ffmpeg's sqrt(1/2) gains).

    Sources with more than two channels are first downmixed to stereo by ffmpeg's standard matrix. The inner
    av.AudioResampler is rebuilt (after a flush) when the source format changes mid-stream.
    """

    def __init__(self, sample_rate: int, channels: int):
        self.sample_rate, self.channels = sample_rate, channels
        self.key = None
        self.inner = None

    def __call__(self, frame) -> list[np.ndarray]:
        out = []
        key = None if frame is None else (frame.format.name, frame.layout.name, frame.sample_rate)
        if self.inner is not None and key is not None and key != self.key:
            out += self._pull(None)
            self.inner = None
        if self.inner is None:
            if frame is None:
                return out
            layout = "mono" if len(frame.layout.channels) == 1 else "stereo"
            self.inner = av.AudioResampler(format="fltp", layout=layout, rate=self.sample_rate)
            self.key = key
        return out + self._pull(frame)

    def _pull(self, frame) -> list[np.ndarray]:
        blocks = []
        for f in self.inner.resample(frame):
            block = f.to_ndarray().reshape(-1, f.samples)
            if block.shape[0] != self.channels:
                block = block.mean(0, keepdims=True) if self.channels == 1 else np.repeat(block, 2, 0)
            blocks.append(block)
        return blocks


def load_audio(path: str | os.PathLike, sample_rate: int, channels: int = 1, *, start: float = 0.0,
               duration: float | None = None) -> torch.Tensor:
    """Decode the first audio stream of any file ffmpeg reads (video files included) to float32 [channels, samples].

    Resampled to `sample_rate`; mono is the mean of the channels, stereo from mono repeats it. start/duration
    (seconds from the first sample) select a span; a file shorter than start + duration gives fewer samples.
    Raises AudioError for a missing or corrupt file or one without audio.
    """
    if channels not in _LAYOUTS:
        raise AudioError(f"channels must be 1 (mono) or 2 (stereo), got {channels}")
    if sample_rate <= 0:
        raise AudioError(f"sample_rate must be a positive number of samples per second, got {sample_rate}")
    if start < 0 or (duration is not None and duration < 0):
        raise AudioError(f"start and duration must be >= 0 seconds, got start={start}, duration={duration}")
    path = _audio_path(path)
    wanted = None if duration is None else int(round(duration * sample_rate))
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise AudioError(f"{path}: not a file ffmpeg can read ({exc}); it is corrupt, truncated or of "
                         "another type — re-download or re-encode it") from None
    with container:
        if not container.streams.audio:
            raise AudioError(f"{path}: has no audio stream; pass a file with sound (or set the manifest's "
                             "'audio' to a separate audio file)")
        stream = container.streams.audio[0]
        for other in container.streams:
            if other.index != stream.index:
                other.discard = av.stream.Discard.all
        if stream.duration and "mp4" in container.format.name:
            # MP4 states the exact length; AAC decoders add up to a frame of end padding beyond it
            exact = float(stream.duration * stream.time_base) - start
            limit = max(0, int(round(exact * sample_rate)))
            wanted = limit if wanted is None else min(wanted, limit)
        try:
            chunks = _decode_span(container, stream, sample_rate, channels, start, wanted)
        except av.FFmpegError as exc:
            raise AudioError(f"{path}: decoding the audio failed ({exc}); the file is corrupt — "
                             "re-download or re-encode it") from None
    if not chunks:
        return torch.zeros(channels, 0)
    return torch.from_numpy(np.concatenate(chunks, axis=1))


def _frame_time(frame, stream) -> float | None:
    return None if frame.pts is None else float(frame.pts * stream.time_base)


def _timed_frames(container, stream, start: float):
    """(seconds from the first sample, frame) from a little before `start` on, seeking when that saves work."""
    frames = container.decode(stream)
    first = next(frames, None)
    if first is None:
        return
    origin = _frame_time(first, stream) or 0.0
    if start > 2 * _PREROLL:
        target = origin + start - _PREROLL
        container.seek(int(target / stream.time_base), stream=stream, backward=True)
        frames = container.decode(stream)
        first = next(frames, None)
        t = _frame_time(first, stream) if first is not None else None
        if t is None or t > target + 1e-3:  # landed late (or nowhere): decode from the top instead
            container.seek(0)
            frames = container.decode(stream)
            first = next(frames, None)
    position = None
    for frame in itertools.chain([first] if first is not None else [], frames):
        t = _frame_time(frame, stream)
        # frames without timestamps continue where the previous one ended
        position = (t - origin) if t is not None else (position or 0.0)
        yield position, frame
        position += frame.samples / frame.sample_rate


def _align(frame, t: float, sample_rate: int):
    """Drop the frame's first samples so it starts where input and output sample grids coincide.

    After a seek, resampling must start on the same grid as a decode from the top would, or every output
    sample is shifted by a fraction of a sample.
    """
    rate = frame.sample_rate
    period = rate // math.gcd(rate, sample_rate)
    drop = (-int(round(t * rate))) % period
    if drop == 0 or drop >= frame.samples:
        return frame, t
    data = frame.to_ndarray()
    data = data[:, drop:] if frame.format.is_planar else data[:, drop * len(frame.layout.channels):]
    trimmed = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=frame.format.name,
                                         layout=frame.layout.name)
    trimmed.sample_rate = rate
    return trimmed, t + drop / rate


def _decode_span(container, stream, sample_rate: int, channels: int, start: float,
                 wanted: int | None) -> list[np.ndarray]:
    """Resampled blocks [C, n] covering start .. start + wanted samples (all to the end if wanted is None)."""
    resample = _Resampler(sample_rate, channels)
    chunks: list[np.ndarray] = []
    skip = None  # output samples still to drop before `start`
    have = 0

    def add(blocks):
        nonlocal skip, have
        for block in blocks:
            block, skip = block[:, skip:], max(0, skip - block.shape[1])
            if block.shape[1]:
                chunks.append(block)
                have += block.shape[1]

    for t, frame in _timed_frames(container, stream, start):
        if skip is None:
            if t > 0:
                frame, t = _align(frame, t, sample_rate)
            # both on the output grid, so a span read after a seek equals the same span of a full read
            skip = max(0, int(round(start * sample_rate)) - int(round(t * sample_rate)))
        add(resample(frame))
        if wanted is not None and have >= wanted:
            break
    else:
        if skip is not None:
            add(resample(None))
    if wanted is not None:
        out, total = [], 0
        for c in chunks:
            if total >= wanted:
                break
            out.append(c[:, : wanted - total])
            total += out[-1].shape[1]
        chunks = out
    return [np.ascontiguousarray(c, dtype=np.float32) for c in chunks]


def _as_waveform(waveform, what: str) -> np.ndarray:
    """float32 [channels, samples] from a tensor or array of shape [samples] or [channels, samples]."""
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().to("cpu", torch.float32).numpy()
    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.ndim == 1:
        waveform = waveform[None]
    if waveform.ndim != 2 or waveform.shape[0] not in (1, 2) or waveform.shape[1] == 0:
        raise AudioError(f"{what}: waveform must be [channels, samples] with 1 or 2 channels and at least one "
                         f"sample, got shape {tuple(waveform.shape)}")
    if not np.isfinite(waveform).all():
        raise AudioError(f"{what}: waveform holds NaN or infinite values; check the model that made it")
    return np.clip(waveform, -1.0, 1.0)


def save_audio(path: str | os.PathLike, waveform: torch.Tensor, sample_rate: int, *,
               subtype: str = "PCM_16") -> None:
    """Write float32 [channels, samples] (or [samples]) to .wav or .flac by suffix, clipped to [-1, 1], atomically.

    subtype: "PCM_16" (default), "PCM_24", or "FLOAT" (.wav only).
    """
    path = Path(path)
    fmt = SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise AudioError(f"{path}: cannot write {path.suffix or 'a file without suffix'!r} audio; "
                         f"use one of {', '.join(SAVE_FORMATS)} (or mux() to put music into a video)")
    if subtype not in _SUBTYPES[fmt]:
        raise AudioError(f"{path}: subtype {subtype!r} is not available for {fmt}; use one of {_SUBTYPES[fmt]}")
    if sample_rate <= 0:
        raise AudioError(f"{path}: sample_rate must be positive, got {sample_rate}")
    data = _as_waveform(waveform, str(path))
    try:
        with atomic_file(path) as tmp:
            soundfile.write(str(tmp), data.T, int(sample_rate), subtype=subtype, format=fmt)
    except (soundfile.LibsndfileError, OSError) as exc:
        raise AudioError(f"{path}: writing failed ({exc}); check the folder exists and is writable") from None


def _fit(data: np.ndarray, samples: int) -> np.ndarray:
    """Trim or zero-pad [C, n] to [C, samples]."""
    if data.shape[1] >= samples:
        return data[:, :samples]
    return np.pad(data, ((0, 0), (0, samples - data.shape[1])))


def mux(video_path: str | os.PathLike, waveform: torch.Tensor, sample_rate: int, out_path: str | os.PathLike) -> None:
    """Write `video_path`'s pictures with `waveform` ([channels, samples]) as the only soundtrack, atomically.

    The video stream is copied bit for bit when the output container accepts its codec (otherwise re-encoded);
    the original audio is dropped; the music is encoded as AAC (.mp4/.m4v/.mov/.mkv) or Opus (.webm), padded with
    silence or trimmed to the video's duration.
    """
    video_path, out_path = Path(video_path), Path(out_path)
    suffix = out_path.suffix.lower()
    if suffix not in MUX_FORMATS:
        raise VideoError(f"{out_path}: cannot write {suffix or 'a file without suffix'!r} video; "
                         f"use one of {', '.join(MUX_FORMATS)}")
    if sample_rate <= 0:
        raise AudioError(f"{out_path}: sample_rate must be positive, got {sample_rate}")
    info = probe(video_path)
    data = _as_waveform(waveform, str(out_path))
    rates = MUX_FORMATS[suffix][2] or _AAC_RATES
    # the rate itself if the codec takes it, else the nearest rate above (no loss), else the highest
    out_rate = min(rates, key=lambda r: (r < sample_rate, abs(r - sample_rate)))
    try:
        with atomic_file(out_path) as tmp:
            _write_muxed(video_path, info, data, sample_rate, out_rate, MUX_FORMATS[suffix], tmp)
    except av.FFmpegError as exc:
        raise VideoError(f"{out_path}: writing the video failed ({exc}); check the folder is writable and "
                         f"the input {video_path} is intact") from None


def _audio_frames(data: np.ndarray, sample_rate: int, out_rate: int, stream, total: int, offset: int):
    """Encoder-ready frames of `data` [C, n] resampled to out_rate, exactly `total` samples from pts `offset`."""
    layout = _LAYOUTS[data.shape[0]]
    ctx = stream.codec_context
    size = ctx.frame_size or 1024
    resampler = av.AudioResampler(format=ctx.format, layout=ctx.layout, rate=out_rate, frame_size=size)
    # pad the input generously, then cut the output to `total`, so resampler latency never shortens it
    needed = int(math.ceil(total * sample_rate / out_rate)) + sample_rate // 10
    data = _fit(data, needed)
    produced = 0
    step = sample_rate  # one second of input per push keeps memory flat for long videos
    for begin in range(0, data.shape[1] + 1, step):
        block = data[:, begin : begin + step]
        frames = []
        if block.shape[1]:
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout=layout)
            frame.sample_rate = sample_rate
            frame.pts = begin
            frame.time_base = Fraction(1, sample_rate)
            frames = resampler.resample(frame)
        else:
            frames = resampler.resample(None)
        for out in frames:
            if produced >= total:
                return
            if produced + out.samples > total:
                keep = total - produced
                arr = out.to_ndarray()[..., :keep]
                out = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr), format=ctx.format.name,
                                                 layout=ctx.layout.name)
                out.sample_rate = out_rate
            out.pts = offset + produced
            out.time_base = Fraction(1, out_rate)
            produced += out.samples
            yield out


def _write_muxed(video_path: Path, info, data: np.ndarray, sample_rate: int, out_rate: int, spec: tuple,
                 tmp: Path) -> None:
    format_name, acodec, _, vcodec, copyable = spec
    total = int(round(info.duration * out_rate))
    with _open(video_path) as source, av.open(str(tmp), "w", format=format_name) as out:
        vin = _video_stream(source, video_path)
        for other in source.streams:
            if other.index != vin.index:
                other.discard = av.stream.Discard.all
        copy = vin.codec_context.name in (copyable if copyable is not None else out.supported_codecs)
        if copy:
            vout = out.add_stream_from_template(vin)
        else:
            vout = out.add_stream(vcodec, rate=vin.average_rate or vin.guessed_rate or 25)
            vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
            vout.codec_context.time_base = vin.time_base  # keep the source timestamps (variable frame rate)
            if vcodec == "libvpx-vp9":
                vout.options = {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0"}
            else:
                vout.options = {"crf": "20", "preset": "veryfast"}
        if info.rotation:
            vout.set_display_rotation(-info.rotation)  # PyAV counts counter-clockwise
        aout = out.add_stream(acodec, rate=out_rate)
        aout.layout = _LAYOUTS[data.shape[0]]
        # music time 0 is the first picture (read_frames counts from the video stream's first timestamp)
        offset = max(0, int(round(float((vin.start_time or 0) * vin.time_base) * out_rate)))
        audio = _audio_frames(data, sample_rate, out_rate, aout, total, offset)
        audio_time = 0.0

        def feed_audio(until: float) -> float:
            # interleave: keep the audio about a second ahead of the pictures written so far
            t = audio_time
            while t < until:
                frame = next(audio, None)
                if frame is None:
                    return math.inf
                for packet in aout.encode(frame):
                    out.mux(packet)
                t = (frame.pts + frame.samples) / out_rate
            return t

        for packet in source.demux(vin):
            if copy:
                if packet.dts is None:
                    continue
                t = float(packet.pts * vin.time_base) if packet.pts is not None else audio_time
                packet.stream = vout
                out.mux(packet)
            else:
                t = audio_time
                for frame in vin.decode(packet):
                    frame.pict_type = av.video.frame.PictureType.NONE
                    for p in vout.encode(frame):
                        out.mux(p)
                    t = frame.time if frame.time is not None else t
            audio_time = feed_audio(t + 1.0)
        if not copy:
            for p in vout.encode(None):
                out.mux(p)
        feed_audio(math.inf)
        for packet in aout.encode(None):
            out.mux(packet)

