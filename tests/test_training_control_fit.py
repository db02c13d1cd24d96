"""Fitting the sentence_audio control: the loss, crops, a known-answer fit (slow vs fast clicks) and with_control."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import math

import pytest
import torch

from tokmusic.errors import DataError
from tokmusic.sentence_control import sentence_audio_control
from tokmusic.training.control_fit import contrastive_loss, fit_audio_tower, random_crops, retrieval, with_control

SR = 8_000
CAPTIONS = ("a slow piece", "a fast piece")


def clicks(per_second: float, seconds: float, seed: int) -> torch.Tensor:
    """Decaying noise bursts ``per_second`` times a second at a random phase -> float32 [seconds * SR]."""
    g = torch.Generator().manual_seed(seed)
    n = round(seconds * SR)
    out = 0.01 * torch.randn(n, generator=g)
    burst = torch.randn(400, generator=g) * torch.exp(-torch.arange(400) / 80.0)
    period = round(SR / per_second)
    for start in range(int(torch.randint(0, period, (1,), generator=g)), n - 400, period):
        out[start : start + 400] += 0.5 * burst
    return out


def test_contrastive_loss_exact():
    text = torch.eye(3)[:2]  # two distinct captions
    audio = torch.eye(3)[[0, 1, 0]]  # crops 0 and 2 have caption 0
    labels = torch.tensor([0, 1, 0])
    scale = torch.tensor(0.0)  # logits = cosines
    e = math.e
    a2t = -math.log(e / (e + 1))  # each crop: its caption scores 1, the other 0
    t2a = (-(math.log(e / (2 * e + 1)) * 2) / 2 - math.log(e / (e + 2))) / 2
    assert float(contrastive_loss(audio, text, labels, scale)) == pytest.approx((a2t + t2a) / 2, rel=1e-6)


def test_random_crops_repeat_short_audio():
    g = torch.Generator().manual_seed(0)
    waves = [torch.arange(10.0), torch.arange(100.0)]
    crops = random_crops(waves, [0, 1], 25, g)
    assert crops.shape == (2, 25)
    first = int(crops[0, 0])
    assert crops[0].tolist() == [float((first + i) % 10) for i in range(25)]  # cut from the audio repeated
    assert torch.equal(crops[1], torch.arange(crops[1, 0], crops[1, 0] + 25))


def test_known_answer_slow_vs_fast():
    control = sentence_audio_control(SR, seed=0, window_seconds=2.0, width=32, down_layers=3, context_layers=2)
    waves = [clicks(1.5, 6, seed) for seed in range(4)] + [clicks(8, 6, seed) for seed in range(4, 8)]
    captions = [CAPTIONS[0]] * 4 + [CAPTIONS[1]] * 4
    held_out = [clicks(1.5, 4, 100), clicks(8, 4, 101)]
    before = retrieval(control, held_out, list(CAPTIONS))
    losses = fit_audio_tower(control, waves, captions, steps=40, batch_size=8, crop_seconds=2.0,
                             min_crop_seconds=1.0, lr=3e-3, seed=0)
    after = retrieval(control, held_out, list(CAPTIONS))
    print(f"before {before}\nafter {after}\nloss {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert sum(losses[-5:]) / 5 < losses[0] - 0.2
    text = control.embed_text(list(CAPTIONS))
    for wave, own in zip(held_out, (0, 1)):
        sims = text @ control.embed_audio(wave, SR)
        assert float(sims[own]) > float(sims[1 - own])  # each held-out clip is nearer its own caption
    assert before["audio_to_text"] < 1.0  # the random tower does not already tell them apart
    assert after["audio_to_text"] == 1.0 and after["text_to_audio"] == 1.0
    assert after["right_cosine"] - after["wrong_cosine"] > before["right_cosine"] - before["wrong_cosine"]
    assert not control.tower.training


def test_fit_needs_two_captions():
    control = sentence_audio_control(SR, seed=0, window_seconds=2.0, width=32)
    with pytest.raises(DataError, match="at least two different captions"):
        fit_audio_tower(control, [clicks(2, 2, 0)] * 2, ["a piece"] * 2, steps=1)
    with pytest.raises(DataError, match="no captioned audio"):
        fit_audio_tower(control, [], [], steps=1)


def test_with_control_resizes_the_control_input():
    from tokmusic.testing import tiny_pipeline

    pipeline = tiny_pipeline(0)
    control = sentence_audio_control(SR, seed=0, window_seconds=2.0, width=32)
    out = with_control(pipeline, control)
    assert out.control is control and out.shape().control_dim == 384
    for name, stage in out.stages.items():
        old = pipeline.stages[name]
        assert stage.cfg.control_dim in (0, 384)
        if not old.cfg.control_dim:
            assert stage is old  # stages without a control token keep their weights


def clicks_world(tmp_path, per_caption: int, valid: tuple[int, ...] = ()) -> None:
    """tmp_path/pipe (a tiny pipeline) and tmp_path/m.jsonl: ``per_caption`` slow then as many fast click tracks,
    captioned, the items numbered in ``valid`` held out."""
    import soundfile

    from media import make_video
    from tokmusic.testing import tiny_pipeline

    tiny_pipeline(0).save_pretrained(tmp_path / "pipe")
    video = make_video(tmp_path / "v.mp4", 1, fps=4)
    lines = []
    for i, (rate, caption) in enumerate([(1.5, "a slow piece")] * per_caption + [(8, "a fast piece")] * per_caption):
        soundfile.write(tmp_path / f"{i}.wav", clicks(rate, 3, i).numpy(), SR)
        split = "valid" if i in valid else "train"
        lines.append(json.dumps({"video": str(video), "audio": f"{i}.wav", "text": caption, "split": split}))
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")


def test_recipe_writes_a_pipeline_with_the_trained_control(tmp_path, capsys):
    from recipes.fit_control import main
    from tokmusic.pipeline import Pipeline
    from tokmusic.sentence_control import PRIOR_TEMPERATURE, SentenceAudioControl

    clicks_world(tmp_path, 3, valid=(2, 5))
    assert main([str(tmp_path / "m.jsonl"), "--pipeline", str(tmp_path / "pipe"), "--out", str(tmp_path / "out"),
                 "--steps", "3", "--batch-size", "4", "--crop-seconds", "2", "--sample-rate", str(SR),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "starting a fresh sentence_audio control" in printed and "valid after: audio->text top-1" in printed
    meta = json.loads((tmp_path / "out" / "pipeline.json").read_text())
    assert meta["control"] == {"type": "sentence_audio", "dim": 384, "sample_rate": SR, "path": "control"}
    loaded = Pipeline.from_pretrained(tmp_path / "out")
    assert isinstance(loaded.control, SentenceAudioControl)
    assert loaded.control.prior.temperature == PRIOR_TEMPERATURE == 0.005  # the demo bundle's, by default


def test_prompt_prior_maps_a_caption_to_its_music():
    """Known answer: after the slow/fast fit, the prior sends each caption (and a shorter prompt naming the tempo)
    to its music's audio embeddings, where the raw text embedding lies far from any music."""
    from tokmusic.training.control_fit import fit_prompt_prior

    control = sentence_audio_control(SR, seed=0, window_seconds=2.0, width=32, down_layers=3, context_layers=2)
    waves = [clicks(1.5, 6, seed) for seed in range(4)] + [clicks(8, 6, seed) for seed in range(4, 8)]
    captions = [CAPTIONS[0]] * 4 + [CAPTIONS[1]] * 4
    fit_audio_tower(control, waves, captions, steps=40, batch_size=8, crop_seconds=2.0, min_crop_seconds=1.0,
                    lr=3e-3, seed=0)
    held_out = torch.stack([control.embed_audio(clicks(rate, 4, 100 + i), SR) for i, rate in enumerate((1.5, 8))])
    assert control.embed_prompt(list(CAPTIONS)).allclose(control.embed_text(list(CAPTIONS)))  # no prior yet
    control.prior = fit_prompt_prior(control, waves, captions, hop=1.0)
    assert control.prior.captions == sorted(CAPTIONS) and control.prior.audio.shape == (2, 384)
    for prompts in (list(CAPTIONS), ["slow", "fast"]):
        raw, mapped = control.embed_text(prompts) @ held_out.T, control.embed_prompt(prompts) @ held_out.T
        print(prompts, raw, mapped)
        assert mapped[0, 0] > mapped[0, 1] and mapped[1, 1] > mapped[1, 0]  # each to its own music
        assert mapped.diagonal().min() > 0.8 > raw.diagonal().max()
    with pytest.raises(DataError, match="temperature"):
        fit_prompt_prior(control, waves, captions, temperature=0.0)


