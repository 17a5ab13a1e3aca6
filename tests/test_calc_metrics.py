"""calc_metrics.py on snapshots: JSONL output in NVIDIA's format, and clear errors for bad input."""

import json
import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import calc_metrics
from metrics import detectors, metric_main, metric_utils
from tests.test_detectors import (
    ImageBankGenerator,
    TinyGenerator,
    dataset_kwargs,
    go_offline,
    save_standard_detectors,
    shared_cache_dir,
    shared_digits,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NVIDIA_KEYS = ["results", "metric", "total_time", "total_time_str", "num_gpus", "snapshot_pkl", "timestamp"]


@pytest.fixture()
def digits(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DNNLIB_CACHE_DIR", shared_cache_dir(tmp_path_factory))
    monkeypatch.delenv(detectors.DETECTOR_DIR_ENV, raising=False)
    return shared_digits(tmp_path_factory)


def write_snapshot(run_dir, data, c_dim=10):
    os.makedirs(run_dir, exist_ok=True)
    torch.manual_seed(0)
    snapshot = dict(G_ema=TinyGenerator(c_dim=c_dim, img_resolution=16), G=None, D=None, augment_pipe=None,
                    training_set_kwargs=dict(class_name="training.dataset.ImageFolderDataset", path=data,
                                             use_labels=c_dim > 0, max_size=None, xflip=False, resolution=16, random_seed=0))
    path = os.path.join(run_dir, "network-snapshot-000004.pkl")
    with open(path, "wb") as f:
        pickle.dump(snapshot, f)
    return path


def run_cli(args):
    return CliRunner().invoke(calc_metrics.calc_metrics, args)


def test_snapshot_to_jsonl_lines_for_fd_cls_and_class_consistency(tmp_path, digits):
    snap = write_snapshot(str(tmp_path / "run"), digits)
    cmd = [sys.executable, "calc_metrics.py", f"--network={snap}", "--metrics=fd_cls,class_consistency", "--num-gen=300",
           "--seed=1", "--verbose=0"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout + proc.stderr

    per_class = [f"class_consistency_c{k}" for k in range(10)]  # One value per class, for the run report's bars.
    for metric, keys in [("fd_cls", ["fd_cls"]), ("class_consistency", sorted(["class_consistency", *per_class]))]:
        with open(tmp_path / "run" / f"metric-{metric}.jsonl") as f:
            lines = f.read().splitlines()
        assert len(lines) == 1
        line = json.loads(lines[0])
        assert list(line)[:5] == NVIDIA_KEYS[:5] and list(line)[-2:] == NVIDIA_KEYS[-2:]
        assert line["metric"] == metric and line["num_gpus"] == 1 and sorted(line["results"]) == keys
        assert line["snapshot_pkl"] == "network-snapshot-000004.pkl" and isinstance(line["total_time_str"], str)
        assert all(isinstance(v, float) and np.isfinite(v) for v in line["results"].values())
        assert line["classifier"]["name"] == "shared-digits16-cnn" and line["classifier"]["test_accuracy"] >= 0.95
        (name, det), = line["detectors"].items()
        assert name.startswith("shared-digits16-cnn-") and len(det["sha256"]) == 64
    results = json.loads(lines[0])["results"]
    assert results["class_consistency"] <= 1
    assert results["class_consistency"] == pytest.approx(np.mean([results[k] for k in per_class]), abs=0.05)

    # A second evaluation appends a second complete line.
    assert run_cli([f"--network={snap}", "--metrics=class_consistency", "--num-gen=100", "--verbose=0"]).exit_code == 0
    with open(tmp_path / "run" / "metric-class_consistency.jsonl") as f:
        assert [json.loads(x)["metric"] for x in f.read().splitlines()] == ["class_consistency"] * 2


def test_unknown_metric_lists_valid_ones(tmp_path, digits):
    result = run_cli([f"--network={write_snapshot(str(tmp_path), digits)}", "--metrics=fid50k_full,fid51k"])
    assert result.exit_code != 0
    assert "fid51k" in result.output
    for name in ["fid50k_full", "kid50k_full", "pr50k3_full", "ppl2_wend", "is50k", "fd_cls", "class_consistency"]:
        assert name in result.output
    with pytest.raises(ValueError, match="unknown metric 'nope'.*fid50k_full"):
        metric_main.calc_metric("nope", G=TinyGenerator())


def test_label_metric_on_unconditional_network_is_refused(tmp_path, digits):
    snap = write_snapshot(str(tmp_path), digits, c_dim=0)
    for metric in ["class_consistency", "ifd_cls", "ifid50k_full"]:
        result = run_cli([f"--network={snap}", f"--metrics={metric}", "--verbose=0"])
        assert result.exit_code == 1
        assert f"metric '{metric}' needs class labels" in result.output and "unconditional" in result.output
    assert not any(name.startswith("metric-") for name in os.listdir(tmp_path))


def test_shot_metric_without_long_tailed_file_says_how_to_make_one(tmp_path, digits):
    snap = write_snapshot(str(tmp_path), digits)
    for metric in ["fid_shots", "kid_shots", "fd_cls_shots"]:
        result = run_cli([f"--network={snap}", f"--metrics={metric}", "--verbose=0"])
        assert result.exit_code == 1
        assert f"{metric} needs a long-tailed label file; run lt_dataset.py" in result.output
    missing = str(tmp_path / "lt_100.json")
    result = run_cli([f"--network={snap}", "--metrics=fid_shots", f"--label-file={missing}", "--verbose=0"])
    assert result.exit_code == 1 and missing in result.output


def test_path_that_is_not_a_pickle_is_named(tmp_path, digits):
    notes = tmp_path / "notes.pkl"
    notes.write_text("these are not weights")
    result = run_cli([f"--network={notes}", "--metrics=fd_cls"])
    assert result.exit_code == 1 and str(notes) in result.output and "not a" in result.output
    result = run_cli([f"--network={tmp_path / 'absent.pkl'}", "--metrics=fd_cls"])
    assert result.exit_code == 1 and "absent.pkl" in result.output


def test_offline_without_detector_weights_fails_in_seconds(tmp_path, digits, monkeypatch):
    go_offline(monkeypatch)
    snap = write_snapshot(str(tmp_path), digits)
    start = time.time()
    result = run_cli([f"--network={snap}", "--metrics=fid50k_full", "--verbose=0", f"--detector-dir={tmp_path}"])
    assert time.time() - start < 20
    assert result.exit_code == 1
    assert "inception-2015-12-05.pt" in result.output and detectors.INCEPTION_URL in result.output
    assert "--detector-dir" in result.output


def test_more_gpus_than_devices_is_refused(tmp_path, digits):
    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has 2 CUDA devices")
    result = run_cli([f"--network={write_snapshot(str(tmp_path), digits)}", "--gpus=2"])
    assert result.exit_code != 0 and "--gpus=2 needs 2 CUDA devices" in result.output


# ----------------------------------------------------------------------------
# Shot bands from a long-tailed label file.


def write_lt_files(data_dir, dest_dir):
    """lt_10.json / lt_10_full.json as lt_dataset.py writes them (identity rank order, 10 digit classes)."""
    with open(os.path.join(data_dir, "dataset.json")) as f:
        entries = json.load(f)["labels"]
    counts = [100, 77, 59, 46, 35, 27, 21, 16, 12, 10]
    kept = [e for k in range(10) for e in [x for x in entries if x[1] == k][: counts[k]]]
    lt = dict(source=data_dir, imf=10.0, seed=0, order="count", rank_to_label=list(range(10)), counts=counts,
              bands=dict(many=[0, 1, 2], medium=[3, 4, 5], few=[6, 7, 8, 9]), subset="lt_10.json", full="lt_10_full.json")
    os.makedirs(dest_dir, exist_ok=True)
    with open(os.path.join(dest_dir, "lt_10.json"), "w") as f:
        json.dump(dict(labels=sorted(kept), lt=lt), f)
    with open(os.path.join(dest_dir, "lt_10_full.json"), "w") as f:
        json.dump(dict(labels=entries, lt=lt), f)
    return os.path.join(dest_dir, "lt_10.json")


def test_fid_few_of_correct_classes_is_far_below_head_class_images(tmp_path, digits):
    det_dir = save_standard_detectors(tmp_path / "dets")
    lt_file = write_lt_files(digits, str(tmp_path / "lt"))
    kw = dataset_kwargs(digits, use_labels=True, label_file=lt_file)
    reference = metric_utils.dnnlib.util.construct_class_by_name(**dict(kw, label_file=str(tmp_path / "lt" / "lt_10_full.json")))
    images = np.stack([reference[i][0] for i in range(len(reference))])
    labels = np.array([int(reference.get_label(i).argmax()) for i in range(len(reference))])

    def fid_few(G):
        res = metric_main.calc_metric("fid_shots_all", G=G, dataset_kwargs=kw, detector=dict(dir=det_dir), device="cpu",
                                      num_gen_override=300, seed=0)
        assert res.reference["label_file"].endswith("lt_10_full.json")
        return res.results

    right = fid_few(ImageBankGenerator(images, labels, c_dim=10))
    head = fid_few(ImageBankGenerator(images, labels, c_dim=10, fixed_class=0))
    assert sorted(right) == ["fid_few", "fid_many", "fid_medium"]
    assert right["fid_few"] < 0.2 * head["fid_few"]
    assert right["fid_many"] < head["fid_many"]


def test_cls_shots_all_gives_both_band_distances_from_one_set_of_fakes(tmp_path, digits):
    lt_file = write_lt_files(digits, str(tmp_path / "lt"))
    kw = dataset_kwargs(digits, use_labels=True, label_file=lt_file)
    reference = metric_utils.dnnlib.util.construct_class_by_name(**dict(kw, label_file=str(tmp_path / "lt" / "lt_10_full.json")))
    images = np.stack([reference[i][0] for i in range(len(reference))])
    labels = np.array([int(reference.get_label(i).argmax()) for i in range(len(reference))])
    G = ImageBankGenerator(images, labels, c_dim=10)

    def results(metric):
        return metric_main.calc_metric(metric, G=G, dataset_kwargs=dict(kw), device="cpu", num_gen_override=200, seed=0).results

    both = results("cls_shots_all")
    separate = {**results("fd_cls_shots_all"), **results("kd_cls_shots_all")}
    assert sorted(both) == sorted(separate) == sorted(f"{k}_cls_{b}" for k in ("fd", "kd") for b in ("many", "medium", "few"))
    for key, value in separate.items():
        assert both[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


# ----------------------------------------------------------------------------
# The registry is open to plugins.


def test_plugin_metric_registers_runs_and_reports(tmp_path, monkeypatch):
    monkeypatch.setattr(metric_main, "_metric_dict", dict(metric_main._metric_dict))
    monkeypatch.setattr(metric_main, "_metric_needs", dict(metric_main._metric_needs))

    @metric_main.register_metric(needs_labels=True)
    def mean_pixel(opts):
        z, c = torch.zeros([4, opts.G.z_dim]), torch.eye(opts.G.c_dim)[:4]
        return dict(mean_pixel=float(opts.G(z, c).mean().detach()))

    assert metric_main.is_valid_metric("mean_pixel") and metric_main.list_valid_metrics()[-1] == "mean_pixel"
    G = TinyGenerator(c_dim=5)
    res = metric_main.calc_metric("mean_pixel", G=G, device="cpu")
    assert res.results.mean_pixel == pytest.approx(float(G(torch.zeros(4, 8), torch.eye(5)[:4]).mean()))
    with pytest.raises(metric_utils.MetricError, match="mean_pixel"):
        metric_main.calc_metric("mean_pixel", G=TinyGenerator(c_dim=0), device="cpu")

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for _ in range(2):
        metric_main.report_metric(res, run_dir=str(run_dir), snapshot_pkl=str(run_dir / "network-snapshot-000000.pkl"))
    text = (run_dir / "metric-mean_pixel.jsonl").read_text()
    assert text.endswith("\n") and text.count("\n") == 2
    line = json.loads(text.splitlines()[1])
    assert list(line) == NVIDIA_KEYS and line["snapshot_pkl"] == "network-snapshot-000000.pkl"
    assert line["results"] == {"mean_pixel": res.results.mean_pixel}
