"""ClapControl: shapes, normalisation, empty prompts, long audio, save/load and refused directories."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from tokmusic.control import ClapControl, ControlEmbedder, from_config, tiny_control
from tokmusic.errors import CheckpointError, ConfigError

PROMPTS = ["slow melancholic piano", "fast aggressive drums and bass"]


@pytest.fixture(scope="module")
def control() -> ClapControl:
    return tiny_control(seed=0)


def noise(samples: int, seed: int = 1, channels: int = 2) -> torch.Tensor:
    return 0.3 * torch.randn(channels, samples, generator=torch.Generator().manual_seed(seed))


def test_text_embeddings(control):
    assert isinstance(control, ControlEmbedder) and control.dim == 16
    e = control.embed_text(PROMPTS)
    assert e.dtype == torch.float32 and e.shape == (2, 16)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(2))
    assert (e[0] - e[1]).abs().max() > 1e-3  # different prompts, different embeddings
    # Batching pads; the padded prompt embeds as it does alone. A bare string is one prompt.
    torch.testing.assert_close(control.embed_text([PROMPTS[0]])[0], e[0], rtol=0, atol=1e-6)
    assert torch.equal(control.embed_text(PROMPTS[0]), control.embed_text([PROMPTS[0]]))


def test_long_prompts_are_truncated(control):
    assert control.max_text_tokens == 64
    assert control.embed_text(["la " * 500]).shape == (1, 16)


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompt(control, prompt):
    with pytest.raises(ConfigError, match="prompt is empty; pass None for no prompt"):
        control.embed_text([PROMPTS[0], prompt])


def test_bad_text_arguments(control):
    with pytest.raises(ConfigError, match="non-empty list"):
        control.embed_text([])
    with pytest.raises(ConfigError, match="strings"):
        control.embed_text([3])


def test_audio_embedding(control):
    x = noise(44_100 * 1)
    a = control.embed_audio(x, 44_100)
    assert a.dtype == torch.float32 and a.shape == (16,)
    assert a.norm().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(control.embed_audio(x, 44_100), a)  # deterministic
    assert torch.equal(control.embed_audio(x.mean(0), 44_100), a)  # [N] is mono; channels are averaged
    assert (control.embed_audio(noise(44_100, seed=2), 44_100) - a).abs().max() > 1e-3


def test_long_audio_averages_windows(control):
    # 5 s at 48 kHz with 2 s windows: three full windows at 0, 1.5 s and 3 s.
    x = noise(48_000 * 5, channels=1)
    starts = [0, 72_000, 144_000]
    one_by_one = torch.stack([control.embed_audio(x[:, s : s + 96_000], 48_000) for s in starts])
    expected = torch.nn.functional.normalize(one_by_one.mean(0), dim=0)
    torch.testing.assert_close(control.embed_audio(x, 48_000), expected, rtol=0, atol=1e-6)


def test_numpy_global_random_state_untouched(control):
    np.random.seed(7)
    expected = np.random.rand()
    np.random.seed(7)
    control.embed_audio(noise(4800), 48_000)
    assert np.random.rand() == expected


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.zeros(1, 100, dtype=torch.int16), "float"),
        (torch.zeros(1, 1, 100), r"\[C, N\]"),
        (torch.zeros(1, 0), "empty"),
        (torch.full((1, 100), float("inf")), "NaN or infinite"),
    ],
)
def test_bad_audio(control, bad, message):
    with pytest.raises(ConfigError, match=message):
        control.embed_audio(bad, 48_000)


def test_save_load_identical(control, tmp_path):
    control.save(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json"} <= names
    config = json.loads(json.dumps(control.to_config()))
    assert config == {"type": "clap", "dim": 16, "sample_rate": 48_000}
    loaded = from_config(config, tmp_path)
    assert torch.equal(loaded.embed_text(PROMPTS), control.embed_text(PROMPTS))
    x = noise(30_000)
    assert torch.equal(loaded.embed_audio(x, 32_000), control.embed_audio(x, 32_000))
    again = ClapControl.from_pretrained(tmp_path)
    assert torch.equal(again.embed_text(PROMPTS), control.embed_text(PROMPTS))


def test_refused_directories(control, tmp_path):
    with pytest.raises(ConfigError, match="unknown type"):
        from_config({"type": "mulan"}, tmp_path)
    with pytest.raises(ConfigError, match="unknown key"):
        from_config({"type": "clap", "width": 3}, tmp_path)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    control.save(pickled)
    (pickled / "model.safetensors").unlink()
    (pickled / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(CheckpointError, match="pickle"):
        from_config(control.to_config(), pickled)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="cannot load a CLAP model"):
        ClapControl.from_pretrained(empty)
    other = tmp_path / "other"
    other.mkdir()
    control.save(other)
    with pytest.raises(CheckpointError, match="dim=16"):
        from_config({"type": "clap", "dim": 512}, other)
    with pytest.raises(CheckpointError, match="local directory"):
        ClapControl.from_pretrained("laion/clap-htsat-unfused")


# --- sentence_audio: frozen MiniLM text tower + a trained audio tower -------------------------------------

@pytest.fixture(scope="module")
def sentence():
    from tokmusic.sentence_control import sentence_audio_control

    return sentence_audio_control(8_000, seed=0, window_seconds=2.0, width=32)


def test_sentence_text_embeddings(sentence):
    assert isinstance(sentence, ControlEmbedder) and sentence.dim == 384
    e = sentence.embed_text(["a fast Bach chorale played on church organ", "a quick baroque chorale on a pipe organ",
                             "rain on a tin roof at night"])
    assert e.dtype == torch.float32 and e.shape == (3, 384)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3))
    assert float(e[0] @ e[1]) > float(e[0] @ e[2]) + 0.3  # the real MiniLM: paraphrases are near
    torch.testing.assert_close(sentence.embed_text("rain on a tin roof at night")[0], e[2], rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match="prompt is empty; pass None for no prompt"):
        sentence.embed_text(["ok", "  "])
    with pytest.raises(ConfigError, match="non-empty list"):
        sentence.embed_text([])


def test_sentence_audio_embeddings(sentence):
    x = noise(8_000 * 5, channels=1)  # 5 s with 2 s windows: windows at 0, 1.5 s and 3 s
    a = sentence.embed_audio(x, 8_000)
    assert a.shape == (384,) and a.norm().item() == pytest.approx(1.0, abs=1e-6)
    windows = torch.stack([sentence.embed_audio(x[:, s : s + 16_000], 8_000) for s in (0, 12_000, 24_000)])
    torch.testing.assert_close(a, torch.nn.functional.normalize(windows.mean(0), dim=0), rtol=0, atol=1e-5)
    chunks = sentence.embed_audio_chunks(x, 8_000, 1.5)  # 4 chunks, the last from the final 1.5 s
    assert chunks.shape == (4, 384)
    torch.testing.assert_close(chunks[3], sentence.embed_audio(x[:, -12_000:], 8_000), rtol=0, atol=1e-5)
    assert sentence.embed_audio(noise(50, channels=1), 16_000).shape == (384,)  # shorter than the STFT: repeated
    with pytest.raises(ConfigError, match="NaN or infinite"):
        sentence.embed_audio(torch.full((1, 100), float("nan")), 8_000)


def test_sentence_save_load_identical(sentence, tmp_path):
    sentence.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads(json.dumps(sentence.to_config()))
    assert config == {"type": "sentence_audio", "dim": 384, "sample_rate": 8_000}
    loaded = from_config(config, tmp_path)
    x = noise(20_000)
    assert torch.equal(loaded.embed_audio(x, 16_000), sentence.embed_audio(x, 16_000))
    assert torch.equal(loaded.embed_text(PROMPTS), sentence.embed_text(PROMPTS))
    with pytest.raises(CheckpointError, match="sample_rate=8000"):
        from_config({"type": "sentence_audio", "sample_rate": 16_000}, tmp_path)
    files = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**files, "audio_tower": {**files["audio_tower"], "width": 64}}))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        from_config(config, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**files, "audio_tower": {**files["audio_tower"], "width": -1}}))
    with pytest.raises(ConfigError, match="width"):
        from_config(config, tmp_path)
