"""SemanticTokenizer: exact token counts, chunked == one pass, nearest-centroid ids, storage and errors."""

from __future__ import annotations

import json
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

from tokmusic.errors import CheckpointError, ConfigError
from tokmusic.fileio import save_tensors
from tokmusic.semantic_tokenizer import SemanticTokenizer, from_config, tiny_semantic_tokenizer
from tokmusic.spectral_tokenizer import SpectralTokenizer, spectral_tokenizer
from tokmusic.training.kmeans import fit_kmeans

ONE_PASS = 1e6  # chunk_seconds longer than any test signal


@pytest.fixture(scope="module")
def tok() -> SemanticTokenizer:
    return tiny_semantic_tokenizer(seed=0)


def noise(samples: int, seed: int = 1, channels: int = 1) -> torch.Tensor:
    return 0.3 * torch.randn(channels, samples, generator=torch.Generator().manual_seed(seed))


def variant(tok: SemanticTokenizer, **kwargs) -> SemanticTokenizer:
    options = {"layer": tok.layer, "chunk_seconds": tok.chunk_seconds, "context_seconds": tok.context_seconds}
    options.update(kwargs)
    layer = options.pop("layer")
    return SemanticTokenizer(tok.model, layer, tok.centroids, tok.sample_rate, **options)


def test_tiny_properties(tok):
    assert (tok.sample_rate, tok.frame_rate, tok.vocab_size, tok.dim, tok.layer) == (16_000, 25.0, 32, 32, 1)
    assert (tok.stride, tok.receptive) == (640, 645)


@pytest.mark.parametrize("rate", [16_000, 44_100, 8_000])
@pytest.mark.parametrize("n", [0, 1, 319, 320, 321, 640, 959, 960, 16_000 * 2 + 17])
def test_exact_token_count(tok, rate, n):
    # round(n * 25 / rate), halves up, in exact integer arithmetic.
    expected = (2 * n * 25 + rate) // (2 * rate)
    assert tok.num_tokens(n, rate) == expected
    x = noise(n, channels=2)
    feats = tok.features(x, rate)
    assert feats.dtype == torch.float32 and feats.shape == (expected, 32)
    ids = tok.tokenize(x, rate)
    assert ids.dtype == torch.long and ids.shape == (expected,)
    if expected:
        assert 0 <= int(ids.min()) and int(ids.max()) < 32


def test_ids_vary_with_audio(tok):
    a, b = tok.tokenize(noise(48_000, seed=1), 16_000), tok.tokenize(noise(48_000, seed=2), 16_000)
    assert not torch.equal(a, b) and len(a.unique()) > 8


def test_tokens_are_nearest_centroids(tok):
    x = noise(32_000)
    feats = tok.features(x, 16_000)
    exact = tok.with_centroids(feats[[3, 10, 20]] + 0.0)
    assert exact.vocab_size == 3 and exact.model is tok.model
    ids = exact.tokenize(x, 16_000)
    assert ids[[3, 10, 20]].tolist() == [0, 1, 2]
    distances = torch.cdist(feats, feats[[3, 10, 20]])
    assert torch.equal(ids, distances.argmin(1))


def test_chunked_equals_one_pass_at_the_front_end(tok):
    # hidden_states[0] = conv front end (per-frame norms) + positional conv (16 taps: 8 frames each side).
    # Windows start on whole frames and 0.4 s = 10 frames of context cover both, so each kept frame is computed
    # from the same samples as in one pass: same ids, features equal to float32 rounding.
    whole = variant(tok, layer=0, chunk_seconds=ONE_PASS)
    for seconds, chunk, context in [(2, 0.6, 0.4), (0.5, 0.04, 0.4)]:  # 0.04 s: one token per window
        x = noise(int(44_100 * seconds) + 5, channels=2)
        chunked = variant(tok, layer=0, chunk_seconds=chunk, context_seconds=context)
        assert torch.equal(chunked.tokenize(x, 44_100), whole.tokenize(x, 44_100))
        torch.testing.assert_close(chunked.features(x, 44_100), whole.features(x, 44_100), rtol=0, atol=1e-5)


def test_chunked_close_to_one_pass_in_transformer_layers(tok):
    # Deeper layers attend over the window only, so they can differ from one pass; with context they stay close.
    x = noise(16_000 * 6)
    whole = variant(tok, layer=2, chunk_seconds=ONE_PASS)
    chunked = variant(tok, layer=2, chunk_seconds=1.0, context_seconds=1.0)
    assert (chunked.features(x, 16_000) - whole.features(x, 16_000)).abs().max() < 0.05
    assert (chunked.tokenize(x, 16_000) == whole.tokenize(x, 16_000)).float().mean() > 0.9


def test_long_audio_runs_in_windows(tok):
    seen = []
    hook = tok.model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[-1]))
    try:
        assert (tok.chunk_frames, tok.context_frames) == (250, 50)  # 10 s kept, 2 s of context each side
        ids = tok.tokenize(torch.zeros(1, 16_000 * 25), 16_000)
    finally:
        hook.remove()
    assert ids.shape == (625,)
    assert len(seen) == 3 and max(seen) == (350 - 1) * 640 + 645


