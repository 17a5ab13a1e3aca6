"""Class-conditional metrics: intra-class FD, shot-band FD/KD, class consistency, intra-class diversity.

All of them compare against the *reference* set (metric_utils.reference_dataset_kwargs): the dataset
itself, or, when its label file is a long-tailed one written by lt_dataset.py, that file's full set.

* Intra-class Frechet distance: mean over classes k of FD(reals of class k, fakes conditioned on k);
  the fakes are spread evenly over the classes that have real images.
* Shot bands: the label file's "lt" record lists class ranks per band ("many", "medium", "few").
  Band b compares all reference images of the classes in b with fakes whose labels are uniform over
  those classes.
* Class consistency: the fraction of fakes that the offline classifier assigns to their conditioning
  class (per band too, with a long-tailed label file).
* Intra-class diversity: mean pairwise L2 distance of classifier features between fakes of the same
  class, averaged over classes (per band too).
"""

import os

import numpy as np
import torch

from . import frechet_inception_distance, kernel_inception_distance, metric_utils, offline_classifier
from .metric_utils import FeatureStats, MetricError

BANDS = ("many", "medium", "few")


def require_conditional(opts, metric):
    c_dim = int(getattr(opts.G, "c_dim", 0) or 0)
    if c_dim == 0:
        raise MetricError(f"metric '{metric}' needs class labels, but the network is unconditional (c_dim=0); "
                          "use it with a network trained with --cond=1 on a labelled dataset")
    return c_dim


def require_lt(opts, metric):
    """The lt record of the dataset's label file, or an error telling how to make one."""
    lt = metric_utils.read_lt_info(opts.dataset_kwargs)
    if lt is None or not isinstance(lt.get("bands"), dict):
        raise MetricError(f"{metric} needs a long-tailed label file; run lt_dataset.py "
                          "(and pass its output as the dataset's label file, e.g. calc_metrics.py --label-file=lt_100.json)")
    for band in BANDS:
        if band not in lt.bands:
            raise MetricError(f"long-tailed label file {lt.label_file!r} has no '{band}' band")
    return lt


def _real_per_class(opts, detector_url, detector_kwargs, dataset_kwargs, **stats_kwargs):
    return metric_utils.compute_feature_stats_for_dataset(opts=opts, detector_url=detector_url, detector_kwargs=detector_kwargs,
                                                          rel_lo=0, rel_hi=0, group_by_class=True, dataset_kwargs=dataset_kwargs,
                                                          **stats_kwargs)


