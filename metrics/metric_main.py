"""Metric registry, NVIDIA's metric names, the project's additions, and JSONL reporting.

Plugins add metrics with the public decorator::

    from metrics import metric_main

    @metric_main.register_metric(needs_labels=True)
    def my_metric(opts):           # opts: metric_utils.MetricOptions
        return dict(my_metric=...) # floats

and they are then valid for ``calc_metrics.py --metrics`` and ``train.py --metrics``.

Names (fakes vs reals; "full" = all reals):

* NVIDIA's: fid50k_full, kid50k_full, pr50k3_full, ppl2_wend, is50k, fid50k, kid50k, pr50k3,
  ppl_zfull, ppl_wfull, ppl_zend, ppl_wend (Inception / VGG16 detectors; see detectors.py).
* Class-conditional, Inception: ifid50k_full (intra-class FID, 50k fakes spread over the classes),
  fid_shots / kid_shots (few-shot band: results fid_few / kid_few, 50k fakes) and fid_shots_all /
  kid_shots_all (many, medium and few bands).
* CLIP (OpenAI's ViT-B/32 image embedding, clip_features.py; needs the vision extra): fid_clip50k_full (FID_CLIP,
  as NoisyTwins and StudioGAN report it beside FID) and ifid_clip50k_full (intra-class FID_CLIP, + per class).
* Offline classifier ("cls", offline_classifier.py, trained on first use; needs a labelled dataset):
  fd_cls / kd_cls (10k fakes, all reals; the network may be unconditional), ifd_cls (intra-class FD, 10k fakes), fd_cls_shots / fd_cls_shots_all / kd_cls_shots /
  kd_cls_shots_all (shot bands, 10k fakes per band), cls_shots_all (FD and KD per band from one set of fakes), class_consistency (10k fakes, + per band with a
  long-tailed label file), div_cls (intra-class diversity of fakes and of reals and their ratio, 10k fakes,
  + per band), cls_quality (class_consistency and div_cls of one set of 10k class-balanced fakes).
  ifid50k_full, ifid_clip50k_full, ifd_cls, class_consistency, div_cls and cls_quality also report each class as ``<name>_c<k>``.
  modes / reverse_kl (mode coverage of 50k fakes; `--classifier` may be a 1-channel digit classifier for
  stacked-MNIST-style RGB data, see mode_coverage.py). Metrics that compare classes with the dataset's
  are refused for networks whose classes are their own (a label prior, e.g. selfcond's clusters).

Each result line also records the detectors used (name, SHA-256, where found), the classifier's
held-out accuracy for *_cls metrics, and the reference data.
"""

import json
import os
import time

import torch

import dnnlib
from torch_utils import misc

from . import (
    class_metrics,
    clip_features,
    detectors,
    frechet_inception_distance,
    inception_score,
    kernel_inception_distance,
    metric_utils,
    mode_coverage,
    offline_classifier,
    perceptual_path_length,
    precision_recall,
)
from .metric_utils import MetricError

# ----------------------------------------------------------------------------
# Registry.

_metric_dict = dict()  # name => fn
_metric_needs = dict()  # name => dict(labels=bool, lt=bool)


def register_metric(fn=None, *, name=None, needs_labels=False, needs_lt=False):
    """Register `fn(opts) -> dict of floats` under its function name (or `name`). Usable with or without arguments."""

    def decorator(f):
        assert callable(f)
        key = name or f.__name__
        _metric_dict[key] = f
        _metric_needs[key] = dict(labels=bool(needs_labels or needs_lt), lt=bool(needs_lt))
        return f

    return decorator(fn) if fn is not None else decorator


def is_valid_metric(metric):
    return metric in _metric_dict


def list_valid_metrics():
    return list(_metric_dict.keys())


