from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from media import make_audio, make_tone, make_video
from tokmusic.audio import load_audio, mux, save_audio
from tokmusic.errors import AudioError, VideoError
from tokmusic.video import probe, read_frames


def peak_hz(wave: torch.Tensor, sample_rate: int) -> float:
    """Frequency of the strongest component of a 1-D signal."""
    spectrum = np.abs(np.fft.rfft(wave.numpy() * np.hanning(len(wave))))
    return float(np.argmax(spectrum) * sample_rate / len(wave))


def test_wav_round_trip_float_is_exact(tmp_path):
    tone = torch.from_numpy(make_tone(0.5, 16000, channels=2))
    save_audio(tmp_path / "a.wav", tone, 16000, subtype="FLOAT")
    assert torch.equal(load_audio(tmp_path / "a.wav", 16000, channels=2), tone)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]  # no temporary file left behind


@pytest.mark.parametrize("name", ["a.wav", "a.flac"])
def test_pcm16_round_trip(tmp_path, name):
    tone = torch.from_numpy(make_tone(0.5, 16000, channels=2))
    save_audio(tmp_path / name, tone, 16000)
    info = soundfile.info(str(tmp_path / name))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 2, 8000, "PCM_16")
    back = load_audio(tmp_path / name, 16000, channels=2)
    assert back.shape == tone.shape
    assert (back - tone).abs().max() <= 1 / 32768 + 1e-7


def test_clipping_and_one_dimensional_input(tmp_path):
    save_audio(tmp_path / "loud.wav", torch.tensor([2.0, -3.0, 0.5]), 8000, subtype="FLOAT")
    assert load_audio(tmp_path / "loud.wav", 8000).tolist() == [[1.0, -1.0, 0.5]]


def test_channel_mixing(tmp_path):
    left, right = torch.full((1, 800), 0.5), torch.full((1, 800), -0.25)
    save_audio(tmp_path / "lr.wav", torch.cat([left, right]), 8000, subtype="FLOAT")
    mono = load_audio(tmp_path / "lr.wav", 8000, channels=1)
    assert torch.allclose(mono, torch.full((1, 800), 0.125))  # the mean, not ffmpeg's sqrt(1/2) sum
    save_audio(tmp_path / "m.wav", left, 8000, subtype="FLOAT")
    assert torch.equal(load_audio(tmp_path / "m.wav", 8000, channels=2), torch.cat([left, left]))


def test_resampling_keeps_pitch_and_length(tmp_path):
    save_audio(tmp_path / "a.wav", torch.from_numpy(make_tone(1.0, 16000, freq=440)), 16000)
    for rate in (8000, 22050, 48000):
        wave = load_audio(tmp_path / "a.wav", rate)
        assert abs(wave.shape[1] - rate) <= 1
        assert peak_hz(wave[0], rate) == pytest.approx(440, abs=2)


def test_start_and_duration(tmp_path):
    tone = torch.from_numpy(make_tone(2.0, 16000))
    save_audio(tmp_path / "a.wav", tone, 16000, subtype="FLOAT")
    assert torch.equal(load_audio(tmp_path / "a.wav", 16000, start=0.25, duration=0.5), tone[:, 4000:12000])
    # past the end: what is there
    assert load_audio(tmp_path / "a.wav", 16000, start=1.5, duration=5).shape == (1, 8000)


def test_video_soundtrack_resampled(tmp_path):
    path = make_video(tmp_path / "v.mp4", 3, fps=10, with_audio=True)  # 44.1 kHz, 440 Hz left, 880 Hz right
    wave = load_audio(path, 16000, channels=2)
    assert wave.shape == (2, 48000)  # exactly the stream's stated length (no AAC end padding)
    assert peak_hz(wave[0, 8000:40000], 16000) == pytest.approx(440, abs=2)
    assert peak_hz(wave[1, 8000:40000], 16000) == pytest.approx(880, abs=2)
    # a span read after a seek equals the same span of a full read (same sample grid)
    for start in (1.77, 2.5):
        part = load_audio(path, 16000, channels=2, start=start, duration=0.4)
        first = round(start * 16000)
        assert torch.allclose(part, wave[:, first : first + 6400], atol=1e-4)


def test_load_errors(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "none.wav", 16000)
    with pytest.raises(AudioError, match="no audio stream"):
        load_audio(make_video(tmp_path / "silent.mp4", 1), 16000)
    (tmp_path / "text.wav").write_text("not audio\n" * 40)
    with pytest.raises(AudioError, match="text.wav"):
        load_audio(tmp_path / "text.wav", 16000)
    with pytest.raises(AudioError, match="channels"):
        load_audio(tmp_path / "text.wav", 16000, channels=6)


def test_save_errors(tmp_path):
    with pytest.raises(AudioError, match=r"\.wav, \.flac"):
        save_audio(tmp_path / "a.mp3", torch.zeros(1, 10), 16000)
    with pytest.raises(AudioError, match="NaN"):
        save_audio(tmp_path / "a.wav", torch.tensor([[0.0, float("nan")]]), 16000)
    with pytest.raises(AudioError, match="channels"):
        save_audio(tmp_path / "a.wav", torch.zeros(3, 10), 16000)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv", ".webm"])
def test_mux_round_trip(tmp_path, suffix):
    source = make_video(tmp_path / "in.mp4", 3, fps=10, with_audio=True, rotation=90)
    music = torch.from_numpy(make_tone(1.0, 22050, freq=660))  # shorter than the video: padded with silence
    out = tmp_path / f"out{suffix}"
    mux(source, music, 22050, out)
    info = probe(out)
    assert info.duration == pytest.approx(3.0, abs=1e-3)
    assert (info.rotation, info.has_audio) == (270, True)
    wave = load_audio(out, 22050)
    assert wave.shape[1] / 22050 == pytest.approx(3.0, abs=1024 / 22050)  # within one codec frame
    assert peak_hz(wave[0, 2205:19845], 22050) == pytest.approx(660, abs=3)  # the new music, not 440/880
    assert wave[0, 30000:].abs().max() < 0.01
    original, _ = next(read_frames(source, fps=2, size=None))
    muxed, _ = next(read_frames(out, fps=2, size=None))
    if suffix == ".webm":  # H.264 is not allowed in WebM: re-encoded to VP9
        assert (muxed.float() - original.float()).abs().mean() < 4
    else:  # pictures copied bit for bit
        assert torch.equal(muxed, original)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.mp4", out.name])


def test_mux_trims_long_music(tmp_path):
    source = make_video(tmp_path / "in.mkv", 1, fps=10)
    mux(source, torch.from_numpy(make_tone(5.0, 48000, channels=2)), 48000, tmp_path / "out.mp4")
    wave = load_audio(tmp_path / "out.mp4", 48000, channels=2)
    assert wave.shape == (2, 48000)


def test_mux_errors(tmp_path):
    music = torch.zeros(1, 100)
    with pytest.raises(VideoError, match="out.avi"):
        mux(make_video(tmp_path / "in.mp4", 1), music, 16000, tmp_path / "out.avi")
    with pytest.raises(VideoError, match="no video stream"):
        mux(make_audio(tmp_path / "song.m4a", 1.0), music, 16000, tmp_path / "out.mp4")
    with pytest.raises(VideoError, match="no such file"):
        mux(tmp_path / "missing.mp4", music, 16000, tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "out.avi").exists()
