"""Distribution metrics for generated music: Fréchet distance, density/coverage, KL divergence, cosine alignment.

Every function takes torch tensors or numpy arrays (anything `numpy.asarray` reads), computes in float64 and
returns Python floats. Embeddings are rows: `[N, D]` is N clips (or windows) of D features each.

    fad = frechet_distance(reference_embeddings, generated_embeddings)
    density, coverage = density_coverage(reference_embeddings, generated_embeddings, k=5)
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .errors import DataError

# Fewer samples than this make a covariance (and so a Fréchet distance) mostly noise, whatever D is.
MIN_SAMPLES = 10


def _as_array(x, name: str, ndim: int | None = 2) -> np.ndarray:
    """`x` (tensor, array or nested list) as a finite float64 numpy array, checked for rank."""
    if hasattr(x, "detach"):  # torch tensor on any device, with or without grad
        x = x.detach().cpu().double().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name}: cannot be read as numbers ({exc}); pass a tensor or array") from None
    if ndim is not None and arr.ndim != ndim:
        raise DataError(f"{name}: expected a {ndim}-d array, got shape {tuple(arr.shape)}")
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{name}: holds NaN or inf values; check the embedder that produced it")
    return arr


def _warn_small(n: int, dim: int, name: str, what: str) -> None:
    if n < MIN_SAMPLES or n < dim:
        warnings.warn(
            f"{what}: {name} has {n} samples of dimension {dim}; with fewer than max({MIN_SAMPLES}, D) samples "
            "the estimate is biased and noisy — compare numbers only between sets of equal size",
            RuntimeWarning,
            stacklevel=3,
        )


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix [D, D] (negative rounding noise clipped)."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def gaussian_statistics(x) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] of samples `x` [N, D] (N >= 2), in float64."""
    x = _as_array(x, "x")
    if x.shape[0] < 2:
        raise DataError(f"need at least 2 samples to estimate a covariance, got {x.shape[0]}")
    return x.mean(axis=0), np.cov(x, rowvar=False, ddof=1).reshape(x.shape[1], x.shape[1])


