from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch

from media import frame_image, level_index, make_audio, make_video, vfr_times
from tokmusic.errors import VideoError
from tokmusic.video import _frames, _rotation, probe, read_frames, sample_times


def read_all(path, **kw):
    chunks = list(read_frames(path, **kw))
    return torch.cat([f for f, _ in chunks]), torch.cat([t for _, t in chunks])


def indices(frames: torch.Tensor) -> list[int]:
    """Which source frame each sampled frame is, from its background level (top-left pixel, red)."""
    return [level_index(v) for v in frames[:, 0, 0, 0].tolist()]


def test_three_seconds_at_two_fps(tmp_path):
    path = make_video(tmp_path / "a.mp4", 3, fps=10)
    info = probe(path)
    assert (info.duration, info.width, info.height, info.rotation, info.frame_rate, info.has_audio) == (
        3.0, 64, 48, 0, 10.0, False)
    frames, times = read_all(path, fps=2, size=None)
    assert frames.dtype == torch.uint8 and frames.shape == (6, 48, 64, 3)
    assert times.dtype == torch.float64 and times.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert indices(frames) == [0, 5, 10, 15, 20, 0]  # frame 25 looks like frame 0 (levels wrap every 25)


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv", ".webm", ".avi"])
def test_containers(tmp_path, suffix):
    path = make_video(tmp_path / f"a{suffix}", 2, fps=10, with_audio=True)
    info = probe(path)
    assert info.duration == pytest.approx(2.0, abs=1e-3)
    assert (info.width, info.height, info.has_audio) == (64, 48, True)
    frames, times = read_all(path, fps=4, size=None)
    assert times.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    # the frame for t is the last one shown at or before t: index floor(10 * t)
    assert indices(frames) == [0, 2, 5, 7, 10, 12, 15, 17]


def test_variable_frame_rate(tmp_path):
    path = make_video(tmp_path / "vfr.mkv", 2, fps=5, vfr=True)
    shown = vfr_times(2, 5)  # [0, 0.1, 0.3, 0.6, 0.7, ...]
    frames, times = read_all(path, fps=10, size=16)
    expected = [max(i for i, s in enumerate(shown) if s <= t + 1e-9) for t in times.tolist()]
    assert indices(frames) == [i % 25 for i in expected]
    assert expected[:8] == [0, 1, 1, 2, 2, 2, 3, 4]  # the sampling really saw uneven gaps


def test_sizes(tmp_path):
    path = make_video(tmp_path / "a.mp4", 1, fps=10)
    native, _ = read_all(path, fps=2, size=None)
    square, _ = read_all(path, fps=2, size=24)
    exact, _ = read_all(path, fps=2, size=(20, 30))
    assert square.shape == (2, 24, 24, 3) and exact.shape == (2, 20, 30, 3)
    same_scale, _ = read_all(path, fps=2, size=48)  # shorter side already 48: only the centre crop
    assert torch.equal(same_scale, native[:, :, 8:56])


