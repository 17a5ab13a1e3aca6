"""Detector plumbing (lookup, cache, SHA-256, offline errors) and NVIDIA's metrics end to end, run with
small randomly initialised TorchScript detectors that have the call signatures of NVIDIA's Inception
and VGG16 files, saved under the real file names. Also holds the stand-ins other metric tests import."""

import json
import os
import time

import numpy as np
import PIL.Image
import pytest
import requests
import torch
import torch.nn.functional as F

import dnnlib
from metrics import detectors, metric_main, metric_utils

# ----------------------------------------------------------------------------
# Stand-ins shared with the other metric tests.


class TinyInception(torch.nn.Module):
    """Same calling convention and output sizes as NVIDIA's inception-2015-12-05.pt."""

    def __init__(self, feature_dim: int = 2048):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8 * 8 * 8, feature_dim)
        self.output = torch.nn.Linear(feature_dim, 1008)

    def forward(self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False, no_output_bias: bool = False):
        x = F.adaptive_avg_pool2d(img.to(torch.float32) / 127.5 - 1, [8, 8])
        features = torch.tanh(self.fc(torch.relu(self.conv(x)).flatten(1)))
        if return_features:
            return features
        logits = F.linear(features, self.output.weight, None if no_output_bias else self.output.bias)
        return torch.softmax(logits, dim=1)


class TinyVGG(torch.nn.Module):
    """Same calling convention and feature size as NVIDIA's vgg16.pt (features 4096-d, LPIPS vectors)."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8 * 4 * 4, 4096)

    def forward(self, img: torch.Tensor, resize_images: bool = True, return_lpips: bool = False, return_features: bool = False):
        x = img.to(torch.float32) / 127.5 - 1
        if resize_images:
            x = F.interpolate(x, size=[16, 16], mode="area")
        a = torch.relu(self.conv1(x))
        b = torch.relu(self.conv2(F.avg_pool2d(a, 2)))
        if return_lpips:
            parts = [f / (f.square().sum(dim=1, keepdim=True).sqrt() + 1e-10) for f in (a, b)]
            return torch.cat([(p / (p.shape[2] * p.shape[3]) ** 0.5).flatten(1) for p in parts], dim=1)
        return self.fc(F.adaptive_avg_pool2d(b, [4, 4]).flatten(1))


def save_detector(module, directory, file_name):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(str(directory), file_name)
    torch.jit.script(module.eval()).save(path)
    return path


def save_standard_detectors(directory, feature_dim=64):
    """Stand-ins under NVIDIA's file names. feature_dim=2048 is Inception's width; the default is narrower
    because scipy's sqrtm of a 2048x2048 matrix takes minutes on a 2-core CPU."""
    torch.manual_seed(0)
    save_detector(TinyInception(feature_dim), directory, "inception-2015-12-05.pt")
    save_detector(TinyVGG(), directory, "vgg16.pt")
    return str(directory)


class TinyMapping(torch.nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, num_ws):
        super().__init__()
        self.num_ws = num_ws
        self.fc = torch.nn.Linear(z_dim + c_dim, w_dim)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None):
        x = torch.cat([z, c], dim=1) if c.shape[1] else z
        return self.fc(x).unsqueeze(1).repeat(1, self.num_ws, 1)


class TinySynthesis(torch.nn.Module):
    def __init__(self, w_dim, img_resolution, img_channels):
        super().__init__()
        self.res, self.ch = img_resolution, img_channels
        self.fc = torch.nn.Linear(w_dim, img_channels * img_resolution * img_resolution)
        self.register_buffer("b4.noise_const".replace(".", "_"), torch.zeros([4, 4]))

    def forward(self, ws, noise_mode="const", force_fp32=False, **kwargs):
        return torch.tanh(self.fc(ws.mean(dim=1))).reshape(-1, self.ch, self.res, self.res)


class TinyGenerator(torch.nn.Module):
    """Generator stand-in with NVIDIA's attributes and mapping/synthesis split."""

    def __init__(self, z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=1, num_ws=4):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.mapping = TinyMapping(z_dim, c_dim, w_dim, num_ws)
        self.synthesis = TinySynthesis(w_dim, img_resolution, img_channels)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, noise_mode="const", **kwargs):
        return self.synthesis(self.mapping(z, c), noise_mode=noise_mode)


