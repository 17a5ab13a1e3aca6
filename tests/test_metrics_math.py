"""Metric maths on fixed feature arrays: closed forms and independent numpy implementations."""

import numpy as np
import pytest
import torch

from metrics import (
    class_metrics,
    frechet_inception_distance,
    inception_score,
    kernel_inception_distance,
    metric_utils,
    perceptual_path_length,
    precision_recall,
)


def _rng(seed=0):
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------
# Frechet distance.


def test_fd_of_identical_gaussians_is_zero():
    rng = _rng()
    a = rng.normal(size=[16, 16])
    sigma = a @ a.T / 16 + np.eye(16) * 0.1
    mu = rng.normal(size=16)
    assert abs(frechet_inception_distance.frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_fd_of_diagonal_gaussians_equals_formula():
    mu1, mu2 = np.array([0.0, 1.0, -2.0, 3.0]), np.array([1.0, 1.0, 0.5, -1.0])
    v1, v2 = np.array([1.0, 4.0, 0.25, 9.0]), np.array([4.0, 1.0, 1.0, 16.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    got = frechet_inception_distance.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    assert got == pytest.approx(expected, rel=1e-10)
    assert expected == pytest.approx(1 + 0 + 6.25 + 16 + (1 + 4 - 4) + (4 + 1 - 4) + (0.25 + 1 - 1) + (9 + 16 - 24))


def test_fd_from_feature_arrays_matches_independent_eigen_computation():
    rng = _rng(1)
    x = rng.normal(size=[500, 12]) @ rng.normal(size=[12, 12])
    y = rng.normal(loc=0.3, size=[400, 12]) @ rng.normal(size=[12, 12])
    sx, sy = metric_utils.FeatureStats(capture_mean_cov=True), metric_utils.FeatureStats(capture_mean_cov=True)
    for chunk in np.array_split(x, 7):
        sx.append(chunk)
    sy.append(y)
    got = frechet_inception_distance.frechet_distance_from_stats(sx, sy)

    # Independent: biased covariances; tr((C1 C2)^1/2) = sum of sqrt eigenvalues of C1^1/2 C2 C1^1/2.
    x32, y32 = x.astype(np.float32).astype(np.float64), y.astype(np.float32).astype(np.float64)
    c1, c2 = np.cov(x32, rowvar=False, bias=True), np.cov(y32, rowvar=False, bias=True)
    w, v = np.linalg.eigh(c1)
    root1 = v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ c2 @ root1), 0, None)).sum()
    expected = np.sum((x32.mean(0) - y32.mean(0)) ** 2) + np.trace(c1) + np.trace(c2) - 2 * tr_sqrt
    assert got == pytest.approx(expected, rel=1e-7)


def test_feature_stats_mean_cov_truncation_merge_and_save(tmp_path):
    rng = _rng(2)
    x = rng.normal(size=[130, 5]).astype(np.float32)
    s = metric_utils.FeatureStats(capture_all=True, capture_mean_cov=True, max_items=100)
    for chunk in np.array_split(x, 6):
        s.append(chunk)
    assert s.is_full() and s.num_items == 100
    mean, cov = s.get_mean_cov()
    np.testing.assert_allclose(mean, x[:100].astype(np.float64).mean(0), atol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x[:100].astype(np.float64), rowvar=False, bias=True), atol=1e-12)
    np.testing.assert_array_equal(s.get_all(), x[:100])

    a, b = metric_utils.FeatureStats(capture_mean_cov=True), metric_utils.FeatureStats(capture_mean_cov=True)
    a.append(x[:30])
    b.append(x[30:100])
    merged = metric_utils.FeatureStats.merged([a, b])
    np.testing.assert_allclose(merged.get_mean_cov()[1], cov, atol=1e-12)

    s.save(str(tmp_path / "s.pkl"))
    loaded = metric_utils.FeatureStats.load(str(tmp_path / "s.pkl"))
    np.testing.assert_array_equal(loaded.get_mean_cov()[1], cov)
    with pytest.raises(metric_utils.MetricError):
        metric_utils.FeatureStats(capture_mean_cov=True).get_mean_cov()


# ----------------------------------------------------------------------------
# KID.


def _kernel(a, b):
    d = a.shape[1]
    return (np.einsum("id,jd->ij", a, b) / d + 1) ** 3


def _mmd2_unbiased(x, y):
    m = len(x)
    kxx, kyy, kxy = _kernel(x, x), _kernel(y, y), _kernel(x, y)
    off = ~np.eye(m, dtype=bool)
    return kxx[off].sum() / (m * (m - 1)) + kyy[off].sum() / (m * (m - 1)) - 2 * kxy.sum() / (m * m)


