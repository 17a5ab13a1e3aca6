"""FID_CLIP and intra-class FID_CLIP: OpenAI's CLIP weights found and checked like every detector, features that are
CLIP's own image embedding, and the metrics' values, all with a tiny random CLIP written as a local file."""

import os

import numpy as np
import pytest
import torch

import dnnlib
from metrics import clip_features, detectors, metric_main, metric_utils
from tests.test_detectors import ImageBankGenerator, _opts, cache, go_offline, small_data  # noqa: F401 - fixtures
from torch_utils import vision_libraries

try:
    vision_libraries.import_vision_library("open_clip")
except ImportError as exc:
    pytest.skip(f"the CLIP metrics need the vision extra: {exc}", allow_module_level=True)


def save_tiny_clip(directory):
    """A random CLIP ViT with OpenAI's state-dict layout, saved as <directory>/ViT-B-32.pt; (dir, model, digest)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    model = CLIP(32, CLIPVisionCfg(layers=2, width=64, patch_size=8, image_size=32, head_width=64),
                 CLIPTextCfg(context_length=8, vocab_size=64, width=64, heads=1, layers=1), quick_gelu=True)
    model = model.half().float()  # OpenAI's release is float16; open_clip's loader rounds to it.
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "ViT-B-32.pt")
    torch.save(model.state_dict(), path)
    return str(directory), model.eval(), dnnlib.util.file_sha256(path)


@pytest.mark.usefixtures("cache")
def test_published_digest_is_checked_and_another_can_be_named(tmp_path):
    det_dir, _model, digest = save_tiny_clip(tmp_path / "dets")
    with pytest.raises(detectors.DetectorChecksumError, match=f"expected {clip_features.CLIP_SHA256}") as info:
        metric_utils.get_feature_detector(clip_features.CLIP_URL, opts=metric_utils.MetricOptions(detector=dict(dir=det_dir)))
    assert "--detector-sha256 ViT-B-32=HEX" in str(info.value)  # It says how to accept another file.
    opts = metric_utils.MetricOptions(detector=dict(dir=det_dir, sha256={"ViT-B-32": digest}))
    assert isinstance(metric_utils.get_feature_detector(clip_features.CLIP_URL, opts=opts), clip_features.ClipImageEmbedder)
    assert opts.report.detectors["ViT-B-32"] == dict(sha256=digest, source="dir")


@pytest.mark.usefixtures("cache")
def test_offline_without_the_weights_names_the_file_and_url(tmp_path, monkeypatch):
    go_offline(monkeypatch)
    with pytest.raises(detectors.DetectorUnavailableError) as info:
        metric_utils.get_feature_detector(clip_features.CLIP_URL, opts=metric_utils.MetricOptions(detector=dict(dir=str(tmp_path))))
    assert "ViT-B-32.pt" in str(info.value) and clip_features.CLIP_URL in str(info.value) and "--detector-dir" in str(info.value)


def test_features_are_clips_image_embedding_of_the_resized_rgb_image(tmp_path):
    det_dir, model, _digest = save_tiny_clip(tmp_path)
    embedder = clip_features.load_clip_embedder(os.path.join(det_dir, "ViT-B-32.pt"))
    gray = torch.randint(0, 256, [3, 1, 16, 16], dtype=torch.uint8)
    rgb = gray.repeat(1, 3, 1, 1).float()
    x = torch.nn.functional.interpolate(rgb, size=(32, 32), mode="bicubic", align_corners=False)
    mean, std = torch.tensor(clip_features.CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(clip_features.CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model.visual((x.clamp(0, 255) / 255 - mean) / std)
        torch.testing.assert_close(embedder(gray), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(embedder(gray.repeat(1, 3, 1, 1)), expected, atol=1e-5, rtol=1e-5)
    assert expected.shape == (3, 32)


@pytest.mark.usefixtures("cache")
def test_a_generator_replaying_the_data_has_small_fid_clip_and_intra_class_fid_clip(tmp_path, small_data):  # noqa: F811
    det_dir, _model, digest = save_tiny_clip(tmp_path / "dets")
    path, images, labels = small_data
    kw = dict(num_gen_override=240, detector=dict(dir=det_dir, sha256={"ViT-B-32": digest}))
    replay = ImageBankGenerator(images, labels, c_dim=3)
    fixed = ImageBankGenerator(images, labels, c_dim=3, fixed_class=0)  # Every class looks like class 0.
    results = {}
    for name, G in (("replay", replay), ("fixed", fixed)):
        for metric in ("fid_clip50k_full", "ifid_clip50k_full"):
            res = metric_main.calc_metric(metric, **dict(_opts(det_dir, path, G), **kw))
            results[name, metric] = res.results[metric]
            assert res.detectors["ViT-B-32"]["sha256"] == digest
    assert set(f"ifid_clip50k_full_c{k}" for k in range(3)) <= set(res.results)
    assert all(np.isfinite(v) and v >= 0 for v in results.values())
    assert results["replay", "fid_clip50k_full"] < 0.1 * results["fixed", "fid_clip50k_full"]
    assert results["replay", "ifid_clip50k_full"] < 0.1 * results["fixed", "ifid_clip50k_full"]


def test_a_file_that_is_not_clip_is_named_in_the_error(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a weights file")
    with pytest.raises(detectors.MetricError, match="garbage.pt is neither OpenAI's CLIP release file nor a state dict"):
        clip_features.load_clip_embedder(str(garbage))
    other = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(detectors.MetricError, match="other.pt is not an OpenAI CLIP ViT checkpoint"):
        clip_features.load_clip_embedder(str(other))