def frechet_distance_from_statistics(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    d² = |mu1 - mu2|² + tr(S1) + tr(S2) - 2 tr((S1^½ S2 S1^½)^½)

    tr((S1 S2)^½) is computed as the sum of square roots of the eigenvalues of the symmetric PSD matrix
    S1^½ S2 S1^½ (same spectrum as S1 S2), so singular or near-singular covariances (N < D) stay real and
    stable without scipy's general `sqrtm`.
    """
    mu1, mu2 = _as_array(mu1, "mu1", 1), _as_array(mu2, "mu2", 1)
    s1, s2 = _as_array(sigma1, "sigma1"), _as_array(sigma2, "sigma2")
    d = mu1.shape[0]
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise DataError(
            f"statistics disagree in dimension: mu1 {mu1.shape}, sigma1 {s1.shape}, mu2 {mu2.shape}, "
            f"sigma2 {s2.shape}; both sets must come from the same embedder"
        )
    root1 = _sqrtm_psd(s1)
    middle = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt)
    return max(value, 0.0)  # rounding can leave -1e-12 for identical sets


def frechet_distance(x, y) -> float:
    """Fréchet distance between Gaussians fitted to embeddings `x` [N, D] and `y` [M, D].

    This is FAD when the rows are audio embeddings (Kilgour et al. 2019). Symmetric; 0 for identical
    sets; a set translated by `s` is at |s|². Warns when N or M is below max(10, D).
    """
    x, y = _as_array(x, "x"), _as_array(y, "y")
    if x.shape[1] != y.shape[1]:
        raise DataError(f"x has dimension {x.shape[1]} but y has {y.shape[1]}; embed both with the same embedder")
    _warn_small(x.shape[0], x.shape[1], "x", "frechet_distance")
    _warn_small(y.shape[0], y.shape[1], "y", "frechet_distance")
    mu1, s1 = gaussian_statistics(x)
    mu2, s2 = gaussian_statistics(y)
    return frechet_distance_from_statistics(mu1, s1, mu2, s2)


def _pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances [N, M] from exact differences, so ties at a neighbour radius compare exactly."""
    import torch

    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    return torch.cdist(ta, tb, compute_mode="donot_use_mm_for_euclid_dist").numpy()


def density_coverage(real, fake, k: int = 5) -> tuple[float, float]:
    """Density and coverage of `fake` [M, D] against `real` [N, D] (Naeem et al. 2020).

    Each real sample i gets a ball of radius r_i = distance to its k-th nearest other real sample.
    density  = (1 / kM) Σ_j #{i : |fake_j - real_i| <= r_i}   (≈1 when fake matches real; unbounded above)
    coverage = (1 / N)  #{i : some fake_j within r_i}         (in [0, 1])
    """
    real, fake = _as_array(real, "real"), _as_array(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise DataError(f"real has dimension {real.shape[1]} but fake has {fake.shape[1]}; use one embedder")
    n = real.shape[0]
    if not 1 <= k < n:
        raise DataError(f"k={k} needs 1 <= k < number of real samples ({n}); lower k or add reference clips")
    if fake.shape[0] == 0:
        raise DataError("fake: no samples")
    if n < MIN_SAMPLES:
        warnings.warn(f"density_coverage: only {n} real samples; radii from k={k} neighbours are coarse",
                      RuntimeWarning, stacklevel=2)
    real_d = _pairwise_distances(real, real)
    # column 0 of each sorted row is the sample itself (distance 0), so index k is the k-th other sample
    radii = np.sort(real_d, axis=1)[:, k]
    inside = _pairwise_distances(fake, real) <= radii[None, :]  # [M, N]
    density = float(inside.sum() / (k * fake.shape[0]))
    coverage = float(inside.any(axis=0).mean())
    return density, coverage


def kl_divergence(p, q, eps: float = 1e-10) -> float:
    """Mean KL(p_i || q_i) in nats over per-clip class probabilities `p`, `q` [N, C] (or one pair [C]).

    Rows are renormalised to sum to 1 after adding `eps`, so multi-label (sigmoid) outputs and exact zeros
    are handled. In tokmusic's report p is the reference clip and q the generated one (as in AudioLDM and
    audiocraft): it grows when the generated music misses classes the reference has.
    """
    p, q = _as_array(p, "p", None), _as_array(q, "q", None)
    p = p[None] if p.ndim == 1 else p
    q = q[None] if q.ndim == 1 else q
    if p.ndim != 2 or p.shape != q.shape:
        raise DataError(f"p {tuple(p.shape)} and q {tuple(q.shape)} must both be [N, C] with equal shapes")
    if (p < 0).any() or (q < 0).any():
        raise DataError("p and q must be probabilities (non-negative); apply softmax or sigmoid to logits first")
    p = (p + eps) / (p + eps).sum(axis=1, keepdims=True)
    q = (q + eps) / (q + eps).sum(axis=1, keepdims=True)
    return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))


def cosine_similarities(a, b) -> np.ndarray:
    """Row-wise cosine similarity of paired embeddings `a`, `b` [N, D] -> float64 [N] in [-1, 1]."""
    a, b = _as_array(a, "a"), _as_array(b, "b")
    if a.shape != b.shape:
        raise DataError(f"a {a.shape} and b {b.shape} must be paired rows of equal dimension")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.sum(a * b, axis=1)
    # a zero vector has no direction: its similarity to anything is 0, not NaN
    return np.clip(np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0), -1.0, 1.0)


def cosine_alignment(a, b) -> float:
    """Mean cosine similarity of paired rows of `a`, `b` [N, D]: text–music (CLAP) or any joint-space score."""
    sims = cosine_similarities(a, b)
    if sims.size == 0:
        raise DataError("cosine_alignment: no pairs")
    return float(sims.mean())


def correlation(x, y) -> float:
    """Pearson correlation of two equally long 1-d signals (0 when either is constant)."""
    x, y = _as_array(x, "x", 1), _as_array(y, "y", 1)
    if x.shape != y.shape:
        raise DataError(f"correlation: lengths differ ({x.shape[0]} vs {y.shape[0]})")
    x, y = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y / denom) if denom > 0 else 0.0
