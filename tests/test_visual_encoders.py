from __future__ import annotations

import json
import math

import pytest
import torch

from media import make_video
from tokmusic.errors import CheckpointError, ConfigError
from tokmusic.visual_encoders import (
    CLIP_MEAN,
    CLIPVisualEncoder,
    ConcatEncoder,
    MotionEncoder,
    extract_features,
    from_config,
    tiny_clip_encoder,
)


def random_frames(n=4, h=40, w=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, generator=g)


def square(y, x, side=16, size=64):
    """One uint8 [size, size, 3] frame: a white square at (y, x) on black."""
    frame = torch.zeros(size, size, 3, dtype=torch.uint8)
    frame[y : y + side, x : x + side] = 255
    return frame


# --- CLIP -------------------------------------------------------------------------------------------------

def test_tiny_clip_shapes_and_seed():
    frames = random_frames()
    pooled = tiny_clip_encoder(seed=0)
    assert (pooled.dim, pooled.image_size) == (32, 32)
    out = pooled.encode(frames)
    assert out.dtype == torch.float32 and out.shape == (4, 32)
    assert torch.equal(tiny_clip_encoder(seed=0).encode(frames), out)
    assert not torch.equal(tiny_clip_encoder(seed=1).encode(frames), out)
    patch = tiny_clip_encoder(seed=0, features="patch", grid=2)
    assert patch.dim == 2 * 2 * 32 and patch.encode(frames).shape == (4, 128)


def test_patch_grid_at_full_resolution_is_the_patch_tokens():
    encoder = tiny_clip_encoder(features="patch", grid=4)  # 32 / 8 = 4 patches per side: no pooling
    frames = random_frames(h=32, w=32)
    x = frames.permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / encoder.std
    tokens = encoder.model(pixel_values=x).last_hidden_state[:, 1:]  # [N, 16, 32], row-major patches
    assert torch.allclose(encoder.encode(frames), tokens.reshape(4, -1), atol=1e-6)


def test_clip_save_load_identical(tmp_path):
    encoder = tiny_clip_encoder(seed=3, features="patch", grid=2)
    encoder.save(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    config = json.loads(json.dumps(encoder.to_config()))
    loaded = from_config(config, tmp_path)
    frames = random_frames()
    assert isinstance(loaded, CLIPVisualEncoder) and loaded.to_config() == encoder.to_config()
    assert torch.equal(loaded.encode(frames), encoder.encode(frames))


def test_clip_normalisation_from_preprocessor_config(tmp_path):
    encoder = tiny_clip_encoder()
    encoder.save(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.25] * 3}))
    loaded = CLIPVisualEncoder.from_pretrained(tmp_path)
    assert loaded.to_config()["image_mean"] == [0.5] * 3 and loaded.to_config()["image_std"] == [0.25] * 3
    assert not torch.allclose(loaded.encode(random_frames()), encoder.encode(random_frames()))


def test_clip_refuses_pickles_and_offline_hub_ids(tmp_path):
    tiny_clip_encoder().model.config.save_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(CheckpointError, match="pickle"):
        CLIPVisualEncoder.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="no-such-org/clip.*local directory"):
        CLIPVisualEncoder.from_pretrained("no-such-org/clip")
    with pytest.raises(CheckpointError, match="config.json"):
        from_config({"type": "clip"}, tmp_path / "empty")
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors" * 8)
    with pytest.raises(CheckpointError, match="cannot load"):
        CLIPVisualEncoder.from_pretrained(tmp_path)


# --- motion -----------------------------------------------------------------------------------------------

def test_motion_shifted_square_exact():
    encoder = MotionEncoder(size=64, grid=4)
    assert encoder.dim == 6 + 16 + 8 and encoder.image_size is None
    frames = torch.stack([square(20, 10), square(20, 13), square(17, 13)])  # right 3 px, then up 3 px
    out = encoder.encode(frames)
    assert torch.equal(out[0], torch.zeros(encoder.dim))  # first frame of a video
    changed = 2 * 16 * 3 / 4096  # pixels that flip between black and white
    for row in out[1:]:
        mean, std, mean_abs = row[:3].tolist()
        assert mean == pytest.approx(0, abs=1e-7)
        assert mean_abs == pytest.approx(changed, rel=1e-6)
        assert std == pytest.approx(math.sqrt(changed), rel=1e-5)
        cells, hist = row[3:19], row[19:27]
        assert cells.mean().item() == pytest.approx(changed, rel=1e-5)
        assert hist[0].item() == pytest.approx(1 - changed) and hist[-1].item() == pytest.approx(changed)
        assert hist[1:-1].abs().sum() == 0
    assert out[1, 27:29].tolist() == [0.0, 3 / 64]  # (dy, dx): moved right
    assert out[2, 27:29].tolist() == [-3 / 64, 0.0]  # moved up
    assert out[1, 29] > 0.9  # a clean shift gives a sharp correlation peak
    # where it moved: the square spans grid rows 1-2 and columns 0-1 (cells of 16 px)
    cells = out[1, 3:19].view(4, 4)
    assert (cells[1:3, 0:2] > 0).all() and cells[0].sum() == 0 and cells[:, 2:].sum() == 0


