"""`tokmusic generate DIR|GLOB|LIST.txt -o OUT_DIR`: many videos in one run, in one process or several."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from media import make_video
from tokmusic.batch import BatchSummary, find_videos, generate_batch
from tokmusic.cli import main
from tokmusic.errors import ConfigError
from tokmusic.pipeline import Pipeline
from tokmusic.video import probe

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ["a.wav", "b.wav", "c.wav", "sub/d.wav"]
ALL_FINE = "4 written, 0 skipped (already there), 1 failed; 5 videos"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Four 1-second videos (one in a sub-folder, one a .mov), a corrupt .mp4 and a text file. Read only."""
    d = tmp_path_factory.mktemp("videos")
    for name in ("a", "b", "c"):
        make_video(d / f"{name}.mp4", 1.0, fps=8, size=(32, 32))
    (d / "sub").mkdir()
    make_video(d / "sub" / "d.mov", 1.0, fps=8, size=(32, 32))
    (d / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    (d / "notes.txt").write_text("not a video, and not looked at: only video suffixes are taken from a folder\n")
    return d


def run(saved, *args):
    return main(["generate", *map(str, args), "--pipeline", str(saved), "--quiet"])


def files(out):
    """Every file under `out` (hidden ones too: a temporary file left behind would show here)."""
    return sorted(p.relative_to(out).as_posix() for p in Path(out).rglob("*") if p.is_file())


def summary_line(text):
    lines = [line for line in text.splitlines() if line.startswith("tokmusic: ") and "written" in line]
    assert len(lines) == 1, text
    return lines[0]


def test_folder_reports_the_corrupt_video_resumes_and_overwrites(saved, folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(saved, folder, "-o", out, "--seed", "1") == 1
    got = capsys.readouterr()
    failed = [line for line in got.err.splitlines() if line.startswith("tokmusic: failed:")]
    assert len(failed) == 1 and got.err.count("\n") == 1, got.err
    assert failed[0].startswith(f"tokmusic: failed: {folder / 'corrupt.mp4'}: not a video file")
    assert summary_line(got.out) == f"tokmusic: {ALL_FINE}"
    assert files(out) == OUTPUTS
    for name in OUTPUTS:
        assert abs(soundfile.info(str(out / name)).duration - 1.0) < 0.05
    before = {name: (out / name).stat() for name in OUTPUTS}

    assert run(saved, folder, "-o", out, "--seed", "1") == 1  # nothing new: the corrupt video still fails
    got = capsys.readouterr()
    assert summary_line(got.out) == "tokmusic: 0 written, 4 skipped (already there), 1 failed; 5 videos"
    assert {name: (out / name).stat() for name in OUTPUTS} == before

    assert run(saved, folder, "-o", out, "--seed", "1", "--overwrite") == 1
    assert summary_line(capsys.readouterr().out) == f"tokmusic: {ALL_FINE}"
    assert files(out) == OUTPUTS
    for name in OUTPUTS:  # each replaced by a rename: a new file, not rewritten in place
        assert (out / name).stat().st_ino != before[name].st_ino


def test_list_file_with_two_samples_each(saved, folder, tmp_path, capsys):
    listing = tmp_path / "videos.txt"
    listing.write_text(f"# relative to this file\n{os.path.relpath(folder / 'a.mp4', tmp_path)}\n\n"
                       f"{folder / 'sub' / 'd.mov'}\nmissing.mp4\n")
    out = tmp_path / "out"
    assert run(saved, listing, "-o", out, "--num-samples", "2", "--seed", "5") == 1
    got = capsys.readouterr()
    assert got.err.splitlines() == [f"tokmusic: failed: {tmp_path / 'missing.mp4'}: no such file; check the path"]
    assert summary_line(got.out) == "tokmusic: 4 written, 0 skipped (already there), 1 failed; 3 videos"
    # videos outside the list file's folder are named by their file name
    assert files(out) == ["a-1.wav", "a-2.wav", "d-1.wav", "d-2.wav"]
    one, two = (soundfile.read(str(out / f"a-{k}.wav"))[0] for k in (1, 2))
    assert one.shape == two.shape and not np.array_equal(one, two)  # distinct seeds: 5 and 6
    # sample 1 is what the single-video command writes with the same seed
    assert run(saved, folder / "a.mp4", "-o", tmp_path / "single.wav", "--seed", "5") == 0
    assert np.array_equal(soundfile.read(str(tmp_path / "single.wav"))[0], one)


def test_videos_decoded_together_write_the_same_music(saved, folder, tmp_path, capsys):
    """--batch-size 3: the same outputs as one video at a time (to a 16-bit step), the same summary, and the
    corrupt video still reported alone."""
    assert run(saved, folder, "-o", tmp_path / "one", "--seed", "1") == 1
    capsys.readouterr()
    assert run(saved, folder, "-o", tmp_path / "three", "--seed", "1", "--batch-size", "3") == 1
    got = capsys.readouterr()
    assert summary_line(got.out) == f"tokmusic: {ALL_FINE}"
    assert [line.split(": ")[2] for line in got.err.splitlines()] == [str(folder / "corrupt.mp4")]
    assert files(tmp_path / "three") == OUTPUTS
    for name in OUTPUTS:
        one, three = (soundfile.read(str(tmp_path / d / name))[0] for d in ("one", "three"))
        assert one.shape == three.shape and np.abs(one - three).max() <= 2 / 32768


def test_a_video_that_fails_inside_a_group_fails_alone(saved, folder, tmp_path, monkeypatch):
    """When the group's generation fails, each video is tried alone: only the one at fault is reported."""
    original = Pipeline.generate_many

    def fails_on_b(self, videos, *args, **kwargs):
        if any(Path(v).name == "b.mp4" for v in videos):
            raise RuntimeError("decoder exploded")
        return original(self, videos, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "generate_many", fails_on_b)
    reports = []
    summary = generate_batch(folder, tmp_path / "out", pipeline=str(saved), seed=1, progress=False,
                             videos_together=5, report=reports.append)
    assert sorted(Path(v).name for v, _ in summary.failed) == ["b.mp4", "corrupt.mp4"]
    assert f"tokmusic: failed: {folder / 'b.mp4'}: RuntimeError: decoder exploded" in reports
    assert files(tmp_path / "out") == ["a.wav", "c.wav", "sub/d.wav"]


def test_glob_into_a_folder_inside_the_videos_as_mp4(saved, tmp_path, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("x", "y"):
        make_video(clips / f"{name}.mp4", 1.2, fps=8, size=(32, 32), with_audio=True)
    make_video(clips / "z.mkv", 1.0, fps=8, size=(32, 32))  # not matched by the pattern
    out = clips / "music"
    assert run(saved, f"{clips}/*.mp4", "-o", out, "--format", "mp4", "--seed", "2") == 0
    assert summary_line(capsys.readouterr().out) == "tokmusic: 2 written, 0 skipped (already there), 0 failed; 2 videos"
    assert files(out) == ["x.mp4", "y.mp4"]
    for name in ("x", "y"):
        info = probe(out / f"{name}.mp4")
        assert info.has_audio and abs(info.duration - probe(clips / f"{name}.mp4").duration) < 0.1
    # the whole folder now: the outputs inside it are not taken as videos
    assert run(saved, clips, "-o", out, "--format", "mp4", "--seed", "2") == 0
    assert summary_line(capsys.readouterr().out) == "tokmusic: 1 written, 2 skipped (already there), 0 failed; 3 videos"
    assert files(out) == ["x.mp4", "y.mp4", "z.mp4"]


@pytest.mark.parametrize("args, words", [
    (["{folder}", "-o", "{tmp}/afile"], "afile: is a file; choose a directory path"),
    (["{folder}"], "add -o OUT_DIR"),
    (["{folder}", "-o", "{tmp}/out.wav"], "many videos are written into a folder"),
    (["{tmp}/*.mkv", "-o", "{tmp}/out"], "the pattern matches no files"),
    (["{tmp}/empty", "-o", "{tmp}/out"], "no video files found"),
    (["{tmp}/missing.txt", "-o", "{tmp}/out"], "missing.txt: no such list file"),
    (["{tmp}/same", "-o", "{tmp}/out"], "would both write"),
    (["{folder}", "-o", "{tmp}/out", "--num-samples", "0"], "num_samples must be an integer >= 1"),
    (["{folder}/a.mp4", "-o", "{tmp}/out.wav", "--num-samples", "2"], "--num-samples is for many videos"),
    (["{folder}", "-o", "{tmp}/out", "--format", "ogg"], "invalid choice"),
    (["{folder}", "-o", "{tmp}/out", "--batch-size", "0"], "videos_together must be an integer >= 1"),
    (["{folder}/a.mp4", "-o", "{tmp}/out.wav", "--batch-size", "2"], "--batch-size is for many videos"),
])
def test_user_errors_exit_2_with_one_line(saved, folder, tmp_path, capsys, monkeypatch, args, words):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "same").mkdir()
    (tmp_path / "same" / "v.mp4").write_bytes(b"x")  # never opened: the names collide before anything runs
    (tmp_path / "same" / "v.mov").write_bytes(b"x")
    before = files(tmp_path)
    monkeypatch.setattr(Pipeline, "generate", lambda *a, **k: pytest.fail("generated anyway"))
    assert run(saved, *[a.format(folder=folder, tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tokmusic: error: ") and err.count("\n") == 1, err
    assert words in err
    assert files(tmp_path) == before  # nothing written, no output folder made


def test_the_split_by_rank_covers_every_video_once(saved, folder, tmp_path):
    assert [(str(i.video.relative_to(folder)), i.name.as_posix()) for i in find_videos(folder)] == [
        ("a.mp4", "a"), ("b.mp4", "b"), ("c.mp4", "c"), ("corrupt.mp4", "corrupt"), ("sub/d.mov", "sub/d")]
    pipe = Pipeline.from_pretrained(saved)
    lines = []
    parts = [generate_batch(folder, tmp_path, pipeline=pipe, seed=3, progress=False, rank=r, world=2,
                            report=lines.append) for r in (0, 1)]
    assert [p.videos for p in parts] == [3, 2]  # a, c, sub/d | b, corrupt
    total = BatchSummary.combine(parts, rank=0)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in total.written) == OUTPUTS
    assert total.line() == f"tokmusic: {ALL_FINE} in 2 processes" and total.is_main and not total.ok
    assert [str(video) for video, _ in total.failed] == [str(folder / "corrupt.mp4")] and len(lines) == 1
    assert parts[1].line().startswith("tokmusic: process 1/2: 1 written")
    with pytest.raises(ConfigError, match="rank must be in"):
        generate_batch(folder, tmp_path, pipeline=pipe, rank=2, world=2)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}


def _two_processes(saved, folder, out, group: bool):
    command = [sys.executable, "-m", "tokmusic.cli", "generate", str(folder), "-o", str(out), "--pipeline",
               str(saved), "--seed", "1", "--quiet"]
    rendezvous = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())} if group else {}
    procs = [subprocess.Popen(command, env=_env(RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r),
                                                LOCAL_WORLD_SIZE="2", **rendezvous),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    done = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        done.append((proc.returncode, stdout, stderr))
    return done


@pytest.mark.parametrize("group", [True, pytest.param(False, marks=pytest.mark.slow)],
                         ids=["process-group", "env-only"])
def test_two_processes_write_every_output_once(saved, folder, tmp_path, group):
    """Two processes as `accelerate launch` starts them (RANK, WORLD_SIZE, and a rendezvous address for the
    gathered summary), or with RANK/WORLD_SIZE alone (each reports its own share)."""
    out = tmp_path / "out"
    done = _two_processes(saved, folder, out, group)
    everything = "".join(o + e for _, o, e in done)
    assert "Traceback" not in everything, everything
    assert files(out) == OUTPUTS  # and no temporary files left
    assert everything.count("tokmusic: failed:") == 1 and "failed: " + str(folder / "corrupt.mp4") in everything
    if group:  # the counts are gathered: process 0 prints the total and exits 1; the other prints nothing
        assert [code for code, _, _ in done] == [1, 0], everything
        assert summary_line(done[0][1]) == f"tokmusic: {ALL_FINE} in 2 processes"
        assert "written" not in done[1][1]
    else:  # each process reports its share: 3 + 2 videos, 4 outputs written once in all
        assert [code for code, _, _ in done] == [0, 1], everything
        lines = [summary_line(o) for _, o, _ in done]
        assert lines == ["tokmusic: process 0/2: 3 written, 0 skipped (already there), 0 failed; 3 videos",
                         "tokmusic: process 1/2: 1 written, 0 skipped (already there), 1 failed; 2 videos"]


@pytest.mark.slow
def test_accelerate_launch_two_processes(saved, folder, tmp_path):
    out = tmp_path / "out"
    accelerate = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
                  "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                  "--main_process_port", str(_free_port())]
    args = ["-m", "tokmusic.cli", "generate", str(folder), "-o", str(out), "--pipeline", str(saved), "--seed", "1",
            "--quiet"]
    done = subprocess.run(accelerate + args, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0  # the corrupt video
    assert summary_line(done.stdout) == f"tokmusic: {ALL_FINE} in 2 processes", done.stdout + done.stderr
    assert files(out) == OUTPUTS
    again = subprocess.run(accelerate + args + ["--overwrite"], env=_env(), capture_output=True, text=True,
                           timeout=300)
    assert summary_line(again.stdout) == f"tokmusic: {ALL_FINE} in 2 processes"
    assert files(out) == OUTPUTS
