"""Shared machinery of the metrics: options, feature statistics, detectors, real/fake feature passes.

Follows NVIDIA's stylegan2-ada-pytorch procedures (same batch order across GPUs, same statistics,
same cache directory `gan-metrics`), with these additions:

* the cache key of the real-data statistics includes a fingerprint of the data on disk (see
  :func:`dataset_fingerprint`) and the SHA-256 of the detector file, so edited data or another
  detector never reuses stale statistics;
* fake class labels follow ``opts.fake_labels``: ``'dataset'`` (NVIDIA's default: labels of random
  dataset items, i.e. proportional to class counts), ``'uniform'`` or an explicit class list;
* fakes come from a private, seedable RNG (``opts.seed``), not from the global one;
* ``opts.num_gen_override`` / ``opts.max_real_override`` shrink a metric for quick checks;
* per-class statistics in one pass over the data (for intra-class and shot-band metrics).
"""

import copy
import hashlib
import os
import pickle
import sys

import numpy as np
import torch
import tqdm

import dnnlib
from torch_utils import misc

from . import detectors
from .data_utils import dataset_fingerprint, read_lt_info, reference_dataset_kwargs  # noqa: F401 (re-exported)
from .detectors import DetectorChecksumError, DetectorUnavailableError, MetricError  # noqa: F401 (re-exported)

# ----------------------------------------------------------------------------


class MetricOptions:
    """Everything a metric function needs. Extra keyword arguments are kept as attributes."""

    def __init__(self, G=None, G_kwargs=None, dataset_kwargs=None, num_gpus=1, rank=0, device=None, progress=None, cache=True,
                 detector=None, num_gen_override=None, max_real_override=None, fake_labels="dataset", seed=None,
                 batch_size=64, num_workers=None, **extra):
        assert 0 <= rank < num_gpus
        self.G = G
        self.G_kwargs = dnnlib.EasyDict(G_kwargs or {})
        self.dataset_kwargs = dnnlib.EasyDict(dataset_kwargs or {})
        self.num_gpus = num_gpus
        self.rank = rank
        if device is None:
            device = torch.device("cuda", rank) if torch.cuda.is_available() else torch.device("cpu")
        self.device = torch.device(device)
        self.verbose = bool(getattr(progress, "verbose", progress)) and rank == 0
        self.progress = progress
        self.cache = cache
        self.detector = dnnlib.EasyDict(dir=None, sha256=None, classifier=None)
        self.detector.update(detector or {})
        self.num_gen_override = num_gen_override
        self.max_real_override = max_real_override
        self.fake_labels = fake_labels
        self.seed = seed
        self.batch_size = batch_size
        self.num_workers = (3 if self.device.type == "cuda" else 0) if num_workers is None else num_workers
        self.report = dnnlib.EasyDict()  # Extra facts for the JSONL line (detectors used, reference data).
        for key, value in extra.items():
            setattr(self, key, value)

    def num_gen(self, n):
        return n if self.num_gen_override is None else min(n, int(self.num_gen_override))

    def max_real(self, n):
        if self.max_real_override is None:
            return n
        return int(self.max_real_override) if n is None else min(n, int(self.max_real_override))


# ----------------------------------------------------------------------------
# Detectors.

_detector_cache = dict()


def get_feature_detector_name(url):
    return detectors.detector_name(url)


def get_feature_detector(url, device=torch.device("cpu"), num_gpus=1, rank=0, verbose=False, opts=None):
    """Load (once per process) a TorchScript detector from a URL or path; see metrics/detectors.py for the lookup.

    With `opts`, the detector options (directory, expected digests) are taken from it and the detector's
    name, source and SHA-256 are recorded in ``opts.report['detectors']``.
    """
    return get_feature_detector_and_info(url, device=device, num_gpus=num_gpus, rank=rank, verbose=verbose, opts=opts)[0]


