"""`tokmusic eval` end to end on a tiny folder of audio (and videos, and prompts) written by the test."""

import argparse
import json

import numpy as np
import pytest
import soundfile

from tokmusic.errors import ConfigError, DataError
from tokmusic.evaluation import command
from test_evaluation_embedders import make_tiny_clap
from test_evaluation_structure import SR, click_track, progression
from test_evaluation_video import make_cut_video

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _clip(i: int, shift: int = 0) -> np.ndarray:
    """6 s: a chord progression in key i (+shift semitones) over a click track at 100 + 8 i BPM."""
    music = np.concatenate([progression((i + shift) % 12, ("major", "minor")[i % 2], 0.75)] * 1)
    clicks = click_track(np.arange(0.0, 6.0, 60.0 / (100 + 8 * i)), 6.0, freq=3000.0)
    return 0.6 * music[: clicks.size] + clicks[: music.size]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    for name in ("gen", "ref", "vid"):
        (root / name).mkdir()
    for i in range(5):
        soundfile.write(root / "ref" / f"clip{i}.wav", _clip(i), SR)
        soundfile.write(root / "gen" / f"clip{i}.flac", _clip(i, shift=2 * (i % 2)), SR)
    (root / "gen" / "broken.wav").write_bytes(b"RIFF not really a wav")
    for i in range(3):
        make_cut_video(root / "vid" / f"clip{i}.mp4", [1.0 + i * 0.3, 3.0, 4.6], 6.0)
    (root / "small").mkdir()
    for i in range(3):
        soundfile.write(root / "small" / f"clip{i}.wav", _clip(i)[: 3 * SR], SR)
    (root / "prompts.jsonl").write_text("\n".join(
        json.dumps({"video": f"videos/clip{i}.mp4", "text": "calm piano"}) for i in range(5)) + "\n")
    return root


def _args(*argv):
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


def test_eval_command_report_and_plots(folders, tmp_path):
    out, plots = tmp_path / "report.json", tmp_path / "plots"
    args = _args("--generated", folders / "gen", "--reference", folders / "ref", "--videos", folders / "vid",
                 "--prompts", folders / "prompts.jsonl", "-o", out, "--plots", plots, "--no-progress", "-k", "3")
    assert command.run(args) == 0
    report = json.loads(out.read_text())
    assert set(report) >= {"metrics", "embedders", "counts", "failed", "skipped", "structure", "clips", "plots"}
    assert report["counts"] == {"generated": 5, "reference": 5, "paired_by_name": 5, "videos": 3, "failed": 1}
    assert [f["path"].endswith("broken.wav") for f in report["failed"]] == [True]
    m = report["metrics"]
    assert m["fad"]["value"] > 0 and m["fad"]["embedder"] == "spectral"
    assert m["fad"]["windows"] == {"generated": 30, "reference": 30}
    assert m["density"]["k"] == 3 and 0 <= m["coverage"]["value"] <= 1 and m["density"]["value"] >= 0
    assert m["kl"]["embedder"] == "pitch-class" and m["kl"]["pairing"] == "by name" and m["kl"]["value"] > 0
    av = m["audio_visual"]["generated"]
    assert av["clips"] == 3 and av["cut_beat"]["n_reference"] == 9
    assert 0 <= av["cut_beat"]["recall"] <= 1 and av["cut_beat"]["tolerance"] == 0.1
    assert av["similarity_structure"]["visual_embedder"] == "video-stats"
    assert "text_music" in report["skipped"]  # spectral has no text side
    assert report["warnings"][0].startswith("fad: 30 reference and 30 generated windows of dimension 155")
    assert report["warnings"][1].startswith("density/coverage: only 5 reference clips")
    paired = report["structure"]["paired"]
    assert paired["pairs"] == 5 and paired["key_exact"] == pytest.approx(3 / 5)  # odd clips moved a tone
    assert paired["tempo_acc2"] >= 0.8
    clip0 = report["clips"]["reference"]["clip0"]
    assert clip0["tempo_bpm"] == pytest.approx(100, rel=0.03) and clip0["key"]["name"] == "C major"
    assert report["clips"]["videos"]["clip0"]["cuts"] == pytest.approx([1.0, 3.0, 4.6], abs=0.041)
    assert sorted(p.name for p in plots.iterdir()) == ["distributions.png", "timeline.png"]
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in plots.iterdir())
    assert report["plots"] == [str(plots / "distributions.png"), str(plots / "timeline.png")]


