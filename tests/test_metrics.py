import math
import warnings

import numpy as np
import pytest
import torch

from tokmusic.errors import DataError, TokmusicError
from tokmusic.metrics import (correlation, cosine_alignment, cosine_similarities, density_coverage,
                              frechet_distance, frechet_distance_from_statistics, kl_divergence)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args, **kwargs)


def _random_spd(rng, d, scale=1.0):
    a = rng.standard_normal((d, d))
    return scale * (a @ a.T / d + 0.1 * np.eye(d))


# --- Fréchet distance -------------------------------------------------------------------------------

def test_frechet_from_samples_converges_to_analytic_value():
    rng = np.random.default_rng(0)
    mu1, mu2 = np.array([0.0, 1.0, -1.0]), np.array([0.5, 0.0, 1.0])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 1.0])
    # diagonal covariances: d² = |mu1 - mu2|² + Σ (√a - √b)²
    exact = float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2))
    errors = []
    for n in (500, 200_000):
        x = mu1 + np.sqrt(var1) * rng.standard_normal((n, 3))
        y = mu2 + np.sqrt(var2) * rng.standard_normal((n, 3))
        errors.append(abs(frechet_distance(x, y) - exact))
    assert errors[1] < 0.005 * exact
    assert errors[1] < errors[0]


def test_frechet_statistics_match_scipy_sqrtm_on_full_covariances():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(1)
    d = 6
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d, 3.0)
    covmean = scipy_linalg.sqrtm(s1 @ s2).real
    expected = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))
    assert frechet_distance_from_statistics(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_of_identical_sets_is_zero():
    x = np.random.default_rng(2).standard_normal((50, 8)) * 3 + 7
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)


def test_frechet_of_translated_set_is_squared_shift():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 5))
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    assert frechet_distance(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-9)


def test_frechet_is_symmetric_and_accepts_tensors_and_arrays():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((60, 4)), rng.standard_normal((80, 4)) + 1
    ref = frechet_distance(x, y)
    assert frechet_distance(y, x) == pytest.approx(ref, rel=1e-9)
    assert frechet_distance(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(ref, rel=1e-12)
    # float32 input is promoted, not computed in float32
    assert frechet_distance(torch.from_numpy(x).float(), y.astype(np.float32)) == pytest.approx(ref, rel=1e-5)
    assert isinstance(ref, float)


def test_frechet_with_fewer_samples_than_dimensions_is_finite_and_warns():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((5, 20)), rng.standard_normal((6, 20))
    with pytest.warns(RuntimeWarning) as record:
        value = frechet_distance(x, y)
    messages = [str(w.message) for w in record]
    assert any("x has 5 samples of dimension 20" in m for m in messages)
    assert any("y has 6 samples of dimension 20" in m for m in messages)
    assert math.isfinite(value) and value > 0
    # a singular covariance against itself is still exactly zero, not NaN from a negative eigenvalue
    assert _quiet(frechet_distance, x, x) == pytest.approx(0.0, abs=1e-9)


def test_frechet_rejects_bad_input():
    with pytest.raises(DataError, match="dimension 3 but y has 4"):
        frechet_distance(np.zeros((10, 3)), np.zeros((10, 4)))
    with pytest.raises(DataError, match="at least 2 samples"):
        _quiet(frechet_distance, np.zeros((1, 3)), np.zeros((10, 3)))
    with pytest.raises(DataError, match="NaN"):
        frechet_distance(np.full((10, 2), np.nan), np.zeros((10, 2)))
    with pytest.raises(TokmusicError, match="2-d"):
        frechet_distance(np.zeros(10), np.zeros(10))


# --- density and coverage ---------------------------------------------------------------------------

REAL = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])


def test_density_coverage_hand_built_k1():
    # k=1 radii: 1, 1, 1, 1, 7. Fake 0.5 is inside the balls of 0 and 1; 20 inside none; 8.5 inside 10's.
    fake = np.array([[0.5], [20.0], [8.5]])
    density, coverage = _quiet(density_coverage, REAL, fake, k=1)
    assert density == pytest.approx(3 / (1 * 3))
    assert coverage == pytest.approx(3 / 5)  # reals 0, 1 and 10 have a fake in their ball; 2 and 3 do not


def test_density_coverage_hand_built_k2():
    # k=2 radii: 2, 1, 1, 2, 8. Fake 0.5 falls in the balls of 0 and 1 only; 8.5 in 10's.
    fake = np.array([[0.5], [20.0], [8.5]])
    density, coverage = _quiet(density_coverage, REAL, fake, k=2)
    assert density == pytest.approx(3 / (2 * 3))
    assert coverage == pytest.approx(3 / 5)


def test_density_counts_a_fake_exactly_on_the_radius():
    density, coverage = _quiet(density_coverage, REAL, np.array([[17.0]]), k=1)  # |17 - 10| = 7 = r
    assert (density, coverage) == (1.0, 0.2)


def test_density_coverage_checks_k_and_warns_on_few_samples():
    with pytest.raises(DataError, match="k=5"):
        density_coverage(REAL, REAL, k=5)
    with pytest.warns(RuntimeWarning, match="only 5 real samples"):
        density_coverage(REAL, REAL, k=1)


# --- KL, cosine, correlation ------------------------------------------------------------------------

def test_kl_divergence_known_value_and_properties():
    p, q = np.array([[0.5, 0.5]]), np.array([[0.9, 0.1]])
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert kl_divergence(p, q) == pytest.approx(expected, rel=1e-8)
    assert kl_divergence([0.5, 0.5], [0.9, 0.1]) == pytest.approx(expected, rel=1e-8)  # one pair [C]
    assert kl_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    # rows are renormalised: sigmoid-style scores give the same value as their normalised distribution
    assert kl_divergence(torch.tensor([[1.0, 1.0]]), torch.tensor([[1.8, 0.2]])) == pytest.approx(expected, rel=1e-6)
    # mean over clips
    both = kl_divergence(np.array([[0.5, 0.5], [0.2, 0.8]]), np.array([[0.9, 0.1], [0.2, 0.8]]))
    assert both == pytest.approx(expected / 2, rel=1e-8)


def test_kl_divergence_rejects_negative_or_mismatched():
    with pytest.raises(DataError, match="softmax"):
        kl_divergence([[-0.1, 1.1]], [[0.5, 0.5]])
    with pytest.raises(DataError, match="equal shapes"):
        kl_divergence(np.ones((2, 3)), np.ones((2, 4)))


def test_cosine_similarities_and_alignment():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [1.0, 2.0]])
    b = np.array([[0.0, 1.0], [2.0, 2.0], [1.0, 0.0], [-1.0, -2.0]])
    np.testing.assert_allclose(cosine_similarities(a, b), [0.0, 1.0, 0.0, -1.0], atol=1e-12)
    assert cosine_alignment(a, b) == pytest.approx(0.0, abs=1e-12)
    assert cosine_alignment(torch.ones(3, 4), torch.ones(3, 4) * 5) == pytest.approx(1.0)


def test_correlation():
    x = np.arange(10.0)
    assert correlation(x, 3 * x + 1) == pytest.approx(1.0)
    assert correlation(x, -x) == pytest.approx(-1.0)
    assert correlation(x, np.ones(10)) == 0.0
