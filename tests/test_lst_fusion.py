import pytest
import torch

from tokmusic.lst_fusion import CLOCK_FEATURES, CLOCK_HARMONICS, LSTConfig, LSTFusion, clock_features, sample_long_term

CFG = dict(width=16, n_heads=2, short_layers=1, long_layers=1, fusion_layers=1, long_frames=4)


def inputs(b=2, ts=5, tl=4, d=12):
    g = torch.Generator().manual_seed(0)
    short = torch.randn(b, ts, d, generator=g)
    times = (torch.arange(ts, dtype=torch.float32) / 2).expand(b, -1)
    long = torch.randn(b, tl, d, generator=g)
    long_times = torch.linspace(0, 6, tl).expand(b, -1)
    return short, times, torch.ones(b, ts, dtype=torch.bool), long, long_times, torch.ones(b, tl, dtype=torch.bool)


def test_shapes():
    lst = LSTFusion(12, 24, LSTConfig(**CFG)).eval()
    assert lst(*inputs()).shape == (2, 5, 24)
    off = LSTFusion(12, 24, LSTConfig(enabled=False, **CFG)).eval()
    short, times, valid, _, _, _ = inputs()
    assert off(short, times, valid).shape == (2, 5, 24)
    assert not hasattr(off, "long")


def test_padding_is_ignored():
    torch.manual_seed(0)
    lst = LSTFusion(12, 24, LSTConfig(**CFG)).eval()
    short, times, valid, long, long_times, long_valid = inputs(b=1)
    ref = lst(short, times, valid, long, long_times, long_valid)
    # pad both branches with garbage frames marked invalid: the real frames' outputs do not change
    pad = lambda x, n: torch.cat([x, 100 * torch.randn(1, n, x.shape[-1])], 1)  # noqa: E731
    out = lst(pad(short, 3), torch.cat([times, torch.zeros(1, 3)], 1),
              torch.cat([valid, torch.zeros(1, 3, dtype=torch.bool)], 1),
              pad(long, 2), torch.cat([long_times, torch.zeros(1, 2)], 1),
              torch.cat([long_valid, torch.zeros(1, 2, dtype=torch.bool)], 1))
    torch.testing.assert_close(out[:, :5], ref, atol=1e-5, rtol=0)


def test_long_term_context_matters_only_when_enabled():
    torch.manual_seed(0)
    lst = LSTFusion(12, 24, LSTConfig(**CFG)).eval()
    short, times, valid, long, long_times, long_valid = inputs(b=1)
    a = lst(short, times, valid, long, long_times, long_valid)
    b = lst(short, times, valid, torch.randn_like(long), long_times, long_valid)
    assert not torch.allclose(a, b)


def test_short_and_long_term_share_one_clock():
    # the same frames seen from another place in the video fuse differently
    torch.manual_seed(0)
    lst = LSTFusion(12, 24, LSTConfig(**CFG)).eval()
    short, times, valid, long, long_times, long_valid = inputs(b=1)
    here = lst(short, times, valid, long, long_times, long_valid)
    later = lst(short, times + 2.0, valid, long, long_times, long_valid)
    assert not torch.allclose(here, later, atol=1e-4)
    # attention between the branches is relative on that clock: without the clock features, shifting both
    # branches by the same time changes nothing; with them, each frame also knows its own place
    shifted = lst(short, times + 2.0, valid, long, long_times + 2.0, long_valid)
    assert not torch.allclose(shifted, here, atol=1e-4)
    with torch.no_grad():
        lst.clock.weight.zero_()
        lst.clock.bias.zero_()
    torch.testing.assert_close(lst(short, times + 2.0, valid, long, long_times + 2.0, long_valid),
                               lst(short, times, valid, long, long_times, long_valid), atol=1e-5, rtol=0)