def test_the_prompt_prior_is_saved_loaded_and_checked(tmp_path):
    from tokmusic.errors import CheckpointError, ConfigError
    from tokmusic.sentence_control import PromptPrior, SentenceAudioControl

    control = sentence_audio_control(SR, seed=0, window_seconds=2.0, width=32)
    text, audio = (torch.nn.functional.normalize(torch.randn(3, 384), dim=-1) for _ in range(2))
    control.prior = PromptPrior(["a", "b", "c"], text, audio, 0.05, hop=4.0)
    control.save(tmp_path)
    config = {"type": "sentence_audio", "dim": 384, "sample_rate": SR}
    loaded = SentenceAudioControl.load(tmp_path, config)
    assert loaded.prior.captions == ["a", "b", "c"] and loaded.prior.temperature == 0.05 and loaded.prior.hop == 4.0
    assert torch.equal(loaded.prior.audio, audio) and torch.equal(loaded.prior.text, text)
    prompts = ["a quiet evening", "a storm"]
    assert torch.allclose(loaded.embed_prompt(prompts), control.embed_prompt(prompts))
    files = json.loads((tmp_path / "config.json").read_text())
    files["prompt_prior"]["captions"] = ["a", "b"]  # says 2 captions, the file holds 3
    (tmp_path / "config.json").write_text(json.dumps(files))
    with pytest.raises(CheckpointError, match="prior.safetensors"):
        SentenceAudioControl.load(tmp_path, config)
    files["prompt_prior"]["captions"] = ["a", "b", "c"]
    files["prompt_prior"]["hop"] = -1
    (tmp_path / "config.json").write_text(json.dumps(files))
    with pytest.raises(ConfigError, match="prompt_prior.hop"):
        SentenceAudioControl.load(tmp_path, config)
    del files["prompt_prior"]["hop"]  # priors saved before the hop was recorded still load
    (tmp_path / "config.json").write_text(json.dumps(files))
    assert SentenceAudioControl.load(tmp_path, config).prior.hop is None
    (tmp_path / "prior.safetensors").unlink()
    with pytest.raises(CheckpointError, match="prior.safetensors"):
        SentenceAudioControl.load(tmp_path, config)