def check_metric(metric, G=None, dataset_kwargs=None):
    """Raise a clear error if `metric` is unknown or cannot run with this network / data (before any work)."""
    if not is_valid_metric(metric):
        raise ValueError(f"unknown metric '{metric}'; valid metrics are: {', '.join(list_valid_metrics())}")
    needs = _metric_needs[metric]
    if needs["labels"] and G is not None and int(getattr(G, "c_dim", 0) or 0) == 0:
        raise MetricError(f"metric '{metric}' needs class labels, but the network is unconditional (c_dim=0); "
                          "use it with a network trained with --cond=1 on a labelled dataset")
    if needs["labels"] and G is not None and misc.label_prior(G) is not None:
        raise MetricError(f"metric '{metric}' needs G conditioned on dataset classes; this network's classes are its "
                          "own (a label prior, e.g. selfcond's clusters), so per-class comparisons with the dataset "
                          "do not apply")
    if needs["lt"]:
        lt = metric_utils.read_lt_info(dataset_kwargs or {})
        if lt is None or not isinstance(lt.get("bands"), dict):
            raise MetricError(f"{metric} needs a long-tailed label file; run lt_dataset.py "
                              "(and pass its output as the dataset's label file, e.g. calc_metrics.py --label-file=lt_100.json)")


def calc_metric(metric, **kwargs):  # See metric_utils.MetricOptions for the full list of arguments.
    check_metric(metric, G=kwargs.get("G"), dataset_kwargs=kwargs.get("dataset_kwargs"))
    opts = metric_utils.MetricOptions(**kwargs)

    start_time = time.time()
    results = _metric_dict[metric](opts)
    total_time = time.time() - start_time

    for key, value in list(results.items()):
        if opts.num_gpus > 1:
            value = torch.as_tensor(value, dtype=torch.float64, device=opts.device)
            torch.distributed.broadcast(tensor=value, src=0)
            value = float(value.cpu())
        results[key] = float(value)

    extra = {k: v for k, v in opts.report.items() if v}
    return dnnlib.EasyDict(
        results=dnnlib.EasyDict(results),
        metric=metric,
        total_time=total_time,
        total_time_str=dnnlib.util.format_time(total_time),
        num_gpus=opts.num_gpus,
        **extra,
    )


def _append_line(path, line):
    """Append one complete line with a single write on an O_APPEND descriptor (never a partial line)."""
    data = (line + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        while written < len(data):  # Only on exotic file systems; the line is still contiguous.
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)


def report_metric(result_dict, run_dir=None, snapshot_pkl=None):
    """Print the result as NVIDIA's JSON line and append it to <run_dir>/metric-<name>.jsonl."""
    metric = result_dict["metric"]
    assert is_valid_metric(metric)
    if run_dir is not None and snapshot_pkl is not None:
        snapshot_pkl = os.path.relpath(snapshot_pkl, run_dir)
    jsonl_line = json.dumps(dict(result_dict, snapshot_pkl=snapshot_pkl, timestamp=time.time()))
    print(jsonl_line, flush=True)
    if run_dir is not None and os.path.isdir(run_dir):
        _append_line(os.path.join(run_dir, f"metric-{metric}.jsonl"), jsonl_line)


# ----------------------------------------------------------------------------
# NVIDIA's metrics.


@register_metric
def fid50k_full(opts):
    opts.dataset_kwargs.update(max_size=None, xflip=False)
    fid = frechet_inception_distance.compute_fid(opts, max_real=None, num_gen=50000)
    return dict(fid50k_full=fid)


@register_metric
def kid50k_full(opts):
    opts.dataset_kwargs.update(max_size=None, xflip=False)
    kid = kernel_inception_distance.compute_kid(opts, max_real=1000000, num_gen=50000, num_subsets=100, max_subset_size=1000)
    return dict(kid50k_full=kid)


@register_metric
def pr50k3_full(opts):
    opts.dataset_kwargs.update(max_size=None, xflip=False)
    precision, recall = precision_recall.compute_pr(opts, max_real=200000, num_gen=50000, nhood_size=3,
                                                    row_batch_size=10000, col_batch_size=10000)
    return dict(pr50k3_full_precision=precision, pr50k3_full_recall=recall)


@register_metric
def ppl2_wend(opts):
    ppl = perceptual_path_length.compute_ppl(opts, num_samples=50000, epsilon=1e-4, space="w", sampling="end", crop=False, batch_size=2)
    return dict(ppl2_wend=ppl)


@register_metric
def is50k(opts):
    opts.dataset_kwargs.update(max_size=None, xflip=False)
    mean, std = inception_score.compute_is(opts, num_gen=50000, num_splits=10)
    return dict(is50k_mean=mean, is50k_std=std)