class ImageBankGenerator(torch.nn.Module):
    """'Generates' stored real images: for condition class k, one of the stored images of class k chosen
    by z (or, with fixed_class set, always images of that class). Output in [-1, 1], quantising back to
    the exact stored pixels."""

    def __init__(self, images, labels, c_dim, fixed_class=-1, z_dim=4):
        super().__init__()
        images = torch.as_tensor(np.asarray(images))
        self.z_dim, self.c_dim = z_dim, c_dim
        self.img_channels, self.img_resolution = int(images.shape[1]), int(images.shape[2])
        self.fixed_class = fixed_class
        self.register_buffer("images", (images.to(torch.float32) - 127.5) / 127.5)
        self.register_buffer("labels", torch.as_tensor(np.asarray(labels), dtype=torch.int64))

    def forward(self, z, c, truncation_psi=1, noise_mode="const", **kwargs):
        classes = c.argmax(dim=1) if self.fixed_class < 0 else torch.full([z.shape[0]], self.fixed_class, dtype=torch.int64)
        out = []
        for zi, k in zip(z, classes.tolist()):
            pool = torch.nonzero(self.labels == k)[:, 0]
            pick = int((zi[0].abs() * 1e4).floor()) % len(pool)
            out.append(self.images[pool[pick]])
        return torch.stack(out)


def write_png_dataset(root, images, labels=None):
    """A dataset directory as dataset_tool.py writes it: 00000/img%08d.png (+ dataset.json)."""
    images = np.asarray(images, dtype=np.uint8)
    os.makedirs(os.path.join(root, "00000"), exist_ok=True)
    names = []
    for i, img in enumerate(images):
        name = f"00000/img{i:08d}.png"
        arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        PIL.Image.fromarray(arr).save(os.path.join(root, name))
        names.append(name)
    with open(os.path.join(root, "dataset.json"), "w") as f:
        json.dump({"labels": [[n, int(k)] for n, k in zip(names, labels)] if labels is not None else None}, f)
    return str(root)


