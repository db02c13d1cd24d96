"""Video reading with PyAV: probe a file, and stream its frames sampled at a fixed rate.

    info = probe("clip.mp4")                        # duration, displayed size, rotation, frame rate, audio?
    for frames, times in read_frames("clip.mp4", fps=2.0, size=224):
        ...                                         # frames: uint8 [N, 224, 224, 3], times: float64 [N]

Frames are decoded one at a time and only the frames of one chunk are ever held, so an hour-long video
costs as much memory as a short one.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import numpy as np
import torch

from .errors import VideoError

# Tolerance (seconds) for comparing sample times with frame times that went through integer time bases.
_EPS = 1e-6


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` finds out about a video.

    duration: seconds of the video stream; width, height: as displayed (after rotation);
    rotation: clockwise degrees (0, 90, 180, 270) the stored picture is turned for display, the
    convention of the `rotate` tag phones write; frame_rate: average frames per second.
    """

    path: Path
    duration: float
    width: int
    height: int
    rotation: int
    frame_rate: float
    has_audio: bool

    def _replace_path(self, path: Path) -> "VideoInfo":
        return self if self.path == path else dataclasses.replace(self, path=path)


def _check_path(path: Path) -> None:
    if not path.exists():
        raise VideoError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise VideoError(f"{path}: is a directory, not a video file; pass the path of a video file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: the file is empty (0 bytes); re-copy or re-download it")


def _open(path: Path) -> av.container.InputContainer:
    """Open a container; anything ffmpeg cannot open becomes a VideoError."""
    _check_path(path)
    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise VideoError(
            f"{path}: not a video file ffmpeg can read ({exc}); the file is corrupt, truncated or of "
            "another type: re-download it or re-encode it, e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`"
        ) from None