def test_motion_identical_frames_and_state():
    encoder = MotionEncoder()
    frames = random_frames(n=5, h=48, w=64)
    still = encoder.encode(frames[:1].repeat(3, 1, 1, 1))
    assert still[1:, :3].abs().max() == 0 and still[1:, 3:19].abs().max() == 0
    assert still[1:, 19].tolist() == [1.0, 1.0] and still[1:, 27:29].abs().max() == 0
    # state carries across calls; reset() forgets it
    encoder.reset()
    whole = encoder.encode(frames)
    encoder.reset()
    parts = torch.cat([encoder.encode(frames[:2]), encoder.encode(frames[2:3]), encoder.encode(frames[3:])])
    assert torch.allclose(parts, whole, atol=1e-6)
    encoder.reset()
    assert torch.equal(encoder.encode(frames[2:3]), torch.zeros(1, encoder.dim))


# --- concatenation and configs ----------------------------------------------------------------------------

def test_concat_dims_and_round_trip(tmp_path):
    encoder = tiny_clip_encoder(seed=2) + MotionEncoder(size=32, grid=2)
    assert isinstance(encoder, ConcatEncoder) and len(encoder.members) == 2
    assert encoder.dim == 32 + 6 + 4 + 8 and encoder.image_size == 32
    frames = random_frames(n=3)
    out = encoder.encode(frames)
    assert out.shape == (3, encoder.dim)
    assert torch.equal(out[:, :32], encoder.members[0].encode(frames))
    encoder.save(tmp_path)
    loaded = from_config(json.loads(json.dumps(encoder.to_config())), tmp_path)
    loaded.reset()
    encoder.reset()
    assert torch.equal(loaded.encode(frames), encoder.encode(frames))
    assert (encoder + MotionEncoder()).dim == encoder.dim + 30  # flattened, not nested


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown type 'vqgan'"):
        from_config({"type": "vqgan"}, None)
    with pytest.raises(ConfigError, match="members"):
        from_config({"type": "concat", "members": []}, None)
    with pytest.raises(ConfigError, match="pretrained"):
        from_config({"type": "clip"}, None)
    with pytest.raises(ConfigError, match="unknown key"):
        from_config({"type": "motion", "size": 64, "colour": True}, None)
    with pytest.raises(ConfigError):
        tiny_clip_encoder(features="mean")


# --- extraction over a video ------------------------------------------------------------------------------

def test_extract_features_chunked_equals_one_chunk(tmp_path):
    path = make_video(tmp_path / "a.mp4", 3, fps=10)
    encoder = tiny_clip_encoder() + MotionEncoder()
    one = extract_features(path, encoder, fps=2.0, chunk=100)
    many = extract_features(path, encoder, fps=2.0, chunk=2, progress=True)
    assert one.features.shape == (6, encoder.dim) and one.features.dtype == torch.float32
    assert one.timestamps.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert (one.duration, one.fps) == (3.0, 2.0)
    assert torch.allclose(many.features, one.features, atol=1e-6)
    assert torch.equal(many.timestamps, one.timestamps)
    # the square moves between samples: motion features are zero for the first frame only (mean |d| > 0 after)
    assert one.features[0, 32:].abs().sum() == 0 and (one.features[1:, 32 + 2] > 0).all()


def test_extract_features_seconds(tmp_path):
    path = make_video(tmp_path / "a.mkv", 3, fps=10)
    feats = extract_features(path, MotionEncoder(), fps=2.0, seconds=1.2)
    assert feats.timestamps.tolist() == [0.0, 0.5, 1.0] and feats.duration == 1.2
    assert extract_features(path, MotionEncoder(), fps=2.0, seconds=99).duration == 3.0