def test_recipe_with_zero_steps_keeps_the_tower_and_fits_only_the_prior(tmp_path, capsys):
    from recipes.fit_control import main
    from tokmusic.errors import ConfigError
    from tokmusic.pipeline import Pipeline

    clicks_world(tmp_path, 2)
    common = [str(tmp_path / "m.jsonl"), "--batch-size", "4", "--crop-seconds", "2", "--sample-rate", str(SR),
              "--quiet"]
    with pytest.raises(ConfigError, match="--steps 0 keeps the pipeline's sentence_audio control"):
        main(common + ["--pipeline", str(tmp_path / "pipe"), "--out", str(tmp_path / "x"), "--steps", "0"])
    assert main(common + ["--pipeline", str(tmp_path / "pipe"), "--out", str(tmp_path / "a"), "--steps", "3",
                          "--no-prior"]) == 0
    assert Pipeline.from_pretrained(tmp_path / "a").control.prior is None
    assert main(common + ["--pipeline", str(tmp_path / "a"), "--out", str(tmp_path / "b"), "--steps", "0",
                          "--prior-temperature", "0.1", "--control-hop", "2"]) == 0
    assert "--steps 0: the audio tower is kept as it is" in capsys.readouterr().out
    a, b = (Pipeline.from_pretrained(tmp_path / d) for d in ("a", "b"))
    assert b.control.prior.captions == ["a fast piece", "a slow piece"] and b.control.prior.temperature == 0.1
    assert b.control.prior.hop == 2.0
    assert all(torch.equal(x, y) for x, y in zip(a.control.tower.state_dict().values(),
                                                  b.control.tower.state_dict().values()))
    for name in a.stages:  # the stages are kept: the audio embeddings they were trained on are the same
        assert all(torch.equal(x, y) for x, y in zip(a.stages[name].state_dict().values(),
                                                      b.stages[name].state_dict().values()))