@register_metric
def fid50k(opts):
    opts.dataset_kwargs.update(max_size=None)
    fid = frechet_inception_distance.compute_fid(opts, max_real=50000, num_gen=50000)
    return dict(fid50k=fid)


@register_metric
def kid50k(opts):
    opts.dataset_kwargs.update(max_size=None)
    kid = kernel_inception_distance.compute_kid(opts, max_real=50000, num_gen=50000, num_subsets=100, max_subset_size=1000)
    return dict(kid50k=kid)


@register_metric
def pr50k3(opts):
    opts.dataset_kwargs.update(max_size=None)
    precision, recall = precision_recall.compute_pr(opts, max_real=50000, num_gen=50000, nhood_size=3,
                                                    row_batch_size=10000, col_batch_size=10000)
    return dict(pr50k3_precision=precision, pr50k3_recall=recall)


@register_metric
def ppl_zfull(opts):
    ppl = perceptual_path_length.compute_ppl(opts, num_samples=50000, epsilon=1e-4, space="z", sampling="full", crop=True, batch_size=2)
    return dict(ppl_zfull=ppl)


@register_metric
def ppl_wfull(opts):
    ppl = perceptual_path_length.compute_ppl(opts, num_samples=50000, epsilon=1e-4, space="w", sampling="full", crop=True, batch_size=2)
    return dict(ppl_wfull=ppl)


@register_metric
def ppl_zend(opts):
    ppl = perceptual_path_length.compute_ppl(opts, num_samples=50000, epsilon=1e-4, space="z", sampling="end", crop=True, batch_size=2)
    return dict(ppl_zend=ppl)


@register_metric
def ppl_wend(opts):
    ppl = perceptual_path_length.compute_ppl(opts, num_samples=50000, epsilon=1e-4, space="w", sampling="end", crop=True, batch_size=2)
    return dict(ppl_wend=ppl)


# ----------------------------------------------------------------------------
# Class-conditional metrics with Inception.

_INCEPTION_FEATURES = dict(return_features=True)


_CLIP_FEATURES = dict(return_features=True)


@register_metric
def fid_clip50k_full(opts):
    """FID_CLIP: the Frechet distance of CLIP ViT-B/32 image embeddings, 50k fakes vs all reals (clip_features.py)."""
    opts.dataset_kwargs.update(max_size=None, xflip=False)
    fid = frechet_inception_distance.compute_fid(opts, max_real=None, num_gen=50000, detector_url=clip_features.CLIP_URL,
                                                 detector_kwargs=_CLIP_FEATURES)
    return dict(fid_clip50k_full=fid)


@register_metric(needs_labels=True)
def ifid_clip50k_full(opts):
    """Intra-class FID_CLIP: mean over classes of the FID_CLIP of each class's reals and fakes (+ per class)."""
    opts.dataset_kwargs.update(max_size=None, xflip=False)
    return class_metrics.compute_intra_class_fd(opts, "ifid_clip50k_full", num_gen=opts.num_gen(50000),
                                                detector_url=clip_features.CLIP_URL, detector_kwargs=_CLIP_FEATURES)


@register_metric(needs_labels=True)
def ifid50k_full(opts):
    opts.dataset_kwargs.update(max_size=None, xflip=False)
    return class_metrics.compute_intra_class_fd(opts, "ifid50k_full", num_gen=opts.num_gen(50000),
                                                detector_url=detectors.INCEPTION_URL, detector_kwargs=_INCEPTION_FEATURES)


def _inception_shots(opts, metric, kind, bands):
    opts.dataset_kwargs.update(max_size=None, xflip=False)
    return class_metrics.compute_shot_distances(opts, metric, [kind], bands, num_gen=opts.num_gen(50000),
                                                detector_url=detectors.INCEPTION_URL, detector_kwargs=_INCEPTION_FEATURES,
                                                prefixes=dict(fd="fid", kd="kid"))


@register_metric(needs_lt=True)
def fid_shots(opts):
    return _inception_shots(opts, "fid_shots", "fd", ["few"])


@register_metric(needs_lt=True)
def fid_shots_all(opts):
    return _inception_shots(opts, "fid_shots_all", "fd", list(class_metrics.BANDS))


@register_metric(needs_lt=True)
def kid_shots(opts):
    return _inception_shots(opts, "kid_shots", "kd", ["few"])


