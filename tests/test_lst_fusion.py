import torch

from tokmusic.lst_fusion import LSTConfig, LSTFusion, sample_long_term

CFG = dict(width=16, n_heads=2, short_layers=1, long_layers=1, fusion_layers=1, long_frames=4)


def inputs(b=2, ts=5, tl=4, d=12):
    g = torch.Generator().manual_seed(0)
    short = torch.randn(b, ts, d, generator=g)
    times = (torch.arange(ts, dtype=torch.float32) / 2).expand(b, -1)
    long = torch.randn(b, tl, d, generator=g)
    return short, times, torch.ones(b, ts, dtype=torch.bool), long, torch.ones(b, tl, dtype=torch.bool)


def test_shapes():
    lst = LSTFusion(12, 24, LSTConfig(**CFG)).eval()
    assert lst(*inputs()).shape == (2, 5, 24)
    off = LSTFusion(12, 24, LSTConfig(enabled=False, **CFG)).eval()
    short, times, valid, _, _ = inputs()
    assert off(short, times, valid).shape == (2, 5, 24)
    assert not hasattr(off, "long")


def test_padding_is_ignored():
    torch.manual_seed(0)
    lst = LSTFusion(12, 24, LSTConfig(**CFG)).eval()
    short, times, valid, long, long_valid = inputs(b=1)
    ref = lst(short, times, valid, long, long_valid)
    # pad both branches with garbage frames marked invalid: the real frames' outputs do not change
    pad = lambda x, n: torch.cat([x, 100 * torch.randn(1, n, x.shape[-1])], 1)  # noqa: E731
    out = lst(pad(short, 3), torch.cat([times, torch.zeros(1, 3)], 1),
              torch.cat([valid, torch.zeros(1, 3, dtype=torch.bool)], 1),
              pad(long, 2), torch.cat([long_valid, torch.zeros(1, 2, dtype=torch.bool)], 1))
    torch.testing.assert_close(out[:, :5], ref, atol=1e-5, rtol=0)


def test_long_term_context_matters_only_when_enabled():
    torch.manual_seed(0)
    lst = LSTFusion(12, 24, LSTConfig(**CFG)).eval()
    short, times, valid, long, long_valid = inputs(b=1)
    a = lst(short, times, valid, long, long_valid)
    b = lst(short, times, valid, torch.randn_like(long), long_valid)
    assert not torch.allclose(a, b)


def test_sample_long_term_spreads_over_the_whole_video():
    feats = torch.arange(100.0).view(100, 1)
    picked, index = sample_long_term(feats, 5)
    assert index.tolist() == [0, 25, 50, 74, 99]
    assert torch.equal(picked.flatten(), index.float())
    picked, index = sample_long_term(feats[:3], 5)
    assert index.tolist() == [0, 1, 2]
