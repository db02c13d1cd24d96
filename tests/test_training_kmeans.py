import pytest
import torch

from tokmusic.errors import DataError
from tokmusic.training.kmeans import assign, fit_kmeans, inertia


def blobs(seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    labels = torch.arange(4).repeat_interleave(200)
    return centres[labels] + 0.3 * torch.randn(800, 2, generator=g), labels, centres


def test_finds_separated_clusters():
    x, labels, centres = blobs()
    c = fit_kmeans(x, 4, iterations=50, batch_size=256, seed=1)
    # every true centre has a fitted centroid within 0.2, and assignments agree with the truth up to renaming
    assert torch.cdist(centres, c).min(1).values.max() < 0.2
    ids = assign(x, c)
    for k in range(4):
        assert ids[labels == k].unique().numel() == 1
    assert inertia(x, c) < 0.3


def test_deterministic_given_seed():
    x, _, _ = blobs()
    assert torch.equal(fit_kmeans(x, 4, iterations=5, seed=3), fit_kmeans(x, 4, iterations=5, seed=3))


def test_too_few_frames():
    with pytest.raises(DataError, match="at least k=8"):
        fit_kmeans(torch.randn(5, 3), 8)