def test_kid_equals_unbiased_mmd_when_subsets_are_whole_sets():
    rng = _rng(3)
    real = rng.normal(size=[60, 8])
    gen = rng.normal(loc=0.5, scale=1.5, size=[60, 8])
    got = kernel_inception_distance.kernel_distance(real, gen, num_subsets=3, max_subset_size=1000, rng=_rng(4))
    assert got == pytest.approx(_mmd2_unbiased(gen, real), rel=1e-10)


def test_kid_subsets_match_independent_estimator():
    rng = _rng(5)
    real = rng.normal(size=[90, 6])
    gen = rng.normal(loc=0.2, size=[70, 6])
    got = kernel_inception_distance.kernel_distance(real, gen, num_subsets=10, max_subset_size=25, rng=_rng(6))
    replay = _rng(6)
    values = []
    for _ in range(10):
        x = gen[replay.choice(len(gen), 25, replace=False)]
        y = real[replay.choice(len(real), 25, replace=False)]
        values.append(_mmd2_unbiased(x, y))
    assert got == pytest.approx(np.mean(values), rel=1e-10)


def test_kid_of_same_distribution_is_near_zero_and_positive_when_shifted():
    rng = _rng(7)
    a, b = rng.normal(size=[600, 4]), rng.normal(size=[600, 4])
    same = kernel_inception_distance.kernel_distance(a, b, num_subsets=10, max_subset_size=300, rng=_rng(8))
    shifted = kernel_inception_distance.kernel_distance(a, b + 1, num_subsets=10, max_subset_size=300, rng=_rng(8))
    assert abs(same) < 0.02 < shifted


# ----------------------------------------------------------------------------
# Precision / recall.


def _pr_reference(real, gen, k):
    def inside(manifold, probes):
        d_mm = np.sqrt(((manifold[:, None] - manifold[None]) ** 2).sum(-1))
        radius = np.sort(d_mm, axis=1)[:, k]
        d_pm = np.sqrt(((probes[:, None] - manifold[None]) ** 2).sum(-1))
        return (d_pm <= radius[None]).any(axis=1).mean()

    return inside(real, gen), inside(gen, real)


def test_precision_recall_exact_on_integer_grid_and_independent_of_batching():
    rng = _rng(9)
    real = np.zeros([40, 3])
    gen = np.zeros([35, 3])
    real[:, 0] = rng.integers(0, 50, size=40)
    gen[:, 0] = rng.integers(20, 90, size=35)  # Integer 1-D positions: distances exact in float16.
    expected = _pr_reference(real, gen, 3)
    t_real, t_gen = torch.tensor(real, dtype=torch.float16), torch.tensor(gen, dtype=torch.float16)
    got = precision_recall.precision_recall(t_real, t_gen, nhood_size=3)
    assert got == pytest.approx(expected, abs=1e-7)
    batched = precision_recall.precision_recall(t_real, t_gen, nhood_size=3, row_batch_size=7, col_batch_size=6)
    assert batched == got
    assert 0 < got[0] < 1 and 0 < got[1] < 1


def test_precision_recall_random_features_close_to_float64_reference():
    rng = _rng(10)
    real = rng.normal(size=[200, 16])
    gen = rng.normal(loc=0.4, size=[150, 16])
    got = precision_recall.precision_recall(torch.tensor(real, dtype=torch.float16), torch.tensor(gen, dtype=torch.float16),
                                            nhood_size=3, row_batch_size=64, col_batch_size=50)
    ref = _pr_reference(real, gen, 3)
    assert got[0] == pytest.approx(ref[0], abs=3 / 150) and got[1] == pytest.approx(ref[1], abs=3 / 200)
    same = torch.tensor(real, dtype=torch.float16)
    assert precision_recall.precision_recall(same, same.clone(), nhood_size=3) == (1.0, 1.0)
    far = precision_recall.precision_recall(same, same + 100, nhood_size=3)
    assert far == (0.0, 0.0)


# ----------------------------------------------------------------------------
# Inception score.


def test_inception_score_closed_forms():
    k, eps = 10, 0.1
    p = np.full([200, k], eps / k)
    p[np.arange(200), np.arange(200) % k] += 1 - eps
    hi = 1 - eps + eps / k
    expected = np.exp(hi * np.log(hi * k) + (k - 1) * (eps / k) * np.log(eps))
    mean, std = inception_score.inception_score(p, num_splits=10)
    assert mean == pytest.approx(expected, rel=1e-10) and std == pytest.approx(0, abs=1e-10)
    flat = np.full([100, 7], 1 / 7)
    assert inception_score.inception_score(flat) == pytest.approx((1.0, 0.0))