def test_one_frame_delay_shifts_features_by_one(tok):
    # Frame t covers the same samples wherever the signal starts: delaying by one stride shifts by one frame.
    front = variant(tok, layer=0)
    x = noise(16_000 * 2)
    delayed = torch.cat([torch.zeros(1, 640), x], dim=1)
    a, b = front.features(x, 16_000), front.features(delayed, 16_000)
    assert b.shape[0] == a.shape[0] + 1
    torch.testing.assert_close(b[12:-12], a[11:-12], rtol=0, atol=1e-5)


def test_bad_inputs(tok):
    with pytest.raises(ConfigError, match="float"):
        tok.tokenize(torch.zeros(1, 100, dtype=torch.int16), 16_000)
    with pytest.raises(ConfigError, match=r"\[C, N\]"):
        tok.tokenize(torch.zeros(1, 1, 100), 16_000)
    with pytest.raises(ConfigError, match="NaN"):
        tok.tokenize(torch.full((1, 100), float("nan")), 16_000)
    with pytest.raises(ConfigError, match="32 wide"):
        tok.with_centroids(torch.zeros(4, 16))
    with pytest.raises(ConfigError, match=r"hidden states 0\.\.2"):
        SemanticTokenizer(tok.model, 3, None, 16_000)
    bare = SemanticTokenizer(tok.model, 1, None, 16_000)
    assert bare.vocab_size == 0 and bare.features(noise(1600), 16_000).shape == (3, 32)
    with pytest.raises(ConfigError, match="no centroids"):
        bare.tokenize(noise(1600), 16_000)


def test_save_load_round_trip(tok, tmp_path):
    tok.save(tmp_path)
    assert (tmp_path / "model" / "model.safetensors").is_file() and (tmp_path / "centroids.safetensors").is_file()
    config = json.loads(json.dumps(tok.to_config()))
    loaded = from_config(config, tmp_path)
    assert loaded.to_config() == tok.to_config()
    x = noise(30_000, channels=2)
    assert torch.equal(loaded.features(x, 22_050), tok.features(x, 22_050))
    assert torch.equal(loaded.tokenize(x, 22_050), tok.tokenize(x, 22_050))
    # The same files through from_pretrained, centroids by path.
    again = SemanticTokenizer.from_pretrained(tmp_path / "model", 1, tmp_path / "centroids.safetensors")
    assert torch.equal(again.tokenize(x, 22_050), tok.tokenize(x, 22_050))


def test_load_errors_name_the_file(tok, tmp_path):
    tok.save(tmp_path)
    config = tok.to_config()
    with pytest.raises(ConfigError, match="unknown type"):
        from_config({**config, "type": "mert"}, tmp_path)
    with pytest.raises(CheckpointError, match=r"model[/\\]config\.json.*layer 5"):
        from_config({**config, "layer": 5}, tmp_path)
    save_tensors(tmp_path / "centroids.safetensors", {"centroids": torch.zeros(32, 16)})
    with pytest.raises(CheckpointError, match=r"centroids\.safetensors.*16 wide"):
        from_config(config, tmp_path)
    with pytest.raises(CheckpointError, match=r"centroids\.safetensors.*16 wide"):
        SemanticTokenizer.from_pretrained(tmp_path / "model", 1, tmp_path / "centroids.safetensors")
    (tmp_path / "centroids.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        from_config(config, tmp_path)
    for weights in (tmp_path / "model").glob("*.safetensors"):
        weights.unlink()
    (tmp_path / "model" / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(CheckpointError, match="pickle"):
        from_config(config, tmp_path)
    with pytest.raises(CheckpointError, match="local directory"):
        SemanticTokenizer.from_pretrained("facebook/hubert-base-ls960", 6)


def test_wav2vec2_with_preprocessor_settings(tmp_path):
    # A wav2vec2 layout (7 convs, 320 stride, group norm) and its feature extractor's rate / normalisation.
    config = Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8,) * 7,
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
    )
    Wav2Vec2Model(config).save_pretrained(tmp_path)
    Wav2Vec2FeatureExtractor(sampling_rate=16_000, do_normalize=True).save_pretrained(tmp_path)
    tok = SemanticTokenizer.from_pretrained(tmp_path, 1, torch.randn(8, 16))
    assert (tok.frame_rate, tok.normalize, tok.vocab_size) == (50.0, True, 8)
    assert tok.receptive == 400
    x = noise(24_000 + 3)
    assert tok.tokenize(x, 24_000).shape == (50,)
    assert torch.equal(tok.tokenize(3 * x, 24_000), tok.tokenize(x, 24_000))  # normalised input


# -- the model-free "spectral_kmeans" backend -----------------------------------------------------------------
def chord(pitches: tuple[float, ...], seconds: float = 2.0, rate: int = 16_000) -> torch.Tensor:
    t = torch.arange(round(seconds * rate)) / rate
    return sum(0.2 * torch.sin(2 * math.pi * 440.0 * 2 ** ((p - 69) / 12) * t) for p in pitches)[None]