def test_normalize_standardises_each_channel_by_the_training_statistics():
    torch.manual_seed(0)
    lst = LSTFusion(12, 24, LSTConfig(normalize=True, **CFG)).eval()
    short, times, valid, long, long_times, long_valid = inputs(b=1)
    unset = lst(short, times, valid, long, long_times, long_valid)
    mean, std = torch.linspace(-1, 1, 12), torch.linspace(0.001, 3, 12)
    lst.set_feature_statistics(mean, std)
    assert lst.feature_std[0] == 0.01 and lst.feature_std[-1] == 3  # a near-constant channel gets the floor
    fitted = lst(short * lst.feature_std + mean, times, valid, long * lst.feature_std + mean, long_times, long_valid)
    torch.testing.assert_close(fitted, unset, atol=1e-5, rtol=0)  # (x - mean) / std sees the same frames again
    assert {"feature_mean", "feature_std"} <= set(lst.state_dict())  # saved with the weights
    plain = LSTFusion(12, 24, LSTConfig(**CFG))
    assert "feature_mean" not in plain.state_dict()  # stages saved without it load as before
    with pytest.raises(ValueError, match="normalize=True"):
        plain.set_feature_statistics(mean, std)


def test_clock_features():
    times = torch.tensor([[0.0, 5.0, 10.0]])
    f = clock_features(times, torch.tensor([10.0]))
    assert f.shape == (1, 3, CLOCK_FEATURES)
    assert torch.allclose(f[..., -CLOCK_HARMONICS:], torch.cos(torch.pi * torch.tensor([0.0, 0.5, 1.0])[:, None]
                                                               * torch.arange(1, CLOCK_HARMONICS + 1)))
    assert not torch.allclose(f[0, 0], f[0, 2])  # the opening and the end differ


def test_sample_long_term_spreads_over_the_whole_video():
    feats = torch.arange(100.0).view(100, 1)
    picked, index = sample_long_term(feats, 5)
    assert index.tolist() == [0, 25, 50, 74, 99]
    assert torch.equal(picked.flatten(), index.float())
    picked, index = sample_long_term(feats[:3], 5)
    assert index.tolist() == [0, 1, 2]


def test_short_channels_limit_what_the_short_term_branch_reads():
    torch.manual_seed(0)
    short, times, valid, long, long_times, long_valid = inputs(b=1)
    alone = LSTFusion(12, 24, LSTConfig(**{**CFG, "enabled": False}, short_channels=[8, 12])).eval()
    assert alone.short_in.in_features == 4
    out = alone(short, times, valid)
    other = short.clone()
    other[..., :8] = torch.randn(other[..., :8].shape)
    torch.testing.assert_close(alone(other, times, valid), out)  # channels 0-7 are not read
    other[..., 8] += 1.0
    assert not torch.allclose(alone(other, times, valid), out)
    # with the long-term branch on, the other channels still reach the output through it
    both = LSTFusion(12, 24, LSTConfig(**CFG, short_channels=[8, 12])).eval()
    changed = long.clone()
    changed[..., 0] += 1.0
    assert not torch.allclose(both(short, times, valid, changed, long_times, long_valid),
                              both(short, times, valid, long, long_times, long_valid))


def test_long_channels_limit_what_the_long_term_branch_reads():
    torch.manual_seed(0)
    short, times, valid, long, long_times, long_valid = inputs(b=1)
    fusion = LSTFusion(12, 24, LSTConfig(**CFG, short_channels=[8, 12], long_channels=[10, 12])).eval()
    assert fusion.long_in.in_features == 2
    out = fusion(short, times, valid, long, long_times, long_valid)
    other = long.clone()
    other[..., :10] = torch.randn(other[..., :10].shape)
    torch.testing.assert_close(fusion(short, times, valid, other, long_times, long_valid), out)  # 0-9 unread
    other[..., 11] += 1.0
    assert not torch.allclose(fusion(short, times, valid, other, long_times, long_valid), out)


@pytest.mark.parametrize("name", ["short_channels", "long_channels"])
@pytest.mark.parametrize("channels", [[0, 13], [5, 5], [7, 2]])
def test_channels_outside_the_features_are_a_config_error(name, channels):
    from tokmusic.errors import ConfigError
    from tokmusic.stage import StageConfig

    with pytest.raises(ConfigError, match=rf"lst.{name}=.* visual_dim=12"):
        StageConfig("semantic", target_vocab=8, target_codebooks=1, target_rate=25.0, visual_dim=12,
                    lst=LSTConfig(**CFG, **{name: channels}))
    for bad in ([1], [0.5, 3], "8:12"):
        with pytest.raises(ConfigError, match=name):
            StageConfig("semantic", target_vocab=8, target_codebooks=1, target_rate=25.0, visual_dim=12,
                        lst={**CFG, name: bad})