def get_feature_detector_and_info(url, device=torch.device("cpu"), num_gpus=1, rank=0, verbose=False, opts=None):
    detector_dir = opts.detector.dir if opts is not None else None
    want = detectors.expected_sha256(url, opts.detector.sha256 if opts is not None else None)
    if num_gpus > 1 and rank != 0:
        torch.distributed.barrier()  # Let rank 0 download first.
    try:
        path, source = detectors.resolve_detector_file(url, detector_dir=detector_dir, verbose=verbose and rank == 0)
        st = os.stat(path)
        key = (os.path.abspath(path), st.st_size, st.st_mtime_ns, str(device), want)
        if key not in _detector_cache:
            module, info = detectors.load_detector(path, device=device, sha256=want, name=detectors.detector_name(url))
            info.update(name=detectors.detector_name(url), url=url if detectors.is_remote(url) else None, source=source)
            _detector_cache[key] = (module, info)
    finally:
        if num_gpus > 1 and rank == 0:
            torch.distributed.barrier()
    module, info = _detector_cache[key]
    if opts is not None:
        opts.report.setdefault("detectors", {})[info["name"]] = dict(sha256=info["sha256"], source=info["source"])
    return module, info


# ----------------------------------------------------------------------------
# Feature statistics.


class FeatureStats:
    """Running mean/covariance sums and/or all feature rows (float32), optionally with class ids."""

    def __init__(self, capture_all=False, capture_mean_cov=False, max_items=None, capture_labels=False):
        self.capture_all = capture_all
        self.capture_mean_cov = capture_mean_cov
        self.capture_labels = capture_labels
        self.max_items = max_items
        self.num_items = 0
        self.num_features = None
        self.all_features = None
        self.all_labels = []
        self.raw_mean = None
        self.raw_cov = None

    def set_num_features(self, num_features):
        if self.num_features is not None:
            if num_features != self.num_features:
                raise ValueError(f"feature width changed from {self.num_features} to {num_features}")
            return
        self.num_features = num_features
        self.all_features = []
        self.raw_mean = np.zeros([num_features], dtype=np.float64)
        self.raw_cov = np.zeros([num_features, num_features], dtype=np.float64)

    def is_full(self):
        return self.max_items is not None and self.num_items >= self.max_items

    def append(self, x, labels=None):
        x = np.asarray(x, dtype=np.float32)
        assert x.ndim == 2, x.shape
        if self.max_items is not None and self.num_items + x.shape[0] > self.max_items:
            if self.num_items >= self.max_items:
                return
            x = x[: self.max_items - self.num_items]
        self.set_num_features(x.shape[1])
        self.num_items += x.shape[0]
        if self.capture_all:
            self.all_features.append(x)
        if self.capture_labels:
            assert labels is not None
            self.all_labels.append(np.asarray(labels, dtype=np.int64)[: x.shape[0]])
        if self.capture_mean_cov:
            x64 = x.astype(np.float64)
            self.raw_mean += x64.sum(axis=0)
            self.raw_cov += x64.T @ x64

    def append_torch(self, x, num_gpus=1, rank=0, labels=None):
        assert isinstance(x, torch.Tensor) and x.ndim == 2
        x = gather_rows(x, num_gpus)
        if labels is not None:
            labels = gather_rows(labels.to(x.device), num_gpus).cpu().numpy()
        self.append(x.float().cpu().numpy(), labels=labels)

    def get_all(self):
        assert self.capture_all
        if not self.all_features:
            return np.zeros([0, self.num_features or 0], dtype=np.float32)
        return np.concatenate(self.all_features, axis=0)

    def get_all_torch(self):
        return torch.from_numpy(self.get_all())

    def get_labels(self):
        assert self.capture_labels
        return np.concatenate(self.all_labels) if self.all_labels else np.zeros([0], dtype=np.int64)

    def get_mean_cov(self):
        assert self.capture_mean_cov
        if self.num_items == 0:
            raise MetricError("no feature vectors were collected (empty dataset or class?)")
        mean = self.raw_mean / self.num_items
        cov = self.raw_cov / self.num_items - np.outer(mean, mean)  # Biased covariance, as NVIDIA's FID.
        return mean, cov

    @staticmethod
    def merged(stats_list):
        """One FeatureStats holding the items of all inputs (same capture flags, same width)."""
        stats_list = [s for s in stats_list if s.num_items > 0]
        if not stats_list:
            raise MetricError("no feature vectors to merge (empty classes?)")
        first = stats_list[0]
        out = FeatureStats(capture_all=first.capture_all, capture_mean_cov=first.capture_mean_cov, capture_labels=first.capture_labels)
        out.set_num_features(first.num_features)
        for s in stats_list:
            out.set_num_features(s.num_features)
            out.num_items += s.num_items
            if out.capture_all:
                out.all_features.extend(s.all_features)
            if out.capture_labels:
                out.all_labels.extend(s.all_labels)
            if out.capture_mean_cov:
                out.raw_mean += s.raw_mean
                out.raw_cov += s.raw_cov
        return out

    def save(self, pkl_file):
        _atomic_pickle(self.__dict__, pkl_file)

    @staticmethod
    def from_state(state):
        obj = FeatureStats()
        obj.__dict__.update(state)
        return obj

    @staticmethod
    def load(pkl_file):
        with open(pkl_file, "rb") as f:
            return FeatureStats.from_state(pickle.load(f))


