"""EncodecCodec: exact lengths, chunked == one-pass, bandwidth choice, storage and errors (tiny random models)."""

from __future__ import annotations

import copy
import json
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from transformers import EncodecConfig, EncodecModel

from tokmusic.codec import NORMALISED_LEVEL, EncodecCodec, from_config, tiny_codec
from tokmusic.errors import CheckpointError, ConfigError

ONE_PASS = 10**9  # chunk_frames larger than any test signal: the whole signal in one window


@pytest.fixture(scope="module")
def codec() -> EncodecCodec:
    return tiny_codec(seed=0)


def noise(seconds: float, seed: int = 1, channels: int = 1, rate: int = 16_000, extra: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(channels, int(seconds * rate) + extra, generator=g)


def without_lstm(codec: EncodecCodec) -> EncodecModel:
    """A copy whose LSTMs output zero (all weights 0: h = sigmoid(0) * tanh(0) = 0), leaving only convolutions."""
    model = copy.deepcopy(codec.model)
    for stack in (model.encoder.layers, model.decoder.layers):
        for module in stack:
            if type(module).__name__ == "EncodecLSTM":
                for p in module.parameters():
                    p.data.zero_()
    return model


def test_tiny_codec_properties(codec):
    assert (codec.sample_rate, codec.channels, codec.hop_length) == (16_000, 1, 320)
    assert codec.frame_rate == 50.0
    assert (codec.n_q, codec.n_coarse, codec.n_fine, codec.codebook_size) == (4, 2, 2, 64)
    assert codec.bandwidth == 1.2


@pytest.mark.parametrize("n", [1, 319, 320, 321, 16_000 * 3 + 5])
def test_encode_decode_exact_lengths(codec, n):
    codes = codec.encode(noise(0, extra=n))
    assert codes.dtype == torch.long and codes.shape == (4, math.ceil(n / 320))
    assert int(codes.min()) >= 0 and int(codes.max()) < 64
    audio = codec.decode(codes)
    assert audio.dtype == torch.float32 and audio.shape == (1, codes.shape[1] * 320)


def test_empty_waveform(codec):
    assert codec.encode(torch.zeros(1, 0)).shape == (4, 0)
    assert codec.decode(torch.zeros(4, 0, dtype=torch.long)).shape == (1, 0)


def test_codes_follow_the_audio(codec):
    # Random codebooks fitted to the encoder: different sounds give different, varied codes.
    a, b = codec.encode(noise(2, seed=1)), codec.encode(noise(2, seed=2))
    assert not torch.equal(a, b)
    assert all(len(row.unique()) > 8 for row in a)


def test_chunked_equals_one_pass_without_lstm(codec):
    # Convolutions only: windows start on multiples of hop_length and 10 frames of context cover the receptive
    # field, so each kept frame sees exactly the samples it sees in one pass: the ids are identical. The decoded
    # samples differ only by float32 rounding (convolutions run on tensors of another length).
    model = without_lstm(codec)
    whole = EncodecCodec(model, 2, chunk_frames=ONE_PASS)
    for seconds, chunk, context in [(2, 25, 10), (1, 7, 12), (0.2, 1, 10)]:
        x = noise(seconds, extra=123)
        chunked = EncodecCodec(model, 2, chunk_frames=chunk, context_frames=context)
        codes = whole.encode(x)
        assert torch.equal(chunked.encode(x), codes)
        torch.testing.assert_close(chunked.decode(codes), whole.decode(codes), rtol=0, atol=1e-6)


def test_chunked_close_to_one_pass_with_lstm(codec):
    # EnCodec's LSTM remembers the whole past in one pass but only the window when chunked; its state forgets
    # the difference within ~20 frames here, so with the default 1 s of context the embeddings agree to float32
    # rounding. Ids can still flip where two codebook entries are nearly equidistant (a one-ulp change decides an
    # argmin), hence "almost all ids equal" rather than all.
    x = noise(4, extra=77)
    whole = EncodecCodec(codec.model, 2, chunk_frames=ONE_PASS)
    chunked = EncodecCodec(codec.model, 2, chunk_frames=60)
    assert chunked.context_frames == 50
    codes = whole.encode(x)
    agreement = (chunked.encode(x) == codes).float().mean().item()
    assert agreement > 0.99
    torch.testing.assert_close(chunked.decode(codes), whole.decode(codes), rtol=0, atol=1e-5)
    # Too little context shows up: the test can tell.
    short = EncodecCodec(codec.model, 2, chunk_frames=60, context_frames=1)
    assert (short.encode(x) != codes).sum() > 10


def test_long_audio_runs_in_windows(codec):
    assert (codec.chunk_frames, codec.context_frames) == (1000, 50)  # default: 20 s kept, 1 s context each side
    windowed = EncodecCodec(codec.model, 2, chunk_frames=50, context_frames=10)
    seen = []
    hooks = [
        module.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[-1]))
        for module in (codec.model.encoder, codec.model.decoder)
    ]
    try:
        codes = windowed.encode(noise(2.5, extra=5))  # 126 frames: windows 0..60, 40..110, 90..126
        windowed.decode(codes)
    finally:
        for hook in hooks:
            hook.remove()
    assert seen == [60 * 320, 70 * 320, 36 * 320 - 315, 60, 70, 36]


