"""The offline classifier: trains on digits fast and accurately, is cached by data content, loads as plain
TorchScript, and judges real held-out images as class-consistent."""

import json
import os
import shutil
import time

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

from metrics import metric_main, metric_utils, offline_classifier
from tests.test_detectors import ImageBankGenerator, dataset_kwargs, shared_cache_dir, shared_digits, write_png_dataset


@pytest.fixture()
def digits(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DNNLIB_CACHE_DIR", shared_cache_dir(tmp_path_factory))
    return shared_digits(tmp_path_factory)


def test_trains_on_digits_with_95_percent_test_accuracy_and_is_cached(digits, monkeypatch):
    path, info = offline_classifier.build_classifier(dataset_kwargs(digits))
    assert info["train_seconds"] > 0, info  # Recorded; its speed is bench/'s business, not a test's.
    assert info["test_accuracy"] >= 0.95, info
    assert info["num_test"] >= 150 and info["num_train"] + info["num_test"] == 1797
    assert info["name"] == "shared-digits16-cnn" and info["num_classes"] == 10
    assert path.startswith(os.environ["DNNLIB_CACHE_DIR"])

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier was retrained")

    monkeypatch.setattr(offline_classifier, "train_classifier", no_training)
    again_path, again_info = offline_classifier.build_classifier(dataset_kwargs(digits))
    assert again_path == path and again_info == info  # Cache hit, no retraining.


def test_saved_model_is_plain_torchscript_with_detector_convention(digits):
    path, info = offline_classifier.build_classifier(dataset_kwargs(digits))
    model = torch.jit.load(path)  # No project code needed.
    images = torch.randint(0, 256, [6, 1, 16, 16], dtype=torch.uint8)
    logits, features = model(images), model(images, return_features=True)
    assert logits.shape == (6, 10) and features.shape == (6, info["feature_dim"])
    torch.testing.assert_close(model(images.repeat(1, 3, 1, 1)), logits)  # 3-channel copies of a grey image.
    assert model(torch.randint(0, 256, [2, 3, 32, 32], dtype=torch.uint8)).shape == (2, 10)  # Other sizes resized.


def held_out_digits(digits):
    """(classifier path, its info, uint8 images, class labels) of the classifier's held-out real test images."""
    path, info = offline_classifier.build_classifier(dataset_kwargs(digits))
    dataset = metric_utils.dnnlib.util.construct_class_by_name(**dataset_kwargs(digits, use_labels=True))
    test_idx = info["test_indices"]
    images = np.stack([dataset[i][0] for i in test_idx])
    labels = np.array([int(dataset.get_label(i).argmax()) for i in test_idx])
    return path, info, images, labels


def test_class_consistency_of_real_test_images_is_at_least_the_accuracy(digits):
    _path, info, images, labels = held_out_digits(digits)
    G = ImageBankGenerator(images, labels, c_dim=10)
    res = metric_main.calc_metric("class_consistency", G=G, dataset_kwargs=dataset_kwargs(digits, use_labels=True),
                                  device="cpu", num_gen_override=1000, seed=3)
    assert res.results.class_consistency >= 0.95
    assert res.results.class_consistency == pytest.approx(info["test_accuracy"], abs=0.03)
    assert res.classifier["name"] == "shared-digits16-cnn"
    (name, detector), = res.detectors.items()
    assert name == os.path.basename(_path)[:-3] and detector["sha256"] == metric_utils.dnnlib.util.file_sha256(_path)


def test_fingerprint_follows_content_not_timestamps(tmp_path):
    rng = np.random.default_rng(0)
    root = write_png_dataset(str(tmp_path / "d"), rng.integers(0, 255, [6, 1, 8, 8]), [0, 1, 0, 1, 0, 1])
    kw = dict(path=root)
    content, stat = metric_utils.dataset_fingerprint(kw, content=True), metric_utils.dataset_fingerprint(kw)
    img = os.path.join(root, "00000", "img00000002.png")
    os.utime(img, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert metric_utils.dataset_fingerprint(kw, content=True) == content
    assert metric_utils.dataset_fingerprint(kw) != stat
    PIL.Image.fromarray(np.zeros([8, 8], np.uint8)).save(img)
    assert metric_utils.dataset_fingerprint(kw, content=True) != content
    label_file = tmp_path / "labels.json"
    label_file.write_text(json.dumps({"labels": [["00000/img00000000.png", 1]]}))
    with_labels = metric_utils.dataset_fingerprint(dict(kw, label_file=str(label_file)), content=True)
    label_file.write_text(json.dumps({"labels": [["00000/img00000000.png", 0]]}))
    assert metric_utils.dataset_fingerprint(dict(kw, label_file=str(label_file)), content=True) != with_labels


def test_command_line_reports_cached_model(digits):
    result = CliRunner().invoke(offline_classifier.main, [f"--data={digits}"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["test_accuracy"] >= 0.95 and os.path.isfile(report["path"])


def test_unlabelled_dataset_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(tmp_path / "cache"))
    root = write_png_dataset(str(tmp_path / "plain"), np.zeros([4, 1, 8, 8], np.uint8), None)
    with pytest.raises((ValueError, metric_utils.MetricError), match="no labels|no class labels"):
        offline_classifier.build_classifier(dataset_kwargs(root))
    shutil.rmtree(root)


def test_long_tailed_subsets_share_the_datasets_classifier_and_judge_ranks_by_source_label(digits, tmp_path, monkeypatch):
    """lt_dataset.py renumbers classes by count; FD_cls and class consistency must not move with it."""
    from lt_dataset import make_lt

    plain_path, info = offline_classifier.build_classifier(dataset_kwargs(digits))
    assert info["label_space"] == "source"
    copy = str(tmp_path / os.path.basename(digits))  # Same name and images: the same classifier.
    shutil.copytree(digits, copy)
    meta = make_lt(copy, 10, log=lambda *_: None)
    assert meta["rank_to_label"] != list(range(10))  # The subset's class 0 is not digit 0.

    def no_training(*args, **kwargs):
        raise AssertionError("a subset of the dataset got a classifier of its own")

    monkeypatch.setattr(offline_classifier, "train_classifier", no_training)
    lt_kwargs = dataset_kwargs(copy, use_labels=True, label_file="lt_10.json")
    assert offline_classifier.build_classifier(lt_kwargs)[0] == plain_path

    # Real held-out images, conditioned on their class *rank*, are still judged consistent.
    _path, _info, images, labels = held_out_digits(digits)
    rank_of = {label: rank for rank, label in enumerate(meta["rank_to_label"])}
    ranks = np.array([rank_of[int(label)] for label in labels])
    res = metric_main.calc_metric("class_consistency", G=ImageBankGenerator(images, ranks, c_dim=10), dataset_kwargs=lt_kwargs,
                                  device="cpu", num_gen_override=500, seed=3)
    assert res.results.class_consistency == pytest.approx(info["test_accuracy"], abs=0.05)


def test_div_cls_reports_the_reals_diversity_and_the_ratio_that_shows_collapse(digits):
    """Fakes drawn from real images are as diverse as the reals (ratio near 1); one image per class is collapse (0)."""
    _path, _info, images, labels = held_out_digits(digits)
    kwargs = dict(dataset_kwargs=dataset_kwargs(digits, use_labels=True), device="cpu", num_gen_override=400, seed=3)
    varied = metric_main.calc_metric("div_cls", G=ImageBankGenerator(images, labels, c_dim=10), **kwargs).results
    assert varied.div_cls_real > 0 and 0.85 <= varied.div_cls_ratio <= 1.15, varied
    assert set(f"div_cls_ratio_c{k}" for k in range(10)) <= set(varied)
    first = [int(np.flatnonzero(labels == k)[0]) for k in range(10)]
    collapsed = metric_main.calc_metric("div_cls", G=ImageBankGenerator(images[first], labels[first], c_dim=10), **kwargs).results
    assert collapsed.div_cls_ratio < 0.01 and collapsed.div_cls_real == pytest.approx(varied.div_cls_real)


def test_cls_quality_gives_consistency_and_diversity_of_one_set_of_fakes(digits):
    """The combined metric agrees with class_consistency and div_cls, and its consistency sees wrong classes."""
    _path, info, images, labels = held_out_digits(digits)
    kwargs = dict(dataset_kwargs=dataset_kwargs(digits, use_labels=True), device="cpu", num_gen_override=400, seed=3)
    both = metric_main.calc_metric("cls_quality", G=ImageBankGenerator(images, labels, c_dim=10), **kwargs).results
    div = metric_main.calc_metric("div_cls", G=ImageBankGenerator(images, labels, c_dim=10), **kwargs).results
    assert both.class_consistency == pytest.approx(info["test_accuracy"], abs=0.05), both
    assert both.div_cls_ratio == pytest.approx(div.div_cls_ratio, abs=1e-9)  # Same balanced fakes, same features.
    assert set(f"class_consistency_c{k}" for k in range(10)) <= set(both)
    shifted = metric_main.calc_metric("cls_quality", G=ImageBankGenerator(images, (labels + 1) % 10, c_dim=10), **kwargs).results
    assert shifted.class_consistency < 0.1, shifted  # Every image conditioned on the next class: judged wrong.


class _NoOutLayer(torch.nn.Module):
    """A classifier without the project's `out` layer: features and logits are not linked the same way."""

    def forward(self, images: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = images.float().mean(dim=1).flatten(1)[:, :10]
        return x if return_features else x * 2


def test_cls_quality_refuses_a_classifier_without_an_output_layer(digits, tmp_path):
    _path, _info, images, labels = held_out_digits(digits)
    path = str(tmp_path / "other-classifier.pt")
    torch.jit.save(torch.jit.script(_NoOutLayer()), path)
    with pytest.raises(metric_utils.MetricError, match="other-classifier.pt has no such 'out' layer: use class_consistency and div_cls"):
        metric_main.calc_metric("cls_quality", G=ImageBankGenerator(images, labels, c_dim=10), detector=dict(classifier=path),
                                dataset_kwargs=dataset_kwargs(digits, use_labels=True), device="cpu", num_gen_override=40, seed=3)
