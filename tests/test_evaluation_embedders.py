"""Embedders: the weight-free ones exactly, the transformers ones on tiny random models saved to disk and
loaded back through the real loading code."""

import json

import numpy as np
import pytest
import torch

from tokmusic.errors import CheckpointError
from tokmusic.evaluation.embedders import (ClapEmbedder, PitchClassEmbedder, SpectralEmbedder, load_audio_embedder,
                                           load_classifier)
from tokmusic.evaluation.visual import load_visual_embedder

SR = 22050


def tone(freq: float, seconds: float, sr: int = SR) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    return (0.3 * torch.sin(2 * torch.pi * freq * t))[None]


def make_tiny_clap(directory):
    """A random ClapModel with 1-s windows, its feature extractor and a character-level tokenizer."""
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, RobertaTokenizer

    torch.manual_seed(0)
    config = ClapConfig(
        text_config=dict(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=40, projection_dim=8),
        audio_config=dict(spec_size=64, window_size=4, num_mel_bins=16, patch_size=4, patch_stride=(4, 4),
                          hidden_size=32, depths=[1, 1], num_attention_heads=[2, 2], projection_dim=8,
                          enable_fusion=False, patch_embeds_hidden_size=16),
        projection_dim=8,
    )
    ClapModel(config).save_pretrained(directory)
    ClapFeatureExtractor(feature_size=16, max_length_s=1).save_pretrained(directory)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4, "\u0120": 5}
    vocab.update({c: 6 + i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")})
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    RobertaTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt")).save_pretrained(directory)
    return directory


def make_tiny_ast(directory, labels=("music", "speech", "noise")):
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    torch.manual_seed(0)
    config = ASTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       num_mel_bins=32, max_length=64, patch_size=16, frequency_stride=16, time_stride=16,
                       id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    ASTForAudioClassification(config).save_pretrained(directory)
    ASTFeatureExtractor(num_mel_bins=32, max_length=64).save_pretrained(directory)
    return directory


def make_tiny_clip(directory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=16),
        vision_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                           image_size=32, patch_size=8),
        projection_dim=12,
    )
    CLIPModel(config).save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory):
    return make_tiny_clap(tmp_path_factory.mktemp("clap"))


def test_spectral_embedder_windows_and_determinism():
    emb = SpectralEmbedder()
    x = tone(440, 2.6)
    windows = emb.embed_windows(x, SR)
    assert windows.shape == (3, emb.dim)  # two full 1-s windows and a 0.6-s one (>= half a window)
    assert emb.embed_windows(tone(440, 2.4), SR).shape == (2, emb.dim)  # a 0.4-s rest is dropped
    assert emb.embed_windows(tone(440, 0.3), SR).shape == (1, emb.dim)  # unless it is the whole clip
    assert torch.equal(emb.embed(x, SR), windows.mean(dim=0))
    assert torch.equal(emb.embed(x, SR), emb.embed(x.clone(), SR))
    assert torch.isfinite(windows).all()
    # another sample rate gives (nearly) the same features: the embedder resamples
    same = (emb.embed(tone(440, 2.6, 44100), 44100) - emb.embed(x, SR)).norm()
    other = (emb.embed(tone(1760, 2.6), SR) - emb.embed(x, SR)).norm()
    assert same < 0.1 * other
    assert emb.describe()["name"] == "spectral"


def test_pitch_class_embedder_finds_the_note():
    probs = PitchClassEmbedder().embed(tone(440.0, 2.0), SR)  # A4
    assert probs.shape == (12,) and probs.sum().item() == pytest.approx(1.0)
    assert int(probs.argmax()) == 9
    silent = PitchClassEmbedder().embed(torch.zeros(1, SR), SR)
    assert torch.allclose(silent, torch.full((12,), 1 / 12, dtype=silent.dtype))


def test_clap_embedder_audio_and_text(tiny_clap):
    emb = load_audio_embedder(str(tiny_clap), device="cpu")
    assert isinstance(emb, ClapEmbedder)
    assert (emb.sample_rate, emb.window_seconds, emb.dim) == (48000, 1.0, 8)
    windows = emb.embed_windows(tone(440, 2.7), SR)
    assert windows.shape == (3, 8)
    assert torch.allclose(windows.norm(dim=1), torch.ones(3), atol=1e-4)  # CLAP embeddings are unit length
    text = emb.embed_text(["slow piano", "happy drums"])
    assert text.shape == (2, 8)
    assert not torch.allclose(text[0], text[1])


def test_audio_classifier_probabilities(tmp_path):
    clf = load_classifier(str(make_tiny_ast(tmp_path / "ast")), device="cpu")
    assert clf.labels == ("music", "speech", "noise") and clf.kind == "probabilities"
    assert clf.window_seconds == pytest.approx(0.64)
    probs = clf.embed(tone(440, 1.5), SR)
    assert probs.shape == (3,) and probs.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert (probs > 0).all()


def test_generic_audio_model_embeds_mean_hidden_state(tmp_path):
    emb = load_audio_embedder(str(make_tiny_ast(tmp_path / "ast")), device="cpu")
    assert emb.embed(tone(440, 1.0), SR).shape == (16,)  # ASTModel's hidden size, no classifier head


def test_loading_errors(tmp_path, tiny_clap):
    with pytest.raises(CheckpointError, match="not an audio classifier"):
        load_classifier(str(tiny_clap))
    with pytest.raises(CheckpointError, match="no-such-org/no-such-model.*local directory"):
        load_audio_embedder("no-such-org/no-such-model")  # HF_HUB_OFFLINE=1 (conftest): fails fast
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_classifier(str(pickled))
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"")
    with pytest.raises(CheckpointError, match="is a file"):
        load_audio_embedder(str(file))


def test_clip_visual_embedder(tmp_path):
    vis = load_visual_embedder(str(make_tiny_clip(tmp_path / "clip")), device="cpu")
    assert vis.dim == 12  # the projected image embedding, not the vision tower's hidden size
    frames = np.random.default_rng(0).integers(0, 255, (3, 40, 50, 3), dtype=np.uint8)
    out = vis.embed_frames(frames)
    assert out.shape == (3, 12) and torch.isfinite(out).all()
    assert load_visual_embedder("video-stats").dim == 53
