import pytest
import torch

from tokmusic.cards import stage_config
from tokmusic.compatibility import PipelineShape
from tokmusic.errors import ConfigError, DataError
from tokmusic.lst_fusion import sample_long_term
from tokmusic.windows import token_window, visual_window
from tokmusic.stage import Conditioning, Stage
from tokmusic.training.config import TrainConfig
from tokmusic.training.dataset import StageDataset, StepSampler, collate
from tokmusic.training.shards import ShardWriter, TokenShards, build_index, finished_items, open_data_dir

SHAPE = PipelineShape(visual_dim=6, control_dim=4, codebook_size=16, n_coarse=2, n_fine=2, frame_rate=50.0,
                      semantic_vocab=8, semantic_rate=25.0)
META = {"format_version": 1, "fps": 2.0, "sample_rate": 16000, "visual_dim": 6, "control_dim": 4,
        "codebook_size": 16, "n_q": 4, "n_coarse": 2, "frame_rate": 50.0, "semantic_vocab": 8, "semantic_rate": 25.0}
TINY = {"d_model": 16, "n_heads": 2, "encoder_layers": 1, "decoder_layers": 1, "d_ff": 32, "dropout": 0.0,
        "lst": {"width": 16, "n_heads": 2, "short_layers": 1, "long_layers": 1, "fusion_layers": 1, "long_frames": 4}}


def item(seconds, seed):
    g = torch.Generator().manual_seed(seed)
    frames = int(seconds * 2)
    return {
        "visual": torch.randn(frames, 6, generator=g).half(),
        "times": torch.arange(frames) / 2.0,
        "codes": torch.randint(16, (4, int(seconds * 50)), generator=g).short(),
        "semantic": torch.randint(8, (int(seconds * 25),), generator=g).int(),
        "control": torch.randn(4, generator=g),
    }


@pytest.fixture
def data_dir(tmp_path):
    out = open_data_dir(tmp_path / "data", META)
    writer = ShardWriter(out, shard_size=2)
    for i, seconds in enumerate([4.0, 2.5, 6.0]):
        writer.add({"key": f"k{i}", "line": i + 1, "video": f"v{i}.mp4", "split": "train", "text": None,
                    "duration": seconds}, item(seconds, i))
    writer.fail({"key": "bad", "line": 4, "video": "bad.mp4", "reason": "VideoError: corrupt"})
    writer.flush()
    build_index(out)
    return out


def config(kind, **model):
    return stage_config({"kind": kind, "model": {**TINY, **model}}, SHAPE)


def test_index_and_finished_items(data_dir):
    shards = TokenShards(data_dir, META)
    assert [e["key"] for e in shards.entries("train")] == ["k0", "k1", "k2"]
    assert shards.index["failed"][0]["reason"] == "VideoError: corrupt"
    assert set(finished_items(data_dir)) == {"k0", "k1", "k2", "bad"}
    loaded = shards.load(shards.entries()[2])
    assert loaded["codes"].dtype == torch.long and loaded["codes"].shape == (4, 300)
    assert loaded["visual"].dtype == torch.float32


def test_other_pipeline_is_refused(data_dir):
    with pytest.raises(DataError, match="codebook_size: data has 16, pipeline has 32"):
        TokenShards(data_dir, {**META, "codebook_size": 32})
    with pytest.raises(DataError, match="made with another pipeline"):
        open_data_dir(data_dir, {**META, "visual_dim": 7})


def test_crops_align_like_generation(data_dir):
    cfg = config("coarse", window=2.0, overlap=1.0)
    shards = TokenShards(data_dir, META)
    ds = StageDataset(shards, cfg, crop_seconds=2.0, seed=5)
    full = shards.load(ds.entries[2])
    crop = ds[(2, 7)]
    assert crop["target"].shape == (2, 100) and crop["source"].shape == (1, 50)
    # find t0 from the target and check every modality was cut at the same t0 by generation's functions
    codes = full["codes"][:2]
    starts = [s for s in range(0, 201) if torch.equal(codes[:, s:s + 100], crop["target"])]
    t0 = starts[0] / 50
    assert torch.equal(crop["source"], token_window(full["semantic"][None], 25.0, t0, t0 + 2.0))
    v, vt = visual_window(full["visual"], full["times"], t0, t0 + 2.0)
    assert torch.equal(crop["visual"], v) and torch.equal(crop["visual_times"], vt)
    assert torch.equal(crop["long"], sample_long_term(full["visual"], 4)[0])
    assert "control" not in crop  # coarse has no control input by default
    again = StageDataset(TokenShards(data_dir, META), cfg, crop_seconds=2.0, seed=5)[(2, 7)]
    assert all(torch.equal(crop[k], again[k]) for k in crop)  # deterministic


def test_windows_tile_an_item_as_generation_does(data_dir):
    """6 s of coarse codes in 2.5 s windows with 1 s overlap: starts 0, 1.5, 3, then the last moved back to 3.5 s;
    each window is the crop of its span, and the tokens no earlier window holds make up the item exactly once."""
    cfg = config("coarse", window=2.5, overlap=1.0)
    shards = TokenShards(data_dir, META)
    ds = StageDataset(shards, cfg, crop_seconds=2.5)
    full = shards.load(ds.entries[2])
    windows = ds.windows(2)
    assert [(w["first"], w["new"]) for w in windows] == [(0, 0), (75, 50), (150, 50), (175, 100)]
    assert all(w["target"].shape == (2, 125) for w in windows)
    assert torch.equal(torch.cat([w["target"][:, w["new"]:] for w in windows], 1), full["codes"][:2])
    for w in windows:
        t0 = w["first"] / 50
        assert torch.equal(w["source"], token_window(full["semantic"][None], 25.0, t0, t0 + 2.5))
        assert torch.equal(w["visual"], visual_window(full["visual"], full["times"], t0, t0 + 2.5)[0])
    assert [(w["first"], w["new"]) for w in ds.windows(1)] == [(0, 0)]  # a 2.5 s item is one window