@pytest.mark.parametrize("ccw, clockwise", [(90, 270), (-90, 90), (180, 180)])
def test_rotation_is_applied(tmp_path, ccw, clockwise):
    path = make_video(tmp_path / "phone.mp4", 1, fps=10, rotation=ccw)
    info = probe(path)
    assert info.rotation == clockwise
    frames, _ = read_all(path, fps=1, size=None)
    upright = np.rot90(frame_image(0, 48, 64), ccw // 90)
    assert (info.height, info.width) == upright.shape[:2] == tuple(frames.shape[1:3])
    assert np.abs(frames[0].numpy().astype(int) - upright).mean() < 3


def test_rotate_tag_fallback():
    stream = SimpleNamespace(metadata={"rotate": "90"})
    assert _rotation(SimpleNamespace(rotation=0), stream) == 90
    assert _rotation(SimpleNamespace(rotation=90), stream) == 270  # side data wins over the tag


def test_chunks_equal_one_pass(tmp_path):
    path = make_video(tmp_path / "a.webm", 3, fps=10)
    whole, whole_t = read_all(path, fps=5, size=32, chunk=1000)
    chunks = list(read_frames(path, fps=5, size=32, chunk=4))
    assert [len(t) for _, t in chunks] == [4, 4, 4, 3]
    assert torch.equal(torch.cat([f for f, _ in chunks]), whole)
    assert torch.equal(torch.cat([t for _, t in chunks]), whole_t)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_start_and_end_seek(tmp_path, suffix):
    path = make_video(tmp_path / f"a{suffix}", 4, fps=10)
    whole, times = read_all(path, fps=2, size=None)
    part, part_t = read_all(path, fps=2, size=None, start=2.5, end=3.6)
    assert part_t.tolist() == [2.5, 3.0, 3.5]
    assert torch.equal(part, whole[5:8])
    assert indices(part) == [0, 5, 10]  # frames 25, 30, 35 (levels wrap every 25)
    # end past the duration is capped
    assert read_all(path, fps=2, size=None, start=3.0, end=99)[1].tolist() == [3.0, 3.5]


class _FakeContainer:
    """Frames at 0.0, 0.1, ... 0.9 s; seek() lands 0.3 s later than asked (a bad index)."""

    def __init__(self):
        self.position = 0

    def seek(self, offset, stream=None, backward=True):
        self.position = 0 if offset == 0 else offset + 3

    def decode(self, stream):
        for pts in range(self.position, 10):
            yield SimpleNamespace(pts=pts)


def test_seek_that_lands_late_restarts_from_the_top():
    stream = SimpleNamespace(time_base=Fraction(1, 10), start_time=0)
    got = [round(t, 3) for t, _ in _frames(_FakeContainer(), stream, "fake.mp4", 0.5)]
    assert got == [round(0.1 * i, 3) for i in range(10)]


def test_broken_audio_track_is_ignored(tmp_path):
    path = tmp_path / "bad-audio.mkv"
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream("aac", rate=44100)
        rng = np.random.default_rng(0)
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(frame_image(i, 48, 64), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
            packet = av.Packet(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
            packet.stream, packet.pts, packet.dts, packet.time_base = audio, i * 4410, i * 4410, Fraction(1, 44100)
            out.mux(packet)
        out.mux(video.encode(None))
    frames, _ = read_all(path, fps=5, size=None)
    assert indices(frames) == [0, 2, 4, 6, 8]


def _error(path, **kw) -> str:
    with pytest.raises(VideoError) as info:
        list(read_frames(path, **kw))
    assert str(path) in str(info.value)
    return str(info.value)


def test_bad_files(tmp_path):
    assert "no such file" in _error(tmp_path / "missing.mp4")
    assert "directory" in _error(tmp_path)
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert "empty" in _error(tmp_path / "empty.mp4")
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 50)
    assert "ffmpeg" in _error(tmp_path / "notes.mp4")
    assert "no video stream" in _error(make_audio(tmp_path / "song.m4a", 1.0))


def test_no_frames(tmp_path):
    path = tmp_path / "blank.avi"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        out.start_encoding()  # header only: a video stream without a single frame
    assert path.stat().st_size > 0
    assert "no decodable frames" in _error(path)


def test_truncated_files(tmp_path):
    data = make_video(tmp_path / "a.mp4", 4, fps=10).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])  # moov atom at the end: cannot open
    assert "truncated" in _error(tmp_path / "cut.mp4")
    data = make_video(tmp_path / "a.mkv", 4, fps=10).read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])  # opens, pictures stop half way
    message = _error(tmp_path / "cut.mkv")
    assert "truncated" in message and "stop at 1." in message


def test_corrupt_packets_say_when(tmp_path):
    data = bytearray(make_video(tmp_path / "a.mp4", 4, fps=10).read_bytes())
    rng = np.random.default_rng(0)
    middle = len(data) // 3
    data[middle : middle + 3000] = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    (tmp_path / "garbled.mp4").write_bytes(bytes(data))
    assert "decoding failed after" in _error(tmp_path / "garbled.mp4")


def test_bad_arguments(tmp_path):
    path = make_video(tmp_path / "a.mp4", 1, fps=10)
    assert "fps" in _error(path, fps=0)
    assert "fps" in _error(path, fps=-2)
    assert "start" in _error(path, start=-0.5)
    assert "start" in _error(path, start=1.0)


def test_sample_times():
    assert sample_times(0.0, 3.0, 2.0).tolist() == [0, 0.5, 1, 1.5, 2, 2.5]
    assert sample_times(0.1, 0.4, 10.0).tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert len(sample_times(0.0, 0.01, 2.0)) == 1


def test_probe_sees_a_file_replaced_under_the_same_name(tmp_path):
    path = tmp_path / "v.mp4"
    make_video(path, 1.0, fps=10, size=(32, 32))
    assert abs(probe(path).duration - 1.0) < 0.15
    make_video(path, 2.0, fps=10, size=(32, 32))
    assert abs(probe(path).duration - 2.0) < 0.15