class LabelControl:
    """A control whose chunk embedding is the one-hot of the chunk's rounded mean sample: a known answer."""

    sample_rate = 10
    dim = 4

    def embed_audio_chunks(self, wave, sample_rate, hop):
        chunks = wave.split(round(hop * sample_rate))
        return torch.nn.functional.one_hot(torch.stack([c.mean().round().long() for c in chunks]), self.dim).float()


def test_chunk_accuracy_counts_captions_and_words():
    from tokmusic.training.control_fit import chunk_accuracy

    names = ["a fast organ piece", "a fast piano piece", "a slow piano piece"]  # label 0, 1, 2

    def steady(label, seconds=4):
        return torch.full((seconds * LabelControl.sample_rate,), float(label))

    train = ([steady(k) for k in range(3)], names)
    # test: "fast piano" with its 4 one-second chunks labelled 1, 1, 0, 0 (half given "fast organ": caption wrong,
    # tempo word right) and "slow piano" labelled 2, 2, 2, 1 (one chunk given "fast piano": both wrong)
    fast = torch.cat([steady(1, 2), steady(0, 2)])
    slow = torch.cat([steady(2, 3), steady(1, 1)])
    got = chunk_accuracy(LabelControl(), train, ([fast, slow], names[1:]), hop=1.0, words=("fast", "slow"))
    assert got["chunks"] == 8 and got["captions"] == 3 and got["chance"] == 1 / 3
    assert got["caption"] == 5 / 8 and got["word"] == 7 / 8 and got["word_chunks"] == 8
    assert got["centroid_cosine"] == 0.0  # one-hot centroids of distinct labels
    # 2-second chunks of "fast piano" average 1 and 0: still half; of "slow piano", 2 and 1.5 -> 2 and 2: all right
    got = chunk_accuracy(LabelControl(), train, ([fast, slow], names[1:]), hop=2.0)
    assert got["chunks"] == 4 and got["caption"] == 3 / 4 and "word" not in got


def test_caption_centroids_count_every_item_once_however_long():
    from tokmusic.training.control_fit import caption_centroids

    one, three = torch.zeros(10), torch.ones(30)  # one chunk labelled 0; three chunks labelled 1
    distinct, centroids = caption_centroids(LabelControl(), [three, one, one + 2], ["b", "b", "a"], hop=1.0)
    assert distinct == ["a", "b"]
    half = 2 ** -0.5  # the two items of "b" weigh the same, not three chunks to one
    assert torch.allclose(centroids, torch.tensor([[0.0, 0.0, 1.0, 0.0], [half, half, 0.0, 0.0]]))


def test_control_hop_benchmark_prints_one_row_per_chunk_length(tmp_path, capsys):
    from scripts import load_script

    clicks_world(tmp_path, 3, valid=(2, 5))
    bench = load_script("benchmarks/control_hop.py")
    from recipes.fit_control import main as fit

    assert fit([str(tmp_path / "m.jsonl"), "--pipeline", str(tmp_path / "pipe"), "--out", str(tmp_path / "p"),
                "--steps", "2", "--batch-size", "4", "--crop-seconds", "2", "--sample-rate", str(SR), "--quiet"]) == 0
    capsys.readouterr()
    (tmp_path / "bad.mp4").write_bytes(b"not a video")  # a held-out item that cannot be read: skipped and listed
    with open(tmp_path / "m.jsonl", "a") as f:
        f.write(json.dumps({"video": "bad.mp4", "text": "a slow piece", "split": "valid"}) + "\n")
    assert bench.main([str(tmp_path / "m.jsonl"), "--pipeline", str(tmp_path / "p"), "--hops", "0.5", "2",
                       "--words", "slow", "fast", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["hop"] for r in result["rows"]] == [0.5, 2.0] and result["valid_items"] == 2
    assert [f["video"].endswith("bad.mp4") for f in result["failed"]] == [True]
    assert bench.main([str(tmp_path / "m.jsonl"), "--pipeline", str(tmp_path / "p"), "--hops", "1"]) == 0
    table = capsys.readouterr().out
    assert "skipped" in table and "line 7 (" in table and "bad.mp4" in table
    assert [r["chunks"] for r in result["rows"]] == [12, 4]  # two 3 s items: 6 and 2 chunks each
    assert all(0 <= r["caption"] <= 1 and r["chance"] == 0.5 and r["word_chunks"] == r["chunks"]
               for r in result["rows"])
    with pytest.raises(SystemExit):
        bench.main([str(tmp_path / "m.jsonl"), "--hops", "0"])