def test_short_item_is_padded_in_batch(data_dir):
    cfg = config("semantic", window=4.0, overlap=1.0)
    ds = StageDataset(TokenShards(data_dir, META), cfg, crop_seconds=4.0)
    batch = collate([ds[(0, 0)], ds[(1, 1)]])
    assert batch["target"].shape == (2, 1, 100)
    assert batch["target_valid"].sum(1).tolist() == [100, 62]  # the 2.5 s item holds 62 tokens
    assert batch["visual"].shape == (2, 8, 6) and batch["visual_valid"].sum(1).tolist() == [8, 5]
    assert batch["control"].shape == (2, 4) and batch["control_valid"].all()
    stage = Stage(cfg).train()
    assert batch["keep_control"].tolist() == [False, False]
    cond = Conditioning(**{k: v for k, v in batch.items() if k not in ("target", "target_valid", "keep_control")})
    loss = stage.loss(cond, batch["target"], batch["target_valid"], batch["keep_control"])
    assert torch.isfinite(loss)


def test_keep_control_reaches_the_batch(tmp_path):
    # the manifest's keep_control, recorded by preprocessing in the item's info, marks that item's crops
    out = open_data_dir(tmp_path / "data", META)
    writer = ShardWriter(out, shard_size=2)
    for i, keep in enumerate([False, True]):
        info = {"key": f"k{i}", "line": i + 1, "video": f"v{i}.mp4", "split": "train", "text": None,
                "duration": 4.0, **({"keep_control": True} if keep else {})}
        writer.add(info, item(4.0, i))
    writer.flush()
    build_index(out)
    ds = StageDataset(TokenShards(out, META), config("semantic", window=4.0, overlap=1.0), crop_seconds=4.0)
    assert collate([ds[(0, 0)], ds[(1, 1)]])["keep_control"].tolist() == [False, True]


def test_fine_stage_reads_coarse_codes(data_dir):
    cfg = config("fine", window=1.0, overlap=0.5)
    shards = TokenShards(data_dir, META)
    crop = StageDataset(shards, cfg, crop_seconds=1.0)[(0, 3)]
    full = shards.load(shards.entries()[0])["codes"]
    assert crop["target"].shape == (2, 50) and crop["source"].shape == (2, 50)
    start = [s for s in range(151) if torch.equal(full[2:, s:s + 50], crop["target"])][0]
    assert torch.equal(full[:2, start:start + 50], crop["source"])
    assert "visual" not in crop and "control" not in crop


def test_step_sampler_partitions_and_resumes():
    full = StepSampler(5, 2, accum=2, rank=0, world=2, seed=1)
    other = StepSampler(5, 2, accum=2, rank=1, world=2, seed=1)
    it0, it1 = iter(full), iter(other)
    first = [next(it0) for _ in range(6)]
    second = [next(it1) for _ in range(6)]
    numbers = sorted(n for b in first + second for _, n in b)
    assert numbers == list(range(24))  # every sample number once across processes and micro-steps
    epoch0 = [i for b in first + second for i, n in b if n < 5]
    assert sorted(epoch0) == [0, 1, 2, 3, 4]  # each epoch is a permutation
    resumed = iter(StepSampler(5, 2, accum=2, rank=0, world=2, seed=1, start_step=1))
    assert [next(resumed) for _ in range(4)] == first[2:]


def test_train_config_checks():
    cfg = config("semantic")
    assert TrainConfig.from_dict({}).crop_for(cfg) == 10.0
    with pytest.raises(ConfigError, match="window .* is longer than train.crop_seconds"):
        TrainConfig.from_dict({"crop_seconds": 3.0}).crop_for(cfg)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['lr_max'\]"):
        TrainConfig.from_dict({"lr_max": 1.0}, where="card.json")
    with pytest.raises(ConfigError, match="train.batch_size must be a positive integer"):
        TrainConfig.from_dict({"batch_size": 0})
    with pytest.raises(ConfigError, match="mixed_precision"):
        TrainConfig.from_dict({"mixed_precision": "fp8"})


def test_visual_statistics_over_evenly_spread_items(data_dir):
    shards = TokenShards(data_dir, META)
    entries = shards.entries("train")

    def direct(*picked):
        frames = torch.cat([shards.load(entries[i])["visual"] for i in picked]).double()
        return frames.mean(0).float(), frames.std(0, unbiased=False).float()

    for max_items, picked in ((256, (0, 1, 2)), (2, (0, 2)), (1, (0,))):
        mean, std = shards.visual_statistics("train", max_items=max_items)
        want_mean, want_std = direct(*picked)
        torch.testing.assert_close(mean, want_mean)
        torch.testing.assert_close(std, want_std)
    with pytest.raises(DataError, match="no 'valid' items"):
        shards.visual_statistics("valid")
