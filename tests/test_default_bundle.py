"""The default pipeline: the demo bundle in tokmusic/pretrained/demo, loaded once and lazily."""

import json
from pathlib import Path

import pytest
import torch

import tokmusic
from tokmusic import default

from media import make_video

BUNDLE = default.BUNDLE_DIR
pytestmark = pytest.mark.skipif(not (BUNDLE / "pipeline.json").is_file(),
                                reason="no demo bundle installed (recipes/build_demo.py --install)")


def test_bundle_is_safetensors_and_json_within_30_mb():
    files = [f for f in BUNDLE.rglob("*") if f.is_file()]
    assert (BUNDLE / "pipeline.json").is_file()
    assert {f.suffix for f in files} <= {".json", ".safetensors"}  # no pickles, nothing else
    assert sum(f.stat().st_size for f in files) <= 30 * 1024 * 1024
    config = json.loads((BUNDLE / "pipeline.json").read_text())
    # the pretrained parts are read from their packages, not copied into the bundle
    assert [m["type"] for m in config["visual"]["members"]] == ["efficientnet_lite0", "motion", "colour"]
    assert config["control"]["type"] == "sentence_audio"
    assert not list((BUNDLE / "visual").rglob("*.safetensors"))


def test_generate_without_a_pipeline_uses_the_bundle_once(tmp_path, monkeypatch):
    monkeypatch.setattr(default, "_DEFAULT", None)
    loads = []
    real = tokmusic.Pipeline.from_pretrained.__func__

    def counting(cls, path, *a, **k):
        loads.append(path)
        return real(cls, path, *a, **k)

    monkeypatch.setattr(tokmusic.Pipeline, "from_pretrained", classmethod(counting))
    clip = make_video(tmp_path / "clip.mp4", 2.0, fps=8, size=(64, 64))
    first = tokmusic.generate(clip, seed=0, progress=False)
    second = tokmusic.generate(clip, "a slow Bach chorale played on piano", seed=0, progress=False)
    assert loads == [BUNDLE]  # loaded on first use, kept after
    for music in (first, second):
        assert music.sample_rate == 16000
        assert music.waveform.shape == (1, 32000)
        assert torch.isfinite(music.waveform).all() and music.waveform.abs().max() > 1e-3
    assert not torch.equal(first.waveform, second.waveform)  # the prompt changes the music


def test_bundle_loads_without_its_empty_folders(tmp_path):
    """git keeps no empty folder: the visual part (weights read from its package) has none in a checkout."""
    import shutil

    copy = tmp_path / "demo"
    shutil.copytree(BUNDLE, copy)
    shutil.rmtree(copy / "visual", ignore_errors=True)
    pipe = tokmusic.Pipeline.from_pretrained(copy)
    assert pipe.visual_encoder.dim == 1317  # EfficientNet-Lite0's 1280 + motion's 31 (speed last) + colour's 6
    (copy / "codec" / "model.safetensors").unlink()  # a part that has files still needs them
    with pytest.raises(tokmusic.CheckpointError):
        tokmusic.Pipeline.from_pretrained(copy)


@pytest.mark.parametrize("kind", ["semantic", "coarse", "fine"])
def test_the_build_gives_the_bundles_model_and_sampling(kind):
    """stages/<kind>-demo.json is what recipes/build_demo.py trains: each setting it names is the bundle's."""
    card = json.loads((Path(__file__).parents[1] / "stages" / f"{kind}-demo.json").read_text())["model"]
    shipped = json.loads((BUNDLE / kind / "config.json").read_text())["tokmusic_stage"]
    for name, value in card.items():
        if name in ("use_visual", "use_control"):  # the card's switches; the config holds what they decide
            continue
        if isinstance(value, dict):  # the card names some fields of a nested block (lst)
            assert {k: shipped[name][k] for k in value} == value, name
        else:
            assert shipped[name] == value, name
