"""Codec training: it learns, its codebooks follow EMA updates, resuming is exact, the pipeline it writes loads."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from scripts import load_script
from tokmusic.errors import ConfigError
from tokmusic.pipeline import Pipeline
from tokmusic.testing import tiny_pipeline
from tokmusic.training import codec_fit
from tokmusic.training.codec_build import _ratios, new_codec, with_codec
from tokmusic.training.codec_fit import (CodecTrainer, TrainSettings, data_dependent_init, evaluate_codec,
                                         reconstruct, spectral_loss)

REPO = Path(__file__).resolve().parents[1]
TINY = dict(num_filters=4, hidden_size=16, codebook_size=32, n_q=3, n_coarse=1)


def sines(seconds: float = 3.0, rate: int = 16_000) -> torch.Tensor:
    """A chord of three partials with a slow tremolo: easy to learn, not trivial to quantise."""
    t = torch.arange(round(seconds * rate)) / rate
    chord = sum(a * torch.sin(2 * math.pi * f * t) for a, f in ((0.3, 220.0), (0.2, 330.0), (0.1, 880.0)))
    return chord * (0.75 + 0.25 * torch.sin(2 * math.pi * 0.5 * t))


def settings(**kw) -> TrainSettings:
    return TrainSettings(**{"steps": 40, "batch_size": 4, "crop_seconds": 0.25, "lr": 3e-3, "init_batches": 2,
                            "save_every": 1000, **kw})


def fixed_loss(trainer: CodecTrainer, x: torch.Tensor) -> float:
    with torch.no_grad():
        y, _, _ = reconstruct(trainer.model, x, trainer.codec.n_q)
        return float(spectral_loss(x, y, trainer.codec.sample_rate) + 0.1 * (x - y).abs().mean())


def test_new_codec_default_architecture():
    codec = new_codec()
    assert (codec.sample_rate, codec.hop_length, codec.frame_rate) == (16_000, 320, 50.0)
    assert (codec.n_q, codec.n_coarse, codec.n_fine, codec.codebook_size, codec.channels) == (4, 2, 2, 256, 1)
    assert list(codec.model.config.upsampling_ratios) == [8, 5, 4, 2]
    codes = codec.encode(torch.zeros(1, 16_000))
    assert codes.shape == (4, 50)
    assert codec.decode(codes).shape == (1, 16_000)


def test_ratios_and_bad_architecture():
    assert _ratios(320) == [8, 5, 4, 2] and _ratios(200) == [8, 5, 5] and math.prod(_ratios(600)) == 600
    assert all(r <= 8 for r in _ratios(600))
    with pytest.raises(ConfigError, match="prime factor 11"):
        new_codec(hop_length=352, sample_rate=35_200)
    with pytest.raises(ConfigError, match="unknown key"):
        new_codec(num_filterz=4)
    with pytest.raises(ConfigError, match="power of two"):
        new_codec(codebook_size=100)


def test_training_lowers_the_reconstruction_loss():
    trainer = CodecTrainer(new_codec(**TINY), [sines()], settings())
    trainer.init_codebooks()
    x = sines(1.0)[None]
    before = fixed_loss(trainer, x)
    trainer.run()
    after = fixed_loss(trainer, x)
    assert trainer.step == 40
    assert after < 0.6 * before, (before, after)


def melody(seconds: float, seed: int, rate: int = 16_000) -> torch.Tensor:
    """Random notes from two octaves, eight a second, with one overtone: many different frames to encode."""
    g = torch.Generator().manual_seed(seed)
    notes = 220 * 2 ** (torch.randint(0, 24, (int(seconds * 8),), generator=g) / 12)
    f = notes.repeat_interleave(rate // 8)[: round(seconds * rate)]
    phase = 2 * math.pi * torch.cumsum(f, 0) / rate
    return 0.1 * (torch.sin(phase) + 0.5 * torch.sin(2 * phase))


def test_data_dependent_init_gives_unit_latents_and_input_loudness():
    codec = new_codec(**TINY)
    x = melody(1.0, 0).reshape(4, -1)
    data_dependent_init(codec.model, x)
    with torch.no_grad():
        e = codec.model.encoder(x[:, None])
        y = codec.model.decoder(e)
    assert e.mean().abs() < 0.05 and torch.allclose(e.std((0, 2)), torch.ones(e.shape[1]), atol=0.05)
    assert abs(float(y.std() / x.std()) - 1) < 0.05


@pytest.mark.parametrize("initialised", [True, False])
def test_codebooks_stay_in_use_only_with_the_data_dependent_init(initialised, monkeypatch):
    """Known answer: on varied notes the first codebook keeps many codes in use; without the initialisation the
    encoder's tiny, drifting outputs all fall nearest one code (the baseline failing)."""
    if not initialised:
        monkeypatch.setattr(codec_fit, "data_dependent_init", lambda model, x: None)
    trainer = CodecTrainer(new_codec(**TINY), [melody(8.0, 0)], settings(steps=60))
    trainer.run(progress=False)
    codes = trainer.codec.encode(melody(4.0, 1)[None])[0]
    in_use = len(set(codes.tolist()))
    if initialised:
        assert in_use >= 10, in_use  # of 32
    else:
        assert in_use <= 3, in_use


