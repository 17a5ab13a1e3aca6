"""Frechet Inception Distance (Heusel et al. 2017), computed as in NVIDIA's stylegan2-ada-pytorch.

FD(N(mu1, S1), N(mu2, S2)) = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), with biased covariances
and the real part of scipy's matrix square root.
"""

import numpy as np
import scipy.linalg

from . import detectors, metric_utils


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """Frechet distance between two Gaussians given by mean vectors and covariance matrices."""
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    sigma1, sigma2 = np.asarray(sigma1, dtype=np.float64), np.asarray(sigma2, dtype=np.float64)
    m = np.square(mu1 - mu2).sum()
    s = scipy.linalg.sqrtm(np.dot(sigma1, sigma2))  # Matrix only (the error estimate is not needed).
    return float(np.real(m + np.trace(sigma1 + sigma2 - s * 2)))


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
