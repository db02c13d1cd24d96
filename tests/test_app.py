"""`tokmusic app`: what the page's Generate button runs, tested without a browser (tests/test_app_browser.py
drives the page itself)."""

import sys
import tempfile
import threading
import urllib.request

import numpy as np
import pytest
import soundfile

from media import make_video
from tokmusic.audio import load_audio
from tokmusic.cli import main
from tokmusic.errors import ConfigError, TokmusicError, VideoError
from tokmusic.testing import tiny_pipeline
from tokmusic.video import probe


@pytest.fixture(scope="module")
def gr():
    return pytest.importorskip("gradio")


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(seed=0)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("app") / "my clip.mp4", 1.5, fps=8, size=(32, 48), with_audio=True)


@pytest.fixture
def app(gr, pipe, tmp_path):
    from tokmusic.app import MusicApp

    app = MusicApp(pipe, max_seconds=3, workdir=tmp_path / "work")
    yield app
    app.close()


def test_generate_makes_the_video_the_music_and_a_spectrogram(app, clip):
    from PIL import Image

    calls = []
    result = app.generate(str(clip), "  ", 7.0, None, progress=lambda f, desc=None: calls.append((f, desc)))
    assert calls[0][0] == 0.0 and calls[-1] == (1.0, "done")
    assert result.seed == 7 and "seed **7**" in result.info and "1.5 s" in result.info
    assert result.video.name == "my_clip-with-music.mp4" and result.wav.name == "my_clip-music.wav"
    info = probe(result.video)
    assert info.has_audio and abs(info.duration - probe(clip).duration) < 0.1
    audio = load_audio(result.video, 16000)
    assert abs(audio.shape[-1] / 16000 - probe(clip).duration) < 0.1 and audio.abs().max() > 0
    assert abs(soundfile.info(str(result.wav)).duration - 1.5) < 0.05
    with Image.open(result.spectrogram) as image:
        assert image.format == "PNG" and image.width >= 480 and image.height > 256
    again = app.generate(str(clip), None, 7, None)  # the seed shown reproduces the music
    assert np.array_equal(soundfile.read(str(again.wav))[0], soundfile.read(str(result.wav))[0])
    assert again.video.parent != result.video.parent  # each press gets its own folder
    assert app.generate(str(clip), None, None, 1.0).seed >= 0  # no seed: a random one, reported


@pytest.mark.parametrize("change, error, words", [
    (dict(video=None), ConfigError, "upload a video first"),
    (dict(video="notes.txt"), VideoError, "notes.txt: not a video file"),
    (dict(video="long.mp4"), ConfigError, "long.mp4 is 4.0 s long; this page scores at most 3 s"),
    (dict(top_p=2.0), ConfigError, "top_p"),
    (dict(seed=1.5), ConfigError, "seed must be a whole number"),
    (dict(seed="abc"), ConfigError, "seed must be a number, got 'abc'"),
    (dict(seconds=-1.0), ConfigError, "seconds must be a number > 0"),
])
def test_problems_are_messages_for_the_page(app, clip, tmp_path, change, error, words):
    (tmp_path / "notes.txt").write_text("hello")
    make_video(tmp_path / "long.mp4", 4.0, fps=4, size=(32, 32))
    args = dict(video=str(clip), prompt=None, seed=1, seconds=None, top_p=None)
    args.update(change)
    if args["video"] in ("notes.txt", "long.mp4"):
        args["video"] = str(tmp_path / args["video"])
    with pytest.raises(error) as err:
        app.generate(**args)
    assert words in str(err.value)
    assert str(tmp_path) not in str(err.value)  # the upload's temporary path is not shown, its name is
    assert not (app.workdir / "results").exists() or not any((app.workdir / "results").iterdir())


def test_a_longer_video_can_be_scored_in_part(app, tmp_path):
    long = make_video(tmp_path / "long.mp4", 4.0, fps=4, size=(32, 32))
    result = app.generate(str(long), None, 1, 2.0)
    assert abs(result.duration - 2.0) < 0.05
    assert abs(probe(result.video).duration - probe(long).duration) < 0.1  # the whole video, music for 2 s


def test_a_failed_generation_is_a_message_and_leaves_nothing(app, clip, monkeypatch):
    from tokmusic.app import GenerationError

    def boom(*args, **kwargs):
        raise RuntimeError("out of memory\nmore detail")

    monkeypatch.setattr(app.pipeline, "generate", boom)
    with pytest.raises(GenerationError, match=r"generating music for my clip.mp4 failed \(RuntimeError: out of "
                                              r"memory\)$"):
        app.generate(str(clip))
    assert not any((app.workdir / "results").iterdir())


def test_the_button_turns_errors_into_page_messages(app, gr, clip, tmp_path):
    page = app.build()
    assert isinstance(page, gr.Blocks)
    (handler,) = [f.fn for f in page.fns.values() if f.name == "on_generate"]
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(gr.Error, match="notes.txt: not a video file"):
        handler(str(tmp_path / "notes.txt"), "", None, None, None, None, None, None, progress=lambda *a, **k: None)
    # the page's fields are text: "" is empty, numbers come as their text
    video, files, spectrogram, info = handler(str(clip), "", " 3 ", "", "0.9", "", "", "",
                                              progress=lambda *a, **k: None)
    assert files == [video, video.replace("-with-music.mp4", "-music.wav")]
    assert spectrogram.endswith(".png") and "seed **3**" in info


def test_serve_listens_on_localhost_and_cleans_up(gr, pipe, tmp_path, monkeypatch):
    from tokmusic.app import serve

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    urls, stop, codes = [], threading.Event(), []
    thread = threading.Thread(target=lambda: codes.append(serve(pipe, port=None, ready=urls.append, stop=stop)))
    thread.start()
    try:
        for _ in range(600):
            if urls or not thread.is_alive():
                break
            thread.join(0.1)
        assert urls and urls[0].startswith("http://127.0.0.1:")
        with urllib.request.urlopen(urls[0], timeout=30) as response:
            assert response.status == 200 and b"tokmusic" in response.read()
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith("tokmusic-app-")]
    finally:
        stop.set()
        thread.join(60)
    assert codes == [0]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("tokmusic-app-")]  # deleted at exit


def test_without_gradio_the_command_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    assert main(["app"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tokmusic: error: ") and 'pip install "tokmusic[app]"' in err


@pytest.mark.parametrize("args, words", [(["--max-seconds", "0"], "--max-seconds must be"),
                                         (["--port", "x"], "invalid int"),
                                         (["--pipeline", "/nonexistent/pipe"], "/nonexistent/pipe")])
def test_app_user_errors_exit_2(gr, capsys, args, words):
    assert main(["app", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tokmusic: error: ") and words in err


def test_errors_are_tokmusic_errors():
    from tokmusic.app import GenerationError

    assert issubclass(GenerationError, TokmusicError)