def test_decode_fewer_codebooks(codec):
    codes = codec.encode(noise(1))
    coarse_only = codec.decode(codes[: codec.n_coarse])
    assert coarse_only.shape == (1, 50 * 320)
    assert not torch.allclose(coarse_only, codec.decode(codes))


def test_channels_are_mixed_to_the_model(codec):
    stereo = noise(1, channels=2)
    assert torch.equal(codec.encode(stereo), codec.encode(stereo.mean(0, keepdim=True)))
    assert torch.equal(codec.encode(stereo[0]), codec.encode(stereo[:1]))  # [N] is mono


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.zeros(1, 100, dtype=torch.int16), "float"),
        (torch.zeros(1, 1, 100), r"\[C, N\]"),
        (torch.full((1, 100), float("nan")), "NaN"),
    ],
)
def test_bad_waveforms(codec, bad, message):
    with pytest.raises(ConfigError, match=message):
        codec.encode(bad)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.zeros(4, 10), "integer"),
        (torch.zeros(5, 10, dtype=torch.long), "1 <= K <= n_q=4"),
        (torch.zeros(10, dtype=torch.long), r"\[K, T\]"),
        (torch.full((4, 10), 64), r"0\.\.63"),
        (torch.full((4, 10), -1), r"0\.\.63"),
    ],
)
def test_bad_codes(codec, bad, message):
    with pytest.raises(ConfigError, match=message):
        codec.decode(bad)


def test_bandwidth_picks_codebooks(codec):
    two = EncodecCodec(codec.model, n_coarse=1, n_q=2)
    assert (two.n_q, two.n_fine, two.bandwidth) == (2, 1, 0.6)
    assert two.encode(noise(1)).shape == (2, 50)
    assert torch.equal(two.encode(noise(1)), codec.encode(noise(1))[:2])  # residual VQ: a prefix
    with pytest.raises(ConfigError, match=r"give \[2, 4\] codebooks"):
        EncodecCodec(codec.model, n_coarse=1, n_q=3)
    for n_coarse in (0, 4, True):
        with pytest.raises(ConfigError, match="n_coarse"):
            EncodecCodec(codec.model, n_coarse=n_coarse)
    with pytest.raises(ConfigError, match="chunk_frames"):
        EncodecCodec(codec.model, 2, chunk_frames=0)


@pytest.mark.parametrize(
    "rate, ratios, bandwidths, codebook, expected",
    [
        (24_000, [8, 5, 4, 2], [1.5, 3.0, 6.0, 12.0, 24.0], 1024, [2, 4, 8, 16, 32]),  # encodec_24khz
        (32_000, [8, 5, 4, 4], [2.2], 2048, [4]),  # encodec_32khz (MusicGen)
        (48_000, [8, 5, 4, 2], [3.0, 6.0, 12.0, 24.0], 1024, [2, 4, 8, 16]),  # encodec_48khz
    ],
)
def test_real_model_layouts(rate, ratios, bandwidths, codebook, expected):
    config = EncodecConfig(
        sampling_rate=rate,
        upsampling_ratios=ratios,
        target_bandwidths=bandwidths,
        codebook_size=codebook,
        num_filters=2,
        hidden_size=8,
        num_lstm_layers=1,
    )
    model = EncodecModel(config)
    for n_q in expected:
        codec = EncodecCodec(model, n_coarse=1, n_q=n_q)
        assert codec.hop_length == math.prod(ratios) and codec.frame_rate == rate / math.prod(ratios)
    assert EncodecCodec(model, n_coarse=1).n_q == expected[-1]


