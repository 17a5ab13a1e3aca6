"""The project's own offline detector: a small CNN trained on the labelled dataset being evaluated.

No Inception/VGG weights exist on offline machines, so feature-space distances and class consistency
use a classifier trained here on the dataset's own labelled images (digits, Fashion-MNIST, ...).
It is saved as TorchScript, so it loads without this code, with NVIDIA's detector calling convention:

    logits   = clf(images_uint8_nchw)                        # [N, num_classes]
    features = clf(images_uint8_nchw, return_features=True)  # [N, 128], penultimate layer

Inputs may have 1 or 3 channels and any size (resized to the training resolution, at most 32 px).

Train (or find in the cache) with:

    python -m metrics.offline_classifier --data=DATASET.zip [--label-file=labels.json] [--out=PATH]

The cache is ``<dnnlib cache>/gan-metrics/classifiers/<dataset>-cnn-v<version>-<hash>.pt`` (+ ``.json``
with the held-out test accuracy and split), keyed by the content of the images (file bytes for a directory, member CRC-32s for a ZIP; see
metrics/data_utils.py) and each image's class, not by the label file it came from.
Metrics train it on first use. With a long-tailed label file (lt_dataset.py) the classifier is
trained on the file's full, balanced set ("full"), so tail classes are judged as well as head ones,
with the classes in the source dataset's own numbering (lt_dataset.py renumbers them by count; its
rank_to_label maps them back): a dataset and all its subsets share one classifier, so FD_cls, KD_cls
and class consistency stay comparable across them. Its logits are source labels ("label_space":
"source" in the .json); class consistency maps a run's class ids through rank_to_label.
10% of each class is held out; the test accuracy is stored next to the model and printed.
"""

import hashlib
import json
import os
import sys
import time

import click
import numpy as np
import torch
import torch.nn.functional as F

import dnnlib

from . import metric_utils

CLASSIFIER_VERSION = 1  # Bump when the architecture or training recipe changes (invalidates caches).
DEFAULT_CLASS_NAME = "training.dataset.ImageFolderDataset"

# ----------------------------------------------------------------------------
# Network.