def compute_intra_class_fd(opts, metric, num_gen, detector_url, detector_kwargs):
    """{metric: mean over classes of the Frechet distance between per-class reals and fakes, metric_c<k>: per class}."""
    c_dim = require_conditional(opts, metric)
    ref = metric_utils.reference_dataset_kwargs(opts)
    real = _real_per_class(opts, detector_url, detector_kwargs, ref, capture_mean_cov=True)
    classes = [k for k in range(c_dim) if k in real and real[k].num_items > 0]
    if not classes:
        raise MetricError(f"metric '{metric}': the reference data has no images with one-hot class labels")
    per_class = max(2, -(-num_gen // len(classes)))
    gen = metric_utils.compute_feature_stats_for_generator(
        opts=opts, detector_url=detector_url, detector_kwargs=detector_kwargs, capture_mean_cov=True,
        max_items=per_class * len(classes), fake_labels={"balanced": classes}, dataset_kwargs=ref, group_by_class=True)
    if opts.rank != 0:
        return {metric: float("nan")}
    fds = {k: frechet_inception_distance.frechet_distance_from_stats(real[k], gen[k]) for k in classes if k in gen}
    return {metric: float(np.mean(list(fds.values()))), **per_class_results(metric, fds)}


def per_class_results(metric, values):
    """{metric_c<k>: value} for a {class index: value} dict (read by training/report.py as per-class bars)."""
    return {f"{metric}_c{k}": float(v) for k, v in sorted(values.items())}


def compute_shot_distances(opts, metric, kinds, bands, num_gen, detector_url, detector_kwargs, prefixes,
                           num_subsets=100, max_subset_size=1000):
    """{f'{prefixes[kind]}_{band}': FD or KID} for each kind in `kinds` ('fd', 'kd') and each requested shot band.

    One set of fakes per band serves every kind, so FD and KD together cost one generation pass."""
    assert kinds and set(kinds) <= {"fd", "kd"}
    require_conditional(opts, metric)
    lt = require_lt(opts, metric)
    ref = metric_utils.reference_dataset_kwargs(opts)
    capture = dict(capture_mean_cov="fd" in kinds, capture_all="kd" in kinds)
    real = _real_per_class(opts, detector_url, detector_kwargs, ref, **capture)
    results = {}
    for band in bands:
        ranks = [int(k) for k in lt.bands[band]]
        present = [k for k in ranks if k in real and real[k].num_items > 0]
        if not present:
            raise MetricError(f"metric '{metric}': no reference images for the '{band}' band (classes {ranks})")
        real_band = FeatureStats.merged([real[k] for k in present])
        gen = metric_utils.compute_feature_stats_for_generator(
            opts=opts, detector_url=detector_url, detector_kwargs=detector_kwargs, max_items=num_gen,
            fake_labels=ranks, dataset_kwargs=ref, **capture)
        for kind in kinds:
            key = f"{prefixes[kind]}_{band}"
            if opts.rank != 0:
                results[key] = float("nan")
            elif kind == "fd":
                results[key] = frechet_inception_distance.frechet_distance_from_stats(real_band, gen)
            else:
                rng = np.random.default_rng(opts.seed) if opts.seed is not None else None
                results[key] = kernel_inception_distance.kernel_distance(
                    real_band.get_all(), gen.get_all(), num_subsets=num_subsets, max_subset_size=max_subset_size, rng=rng)
    return results


def _band_of(lt):
    """{class rank: band name} of a long-tailed label file's lt record."""
    return {int(k): band for band in BANDS for k in lt.bands[band]}


def compute_class_consistency(opts, metric, num_gen, classifier_path):
    """{'class_consistency': accuracy of the classifier on fakes w.r.t. their conditioning class, (+ per band)}."""
    c_dim = require_conditional(opts, metric)
    ref = metric_utils.reference_dataset_kwargs(opts)
    gen = metric_utils.compute_feature_stats_for_generator(
        opts=opts, detector_url=classifier_path, detector_kwargs=dict(return_features=False), capture_all=True,
        capture_labels=True, max_items=num_gen, dataset_kwargs=ref)
    if opts.rank != 0:
        return dict(class_consistency=float("nan"))
    logits, labels = gen.get_all(), gen.get_labels()
    if logits.shape[1] != c_dim:
        raise MetricError(f"metric '{metric}': the classifier has {logits.shape[1]} classes but the network has c_dim={c_dim}")
    valid = labels >= 0
    if not valid.any():
        raise MetricError(f"metric '{metric}': the conditioning labels are not one-hot class labels")
    lt = metric_utils.read_lt_info(opts.dataset_kwargs)
    correct = classified_as_conditioned(logits, labels, _source_labels_of(lt, classifier_path))
    results = dict(class_consistency=float(correct[valid].mean()))
    results.update(per_class_results("class_consistency", {int(k): correct[valid & (labels == k)].mean()
                                                           for k in np.unique(labels[valid])}))
    if lt is not None and isinstance(lt.get("bands"), dict):
        band_of = _band_of(lt)
        bands = np.array([band_of.get(int(k), "") for k in labels])
        for band in BANDS:
            mask = valid & (bands == band)
            if mask.any():
                results[f"class_consistency_{band}"] = float(correct[mask].mean())
    return results


def _consistency_from_features(opts, classifier_path, gen_by_class, c_dim):
    """class_consistency (+ per class and band) of fakes grouped by class, from their classifier features."""
    detector = metric_utils.get_feature_detector(classifier_path, device=opts.device, opts=opts)
    out = getattr(detector, "out", None)  # The offline classifier's last layer: logits = out(features).
    if not isinstance(getattr(out, "weight", None), torch.Tensor) or not isinstance(getattr(out, "bias", None), torch.Tensor):
        raise MetricError(f"cls_quality needs a classifier whose logits are out(features), as the project's offline "
                          f"classifier's; {classifier_path} has no such 'out' layer: use class_consistency and div_cls")
    weight, bias = out.weight.detach().cpu().double().numpy(), out.bias.detach().cpu().double().numpy()
    if weight.shape[0] != c_dim:
        raise MetricError(f"class consistency: the classifier has {weight.shape[0]} classes but the network has c_dim={c_dim}")
    lt = metric_utils.read_lt_info(opts.dataset_kwargs)
    to_source = _source_labels_of(lt, classifier_path)
    correct = {}
    for k, stats in gen_by_class.items():
        logits = stats.get_all().astype(np.float64) @ weight.T + bias
        correct[k] = classified_as_conditioned(logits, np.full(len(logits), k), to_source)
    results = dict(class_consistency=float(np.concatenate(list(correct.values())).mean()))
    results.update(per_class_results("class_consistency", {k: v.mean() for k, v in correct.items()}))
    if lt is not None and isinstance(lt.get("bands"), dict):
        for band in BANDS:
            hits = [correct[int(k)] for k in lt.bands[band] if int(k) in correct]
            if hits:
                results[f"class_consistency_{band}"] = float(np.concatenate(hits).mean())
    return results


def _source_labels_of(lt, classifier_path):
    """rank -> source label when the run's classes are lt ranks and the classifier predicts source labels."""
    if lt is None:
        return None
    info_path = os.path.splitext(classifier_path)[0] + ".json"
    # Classifiers written before label_space existed were trained on the lt file's ranks themselves.
    space = offline_classifier.read_info(classifier_path).get("label_space", "rank") if os.path.isfile(info_path) else "source"
    return offline_classifier.source_label_map(lt) if space == "source" else None


def classified_as_conditioned(logits, labels, to_source=None):
    """Bool per fake: the classifier's class is the conditioning class (mapped rank -> source label if given)."""
    labels = np.asarray(labels)
    target = labels if to_source is None else np.where(labels >= 0, to_source[np.maximum(labels, 0)], -1)
    return np.asarray(logits).argmax(axis=1) == target


def mean_pairwise_distance(features, max_items=1000):
    """Mean L2 distance over distinct pairs of rows (the first max_items rows)."""
    x = np.asarray(features, dtype=np.float64)[:max_items]
    n = x.shape[0]
    if n < 2:
        return float("nan")
    sq = np.square(x).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0)
    return float(np.sqrt(d2)[np.triu_indices(n, k=1)].mean())


def compute_intra_class_diversity(opts, metric, num_gen, classifier_path, with_consistency=False):
    """{'div_cls': mean over classes of the mean pairwise feature distance among same-class fakes; 'div_cls_real':
    the same for the reference reals; 'div_cls_ratio': mean over classes of fakes / reals (per class and band too)}.

    with_consistency=True adds 'class_consistency' (+ per class and band) of the same class-balanced fakes, from
    the classifier's output layer applied to their features: both measures for the cost of one generation pass."""
    c_dim = require_conditional(opts, metric)
    ref = metric_utils.reference_dataset_kwargs(opts)
    classes = list(range(c_dim))
    per_class = max(2, -(-num_gen // c_dim))
    gen = metric_utils.compute_feature_stats_for_generator(
        opts=opts, detector_url=classifier_path, detector_kwargs=dict(return_features=True), capture_all=True,
        max_items=per_class * c_dim, fake_labels={"balanced": classes}, dataset_kwargs=ref, group_by_class=True)
    real = _real_per_class(opts, classifier_path, dict(return_features=True), ref, capture_all=True)  # All ranks take part.
    if opts.rank != 0:
        return dict(div_cls=float("nan"))
    div = {k: mean_pairwise_distance(gen[k].get_all()) for k in classes if k in gen}
    div = {k: v for k, v in div.items() if np.isfinite(v)}
    if not div:
        raise MetricError(f"metric '{metric}': too few fakes per class to measure diversity")
    # The reals' diversity in the same features (a random subset of up to 1000 per class): the absolute units of
    # a feature space say nothing, the ratio fakes / reals shows collapse (1 = as diverse as the data).
    rng = np.random.default_rng(0 if opts.seed is None else opts.seed)
    real_div = {}
    for k in div:
        if k in real and real[k].num_items >= 2:
            feats = real[k].get_all()
            real_div[k] = mean_pairwise_distance(feats[rng.permutation(len(feats))[:1000]])
    ratio = {k: div[k] / real_div[k] for k in div if real_div.get(k, 0) > 0}
    # The summary values first (the order train.py prints them in), per-class values after.
    results = _consistency_from_features(opts, classifier_path, gen, c_dim) if with_consistency else {}
    if ratio:
        results.update(div_cls_ratio=float(np.mean(list(ratio.values()))))
    results.update(div_cls=float(np.mean(list(div.values()))))
    if ratio:
        results.update(div_cls_real=float(np.mean([real_div[k] for k in ratio])), **per_class_results("div_cls_ratio", ratio))
    results.update(per_class_results("div_cls", div))
    lt = metric_utils.read_lt_info(opts.dataset_kwargs)
    if lt is not None and isinstance(lt.get("bands"), dict):
        for band in BANDS:
            ranks = [int(k) for k in lt.bands[band]]
            values = [div[k] for k in ranks if k in div]
            if values:
                results[f"div_cls_{band}"] = float(np.mean(values))
            band_ratio = [ratio[k] for k in ranks if k in ratio]
            if band_ratio:
                results[f"div_cls_ratio_{band}"] = float(np.mean(band_ratio))
    return results