def test_codebooks_follow_ema_updates_and_stay_finite():
    trainer = CodecTrainer(new_codec(**TINY), [sines()], settings(steps=5, quantizer_dropout=0.0))
    trainer.init_codebooks()
    books = [layer.codebook for layer in trainer.model.quantizer.layers]
    start = [b.embed.clone() for b in books]
    assert all(float(b.embed.abs().sum()) > 0 for b in books)  # k-means start, not the zero init
    trainer.run()
    frames = 4 * round(0.25 * 50)  # frames per batch
    for book, before in zip(books, start):
        assert not torch.equal(book.embed, before)
        for buffer in (book.embed, book.embed_avg, book.cluster_size):
            assert bool(torch.isfinite(buffer).all())
        # the EMA counts stay on the scale of one batch's frames (dead codes restart at 1)
        assert 0.5 * frames < float(book.cluster_size.sum()) < 2 * frames + book.embed.shape[0]


def test_resume_repeats_an_uninterrupted_run_bit_for_bit(tmp_path):
    straight = CodecTrainer(new_codec(**TINY), [sines()], settings(steps=6, save_every=3))
    straight.run(tmp_path / "a", progress=False)

    first = CodecTrainer(new_codec(**TINY), [sines()], settings(steps=3, save_every=3))
    first.run(tmp_path / "b", progress=False)
    resumed = CodecTrainer(new_codec(**TINY), [sines()], settings(steps=6, save_every=3))
    resumed.run(tmp_path / "b", progress=False)  # picks up step-00000003
    assert resumed.step == 6
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["step-00000003", "step-00000006"]
    # other settings would change the run: refused
    with pytest.raises(ConfigError, match="batch_size"):
        CodecTrainer(new_codec(**TINY), [sines()], settings(steps=9, batch_size=2)).run(tmp_path / "b")


def test_with_codec_resizes_the_coarse_and_fine_stages(tmp_path):
    pipe = tiny_pipeline(seed=0)  # its codec: 4 codebooks of 64, 2 coarse
    codec = new_codec(**TINY)
    new = with_codec(pipe, codec)
    coarse, fine = new.stages["coarse"].cfg, new.stages["fine"].cfg
    assert (coarse.target_vocab, coarse.target_codebooks, coarse.target_rate) == (32, 1, 50.0)
    assert (fine.source_vocab, fine.source_codebooks, fine.target_vocab, fine.target_codebooks) == (32, 1, 32, 2)
    assert new.stages["semantic"] is pipe.stages["semantic"]
    new.save_pretrained(tmp_path / "p")
    loaded = Pipeline.from_pretrained(tmp_path / "p")
    assert loaded.codec.to_config() == codec.to_config()
    x = sines(0.5)[None]
    assert torch.equal(loaded.codec.encode(x), codec.encode(x))
    assert loaded.codec.decode(loaded.codec.encode(x)).shape == (1, 8000)
    # same code shapes: the stages keep their weights
    same = with_codec(pipe, new_codec(num_filters=4, hidden_size=16, codebook_size=64))
    assert all(same.stages[k] is pipe.stages[k] for k in ("semantic", "coarse", "fine"))


def test_evaluate_codec_reports_both_bandwidths():
    codec = new_codec(**TINY)
    result = evaluate_codec(codec, [sines(0.5), sines(0.3)])
    assert result["items"] == 2
    assert set(result) == {"mel_distance", "si_snr", "chroma_agreement", "coarse_mel_distance", "coarse_si_snr",
                           "coarse_chroma_agreement", "items"}
    assert all(math.isfinite(v) for v in result.values())
    assert -1 <= result["chroma_agreement"] <= 1


def _recipe():
    return load_script("recipes/fit_codec.py")


def test_recipe_trains_resumes_and_writes_a_pipeline(tmp_path, capsys):
    from tokmusic.audio import save_audio

    lines = []
    for i, split in enumerate(("train", "train", "valid")):
        save_audio(tmp_path / f"m{i}.wav", sines(1.5 + i)[None] * (0.5 + 0.2 * i), 16_000)
        lines.append(json.dumps({"video": str(REPO / "examples" / "bigbuckbunny.mp4"), "audio": f"m{i}.wav",
                                 "split": split}))
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "codec.json").write_text(json.dumps(TINY))
    tiny_pipeline(seed=0).save_pretrained(tmp_path / "base")
    args = [str(tmp_path / "manifest.jsonl"), "--pipeline", str(tmp_path / "base"), "--out", str(tmp_path / "new"),
            "--config", str(tmp_path / "codec.json"), "--batch-size", "2", "--crop-seconds", "0.25",
            "--save-every", "2", "--quiet"]
    recipe = _recipe()
    assert recipe.main(args + ["--steps", "2"]) == 0
    assert recipe.main(args + ["--steps", "4"]) == 0  # continues the finished run
    out = capsys.readouterr().out
    assert "valid mel distance" in out and "fit_codec: 4 steps" in out
    assert sorted(p.name for p in (tmp_path / "new.codec-run" / "checkpoints").iterdir()) == [
        "step-00000002", "step-00000004"]
    pipe = Pipeline.from_pretrained(tmp_path / "new")
    assert (pipe.codec.codebook_size, pipe.codec.n_q, pipe.stages["fine"].cfg.target_codebooks) == (32, 3, 2)
    meta = json.loads((tmp_path / "new" / "pipeline.json").read_text())
    assert meta["codec"]["type"] == "encodec" and meta["codec"]["codebook_size"] == 32
