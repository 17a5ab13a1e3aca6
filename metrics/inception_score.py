"""Inception Score (Salimans et al. 2016) as in NVIDIA's code: 10 splits of the generated set,
exp(mean KL(p(y|x) || p(y))) per split; mean and standard deviation over splits."""

import numpy as np

from . import detectors, metric_utils


def inception_score(probs, num_splits=10):
    """(mean, std) of the split scores of class probabilities [n, classes]."""
    probs = np.asarray(probs, dtype=np.float64)
    n = probs.shape[0]
    scores = []
    for i in range(num_splits):
        part = probs[i * n // num_splits: (i + 1) * n // num_splits]
        kl = part * (np.log(part) - np.log(np.mean(part, axis=0, keepdims=True)))
        scores.append(np.exp(np.mean(np.sum(kl, axis=1))))
    return float(np.mean(scores)), float(np.std(scores))


def compute_is(opts, num_gen, num_splits, detector_url=detectors.INCEPTION_URL):
    detector_kwargs = dict(no_output_bias=True)  # Match the original TF implementation's softmax.
    gen_probs = metric_utils.compute_feature_stats_for_generator(
        opts=opts, detector_url=detector_url, detector_kwargs=detector_kwargs,
        capture_all=True, max_items=opts.num_gen(num_gen), dataset_kwargs=metric_utils.reference_dataset_kwargs(opts)).get_all()
    if opts.rank != 0:
        return float("nan"), float("nan")
    return inception_score(gen_probs, num_splits)