def _atomic_pickle(obj, path):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    dnnlib.util.atomic_write(path, lambda f: pickle.dump(obj, f))


def gather_rows(x, num_gpus):
    """Rows of every rank interleaved (row i of rank r -> row i*num_gpus + r), as NVIDIA's metrics do."""
    if num_gpus == 1:
        return x
    ys = []
    for src in range(num_gpus):
        y = x.clone()
        torch.distributed.broadcast(y, src=src)
        ys.append(y)
    return torch.stack(ys, dim=1).flatten(0, 1)


def broadcast_flag(flag, opts):
    if opts.num_gpus == 1:
        return flag
    t = torch.as_tensor(flag, dtype=torch.float32, device=opts.device)
    torch.distributed.broadcast(t, src=0)
    return float(t.cpu()) != 0


# ----------------------------------------------------------------------------
# Labels.


def dataset_labels(dataset):
    """All labels of a dataset, [N, label_dim] float32, in item order (xflip duplicates included)."""
    n = len(dataset)
    if n == 0:
        return np.zeros([0, 0], dtype=np.float32)
    return np.stack([np.asarray(dataset.get_label(i), dtype=np.float32) for i in range(n)])


def class_ids_from_labels(labels):
    """Class id per row of one-hot labels; -1 where a row is not one-hot."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] == 0:
        return np.full([labels.shape[0]], -1, dtype=np.int64)
    ids = labels.argmax(axis=1).astype(np.int64)
    onehot = (labels.max(axis=1) == 1) & (labels.sum(axis=1) == 1)
    ids[~onehot] = -1
    return ids


class FakeLabelSampler:
    """Conditioning labels for fakes.

    mode: 'dataset' (labels of random dataset items: NVIDIA's default, proportional to class counts),
    'uniform' (all classes equally likely), a list of class ids (uniform over them), or
    {'balanced': [class ids]} (the classes in turn, for equal per-class counts).
    """

    def __init__(self, dataset, c_dim, mode="dataset", rng=None, prior=None):
        self.c_dim = int(c_dim)
        self.rng = rng if rng is not None else np.random.default_rng()
        self.mode = mode
        self.labels = None
        self.prior = None
        self.balanced = isinstance(mode, dict)
        self.next = 0
        if self.c_dim == 0:
            return
        if mode == "dataset" and prior is not None:  # The network's own classes (e.g. clusters): G's label prior.
            self.prior = np.asarray(prior, dtype=np.float64)
            self.classes = np.arange(self.c_dim)
            return
        if self.balanced:
            if set(mode) != {"balanced"}:
                raise MetricError(f"unknown fake label mode {mode!r}; the dict form is {{'balanced': [classes]}}")
            mode = list(mode["balanced"])
        if isinstance(mode, (list, tuple, np.ndarray)):
            self.classes = np.asarray(mode, dtype=np.int64)
            if self.classes.size == 0 or self.classes.min() < 0 or self.classes.max() >= self.c_dim:
                raise MetricError(f"fake label classes {list(self.classes)} are not within 0..{self.c_dim - 1}")
        elif mode == "uniform":
            self.classes = np.arange(self.c_dim)
        elif mode == "dataset":
            self.labels = dataset_labels(dataset)
            if self.labels.shape[0] == 0 or self.labels.shape[1] != self.c_dim:
                raise MetricError(f"the network is conditional (c_dim={self.c_dim}) but the dataset has labels of width "
                                  f"{self.labels.shape[1] if self.labels.ndim == 2 else 0}; use a labelled dataset")
        else:
            raise MetricError(f"unknown fake label mode {mode!r}; use 'dataset', 'uniform' or a list of classes")

    def sample(self, n):
        """(c [n, c_dim] float32, class ids [n] int64, -1 where not one-hot)."""
        if self.c_dim == 0:
            return np.zeros([n, 0], dtype=np.float32), np.full([n], -1, dtype=np.int64)
        if self.labels is not None:
            c = self.labels[self.rng.integers(len(self.labels), size=n)]
            return c, class_ids_from_labels(c)
        if self.prior is not None:
            ids = self.rng.choice(self.c_dim, size=n, p=self.prior)
            c = np.zeros([n, self.c_dim], dtype=np.float32)
            c[np.arange(n), ids] = 1
            return c, ids
        if self.balanced:
            ids = self.classes[(self.next + np.arange(n)) % len(self.classes)]
            self.next = (self.next + n) % len(self.classes)
        else:
            ids = self.classes[self.rng.integers(len(self.classes), size=n)]
        c = np.zeros([n, self.c_dim], dtype=np.float32)
        c[np.arange(n), ids] = 1
        return c, ids


# ----------------------------------------------------------------------------
# Feature passes.


def _progress_bar(opts, total, desc):
    return tqdm.tqdm(total=total, desc=desc, unit="img", disable=not opts.verbose, file=sys.stderr, dynamic_ncols=True, leave=False)


def _detector_input(images):
    return images.repeat([1, 3, 1, 1]) if images.shape[1] == 1 else images


def compute_feature_stats_for_dataset(opts, detector_url, detector_kwargs, rel_lo=0, rel_hi=1, batch_size=None,
                                      data_loader_kwargs=None, max_items=None, group_by_class=False, dataset_kwargs=None,
                                      **stats_kwargs):
    """Detector features of the real images (cached). group_by_class=True returns {class id: FeatureStats}."""
    dataset_kwargs = dnnlib.EasyDict(opts.dataset_kwargs if dataset_kwargs is None else dataset_kwargs)
    dataset = dnnlib.util.construct_class_by_name(**dataset_kwargs)
    batch_size = batch_size or opts.batch_size
    if data_loader_kwargs is None:
        data_loader_kwargs = dict(num_workers=opts.num_workers, pin_memory=opts.device.type == "cuda")
        if opts.num_workers > 0:
            data_loader_kwargs["prefetch_factor"] = 2
    detector, info = get_feature_detector_and_info(detector_url, device=opts.device, num_gpus=opts.num_gpus,
                                                   rank=opts.rank, verbose=opts.verbose, opts=opts)
    if group_by_class and not getattr(dataset, "has_labels", True):
        raise MetricError(f"dataset {dataset_kwargs.get('path')!r} has no class labels, which this metric needs")

    cache_file = None
    if opts.cache:
        key = dict(dataset_kwargs=sorted(dataset_kwargs.items()), detector_sha256=info["sha256"],
                   detector_kwargs=sorted(detector_kwargs.items()), stats_kwargs=sorted(stats_kwargs.items()),
                   max_items=max_items, group_by_class=group_by_class, data=dataset_fingerprint(dataset_kwargs))
        md5 = hashlib.md5(repr(sorted(key.items())).encode("utf-8")).hexdigest()
        name = getattr(dataset, "name", os.path.splitext(os.path.basename(str(dataset_kwargs.get("path", "data"))))[0])
        cache_file = dnnlib.make_cache_dir_path("gan-metrics", f"{name}-{info['name']}-{md5}.pkl")
        if broadcast_flag(os.path.isfile(cache_file) if opts.rank == 0 else False, opts):
            with open(cache_file, "rb") as f:
                state = pickle.load(f)
            if group_by_class:
                return {int(k): FeatureStats.from_state(v) for k, v in state.items()}
            return FeatureStats.from_state(state)

    num_items = len(dataset) if max_items is None else min(len(dataset), max_items)
    if num_items == 0:
        raise MetricError(f"dataset {dataset_kwargs.get('path')!r} has no images")
    if group_by_class:
        per_class = {}
        stats_kwargs = dict(stats_kwargs, max_items=None)
    else:
        stats = FeatureStats(max_items=num_items, **stats_kwargs)

    # Rank r handles items r, r + num_gpus, ...; gathered rows come back in item order (the wrap-around
    # duplicates at the end are cut off by the item count).
    item_subset = [(i * opts.num_gpus + opts.rank) % num_items for i in range((num_items - 1) // opts.num_gpus + 1)]
    loader = torch.utils.data.DataLoader(dataset=dataset, sampler=item_subset, batch_size=batch_size, **data_loader_kwargs)
    seen = 0
    with _progress_bar(opts, num_items, "dataset features") as bar:
        for images, labels in loader:
            with torch.no_grad():
                features = detector(_detector_input(images.to(opts.device)), **detector_kwargs)
            features = gather_rows(features, opts.num_gpus)
            take = min(features.shape[0], num_items - seen)
            features = features[:take].float().cpu().numpy()
            if group_by_class:
                ids = torch.from_numpy(class_ids_from_labels(labels.numpy())).to(opts.device)
                ids = gather_rows(ids, opts.num_gpus)[:take].cpu().numpy()
                for k in np.unique(ids):
                    if k >= 0:
                        per_class.setdefault(int(k), FeatureStats(**stats_kwargs)).append(features[ids == k])
            else:
                stats.append(features)
            seen += take
            bar.update(take)

    result = dict(sorted(per_class.items())) if group_by_class else stats
    if cache_file is not None and opts.rank == 0:
        _atomic_pickle({k: v.__dict__ for k, v in result.items()} if group_by_class else result.__dict__, cache_file)
    return result


def compute_feature_stats_for_generator(opts, detector_url, detector_kwargs, rel_lo=0, rel_hi=1, batch_size=None,
                                        batch_gen=None, fake_labels=None, dataset_kwargs=None, group_by_class=False,
                                        **stats_kwargs):
    """Detector features of generated images (images quantised as generate.py does).

    fake_labels: None (= opts.fake_labels), 'dataset', 'uniform', a list of class ids, or
    {'balanced': [class ids]} (cycled in order). group_by_class=True returns {class id: FeatureStats},
    split by the conditioning class, with stats_kwargs['max_items'] counting all fakes together.
    """
    batch_size = batch_size or opts.batch_size
    if batch_gen is None:
        batch_gen = min(batch_size, 4) if opts.device.type == "cuda" else batch_size
    assert batch_size % batch_gen == 0
    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    c_dim = int(getattr(G, "c_dim", 0))
    mode = opts.fake_labels if fake_labels is None else fake_labels
    dataset = None
    prior = misc.label_prior(G)
    if c_dim > 0 and isinstance(mode, str) and mode == "dataset" and prior is None:
        dataset = dnnlib.util.construct_class_by_name(**(opts.dataset_kwargs if dataset_kwargs is None else dataset_kwargs))
    base_seed = opts.seed if opts.seed is not None else int.from_bytes(os.urandom(4), "little")
    seed = int(base_seed) * opts.num_gpus + opts.rank
    sampler = FakeLabelSampler(dataset, c_dim, mode, rng=np.random.default_rng(seed), prior=prior)
    gen = torch.Generator(device=opts.device).manual_seed(seed)
    detector = get_feature_detector(detector_url, device=opts.device, num_gpus=opts.num_gpus, rank=opts.rank,
                                    verbose=opts.verbose, opts=opts)

    stats = FeatureStats(**stats_kwargs)
    assert stats.max_items is not None
    per_class = {}
    class_kwargs = dict(stats_kwargs, max_items=None)
    with _progress_bar(opts, stats.max_items, "generator features") as bar:
        while not stats.is_full():
            images, ids = [], []
            for _ in range(batch_size // batch_gen):
                z = torch.randn([batch_gen, G.z_dim], device=opts.device, generator=gen)
                c, k = sampler.sample(batch_gen)
                with torch.no_grad():
                    img = G(z=z, c=torch.from_numpy(c).to(opts.device), **opts.G_kwargs)
                images.append((img * 127.5 + 128).clamp(0, 255).to(torch.uint8))
                ids.append(torch.from_numpy(k))
            with torch.no_grad():
                features = detector(_detector_input(torch.cat(images)), **detector_kwargs)
            labels = torch.cat(ids).to(opts.device) if (stats.capture_labels or group_by_class) else None
            before = stats.num_items
            if group_by_class:
                features = gather_rows(features, opts.num_gpus)[: stats.max_items - before]
                labels = gather_rows(labels, opts.num_gpus)[: features.shape[0]].cpu().numpy()
                features = features.float().cpu().numpy()
                stats.num_items += features.shape[0]
                for k in np.unique(labels):
                    per_class.setdefault(int(k), FeatureStats(**class_kwargs)).append(features[labels == k])
            else:
                stats.append_torch(features, num_gpus=opts.num_gpus, rank=opts.rank, labels=labels)
            bar.update(stats.num_items - before)
    return dict(sorted(per_class.items())) if group_by_class else stats
