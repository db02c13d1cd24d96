"""tokmusic.evaluation.feature_probe: a linear probe finds a property in the channels that show it, not in others."""

import pytest
import torch

from tokmusic.errors import DataError
from tokmusic.evaluation.feature_probe import channel_groups, linear_probe
from tokmusic.visual_encoders import ColourEncoder, MotionEncoder


def frames(n, seed):
    """[n, 8] features and [n] labels: channels 0-3 show the label (shifted by +-1 under noise), 4-7 are noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g).float()
    x = torch.randn(n, 8, generator=g)
    x[:, :4] += (2 * y[:, None] - 1) * 1.5
    return x, y


def test_the_probe_finds_the_label_where_it_is_shown_and_not_elsewhere():
    (xt, yt), (xv, yv) = frames(400, 0), frames(400, 1)
    shown = linear_probe(xt[:, :4], yt, xv[:, :4], yv)
    noise = linear_probe(xt[:, 4:], yt, xv[:, 4:], yv)
    assert shown["held_out_accuracy"] > 0.95 and shown["train_accuracy"] > 0.95
    assert noise["held_out_accuracy"] < 0.6
    assert 0.5 <= shown["chance"] < 0.6 and shown["train_frames"] == shown["held_out_frames"] == 400


def test_the_probe_refuses_one_label_and_no_frames():
    x, y = frames(50, 0)
    with pytest.raises(DataError, match="only one label"):
        linear_probe(x, torch.ones(50), x, y)
    with pytest.raises(DataError, match="training and held-out frames"):
        linear_probe(x[:0], y[:0], x, y)


def test_channel_groups_follow_the_members():
    encoder = MotionEncoder(size=32, grid=2) + ColourEncoder(grid=2)
    assert channel_groups(encoder) == [("motion", 0, 18), ("colour", 18, 33)]
    assert channel_groups(ColourEncoder()) == [("colour", 0, 6)]
