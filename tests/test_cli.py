import os
import subprocess
import sys

import pytest

from tokmusic.audio import load_audio
from tokmusic.cli import main
from tokmusic.video import probe

from media import make_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("clip") / "clip.mp4", 2.5, fps=10, with_audio=True)


def test_generate_mp4_with_the_music(saved, clip, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    code = main(["generate", str(clip), "-o", str(out), "--pipeline", str(saved), "--seed", "1", "--quiet",
                 "--prompt", "calm strings"])
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    info = probe(out)
    assert info.has_audio
    assert abs(info.duration - probe(clip).duration) < 0.1
    audio = load_audio(out, 16000)
    assert abs(audio.shape[-1] / 16000 - probe(clip).duration) < 0.1
    assert audio.abs().max() > 0  # the generated music, not silence


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_generate_audio_files(saved, clip, tmp_path, suffix):
    out = tmp_path / f"out{suffix}"
    assert main(["generate", str(clip), "-o", str(out), "--pipeline", str(saved), "--seconds", "1", "--quiet"]) == 0
    audio = load_audio(out, 16000)
    assert audio.shape[-1] == 16000


@pytest.mark.parametrize(
    "args, words",
    [
        (["generate", "{missing}", "-o", "{out}"], "missing.mp4"),
        (["generate", "{clip}", "-o", "{out}", "--seconds", "-2"], "seconds"),
        (["generate", "{clip}", "-o", "{tmp}/out.ogg"], "unsupported output"),
        (["generate", "{clip}", "-o", "{out}", "--pipeline", "{tmp}/nothing"], "nothing"),
        (["generate", "{clip}", "-o", "{out}", "--prompt", " "], "prompt is empty"),
        (["generate", "{clip}", "-o", "{out}", "--top-p", "2"], "top_p"),
        (["generate", "{clip}", "--seed", "x"], "invalid int"),
        (["compose", "{clip}"], "invalid choice"),
    ],
)
def test_user_errors_exit_2_with_one_line(saved, clip, tmp_path, capsys, args, words):
    fill = dict(missing=tmp_path / "missing.mp4", out=tmp_path / "out.wav", clip=clip, tmp=tmp_path)
    args = [a.format(**fill) for a in args]
    if "--pipeline" not in args and args[0] == "generate":
        args += ["--pipeline", str(saved)]
    assert main(args + ["--quiet"] if args[0] == "generate" else args) == 2
    err = capsys.readouterr().err
    assert err.startswith("tokmusic: error: ") and err.count("\n") == 1
    assert words in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


def test_console_script_prints_no_traceback(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "tokmusic.cli", "generate", str(tmp_path / "nope.mp4")],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("tokmusic: error:")


@pytest.mark.parametrize("out, words", [("nodir/out.wav", "does not exist"), ("file.txt/out.wav", "is a file"),
                                        ("out.ogg", "unsupported output"), ("adir", "unsupported output")])
def test_unwritable_output_fails_before_generating(saved, clip, tmp_path, capsys, monkeypatch, out, words):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "adir").mkdir()
    monkeypatch.setattr("tokmusic.default.generate", lambda *a, **k: pytest.fail("generated anyway"))
    assert main(["generate", str(clip), "-o", str(tmp_path / out), "--pipeline", str(saved), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tokmusic: error: ") and err.count("\n") == 1
    assert words in err and str(tmp_path) in err
