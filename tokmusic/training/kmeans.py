"""Mini-batch k-means (Sculley 2010) for the semantic tokenizer's centroids, in torch."""

from __future__ import annotations

import torch

from ..errors import DataError


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: x ``[N, D]`` -> centroids ``[k, D]``."""
    n = x.shape[0]
    centroids = [x[int(torch.randint(n, (1,), generator=generator))]]
    nearest = torch.cdist(x, centroids[0][None]).squeeze(1) ** 2
    for _ in range(1, k):
        total = float(nearest.sum())
        if total <= 0:  # fewer distinct points than clusters: repeat random points
            pick = int(torch.randint(n, (1,), generator=generator))
        else:
            pick = int(torch.multinomial(nearest / total, 1, generator=generator))
        centroids.append(x[pick])
        nearest = torch.minimum(nearest, (x - x[pick]).pow(2).sum(-1))
    return torch.stack(centroids)


def fit_kmeans(x: torch.Tensor, k: int, *, iterations: int = 100, batch_size: int = 4096, seed: int = 0,
               init_sample: int = 20_000) -> torch.Tensor:
    """Fit ``k`` centroids to frames ``x [N, D]`` -> ``[k, D]`` (float32); the same seed gives the same result.

    Each iteration assigns a random mini-batch to its nearest centroids and moves each centroid towards its
    points with a per-centroid learning rate 1 / (points seen so far).
    """
    if x.dim() != 2 or x.shape[0] < k:
        raise DataError(f"k-means needs at least k={k} feature frames of shape [N, D]; got {tuple(x.shape)}. "
                        "Use fewer --clusters or more audio")
    x = x.detach().float()  # centroids are statistics, not part of any graph
    g = torch.Generator().manual_seed(seed)
    init = x[torch.randperm(x.shape[0], generator=g)[:init_sample]]
    centroids = kmeans_plus_plus(init, k, g).clone()
    counts = torch.zeros(k)
    for _ in range(iterations):
        batch = x[torch.randint(x.shape[0], (min(batch_size, x.shape[0]),), generator=g)]
        assign = torch.cdist(batch, centroids).argmin(1)
        hits = torch.bincount(assign, minlength=k).float()
        sums = torch.zeros_like(centroids).index_add_(0, assign, batch)
        counts += hits
        seen = hits > 0
        # centroid <- centroid + (hits / counts) * (mean of its batch points - centroid)
        rate = (hits[seen] / counts[seen])[:, None]
        centroids[seen] += rate * (sums[seen] / hits[seen][:, None] - centroids[seen])
    return centroids


def assign(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Nearest centroid of each frame: x ``[N, D]`` -> Long ``[N]``."""
    return torch.cdist(x.float(), centroids.float()).argmin(1)


def inertia(x: torch.Tensor, centroids: torch.Tensor) -> float:
    """Mean squared distance of frames to their nearest centroid."""
    return float(torch.cdist(x.float(), centroids.float()).min(1).values.pow(2).mean())
