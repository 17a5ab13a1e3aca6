"""Kernel Inception Distance (Binkowski et al. 2018), NVIDIA's estimator.

Unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over
`num_subsets` random subsets of size m = min(n_real, n_gen, max_subset_size) drawn without
replacement from each side.
"""

import numpy as np

from . import detectors, metric_utils


def kernel_distance(real_features, gen_features, num_subsets=100, max_subset_size=1000, rng=None):
    """KID of two feature arrays [n, d]. rng: numpy Generator/RandomState (default: numpy's global RNG)."""
    real_features = np.asarray(real_features, dtype=np.float64)
    gen_features = np.asarray(gen_features, dtype=np.float64)
    choice = (rng.choice if rng is not None else np.random.choice)
    n = real_features.shape[1]
    m = min(min(real_features.shape[0], gen_features.shape[0]), max_subset_size)
    if m < 2:
        raise metric_utils.MetricError(f"KID needs at least 2 real and 2 generated feature vectors, got {real_features.shape[0]} and {gen_features.shape[0]}")
    t = 0
    for _ in range(num_subsets):
        x = gen_features[choice(gen_features.shape[0], m, replace=False)]
        y = real_features[choice(real_features.shape[0], m, replace=False)]
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        t += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(t / num_subsets / m)


def compute_kid(opts, max_real, num_gen, num_subsets, max_subset_size, detector_url=detectors.INCEPTION_URL,
                detector_kwargs=None, dataset_kwargs=None, fake_labels=None):
    detector_kwargs = dict(return_features=True) if detector_kwargs is None else detector_kwargs
    dataset_kwargs = metric_utils.reference_dataset_kwargs(opts) if dataset_kwargs is None else dataset_kwargs
    real = metric_utils.compute_feature_stats_for_dataset(
        opts=opts, detector_url=detector_url, detector_kwargs=detector_kwargs, rel_lo=0, rel_hi=0,
        capture_all=True, max_items=opts.max_real(max_real), dataset_kwargs=dataset_kwargs).get_all()
    gen = metric_utils.compute_feature_stats_for_generator(
        opts=opts, detector_url=detector_url, detector_kwargs=detector_kwargs, rel_lo=0, rel_hi=1,
        capture_all=True, max_items=opts.num_gen(num_gen), dataset_kwargs=dataset_kwargs, fake_labels=fake_labels).get_all()
    if opts.rank != 0:
        return float("nan")
    rng = np.random.default_rng(opts.seed) if opts.seed is not None else None
    return kernel_distance(real, gen, num_subsets=num_subsets, max_subset_size=max_subset_size, rng=rng)