@register_metric(needs_lt=True)
def kid_shots_all(opts):
    return _inception_shots(opts, "kid_shots_all", "kd", list(class_metrics.BANDS))


# ----------------------------------------------------------------------------
# Metrics with the project's offline classifier ("cls").

_CLS_FEATURES = dict(return_features=True)


def _classifier(opts):
    opts.dataset_kwargs.update(max_size=None, xflip=False)
    return offline_classifier.classifier_for_metrics(opts, opts.dataset_kwargs)


@register_metric
def fd_cls(opts):
    path = _classifier(opts)
    fd = frechet_inception_distance.compute_fid(opts, max_real=None, num_gen=10000, detector_url=path, detector_kwargs=_CLS_FEATURES)
    return dict(fd_cls=fd)


@register_metric
def kd_cls(opts):
    path = _classifier(opts)
    kd = kernel_inception_distance.compute_kid(opts, max_real=1000000, num_gen=10000, num_subsets=100, max_subset_size=1000,
                                               detector_url=path, detector_kwargs=_CLS_FEATURES)
    return dict(kd_cls=kd)


@register_metric(needs_labels=True)
def ifd_cls(opts):
    path = _classifier(opts)
    return class_metrics.compute_intra_class_fd(opts, "ifd_cls", num_gen=opts.num_gen(10000), detector_url=path,
                                                detector_kwargs=_CLS_FEATURES)


def _cls_shots(opts, metric, kinds, bands):
    path = _classifier(opts)
    return class_metrics.compute_shot_distances(opts, metric, kinds, bands, num_gen=opts.num_gen(10000), detector_url=path,
                                                detector_kwargs=_CLS_FEATURES, prefixes=dict(fd="fd_cls", kd="kd_cls"))


@register_metric(needs_lt=True)
def fd_cls_shots(opts):
    return _cls_shots(opts, "fd_cls_shots", ["fd"], ["few"])


@register_metric(needs_lt=True)
def fd_cls_shots_all(opts):
    return _cls_shots(opts, "fd_cls_shots_all", ["fd"], list(class_metrics.BANDS))


@register_metric(needs_lt=True)
def kd_cls_shots(opts):
    return _cls_shots(opts, "kd_cls_shots", ["kd"], ["few"])


@register_metric(needs_lt=True)
def kd_cls_shots_all(opts):
    return _cls_shots(opts, "kd_cls_shots_all", ["kd"], list(class_metrics.BANDS))


@register_metric(needs_lt=True)
def cls_shots_all(opts):
    """fd_cls_<band> and kd_cls_<band> for every band from one set of fakes per band (half the generation cost)."""
    return _cls_shots(opts, "cls_shots_all", ["fd", "kd"], list(class_metrics.BANDS))


def _mode_coverage(opts):
    path = _classifier(opts)
    return mode_coverage.compute_mode_coverage(opts, num_gen=opts.num_gen(50000), classifier_path=path)


@register_metric
def modes(opts):
    """Classes hit by 50k fakes (and reverse_kl): a 1-channel classifier on RGB images counts stacked modes."""
    return _mode_coverage(opts)


@register_metric
def reverse_kl(opts):
    """KL(generated class histogram || uniform) in log10 (and modes)."""
    return _mode_coverage(opts)


@register_metric(needs_labels=True)
def class_consistency(opts):
    path = _classifier(opts)
    return class_metrics.compute_class_consistency(opts, "class_consistency", num_gen=opts.num_gen(10000), classifier_path=path)


@register_metric(needs_labels=True)
def div_cls(opts):
    path = _classifier(opts)
    return class_metrics.compute_intra_class_diversity(opts, "div_cls", num_gen=opts.num_gen(10000), classifier_path=path)


@register_metric(needs_labels=True)
def cls_quality(opts):
    """class_consistency and div_cls (with div_cls_ratio, fakes' / reals' intra-class diversity) of one set of 10k
    class-balanced fakes: the two measures of a conditional generator's quality for the cost of one pass."""
    path = _classifier(opts)
    return class_metrics.compute_intra_class_diversity(opts, "cls_quality", num_gen=opts.num_gen(10000),
                                                       classifier_path=path, with_consistency=True)


__all__ = ["register_metric", "is_valid_metric", "list_valid_metrics", "check_metric", "calc_metric", "report_metric",
           "MetricError"]
