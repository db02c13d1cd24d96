import pytest
import torch

from tokmusic import ConfigError
from tokmusic.music import Music


def test_music_holds_a_waveform_and_its_rate():
    music = Music(torch.zeros(2, 8000), 16000)
    assert music.duration == 0.5 and repr(music) == "Music(0.50 s, 16000 Hz, 2 channels)"


@pytest.mark.parametrize("waveform, rate", [(torch.zeros(100), 16000), (torch.zeros(1, 10, dtype=torch.long), 16000),
                                            ([0.0, 0.1], 16000), (torch.zeros(0, 10), 16000),
                                            (torch.zeros(1, 10), 0), (torch.zeros(1, 10), 16000.0),
                                            (torch.zeros(1, 10), True), (torch.zeros(1, 10), "16000")])
def test_bad_music_is_a_config_error(waveform, rate):
    with pytest.raises(ConfigError, match="Music: (waveform|sample_rate)"):
        Music(waveform, rate)


def test_save_checks_the_path_before_writing(tmp_path):
    music = Music(torch.zeros(1, 1600), 16000)
    (tmp_path / "file").write_text("x")
    (tmp_path / "d.wav").mkdir()
    for path, words in [(123, "file path"), (tmp_path / "out.mp3", "'.mp3'"),
                        (tmp_path / "no" / "o.wav", "does not exist"), (tmp_path / "file" / "o.wav", "is a file"),
                        (tmp_path / "d.wav", "is a directory")]:
        with pytest.raises(ConfigError, match=words):
            music.save(path)
    for out, words in [(tmp_path / "o.wav", "'.wav'"), (tmp_path / "no" / "o.mp4", "does not exist")]:
        with pytest.raises(ConfigError, match=words):
            music.mux(tmp_path / "in.mp4", out)
    with pytest.raises(ConfigError, match="overwrite the input"):
        music.mux(tmp_path / "in.mp4", tmp_path / "in.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.wav", "file"]
    music.save(tmp_path / "o.flac")
    assert (tmp_path / "o.flac").is_file()
