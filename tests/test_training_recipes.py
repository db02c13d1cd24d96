"""End to end: a tiny corpus -> preprocess -> each stage under a 2-process accelerate launch -> generation."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from media import make_audio, make_video
from scripts import load_script
from tokmusic.errors import ConfigError, DataError, TokmusicError
from tokmusic.stage_files import load_stage
from tokmusic.testing import tiny_pipeline
from tokmusic.training.shards import TokenShards

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
TRAIN = {"lr": 3e-3, "warmup_steps": 4, "batch_size": 2, "log_every": 4, "save_every": 10, "num_workers": 0,
         "ema_decay": 0.5, "max_steps": 20}


def launch(script, *args, processes=2):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = (ACCELERATE if processes == 2 else [sys.executable]) + [str(ROOT / "recipes" / script), *map(str, args)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def recipe(name):
    return load_script(f"recipes/{name}.py").main


def card(tmp, kind, lst=None, **train):
    data = json.loads((ROOT / "stages" / f"{kind}-tiny.json").read_text())
    data["train"] = {**TRAIN, **train}
    if lst:
        data["model"]["lst"] = {**data["model"]["lst"], **lst}
    path = tmp / f"{kind}-test{'-lst' if lst else ''}.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("corpus")
    tiny_pipeline(seed=0).save_pretrained(tmp / "pipeline")
    lines = []
    for i in range(3):
        make_video(tmp / f"v{i}.mp4", 4.0, fps=4, size=(32, 32), with_audio=True)
        lines.append({"video": f"v{i}.mp4", "split": "train", **({"keep_control": True} if i == 1 else {})})
    make_video(tmp / "silent.mp4", 4.0, fps=4, size=(32, 32))
    make_audio(tmp / "music.wav", 4.0, sample_rate=16000, freq=330.0)
    lines.append({"video": "silent.mp4", "audio": "music.wav", "text": "a tone", "split": "valid"})
    (tmp / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    lines.append({"video": "corrupt.mp4"})
    make_video(tmp / "noaudio.mp4", 2.0, fps=4, size=(32, 32))
    lines.append({"video": "noaudio.mp4"})
    make_video(tmp / "short.mp4", 0.5, fps=4, size=(32, 32), with_audio=True)
    lines.append({"video": "short.mp4"})
    (tmp / "manifest.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    out = launch("preprocess.py", tmp / "manifest.jsonl", "--pipeline", tmp / "pipeline", "--out", tmp / "data",
                 "--shard-size", "2", "--quiet")
    return tmp, out


def test_preprocess_reports_bad_items_and_resumes(corpus, capsys):
    tmp, out = corpus
    index = json.loads((tmp / "data" / "index.json").read_text())
    assert [e["line"] for e in index["items"]] == [1, 2, 3, 4]
    assert {f["line"]: f["reason"].split(":")[0] for f in index["failed"]} == {
        5: "VideoError", 6: "DataError", 7: "DataError"}
    assert "4 items ready, 3 failed" in out
    assert [e.get("keep_control", False) for e in index["items"]] == [False, True, False, False]
    item = index["items"][0]
    assert item["frames"] == 8 and item["codec_frames"] == 200 and abs(item["duration"] - 4.0) < 0.05
    # the music's control embedding per second, so a crop gets its own (not the whole track's)
    control = TokenShards(tmp / "data").load(item)["control"]
    assert item["control_hop"] == 1.0 and control.shape == (4, 16)
    torch.testing.assert_close(control.norm(dim=-1), torch.ones(4))
    before = sorted(p.name for p in (tmp / "data" / "shards").iterdir())
    assert {name[:2] for name in before} == {"r0", "r1"}  # both processes took their share
    recipe("preprocess")([str(tmp / "manifest.jsonl"), "--pipeline", str(tmp / "pipeline"), "--out",
                          str(tmp / "data"), "--quiet"])
    assert "0 done, 7 already there" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp / "data" / "shards").iterdir()) == before


def losses(run):
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]


def test_train_all_stages_and_generate(corpus):
    tmp, _ = corpus
    for n, kind in enumerate(("semantic", "coarse", "fine"), start=1):
        launch(f"stage{n}.py", "--data", tmp / "data", "--pipeline", tmp / "pipeline", "--out", tmp / f"run-{kind}",
               "--config", card(tmp, kind))
        curve = losses(tmp / f"run-{kind}")
        assert len(curve) == 5 and curve[-1] < 0.9 * curve[0], (kind, curve)
        last = json.loads((tmp / f"run-{kind}" / "log.jsonl").read_text().splitlines()[-1])
        assert 0 < last["valid_loss"] < 20, last  # the held-out item, scored at the end
        assert list((tmp / f"run-{kind}").glob(f"tokmusic-{kind}/events.out.tfevents.*"))  # TensorBoard
    pipe = tiny_pipeline(seed=0)
    for kind in ("semantic", "coarse", "fine"):
        pipe.replace_stage(kind, tmp / f"run-{kind}" / "stage")
    music = pipe.generate(tmp / "v0.mp4", seconds=1.5, seed=0, progress=False)
    assert music.waveform.shape == (1, 24000) and torch.isfinite(music.waveform).all()


def assert_same_run(a, b, last=20):
    final = f"checkpoints/step-{last:08d}"
    for name in ("stage/model.safetensors", f"{final}/model.safetensors", f"{final}/optimizer.safetensors",
                 f"{final}/ema.safetensors"):
        x, y = load_file(a / name), load_file(b / name)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), name


def test_stopped_run_resumes_exactly(corpus, capsys):
    # with visual normalisation: the statistics measured at the start are restored from the checkpoint
    tmp, _ = corpus
    args = ["--data", str(tmp / "data"), "--pipeline", str(tmp / "pipeline"), "--config",
            str(card(tmp, "semantic", lst={"normalize": True}, max_steps=8, save_every=4, log_every=2))]
    recipe("stage1")([*args, "--out", str(tmp / "one-whole")])
    recipe("stage1")([*args, "--out", str(tmp / "one-split"), "--stop-after", "6"])
    assert sorted(p.name for p in (tmp / "one-split" / "checkpoints").iterdir()) == ["step-00000004"]
    assert not (tmp / "one-split" / "stage").exists()
    for flag, value, message in [("--batch-size", "1", "--batch-size 2 and is resumed with 1"),
                                 ("--grad-accum", "2", "--grad-accum 1 and is resumed with 2")]:
        with pytest.raises(ConfigError, match=message):  # would silently change the data order
            recipe("stage1")([*args, "--out", str(tmp / "one-split"), flag, value])
    with open(tmp / "one-split" / "log.jsonl", "a") as log:
        log.write('{"step": 7, "loss":')  # as if killed in the middle of writing a line
    recipe("stage1")([*args, "--out", str(tmp / "one-split")])
    assert "resuming from" in capsys.readouterr().out
    assert_same_run(tmp / "one-whole", tmp / "one-split", last=8)
    steps = [json.loads(line)["step"] for line in (tmp / "one-split" / "log.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 8]  # steps 5-6 were replayed after the checkpoint at 4: logged once
    stage = load_stage(tmp / "one-split" / "stage", "semantic")
    mean, std = TokenShards(tmp / "data").visual_statistics()
    frames = torch.cat([TokenShards(tmp / "data").load(e)["visual"] for e in TokenShards(tmp / "data").entries()])
    torch.testing.assert_close(mean, frames.mean(0), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(std, frames.std(0, unbiased=False), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(stage.lst.feature_mean, mean)
    torch.testing.assert_close(stage.lst.feature_std, std.clamp_min(1e-2))


@pytest.mark.slow
def test_killed_two_process_run_resumes_exactly(corpus):
    tmp, _ = corpus
    args = ["--data", tmp / "data", "--pipeline", tmp / "pipeline", "--config", card(tmp, "fine", max_steps=20)]
    launch("stage3.py", *args, "--out", tmp / "whole")
    out = launch("stage3.py", *args, "--out", tmp / "split", "--stop-after", "13")
    assert "stopping after step 13" in out and not (tmp / "split" / "stage").exists()
    out = launch("stage3.py", *args, "--out", tmp / "split")
    assert "resuming from" in out and "(step 10)" in out
    assert_same_run(tmp / "whole", tmp / "split")


def test_fit_semantic_writes_a_loadable_pipeline(corpus):
    from tokmusic.pipeline import Pipeline

    tmp, _ = corpus
    with pytest.raises(SystemExit):  # --help
        recipe("fit_semantic")(["--help"])
    recipe("fit_semantic")([str(tmp / "manifest.jsonl"), "--pipeline", str(tmp / "pipeline"), "--out",
                            str(tmp / "fitted"), "--clusters", "16", "--frames-per-item", "50", "--iterations", "20",
                            "--quiet"])
    pipe = Pipeline.from_pretrained(tmp / "fitted")
    assert pipe.semantic_tokenizer.vocab_size == 16
    assert pipe.stages["semantic"].cfg.target_vocab == 16 and pipe.stages["coarse"].cfg.source_vocab == 16
    # data made with the old tokenizer no longer fits the new pipeline
    with pytest.raises(DataError, match="semantic_vocab"):
        recipe("stage1")(["--data", str(tmp / "data"), "--pipeline", str(tmp / "fitted"), "--out",
                          str(tmp / "nope"), "--config", str(card(tmp, "semantic"))])


@pytest.mark.parametrize("change, error, message", [
    ({"model": {"encoder_layers": 0}}, ConfigError, "encoder_layers must be a positive integer"),
    ({"model": {"d_modle": 8}}, ConfigError, "d_modle"),
    ({"train": {"crop_seconds": 2.0}}, ConfigError, "longer than train.crop_seconds"),
    ({"train": {"batch": 2}}, ConfigError, "unknown key(s) ['batch']"),
    ({"kind": "fine"}, ConfigError, "a 'fine' card given to the 'semantic' recipe"),
])
def test_bad_configs_fail_before_training(corpus, change, error, message):
    tmp, _ = corpus
    data = json.loads(card(tmp, "semantic").read_text())
    for key, value in change.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    path = tmp / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(error) as err:
        recipe("stage1")(["--data", str(tmp / "data"), "--pipeline", str(tmp / "pipeline"), "--out",
                          str(tmp / "bad-run"), "--config", str(path)])
    assert message in str(err.value)
    assert not (tmp / "bad-run").exists()


def test_user_errors_print_one_line_and_exit_2(corpus, tmp_path):
    tmp, _ = corpus
    (tmp_path / "m.jsonl").write_text('{"video": "v0.mp4"}\n{oops\n')
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "recipes" / "preprocess.py"), str(tmp_path / "m.jsonl"),
                           "--pipeline", str(tmp / "pipeline"), "--out", str(tmp_path / "d")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("tokmusic: error: ") and "m.jsonl:1" in done.stderr  # v0.mp4 is not there
    with pytest.raises(TokmusicError, match="no index.json"):
        recipe("stage2")(["--data", str(tmp_path), "--pipeline", str(tmp / "pipeline"), "--out", str(tmp_path / "r")])


def test_preprocess_fails_when_every_item_fails(corpus, tmp_path):
    tmp, _ = corpus
    lines = [{"video": str(tmp / "corrupt.mp4")}, {"video": str(tmp / "noaudio.mp4")}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    args = [str(tmp_path / "m.jsonl"), "--pipeline", str(tmp / "pipeline"), "--out", str(tmp_path / "d"), "--quiet"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "recipes" / "preprocess.py"), *args],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("tokmusic: error: all 2 items this run tried failed (first: line 1: ")
    assert "VideoError" in done.stderr and "--retry-failed" in done.stderr
    assert recipe("preprocess")(args) == 0  # nothing left to try: the failures are listed, not retried
    with pytest.raises(DataError, match="all 2 items this run tried failed"):
        recipe("preprocess")([*args, "--retry-failed"])