def stereo_48k_like() -> EncodecModel:
    """The 48 kHz model's features: stereo, normalised input, its own 1 s chunks, non-causal, time group norm."""
    config = EncodecConfig(
        sampling_rate=48_000,
        audio_channels=2,
        normalize=True,
        chunk_length_s=1.0,
        overlap=0.01,
        use_causal_conv=False,
        norm_type="time_group_norm",
        target_bandwidths=[3.0, 6.0],
        num_filters=2,
        hidden_size=8,
        num_lstm_layers=1,
    )
    return EncodecModel(config)


def test_normalising_chunked_stereo_model():
    model = stereo_48k_like()
    with torch.no_grad():
        for layer in model.quantizer.layers:
            layer.codebook.embed.normal_()
    codec = EncodecCodec(model, n_coarse=2)
    assert (codec.channels, codec.hop_length, codec.n_q) == (2, 320, 4)
    # Windows stay within the model's 1 s chunks: 150 frames = 100 kept + 2 x 25 context.
    assert (codec.chunk_frames, codec.context_frames) == (100, 25)
    x = noise(1.6, channels=2, rate=48_000, extra=11)
    codes = codec.encode(x)
    assert codes.shape == (4, math.ceil(x.shape[1] / 320))
    audio = codec.decode(codes)
    assert audio.shape == (2, codes.shape[1] * 320)
    # Input loudness is divided out (one scale for the whole signal); output comes at the fixed level.
    assert (codec.encode(4 * x) == codes).float().mean() > 0.99
    one_pass = EncodecCodec(model, n_coarse=2, chunk_frames=ONE_PASS).decode(codes)
    with torch.no_grad():
        raw = model.decoder(model.quantizer.decode(codes[:, None]))[0]
    torch.testing.assert_close(one_pass, NORMALISED_LEVEL * raw)
    assert codec.encode(x[:1]).shape == codes.shape  # mono input feeds both channels


def test_save_load_round_trip(codec, tmp_path):
    codec.save(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    config = json.loads(json.dumps(codec.to_config()))
    loaded = from_config(config, tmp_path)
    assert loaded.to_config() == codec.to_config()
    x = noise(1)
    codes = codec.encode(x)
    assert torch.equal(loaded.encode(x), codes)
    assert torch.equal(loaded.decode(codes), codec.decode(codes))
    smaller = EncodecCodec.from_pretrained(tmp_path, n_coarse=1, n_q=2, chunk_frames=30)
    assert torch.equal(smaller.encode(x), codes[:2])


def test_load_refuses_bad_directories(codec, tmp_path):
    with pytest.raises(ConfigError, match="unknown type"):
        from_config({"type": "dac"}, tmp_path)
    with pytest.raises(ConfigError, match="unknown key"):
        from_config({**codec.to_config(), "bitrate": 6}, tmp_path)
    with pytest.raises(CheckpointError, match="config.json"):
        EncodecCodec.load(tmp_path, codec.to_config())  # empty directory
    (tmp_path / "config.json").write_text(json.dumps(codec.model.config.to_dict()))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(CheckpointError, match="pickle"):
        EncodecCodec.load(tmp_path, codec.to_config())
    other = tmp_path / "other"
    other.mkdir()
    codec.save(other)
    with pytest.raises(CheckpointError, match="hop_length"):
        EncodecCodec.load(other, {**codec.to_config(), "hop_length": 640})


def test_unreachable_hub_id_is_a_checkpoint_error():
    with pytest.raises(CheckpointError, match="local directory"):
        EncodecCodec.from_pretrained("facebook/encodec_24khz", n_coarse=2)