def test_identical_sets_score_perfectly(folders, tmp_path):
    out = tmp_path / "same.json"
    args = _args("--generated", folders / "ref", "--reference", folders / "ref", "-o", out, "--no-progress", "-k", "2")
    assert command.run(args) == 0
    report = json.loads(out.read_text())
    m = report["metrics"]
    assert m["fad"]["value"] == pytest.approx(0.0, abs=1e-6)
    assert m["kl"]["value"] == pytest.approx(0.0, abs=1e-9)
    assert m["coverage"]["value"] == 1.0
    assert report["structure"]["paired"]["key_exact"] == 1.0 and report["structure"]["paired"]["tempo_acc1"] == 1.0
    assert report["skipped"]["audio_visual"] == "no --videos folder given" and report["failed"] == []


def test_text_music_consistency_with_clap(folders, tmp_path):
    clap = make_tiny_clap(tmp_path / "clap")
    out = tmp_path / "clap.json"
    args = _args("--generated", folders / "small", "--reference", folders / "small", "--prompts",
                 folders / "prompts.jsonl", "-o", out, "--embedder", clap, "--no-progress", "--device", "cpu")
    assert command.run(args) == 0
    report = json.loads(out.read_text())
    tm = report["metrics"]["text_music"]
    assert tm["embedder"] == str(clap) and tm["generated"]["clips"] == 3 and tm["reference"]["clips"] == 3
    assert -1 <= tm["generated"]["value"] <= 1
    assert report["metrics"]["fad"]["embedder"] == str(clap) and report["embedders"]["audio"]["dim"] == 8


def test_user_errors(folders, tmp_path):
    base = ["--generated", folders / "gen", "--reference", folders / "ref", "--no-progress"]
    with pytest.raises(DataError, match="does not exist"):
        command.run(_args("--generated", tmp_path / "missing", "--reference", folders / "ref", "-o", tmp_path / "r.json"))
    with pytest.raises(DataError, match="no generated audio files"):
        (tmp_path / "empty").mkdir()
        command.run(_args("--generated", tmp_path / "empty", "--reference", folders / "ref", "-o", tmp_path / "r.json"))
    with pytest.raises(DataError, match="--clip 'nope'.*clip0"):
        command.run(_args(*base, "-o", tmp_path / "r.json", "--plots", tmp_path / "p", "--clip", "nope"))
    with pytest.raises(ConfigError, match="JSON"):
        command.run(_args(*base, "-o", tmp_path / "r.txt"))
    (tmp_path / "bad.jsonl").write_text("{\"text\": \"no clip named\"}\n")
    with pytest.raises(DataError, match="bad.jsonl:1"):
        command.run(_args(*base, "-o", tmp_path / "r.json", "--prompts", tmp_path / "bad.jsonl"))
    assert not (tmp_path / "r.json").exists()


def test_through_the_tokmusic_cli(folders, tmp_path, capsys):
    cli = pytest.importorskip("tokmusic.cli")
    out = tmp_path / "cli.json"
    code = cli.main(["eval", "--generated", str(folders / "small"), "--reference", str(folders / "small"),
                     "-o", str(out), "--no-progress", "-k", "2"])
    assert code == 0 and json.loads(out.read_text())["counts"]["reference"] == 3
    code = cli.main(["eval", "--generated", str(tmp_path / "nope"), "--reference", str(folders / "ref"),
                     "-o", str(out)])
    assert code == 2 and capsys.readouterr().err.startswith("tokmusic: error: ")