class SmallCNN(torch.nn.Module):
    """Three conv blocks (conv-BN-ReLU, pooling) and two FC layers; uint8 NCHW in, logits or features out."""

    def __init__(self, in_channels: int, num_classes: int, resolution: int = 32, width: int = 32, feature_dim: int = 128):
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.resolution = resolution
        self.feature_dim = feature_dim
        self.conv1 = torch.nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(width)
        self.conv2 = torch.nn.Conv2d(width, width * 2, 3, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(width * 2)
        self.conv3 = torch.nn.Conv2d(width * 2, width * 4, 3, padding=1, bias=False)
        self.bn3 = torch.nn.BatchNorm2d(width * 4)
        self.fc = torch.nn.Linear(width * 4 * 2 * 2, feature_dim)
        self.out = torch.nn.Linear(feature_dim, num_classes)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(torch.float32)
        if x.shape[1] != self.in_channels:
            if self.in_channels == 1:
                x = x.mean(dim=1, keepdim=True)
            else:
                x = x[:, :1].repeat(1, self.in_channels, 1, 1)
        if x.shape[2] != self.resolution or x.shape[3] != self.resolution:
            if x.shape[2] > self.resolution:
                x = F.adaptive_avg_pool2d(x, [self.resolution, self.resolution])
            else:
                x = F.interpolate(x, size=[self.resolution, self.resolution], mode="bilinear", align_corners=False)
        return x / 127.5 - 1

    def forward(self, images: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = self.prepare(images)
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.adaptive_avg_pool2d(F.relu(self.bn3(self.conv3(x))), [2, 2])
        features = F.relu(self.fc(x.flatten(1)))
        if return_features:
            return features
        return self.out(features)


# ----------------------------------------------------------------------------
# Data.


def classifier_dataset_kwargs(dataset_kwargs):
    """(dataset kwargs, rank_to_label or None): the labelled data a classifier for `dataset_kwargs` is trained on.

    With a long-tailed label file (lt_dataset.py) that is its full set ("full"), whose class ranks are
    mapped back to the source's own labels through the lt record's rank_to_label: every subset of one
    dataset then gets the same classifier as the dataset itself, so FD_cls stays comparable across them.
    """
    kwargs = dnnlib.EasyDict(class_name=dataset_kwargs.get("class_name", DEFAULT_CLASS_NAME), path=dataset_kwargs["path"],
                             use_labels=True, max_size=None, xflip=False)
    for key in ("resolution", "label_file"):
        if dataset_kwargs.get(key) is not None:
            kwargs[key] = dataset_kwargs[key]
    lt = metric_utils.read_lt_info(kwargs)
    if lt is None:
        return kwargs, None
    if lt.get("full"):
        kwargs.label_file = lt.full
    return kwargs, source_label_map(lt)


def source_label_map(lt):
    """rank_to_label of an lt record as an int64 array (rank -> the source dataset's label), or None."""
    ranks = lt.get("rank_to_label") if lt is not None else None
    if not isinstance(ranks, list) or not ranks:
        return None
    return np.asarray([int(label) for label in ranks], dtype=np.int64)


def classifier_digest(dataset, kwargs, class_ids):
    """Key of a classifier: the image bytes and each image's class in the source's numbering, nothing else.

    Which label file the classes were read from does not count, so a dataset and its lt_dataset.py
    subsets (renumbered by count) share one classifier.
    """
    h = hashlib.sha256(metric_utils.dataset_fingerprint(kwargs, content=True, labels=False).encode())
    names = getattr(dataset, "_image_fnames", None) or [str(i) for i in range(len(class_ids))]
    for name, cls in zip(names, class_ids.tolist()):
        h.update(repr((name, cls)).encode())
    return h.hexdigest()


def dataset_name(dataset, dataset_kwargs):
    return getattr(dataset, "name", None) or os.path.splitext(os.path.basename(str(dataset_kwargs["path"]).rstrip("/")))[0]


def load_labelled_images(dataset, dataset_kwargs, max_images=100000, seed=0, to_source=None):
    """(uint8 images [N, C, H, W], int64 class ids [N], item indices [N], num_classes).

    `to_source` (rank -> source label) renumbers the dataset's classes into the source's numbering.
    """
    labels, num_classes = dataset_class_ids(dataset, dataset_kwargs, to_source)
    index = np.flatnonzero(labels >= 0)
    if len(index) > max_images:
        index = np.sort(np.random.default_rng(seed).choice(index, max_images, replace=False))
    images = np.stack([np.asarray(dataset[int(i)][0]) for i in index])
    return torch.from_numpy(images), torch.from_numpy(labels[index]), index, num_classes


def dataset_class_ids(dataset, dataset_kwargs, to_source=None):
    """(class id per item, -1 where unlabelled; number of classes), in the source's numbering."""
    all_labels = metric_utils.dataset_labels(dataset)
    labels = metric_utils.class_ids_from_labels(all_labels)
    if len(dataset) == 0 or labels.size == 0 or (labels < 0).all():
        raise metric_utils.MetricError(f"dataset {dataset_kwargs.get('path')!r} has no class labels; the offline classifier needs them")
    num_classes = int(all_labels.shape[1])
    if to_source is not None:
        if len(to_source) != num_classes:
            raise metric_utils.MetricError(f"label file {dataset_kwargs.get('label_file')!r}: its lt record maps {len(to_source)} "
                                           f"classes but the file has {num_classes}; remake it with lt_dataset.py")
        labels = np.where(labels >= 0, to_source[np.maximum(labels, 0)], -1)
    return labels, num_classes


def split_train_test(labels, test_fraction=0.1, seed=0):
    """Stratified split of positions 0..N-1: test_fraction of each class (at least one if it has 2+)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    test = []
    for k in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == k))
        n_test = int(round(len(members) * test_fraction))
        if len(members) >= 2:
            n_test = min(max(n_test, 1), len(members) - 1)
        test.extend(members[:n_test].tolist())
    test = np.sort(np.asarray(test, dtype=np.int64))
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test


# ----------------------------------------------------------------------------
# Training.


def _shift(x, max_shift, gen):
    """Translate a batch by one random offset (edges replicated)."""
    if max_shift == 0:
        return x
    dx, dy = (int(v) for v in torch.randint(-max_shift, max_shift + 1, [2], generator=gen))
    x = F.pad(x.float(), [max_shift] * 4, mode="replicate")
    h, w = x.shape[2] - 2 * max_shift, x.shape[3] - 2 * max_shift
    return x[:, :, max_shift + dy: max_shift + dy + h, max_shift + dx: max_shift + dx + w]


def accuracy(model, images, labels, batch_size=512):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            correct += int((model(images[i: i + batch_size]).argmax(1) == labels[i: i + batch_size]).sum())
    return correct / max(len(images), 1)


def default_num_threads():
    """Half the cores, at most 4: small convolutions gain little from more, and on shared 2-core
    machines two OpenMP threads competing with other jobs run up to 10x slower than one."""
    return max(1, min(4, (os.cpu_count() or 1) // 2, torch.get_num_threads()))


def train_classifier(images, labels, num_classes, seed=0, batch_size=64, steps=None, lr=3e-3, verbose=True, num_threads=None,
                     width=32):
    """Train a SmallCNN (``width`` channels in its first layer) on uint8 images [N, C, H, W]; returns (model in
    eval mode, steps)."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(num_threads or default_num_threads())
    try:
        return _train(images, labels, num_classes, seed, batch_size, steps, lr, verbose, width)
    finally:
        torch.set_num_threads(previous_threads)


def _train(images, labels, num_classes, seed, batch_size, steps, lr, verbose, width=32):
    n = len(images)
    if steps is None:
        epochs = int(np.clip(np.ceil(20000 / max(n, 1)), 2, 20))  # digits: 13 epochs; Fashion-MNIST: 2.
        steps = max(150, int(np.ceil(epochs * n / batch_size)))
    resolution = int(min(images.shape[2], 32))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallCNN(in_channels=int(images.shape[1]), num_classes=num_classes, resolution=resolution, width=width)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    max_shift = max(images.shape[2] // 16, 1)
    model.train()
    order = torch.randperm(n, generator=gen)
    pos = 0
    for step in range(steps):
        if pos + batch_size > n:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos: pos + batch_size]
        pos += batch_size
        loss = F.cross_entropy(model(_shift(images[idx], max_shift, gen)), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if verbose and (step + 1) % max(steps // 5, 1) == 0:
            print(f"  step {step + 1}/{steps}  loss {loss.item():.4f}", flush=True)
    return model.eval(), steps


# ----------------------------------------------------------------------------
# Cache.


def classifier_cache_path(digest, name):
    tag = f"{name}-cnn-v{CLASSIFIER_VERSION}-{digest[:16]}"
    return dnnlib.make_cache_dir_path("gan-metrics", "classifiers", tag + ".pt")


def read_info(model_path):
    with open(os.path.splitext(model_path)[0] + ".json", "r", encoding="utf-8") as f:
        return json.load(f)


def build_classifier(dataset_kwargs, out=None, seed=0, steps=None, verbose=True, force=False):
    """Train the classifier for a labelled dataset unless its file exists; returns (path, info dict)."""
    kwargs, to_source = classifier_dataset_kwargs(dataset_kwargs)
    dataset = dnnlib.util.construct_class_by_name(**kwargs)
    name = dataset_name(dataset, kwargs)
    class_ids, _num_classes = dataset_class_ids(dataset, kwargs, to_source)
    path = out or classifier_cache_path(classifier_digest(dataset, kwargs, class_ids), name)
    if os.path.isfile(path) and os.path.isfile(os.path.splitext(path)[0] + ".json") and not force:
        return path, read_info(path)
    start = time.time()
    images, labels, index, num_classes = load_labelled_images(dataset, kwargs, seed=seed, to_source=to_source)
    train, test = split_train_test(labels.numpy(), seed=seed)
    if verbose:
        print(f"Training the offline classifier '{name}-cnn' on {len(train)} images of {kwargs['path']} "
              f"({num_classes} classes, {len(test)} held out) ...", flush=True)
    model, steps = train_classifier(images[train], labels[train], num_classes, seed=seed, steps=steps, verbose=verbose)
    test_acc = accuracy(model, images[test], labels[test]) if len(test) else float("nan")
    info = dict(name=f"{name}-cnn", version=CLASSIFIER_VERSION, data=str(kwargs["path"]), label_file=kwargs.get("label_file"),
                num_classes=num_classes, label_space="source", channels=int(images.shape[1]), resolution=model.resolution,
                feature_dim=model.feature_dim, num_train=int(len(train)), num_test=int(len(test)),
                test_accuracy=test_acc, steps=steps, seed=seed, train_seconds=round(time.time() - start, 2),
                test_indices=[int(i) for i in index[test]])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    scripted = torch.jit.script(model)
    # The info file first: a model file on disk always has its info beside it.
    dnnlib.util.atomic_write_text(os.path.splitext(path)[0] + ".json", json.dumps(info, indent=1))
    dnnlib.util.atomic_write(path, lambda f: torch.jit.save(scripted, f))
    if verbose:
        print(f"Offline classifier '{name}-cnn': test accuracy {test_acc:.4f} after {info['train_seconds']:.1f} s -> {path}", flush=True)
    return path, info


def classifier_for_metrics(opts, dataset_kwargs):
    """Path of the classifier used by the *_cls metrics (opts.detector.classifier, else cached/trained)."""
    if opts.detector.get("classifier"):
        path = opts.detector.classifier
        info_file = os.path.splitext(path)[0] + ".json"
        info = read_info(path) if os.path.isfile(info_file) else dict(name=os.path.splitext(os.path.basename(path))[0])
    else:
        if opts.num_gpus > 1 and opts.rank != 0:
            torch.distributed.barrier()
        try:
            path, info = build_classifier(dataset_kwargs, verbose=opts.rank == 0)
        finally:
            if opts.num_gpus > 1 and opts.rank == 0:
                torch.distributed.barrier()
    opts.report["classifier"] = {k: info.get(k) for k in ("name", "test_accuracy", "num_classes") if k in info}
    return path


# ----------------------------------------------------------------------------


@click.command()
@click.option("--data", help="Labelled dataset (directory or ZIP with dataset.json)", required=True)
@click.option("--label-file", help="Label file to use instead of dataset.json (e.g. lt_dataset.py output)")
@click.option("--out", help="Write the TorchScript model here (default: the cache)")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split and of training")
@click.option("--steps", type=int, help="Training steps (default: from the dataset size)")
@click.option("--force", is_flag=True, help="Retrain even if the file exists")
def main(data, label_file, out, seed, steps, force):
    """Train the offline classifier for DATA (or print where the cached one is)."""
    kwargs = dict(class_name=DEFAULT_CLASS_NAME, path=data, label_file=label_file)
    try:
        path, info = build_classifier(kwargs, out=out, seed=seed, steps=steps, force=force)
    except metric_utils.MetricError as exc:
        raise click.ClickException(str(exc)) from None
    print(json.dumps(dict(path=path, **{k: v for k, v in info.items() if k != "test_indices"})))


if __name__ == "__main__":
    main(sys.argv[1:])