def test_inception_score_matches_independent_loop():
    probs = _rng(11).dirichlet(np.full(20, 0.3), size=103)
    expected = []
    for split in range(10):
        part = probs[split * 103 // 10:(split + 1) * 103 // 10]
        marginal = part.mean(0)
        kl = [sum(pi * np.log(pi / qi) for pi, qi in zip(row, marginal)) for row in part]
        expected.append(np.exp(np.mean(kl)))
    assert inception_score.inception_score(probs, 10) == pytest.approx((np.mean(expected), np.std(expected)), rel=1e-9)


# ----------------------------------------------------------------------------
# PPL helpers, pairwise distances.


def test_ppl_trimmed_mean_and_slerp():
    dist = np.arange(1000, dtype=np.float64)[::-1].copy()
    dist[0] = 1e9  # Outlier dropped by the 99th percentile.
    s = np.sort(dist)
    lo, hi = s[int(np.floor(0.01 * 999))], s[int(np.ceil(0.99 * 999))]
    expected = s[(s >= lo) & (s <= hi)].mean()
    assert perceptual_path_length.trimmed_mean(dist) == pytest.approx(expected)

    a, b = torch.randn(5, 8, generator=torch.Generator().manual_seed(0)), torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(perceptual_path_length.slerp(a, b, torch.zeros(5, 1)), a / a.norm(dim=1, keepdim=True))
    torch.testing.assert_close(perceptual_path_length.slerp(a, b, torch.ones(5, 1)), b / b.norm(dim=1, keepdim=True), atol=1e-5, rtol=1e-5)
    mid = perceptual_path_length.slerp(a, b, torch.full([5, 1], 0.5))
    an, bn = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    torch.testing.assert_close((mid * an).sum(1), (mid * bn).sum(1), atol=1e-5, rtol=1e-5)  # Equal angles.


def test_mean_pairwise_distance_matches_loop():
    x = _rng(12).normal(size=[9, 4])
    expected = np.mean([np.linalg.norm(x[i] - x[j]) for i in range(9) for j in range(i + 1, 9)])
    assert class_metrics.mean_pairwise_distance(x) == pytest.approx(expected, rel=1e-10)


def test_fake_label_sampler_modes():
    class Labels:
        def __init__(self, ids):
            self.ids = ids

        def __len__(self):
            return len(self.ids)

        def get_label(self, i):
            return np.eye(4, dtype=np.float32)[self.ids[i]]

    ids = np.array([0] * 90 + [3] * 10)
    sampler = metric_utils.FakeLabelSampler(Labels(ids), 4, "dataset", rng=_rng(13))
    c, k = sampler.sample(20000)
    assert c.shape == (20000, 4) and set(np.unique(k)) == {0, 3}
    assert (k == 3).mean() == pytest.approx(0.1, abs=0.01)
    _, k = metric_utils.FakeLabelSampler(None, 4, "uniform", rng=_rng(14)).sample(8000)
    assert np.bincount(k, minlength=4) / 8000 == pytest.approx(np.full(4, 0.25), abs=0.02)
    balanced = metric_utils.FakeLabelSampler(None, 4, {"balanced": [1, 2]})
    assert balanced.sample(3)[1].tolist() == [1, 2, 1] and balanced.sample(2)[1].tolist() == [2, 1]
    with pytest.raises(metric_utils.MetricError):
        metric_utils.FakeLabelSampler(None, 4, [7])


def test_frechet_distance_matches_scipy_sqrtm_and_stays_quiet_when_singular():
    """The eigenvalue form of tr((S1 S2)^(1/2)) equals NVIDIA's sqrtm form on well-conditioned covariances, and gives a
    finite distance without warnings on singular ones (fewer samples than features)."""
    import warnings

    import scipy.linalg

    rng = np.random.RandomState(0)
    a, b = rng.randn(200, 16), rng.randn(200, 16) * 1.5 + 0.3
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    reference = np.trace(s1 + s2 - 2 * np.real(scipy.linalg.sqrtm(s1 @ s2)))
    got = frechet_inception_distance.frechet_distance(np.zeros(16), s1, np.zeros(16), s2)
    assert got == pytest.approx(reference, rel=1e-9)
    few = rng.randn(5, 64)  # Rank 4 covariances of 64 features.
    s3, s4 = np.cov(few, rowvar=False), np.cov(rng.randn(5, 64), rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = frechet_inception_distance.frechet_distance(few.mean(0), s3, np.zeros(64), s4)
    assert np.isfinite(value) and value > 0
