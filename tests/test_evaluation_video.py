"""Video cuts and motion, and audio–visual alignment, on synthetic videos with known cut times."""

import av
import numpy as np
import pytest

from tokmusic.errors import VideoError
from tokmusic.evaluation.alignment import av_alignment, curve_correlation, similarity_structure
from tokmusic.evaluation.events import event_f1
from tokmusic.evaluation.structure import analyze_music
from tokmusic.evaluation.video_events import analyze_video, detect_cuts, histogram_change
from test_evaluation_structure import SR, click_track

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200)]


def make_cut_video(path, cuts, seconds: float, fps: int = 25, size=(48, 64)):
    """A video whose shots (one flat colour each, plus a small moving square) change at `cuts` seconds."""
    h, w = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "10", "preset": "ultrafast"}
        for i in range(int(round(seconds * fps))):
            t = i / fps
            img = np.empty((h, w, 3), np.uint8)
            img[:] = COLOURS[int(np.searchsorted(cuts, t + 1e-9, side="right")) % len(COLOURS)]
            x = int(t * 40) % (w - 10)
            img[20:30, x : x + 10] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def test_cuts_found_at_known_times(tmp_path):
    cuts = [1.0, 2.6, 4.2]
    v = analyze_video(make_cut_video(tmp_path / "v.mp4", cuts, 6.0))
    assert event_f1(cuts, v.cuts, tolerance=0.041).f1 == 1.0, v.cuts
    assert v.duration == pytest.approx(6.0, abs=0.05)
    assert v.motion.shape == v.times.shape and v.motion.min() >= 0
    assert v.motion[np.searchsorted(v.times, v.cuts)].max() == 0.0  # a cut is not motion
    assert v.features.shape == (53,)
    assert set(v.summary()) == {"duration", "cuts", "motion_peaks", "mean_motion"}


def test_detect_cuts_ignores_gradual_change_and_steady_motion():
    # a slow fade changes every histogram a little: no cut; a jump in the middle is one
    levels = np.concatenate([np.linspace(0, 0.2, 20), np.linspace(0.8, 1.0, 20)])
    hist = np.stack([np.concatenate([[1 - v, v, 0, 0, 0, 0, 0, 0]] * 3) for v in levels])
    change = histogram_change(hist)
    assert change[20] == pytest.approx(0.6) and change[5] == pytest.approx(0.2 / 19)
    np.testing.assert_array_equal(detect_cuts(change), [20])
    # fast motion: large change in every frame is no cut; a spike on top of it is
    busy = np.full(30, 0.3)
    busy[0], busy[15] = 0.0, 0.7
    np.testing.assert_array_equal(detect_cuts(busy), [15])


def test_unreadable_video_raises_video_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(VideoError):
        analyze_video(bad)


def test_beats_on_cuts_score_full_recall(tmp_path):
    cuts = [1.0, 3.0, 5.0]
    video = analyze_video(make_cut_video(tmp_path / "v.mp4", cuts, 6.0))
    on_cut = analyze_music(click_track(np.arange(0.5, 6.0, 0.5), 6.0), SR)  # 120 BPM, beats on every cut
    off_cut = analyze_music(click_track(np.arange(0.75, 6.0, 0.5), 6.0), SR)  # same tempo, a quarter beat late
    good = av_alignment([(on_cut, video)], tolerance=0.1)
    bad = av_alignment([(off_cut, video)], tolerance=0.1)
    assert good["cut_beat"]["recall"] == 1.0 and good["cut_onset"]["recall"] == 1.0
    assert bad["cut_beat"]["recall"] == 0.0
    # 11 beats with ±0.1 s windows cover about a third of 6 s: that is what chance would give
    assert good["cut_beat"]["chance_recall"] == pytest.approx(11 * 0.2 / 6.0, abs=0.04)
    assert good["clips"] == 1 and -1.0 <= good["motion_onset_correlation"] <= 1.0
    assert -1.0 <= curve_correlation(on_cut, video) <= 1.0


def test_similarity_structure():
    rng = np.random.default_rng(0)
    visual = rng.standard_normal((8, 5))
    q = np.linalg.qr(rng.standard_normal((7, 5)))[0].T  # [5, 7] with orthonormal rows: keeps angles
    assert similarity_structure(visual @ q, visual) == pytest.approx(1.0)
    unrelated = rng.standard_normal((8, 6))
    assert abs(similarity_structure(unrelated, visual)) < 0.5