def _video_stream(container, path: Path):
    """The first video stream that is real pictures (cover art in music files does not count)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    kinds = sorted({s.type for s in container.streams}) or ["nothing"]
    raise VideoError(
        f"{path}: has no video stream (it holds {', '.join(kinds)}); tokmusic needs pictures — pass a video file"
    )


def _start_seconds(stream) -> float:
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def _tag_duration(stream) -> float | None:
    """Duration from a Matroska/WebM `DURATION` tag ("HH:MM:SS.fffffffff"), if present."""
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if not tag or ":" not in tag:
        return None
    try:
        h, m, s = tag.split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)
    except ValueError:
        return None


def _demuxed_duration(path: Path, index: int, hint: float | None) -> float | None:
    """Last packet pts + its duration, demuxing from a seek near the end (from the start if that fails)."""
    with _open(path) as container:
        stream = container.streams[index]
        start = stream.start_time or 0
        for seek_to in ([hint] if hint else []) + [None]:
            try:
                if seek_to is not None:
                    container.seek(start + int(seek_to / stream.time_base), stream=stream, backward=True)
                else:
                    container.seek(0)
                end = None
                for packet in container.demux(stream):
                    if packet.pts is not None:
                        stop = packet.pts + (packet.duration or 0)
                        end = stop if end is None else max(end, stop)
            except av.FFmpegError:
                continue
            if end is not None:
                return float((end - start) * stream.time_base)
    return None


def _rotation(frame, stream) -> int:
    """Clockwise display rotation in {0, 90, 180, 270} from side data, else the legacy `rotate` tag."""
    ccw = frame.rotation if frame is not None else 0
    if ccw:
        return int(round(-ccw / 90.0)) * 90 % 360
    tag = stream.metadata.get("rotate")
    try:
        return int(round(float(tag) / 90.0)) * 90 % 360 if tag else 0
    except ValueError:
        return 0


def _displayed_size(frame, rotation: int, stream) -> tuple[int, int]:
    """(height, width) as displayed: pixel aspect ratio applied to the width, then rotation."""
    width, height = frame.width, frame.height
    sar = stream.sample_aspect_ratio
    if sar and sar > 0 and sar != 1:
        width = max(1, int(round(width * float(sar))))
    return (width, height) if rotation in (90, 270) else (height, width)


def _decode_first(container, stream, path: Path):
    try:
        for frame in container.decode(stream):
            return frame
    except av.FFmpegError as exc:
        raise VideoError(f"{path}: decoding the first frame failed ({exc}); the file is corrupt — "
                         "re-download or re-encode it") from None
    raise VideoError(f"{path}: the video stream has no decodable frames; the file is corrupt or empty — "
                     "re-encode it")


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read a video's duration, displayed size, rotation, frame rate and whether it has audio.

    Decodes the first frame (for rotation side data and to check the file holds pictures).
    Raises VideoError for anything that is not a readable video.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise VideoError(f"{path!r}: a video is given by its path (str or os.PathLike), not {type(path).__name__}")
    path = Path(path)
    _check_path(path)
    stat = path.stat()
    # a generate call asks several readers about one file: the answer is kept while the file is unchanged
    return _probe(path.absolute(), stat.st_size, stat.st_mtime_ns, stat.st_ino)._replace_path(path)


@functools.lru_cache(maxsize=64)
def _probe(path: Path, size: int, mtime_ns: int, inode: int) -> VideoInfo:
    with _open(path) as container:
        stream = _video_stream(container, path)
        has_audio = len(container.streams.audio) > 0
        stream.thread_type = "AUTO"
        first = _decode_first(container, stream, path)
        rotation = _rotation(first, stream)
        height, width = _displayed_size(first, rotation, stream)
        duration = None
        if stream.duration:
            duration = float(stream.duration * stream.time_base)
        if duration is None:
            duration = _tag_duration(stream)
        container_duration = container.duration / av.time_base if container.duration else None
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        index = stream.index
    if duration is None:
        duration = _demuxed_duration(path, index, container_duration)
    if duration is None:
        duration = container_duration
    if not duration or duration <= 0:
        raise VideoError(f"{path}: the video's duration cannot be determined; re-encode it "
                         "(e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`)")
    frame_rate = float(rate) if rate else 0.0
    return VideoInfo(path, duration, width, height, rotation, frame_rate, has_audio)


def _resize_plan(height: int, width: int, size) -> tuple[int, int, int, int]:
    """(resize_h, resize_w, crop_h, crop_w) in display orientation for `size` (see read_frames)."""
    if size is None:
        return height, width, height, width
    if isinstance(size, int):
        if size <= 0:
            raise VideoError(f"size must be a positive number of pixels, got {size}")
        scale = size / min(height, width)
        rh = max(size, int(round(height * scale)))
        rw = max(size, int(round(width * scale)))
        return rh, rw, size, size
    h, w = (int(v) for v in size)
    if h <= 0 or w <= 0:
        raise VideoError(f"size must be positive (height, width), got {tuple(size)}")
    return h, w, h, w


class _FrameConverter:
    """Turns decoded frames into uint8 [H, W, 3] arrays: resize, rotate upright, centre crop."""

    def __init__(self, rotation: int, plan: tuple[int, int, int, int]):
        self.k = -(rotation // 90)  # np.rot90 turns counter-clockwise; rotation is clockwise
        self.rh, self.rw, self.ch, self.cw = plan
        self._cache: tuple[object, np.ndarray] | None = None

    def __call__(self, frame) -> np.ndarray:
        if self._cache is not None and self._cache[0] is frame:
            return self._cache[1]
        # swscale works in stored orientation, so swap the target sides for quarter turns.
        sw, sh = (self.rh, self.rw) if self.k % 2 else (self.rw, self.rh)
        image = frame.to_ndarray(width=sw, height=sh, format="rgb24", interpolation="AREA")
        if self.k % 4:
            image = np.rot90(image, self.k)
        top = (image.shape[0] - self.ch) // 2
        left = (image.shape[1] - self.cw) // 2
        image = np.ascontiguousarray(image[top : top + self.ch, left : left + self.cw])
        self._cache = (frame, image)
        return image


def sample_times(start: float, end: float, fps: float) -> np.ndarray:
    """The sample times start + k / fps that lie before `end`, float64 [N]."""
    count = max(0, math.ceil((end - start) * fps - _EPS))
    return start + np.arange(count, dtype=np.float64) / fps


def _frames(container, stream, path: Path, start: float) -> Iterator[tuple[float, object]]:
    """Decoded frames with their time (seconds from the stream's first timestamp), from `start` on.

    Seeks to the key frame before `start`; if the seek lands after `start` (bad index), decodes from the top.
    """
    origin = _start_seconds(stream)
    decoded_any = False
    if start > 0:
        try:
            container.seek(int((start + origin) / stream.time_base), stream=stream, backward=True)
        except av.FFmpegError:
            container.seek(0)
    restarted = start <= 0
    last_time = 0.0
    while True:
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * stream.time_base) - origin
                if not restarted:
                    restarted = True
                    if t > start + _EPS and t > _EPS:
                        break  # the seek landed late: start over from the beginning
                decoded_any = True
                last_time = t
                yield t, frame
            else:
                return
        except av.FFmpegError as exc:
            where = f"after {last_time:.2f} s" if decoded_any else "at the start"
            raise VideoError(f"{path}: decoding failed {where} ({exc}); the file is corrupt or truncated — "
                             "re-download or re-encode it") from None
        container.seek(0)


def read_frames(path: str | os.PathLike, fps: float = 2.0, size: int | tuple[int, int] | None = 224, *,
                start: float = 0.0, end: float | None = None, chunk: int = 32
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (frames uint8 [N, H, W, 3], timestamps float64 [N]) chunk by chunk (N <= chunk).

    Samples t_k = start + k / fps for every t_k < end (end defaults to, and is capped at, the duration);
    the frame for t_k is the last frame shown at or before t_k (before the first frame: the first frame),
    so variable frame rates are handled. size: int -> shorter side resized to `size`, then a centred
    size x size crop; (H, W) -> resized to exactly that; None -> native displayed size. Rotation metadata
    is applied, so frames come out as displayed. Audio tracks are never touched.
    """
    path = Path(path)
    if not fps or fps <= 0 or not math.isfinite(fps):
        raise VideoError(f"{path}: fps must be a positive number of frames per second, got {fps}")
    if chunk < 1:
        raise VideoError(f"{path}: chunk must be at least 1 frame, got {chunk}")
    info = probe(path)
    if start < 0 or start >= info.duration:
        raise VideoError(f"{path}: start={start} s lies outside the video (0 to {info.duration:.3f} s); "
                         "pass a start inside it")
    end = info.duration if end is None else min(float(end), info.duration)
    times = sample_times(start, end, fps)
    if len(times) == 0:
        return
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        for other in container.streams:
            if other.index != stream.index:
                other.discard = av.stream.Discard.all  # a broken audio track must not matter
        first_rotation = None
        convert = None
        frame_step = 1.0 / info.frame_rate if info.frame_rate else 0.0
        buffer: list[np.ndarray] = []
        out_times: list[float] = []
        k = 0
        previous = None
        previous_time = 0.0

        def emit(frame):
            buffer.append(convert(frame))
            out_times.append(float(times[k]))

        def flush():
            batch = (torch.from_numpy(np.stack(buffer)), torch.tensor(out_times, dtype=torch.float64))
            buffer.clear()
            out_times.clear()
            return batch

        for t, frame in _frames(container, stream, path, start):
            if convert is None:
                first_rotation = _rotation(frame, stream)
                plan = _resize_plan(*_displayed_size(frame, first_rotation, stream), size)
                convert = _FrameConverter(first_rotation, plan)
            # every sample before this frame's time shows the previous frame (or this one, if none yet)
            while k < len(times) and times[k] < t - _EPS:
                emit(previous if previous is not None else frame)
                k += 1
                if len(buffer) == chunk:
                    yield flush()
            if k == len(times):
                break
            previous, previous_time = frame, t
        if previous is None:
            raise VideoError(f"{path}: no frame could be decoded after {start:.2f} s; the file is corrupt — "
                             "re-encode it")
        # a frame's duration covers the time it is held (a still held for seconds is legitimate)
        held = float(previous.duration * stream.time_base) if previous.duration else frame_step
        if k < len(times) and times[-1] > previous_time + held + 1.0:
            raise VideoError(
                f"{path}: the pictures stop at {previous_time:.2f} s but the video declares "
                f"{info.duration:.2f} s; the file is truncated — re-download or re-encode it"
            )
        while k < len(times):
            emit(previous)
            k += 1
            if len(buffer) == chunk:
                yield flush()
        if buffer:
            yield flush()