def digits_images(resolution=16):
    """sklearn's digits upscaled to `resolution` px: uint8 [1797, 1, R, R], int labels [1797]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0 * 255.0)[:, None]
    x = F.interpolate(x, size=[resolution, resolution], mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).numpy(), d.target.astype(np.int64)


def shared_digits(tmp_path_factory, resolution=16):
    """Digits dataset shared by all tests of a session (same path => the classifier trains once)."""
    root = tmp_path_factory.getbasetemp() / f"shared-digits{resolution}"
    if not (root / "dataset.json").exists():
        images, labels = digits_images(resolution)
        tmp = tmp_path_factory.getbasetemp() / f"shared-digits{resolution}.tmp"
        write_png_dataset(str(tmp), images, labels)
        os.replace(tmp, root)
    return str(root)


def shared_cache_dir(tmp_path_factory):
    return str(tmp_path_factory.getbasetemp() / "shared-dnnlib-cache")


def dataset_kwargs(path, use_labels=False, **kwargs):
    return dnnlib.EasyDict(class_name="training.dataset.ImageFolderDataset", path=str(path), use_labels=use_labels, **kwargs)


def go_offline(monkeypatch):
    """Make every HTTP request fail the way it does on a machine without network."""

    def refuse(*args, **kwargs):
        raise requests.exceptions.ConnectionError("network is unreachable (test)")

    monkeypatch.setattr(requests.sessions.Session, "get", refuse)


# ----------------------------------------------------------------------------
# Fixtures.


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(detectors.DETECTOR_DIR_ENV, raising=False)
    monkeypatch.delenv(detectors.DETECTOR_SHA256_ENV, raising=False)
    return tmp_path / "cache"


@pytest.fixture()
def small_data(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.arange(48) % 3
    images = rng.integers(0, 60, size=[48, 1, 16, 16]).astype(np.uint8) + (labels * 80)[:, None, None, None].astype(np.uint8)
    return write_png_dataset(str(tmp_path / "data"), images, labels), images, labels


# ----------------------------------------------------------------------------
# Lookup, cache, digests, offline errors.


def test_lookup_by_option_dir_env_and_cache(tmp_path, cache, monkeypatch):
    det_dir = save_standard_detectors(tmp_path / "dets")
    path, source = detectors.resolve_detector_file(detectors.INCEPTION_URL, detector_dir=det_dir)
    assert (source, os.path.basename(path)) == ("dir", "inception-2015-12-05.pt")

    monkeypatch.setenv(detectors.DETECTOR_DIR_ENV, det_dir)
    path, source = detectors.resolve_detector_file(detectors.VGG16_URL)
    assert source == "dir" and path == os.path.join(det_dir, "vgg16.pt")
    monkeypatch.delenv(detectors.DETECTOR_DIR_ENV)

    cached = os.path.join(str(cache), "downloads", dnnlib.util.url_cache_name(detectors.VGG16_URL))
    os.makedirs(os.path.dirname(cached))
    os.replace(os.path.join(det_dir, "vgg16.pt"), cached)
    go_offline(monkeypatch)
    path, source = detectors.resolve_detector_file(detectors.VGG16_URL, detector_dir=det_dir)
    assert (path, source) == (cached, "cache")


def test_offline_without_weights_fails_fast_and_says_where(tmp_path, cache, monkeypatch):
    go_offline(monkeypatch)
    start = time.time()
    with pytest.raises(detectors.DetectorUnavailableError) as info:
        metric_utils.get_feature_detector(detectors.INCEPTION_URL, opts=metric_utils.MetricOptions(detector=dict(dir=str(tmp_path))))
    assert time.time() - start < 10
    msg = str(info.value)
    assert "inception-2015-12-05.pt" in msg and detectors.INCEPTION_URL in msg
    assert "--detector-dir" in msg and detectors.DETECTOR_DIR_ENV in msg
    assert os.path.join(str(cache), "downloads") in msg and str(tmp_path) in msg


def test_sha256_checked_when_given_and_recorded(tmp_path, cache):
    det_dir = save_standard_detectors(tmp_path / "dets")
    digest = dnnlib.util.file_sha256(os.path.join(det_dir, "inception-2015-12-05.pt"))
    opts = metric_utils.MetricOptions(detector=dict(dir=det_dir, sha256={"inception-2015-12-05": digest}))
    det = metric_utils.get_feature_detector(detectors.INCEPTION_URL, opts=opts)
    assert isinstance(det, torch.jit.ScriptModule)
    assert opts.report.detectors["inception-2015-12-05"] == dict(sha256=digest, source="dir")

    bad = metric_utils.MetricOptions(detector=dict(dir=det_dir, sha256=f"inception-2015-12-05={'0' * 64}"))
    with pytest.raises(detectors.DetectorChecksumError, match=digest):
        metric_utils.get_feature_detector(detectors.INCEPTION_URL, opts=bad)
    with pytest.raises(metric_utils.MetricError, match="NAME=HEX"):
        detectors.parse_sha256_spec("ab" * 32)


def test_not_torchscript_file_is_named(tmp_path, cache):
    (tmp_path / "vgg16.pt").write_bytes(b"not a model")
    with pytest.raises(metric_utils.MetricError, match="vgg16.pt"):
        detectors.load_detector(detectors.VGG16_URL, detector_dir=str(tmp_path))


def test_feature_shapes_of_standard_stand_ins(tmp_path, cache):
    det_dir = save_standard_detectors(tmp_path / "dets", feature_dim=2048)
    opts = metric_utils.MetricOptions(detector=dict(dir=det_dir))
    images = torch.randint(0, 256, [5, 3, 16, 16], dtype=torch.uint8)
    inception = metric_utils.get_feature_detector(detectors.INCEPTION_URL, opts=opts)
    assert inception(images, return_features=True).shape == (5, 2048)
    probs = inception(images, no_output_bias=True)
    assert probs.shape == (5, 1008) and torch.allclose(probs.sum(1), torch.ones(5))
    vgg = metric_utils.get_feature_detector(detectors.VGG16_URL, opts=opts)
    assert vgg(images, return_features=True).shape == (5, 4096)
    assert vgg(images.float(), resize_images=False, return_lpips=True).ndim == 2


# ----------------------------------------------------------------------------
# NVIDIA's metrics through the registry, with the stand-in detectors.


def _opts(det_dir, data_path, G, **kwargs):
    return dict(G=G, dataset_kwargs=dataset_kwargs(data_path, use_labels=G.c_dim > 0), detector=dict(dir=det_dir),
                device="cpu", num_gen_override=64, seed=1, batch_size=32, **kwargs)


def test_nvidia_metrics_run_with_stand_in_detectors(tmp_path, cache, small_data):
    det_dir = save_standard_detectors(tmp_path / "dets")
    torch.manual_seed(0)
    G = TinyGenerator(c_dim=3)
    results = {}
    for metric in ["fid50k_full", "kid50k_full", "pr50k3_full", "is50k", "ppl2_wend", "ppl_zfull"]:
        res = metric_main.calc_metric(metric=metric, **_opts(det_dir, small_data[0], G))
        assert res.metric == metric and res.num_gpus == 1 and res.total_time >= 0
        results.update(res.results)
        if metric != "is50k":
            name = "vgg16" if metric.startswith(("pr", "ppl")) else "inception-2015-12-05"
            assert res.detectors[name]["sha256"] == dnnlib.util.file_sha256(os.path.join(det_dir, name + ".pt"))
    assert set(results) == {"fid50k_full", "kid50k_full", "pr50k3_full_precision", "pr50k3_full_recall", "is50k_mean",
                            "is50k_std", "ppl2_wend", "ppl_zfull"}
    assert all(np.isfinite(v) for v in results.values())
    assert results["fid50k_full"] > 0 and results["is50k_mean"] >= 1 and results["ppl2_wend"] >= 0
    assert 0 <= results["pr50k3_full_precision"] <= 1 and 0 <= results["pr50k3_full_recall"] <= 1


def test_fid_of_generator_replaying_the_data_is_small(tmp_path, cache, small_data):
    det_dir = save_standard_detectors(tmp_path / "dets")
    path, images, labels = small_data
    replay = ImageBankGenerator(images, labels, c_dim=3)
    fixed = ImageBankGenerator(images, labels, c_dim=3, fixed_class=0)
    kw = dict(num_gen_override=480)
    fid_replay = metric_main.calc_metric("fid50k_full", **dict(_opts(det_dir, path, replay), **kw)).results.fid50k_full
    fid_fixed = metric_main.calc_metric("fid50k_full", **dict(_opts(det_dir, path, fixed), **kw)).results.fid50k_full
    assert fid_replay < 0.1 * fid_fixed


def test_dataset_stats_cache_hit_and_key_changes_with_data(tmp_path, cache, small_data, capsys):
    det_dir = save_standard_detectors(tmp_path / "dets")
    path = small_data[0]
    opts = metric_utils.MetricOptions(**_opts(det_dir, path, TinyGenerator(), progress=True))
    kw = dict(detector_url=detectors.INCEPTION_URL, detector_kwargs=dict(return_features=True), capture_mean_cov=True)
    first = metric_utils.compute_feature_stats_for_dataset(opts, **kw)
    assert "dataset features" in capsys.readouterr().err  # Progress bar.
    files = sorted(os.listdir(os.path.join(str(cache), "gan-metrics")))
    assert len(files) == 1 and files[0].startswith("data-inception-2015-12-05-")
    again = metric_utils.compute_feature_stats_for_dataset(opts, **kw)
    assert "dataset features" not in capsys.readouterr().err  # Loaded, not recomputed.
    np.testing.assert_array_equal(first.raw_cov, again.raw_cov)
    assert first.num_items == 48

    img = os.path.join(path, "00000", "img00000000.png")
    PIL.Image.fromarray(np.full([16, 16], 255, np.uint8)).save(img)
    os.utime(img, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    changed = metric_utils.compute_feature_stats_for_dataset(opts, **kw)
    assert len(os.listdir(os.path.join(str(cache), "gan-metrics"))) == 2
    assert not np.allclose(first.raw_mean, changed.raw_mean)


def test_per_class_stats_match_whole_dataset(tmp_path, cache, small_data):
    det_dir = save_standard_detectors(tmp_path / "dets")
    opts = metric_utils.MetricOptions(**_opts(det_dir, small_data[0], TinyGenerator(c_dim=3), cache=False))
    kw = dict(detector_url=detectors.INCEPTION_URL, detector_kwargs=dict(return_features=True), capture_mean_cov=True)
    whole = metric_utils.compute_feature_stats_for_dataset(opts, **kw)
    per_class = metric_utils.compute_feature_stats_for_dataset(opts, group_by_class=True, **kw)
    assert sorted(per_class) == [0, 1, 2] and [s.num_items for s in per_class.values()] == [16, 16, 16]
    merged = metric_utils.FeatureStats.merged(list(per_class.values()))
    np.testing.assert_allclose(merged.get_mean_cov()[1], whole.get_mean_cov()[1], rtol=1e-6, atol=1e-9)


def test_fake_labels_follow_option(tmp_path, cache, small_data):
    det_dir = save_standard_detectors(tmp_path / "dets")
    path, images, labels = small_data
    opts = metric_utils.MetricOptions(**_opts(det_dir, path, TinyGenerator(c_dim=3), fake_labels=[2]))
    stats = metric_utils.compute_feature_stats_for_generator(opts, detectors.INCEPTION_URL, dict(return_features=True),
                                                             capture_all=True, capture_labels=True, max_items=40)
    assert stats.get_all().shape == (40, 64) and set(stats.get_labels().tolist()) == {2}
    balanced = metric_utils.compute_feature_stats_for_generator(opts, detectors.INCEPTION_URL, dict(return_features=True),
                                                                capture_mean_cov=True, max_items=30, group_by_class=True,
                                                                fake_labels={"balanced": [0, 1, 2]})
    assert {k: s.num_items for k, s in balanced.items()} == {0: 10, 1: 10, 2: 10}
