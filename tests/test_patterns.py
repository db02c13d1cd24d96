import pytest
import torch

from tokmusic import ConfigError
from tokmusic.patterns import PATTERNS, get_pattern


def codes(b=2, k=3, t=5):
    return torch.arange(b * k * t).view(b, k, t) + 1


@pytest.mark.parametrize("name", PATTERNS)
@pytest.mark.parametrize("t", [0, 1, 4, 7])
def test_round_trip(name, t):
    pattern = get_pattern(name, 3, empty_id=-1)
    x = codes(t=t)
    seq = pattern.build(x)
    assert seq.shape == (2, 3, pattern.num_steps(t))
    assert pattern.num_timesteps(seq.shape[-1]) == t
    assert torch.equal(pattern.revert(seq), x)
    # every code appears exactly once, the rest is empty
    assert (seq != -1).sum() == x.numel()


def test_delay_layout_exact():
    pattern = get_pattern("delay", 3, empty_id=0)
    x = torch.tensor([[[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]])
    expected = torch.tensor([[[1, 2, 3, 4, 0, 0], [0, 5, 6, 7, 8, 0], [0, 0, 9, 10, 11, 12]]])
    assert torch.equal(pattern.build(x), expected)


def test_custom_delays_and_flatten_layout():
    pattern = get_pattern("delay", 2, empty_id=0, delays=[0, 2])
    assert torch.equal(pattern.build(torch.tensor([[[1, 2], [3, 4]]])), torch.tensor([[[1, 2, 0, 0], [0, 0, 3, 4]]]))
    flat = get_pattern("flatten", 2, empty_id=0)
    assert torch.equal(flat.build(torch.tensor([[[1, 2], [3, 4]]])), torch.tensor([[[1, 0, 2, 0], [0, 3, 0, 4]]]))


def test_coarse_first_layout_exact():
    pattern = get_pattern("coarse_first", 3, empty_id=0, n_coarse=1)
    x = torch.tensor([[[1, 2], [3, 4], [5, 6]]])
    expected = torch.tensor([[[1, 2, 0, 0, 0, 0], [0, 0, 0, 3, 4, 0], [0, 0, 0, 0, 5, 6]]])
    assert torch.equal(pattern.build(x), expected)


def test_revert_logits():
    pattern = get_pattern("delay", 3, empty_id=-1)
    x = codes(t=4)
    logits = torch.nn.functional.one_hot(pattern.build(x).clamp(min=0), 64).float()  # [B, K, S, V]
    assert torch.equal(pattern.revert(logits).argmax(-1), x)


def test_step_order_respects_codebooks():
    # with delay, codebook k of timestep t comes strictly after codebook k-1 of the same timestep
    step = get_pattern("delay", 4).step_of(6)
    assert (step[1:] > step[:-1]).all()
    step = get_pattern("coarse_first", 4, n_coarse=2).step_of(6)
    assert step[2:].min() > step[:2].max()


def test_errors():
    with pytest.raises(ConfigError, match="unknown codebook pattern 'zigzag'"):
        get_pattern("zigzag", 4)
    with pytest.raises(ConfigError):
        get_pattern("delay", 3, delays=[1, 2, 3])
    with pytest.raises(ConfigError):
        get_pattern("coarse_first", 2, n_coarse=2)
    with pytest.raises(ConfigError):
        get_pattern("delay", 3).build(torch.zeros(1, 2, 4, dtype=torch.long))