@pytest.fixture(scope="module")
def spectral():
    return spectral_tokenizer(16, seed=0)


def test_spectral_properties(spectral):
    assert (spectral.sample_rate, spectral.frame_rate, spectral.stride, spectral.vocab_size) == (16_000, 25.0, 640, 16)
    assert spectral.dim == 12 + 32 + 1 + 1
    assert spectral_tokenizer(0, n_mels=24, onset=False).dim == 37


@pytest.mark.parametrize("rate", [16_000, 44_100, 8_000])
@pytest.mark.parametrize("n", [0, 1, 319, 320, 640, 959, 16_000 * 2 + 17])
def test_spectral_token_count(spectral, rate, n):
    expected = (2 * n * 25 + rate) // (2 * rate)  # round(n * 25 / rate), halves up: as SemanticTokenizer
    assert spectral.num_tokens(n, rate) == expected
    x = noise(n, channels=2)
    feats = spectral.features(x, rate)
    assert feats.dtype == torch.float32 and feats.shape == (expected, spectral.dim)
    assert bool(torch.isfinite(feats).all())
    ids = spectral.tokenize(x, rate)
    assert ids.dtype == torch.long and ids.shape == (expected,)


def test_spectral_chroma_of_a4_peaks_at_a(spectral):
    feats = spectral.features(chord((69,)), 16_000)  # A4 = 440 Hz
    chroma = feats[5:-5, :12]  # away from the edges
    assert (chroma.argmax(1) == 9).all()  # row 0 = C, so A = 9
    assert torch.allclose(chroma.norm(dim=1), torch.ones(len(chroma)), atol=1e-5)
    silent = spectral.features(torch.zeros(1, 16_000), 16_000)
    assert torch.equal(silent[:, :12], torch.zeros(25, 12))  # silence has no pitch class


def test_spectral_kmeans_tells_two_chords_apart(spectral):
    c_major, f_sharp_major = chord((60, 64, 67)), chord((66, 70, 73))
    frames = torch.cat([spectral.features(c_major, 16_000)[3:-3], spectral.features(f_sharp_major, 16_000)[3:-3]])
    fitted = spectral.with_centroids(fit_kmeans(frames, 2, iterations=20, seed=0))
    a, b = fitted.tokenize(c_major, 16_000)[3:-3], fitted.tokenize(f_sharp_major, 16_000)[3:-3]
    assert len(a.unique()) == 1 and len(b.unique()) == 1 and int(a[0]) != int(b[0])


def test_spectral_save_load_round_trip(spectral, tmp_path):
    spectral.save(tmp_path)
    config = spectral.to_config()
    assert config == {"type": "spectral_kmeans", "sample_rate": 16_000, "frame_rate": 25, "n_mels": 32,
                      "onset": True, "vocab_size": 16, "dim": 46}
    loaded = from_config(json.loads(json.dumps(config)), tmp_path)
    assert isinstance(loaded, SpectralTokenizer) and loaded.to_config() == config
    assert torch.equal(loaded.centroids, spectral.centroids)
    x = noise(20_000)
    assert torch.equal(loaded.tokenize(x, 16_000), spectral.tokenize(x, 16_000))
    with pytest.raises(CheckpointError, match="vocab_size"):
        from_config({**config, "vocab_size": 8}, tmp_path)
    with pytest.raises(ConfigError, match="n_melz"):
        from_config({**config, "n_melz": 8}, tmp_path)


def test_spectral_tokenizer_in_a_pipeline(tmp_path):
    from tokmusic.audio import save_audio
    from tokmusic.pipeline import Pipeline
    from tokmusic.testing import tiny_pipeline
    from tokmusic.training.manifest import ManifestItem
    from tokmusic.training.semantic_fit import collect_frames, with_centroids

    tiny = tiny_pipeline(seed=0)  # its semantic stage: 32 ids at 25/s
    pipe = Pipeline(visual_encoder=tiny.visual_encoder, codec=tiny.codec, stages=tiny.stages, control=tiny.control,
                    semantic_tokenizer=spectral_tokenizer(32), fps=tiny.fps)
    save_audio(tmp_path / "m.wav", chord((60, 64, 67), 3.0), 16_000)
    item = ManifestItem(1, tmp_path / "m.wav", None, None, "train")
    frames, failed = collect_frames(pipe.semantic_tokenizer, [item], 50)
    assert not failed and frames.shape == (50, 46)
    fitted = with_centroids(pipe, fit_kmeans(frames, 8, iterations=5))  # vocabulary 32 -> 8: stages resized
    assert fitted.stages["semantic"].cfg.target_vocab == 8 and fitted.stages["coarse"].cfg.source_vocab == 8
    fitted.save_pretrained(tmp_path / "p")
    loaded = Pipeline.from_pretrained(tmp_path / "p")
    assert isinstance(loaded.semantic_tokenizer, SpectralTokenizer) and loaded.semantic_tokenizer.vocab_size == 8
