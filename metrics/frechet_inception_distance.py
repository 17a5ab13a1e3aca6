"""Frechet Inception Distance (Heusel et al. 2017), computed as in NVIDIA's stylegan2-ada-pytorch.

FD(N(mu1, S1), N(mu2, S2)) = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), with biased covariances.

NVIDIA's code takes the real part of scipy's sqrtm(S1 S2). Only its trace is needed, and for covariances (symmetric,
positive semi-definite) tr((S1 S2)^(1/2)) = sum_i sqrt(lambda_i) with lambda_i the eigenvalues of the symmetric
S1^(1/2) S2 S1^(1/2) (similar to S1 S2). Computed that way with symmetric eigensolvers it is the same number on
well-conditioned input (tested against sqrtm), stays finite and real when a covariance is singular (fewer samples than
features, usual at CPU scale, where sqrtm warns "Matrix is singular" and drifts), and is much faster.
"""

import numpy as np

from . import detectors, metric_utils


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """Frechet distance between two Gaussians given by mean vectors and covariance matrices."""
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    sigma1, sigma2 = np.asarray(sigma1, dtype=np.float64), np.asarray(sigma2, dtype=np.float64)
    m = np.square(mu1 - mu2).sum()
    return float(m + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2))


def trace_sqrt_product(sigma1, sigma2):
    """tr((S1 S2)^(1/2)) of two covariance matrices (see the module docstring)."""
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = root1 @ sigma2 @ root1
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum())


def frechet_distance_from_stats(stats_a, stats_b):
    mu_a, sigma_a = stats_a.get_mean_cov()
    mu_b, sigma_b = stats_b.get_mean_cov()
    return frechet_distance(mu_b, sigma_b, mu_a, sigma_a)


def compute_fid(opts, max_real, num_gen, detector_url=detectors.INCEPTION_URL, detector_kwargs=None, dataset_kwargs=None,
                fake_labels=None):
    """FID between up to max_real reals (None = all) and num_gen fakes. NaN on ranks other than 0."""
    detector_kwargs = dict(return_features=True) if detector_kwargs is None else detector_kwargs
    dataset_kwargs = metric_utils.reference_dataset_kwargs(opts) if dataset_kwargs is None else dataset_kwargs
    real = metric_utils.compute_feature_stats_for_dataset(
        opts=opts, detector_url=detector_url, detector_kwargs=detector_kwargs, rel_lo=0, rel_hi=0,
        capture_mean_cov=True, max_items=opts.max_real(max_real), dataset_kwargs=dataset_kwargs)
    gen = metric_utils.compute_feature_stats_for_generator(
        opts=opts, detector_url=detector_url, detector_kwargs=detector_kwargs, rel_lo=0, rel_hi=1,
        capture_mean_cov=True, max_items=opts.num_gen(num_gen), dataset_kwargs=dataset_kwargs, fake_labels=fake_labels)
    if opts.rank != 0:
        return float("nan")
    mu_real, sigma_real = real.get_mean_cov()
    mu_gen, sigma_gen = gen.get_mean_cov()
    return frechet_distance(mu_gen, sigma_gen, mu_real, sigma_real)
