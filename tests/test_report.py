"""The run report (training/report.py): plots of a real short run, and reports of sparse run directories."""

import json
import os
import re
import subprocess
import sys

import PIL.Image
import pytest

from plugins.testing import run_tiny_training
from training import report

pytest.importorskip("matplotlib")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def referenced_images(html_text):
    return set(re.findall(r"<img [^>]*src='([^']+)'", html_text))


def check_report(run_dir):
    """Every referenced image exists and decodes, and every plot written is referenced; returns the plot stems."""
    html_text = open(os.path.join(run_dir, "report.html"), encoding="utf-8").read()
    refs = referenced_images(html_text)
    for rel in refs:
        with PIL.Image.open(os.path.join(run_dir, rel)) as img:
            img.load()  # Decodes the whole file.
    plots = {f for f in os.listdir(os.path.join(run_dir, "report")) if f.endswith(".png")}
    assert {f"report/{f}" for f in plots} <= refs
    return {os.path.splitext(f)[0] for f in plots}, refs


@pytest.mark.slow
def test_report_of_a_short_run_with_plugins_and_metrics(tmp_path, tmp_path_factory, monkeypatch):
    from tests.test_detectors import shared_cache_dir, shared_digits

    monkeypatch.setenv("DNNLIB_CACHE_DIR", shared_cache_dir(tmp_path_factory))  # Classifier trained once per session.
    trainer = run_tiny_training(str(tmp_path / "run"), shared_digits(tmp_path_factory), plugins=["noisytwins", "utlo"],
                                options={"utlo": {"utlo_res_uc": 8}}, iterations=2, metrics=["class_consistency"],
                                network_snapshot_ticks=1, image_snapshot_ticks=1, run_report=True)
    stems, refs = check_report(trainer.run_dir)
    # Core curves, one figure per plugin's loss terms, the metric curve and its per-class bars.
    assert {"losses", "scores", "regularization", "ada", "speed", "memory"} <= stems
    assert {"loss_noisytwins", "metric_class_consistency",
            "metric_class_consistency_class_consistency_per_class"} <= stems
    # The newest grids of each kind (UTLO's low-resolution grid included) and the reals.
    assert {"reals.png", "fakes000000-000000016.png", "fakes_uc000000-000000016.png"} <= refs  # The 2nd tick's.
    html_text = open(os.path.join(trainer.run_dir, "report.html"), encoding="utf-8").read()
    assert "class_consistency = " in html_text


def _write_stats(run_dir, rows):
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "stats.jsonl"), "w") as f:
        for kimg, extra in rows:
            row = {"Progress/kimg": {"num": 1, "mean": kimg, "std": 0}, "timestamp": 1.0}
            row.update({k: {"num": 4, "mean": v, "std": 0.1} for k, v in extra.items()})
            f.write(json.dumps(row) + "\n")


def test_run_without_metrics_still_gets_a_report(tmp_path):
    run_dir = str(tmp_path / "run")
    _write_stats(run_dir, [(0.0, {"Loss/G/loss": 1.0, "Loss/D/loss": 1.4}), (4.0, {"Loss/G/loss": 0.8, "Loss/D/loss": 1.2})])
    path = report.write_report(run_dir)
    stems, refs = check_report(run_dir)
    assert stems == {"losses"}
    assert path == os.path.join(run_dir, "report.html")


def test_nvidia_style_run_dir_with_bands_and_a_partial_last_line(tmp_path):
    """NVIDIA's layout: stats.jsonl and metric-*.jsonl only; a line being written is skipped, not an error."""
    run_dir = str(tmp_path / "nv")
    _write_stats(run_dir, [(0.0, {"Loss/G/loss": 1.0, "Loss/myplugin/term": 0.5}), (4.0, {"Loss/G/loss": 0.9})])
    with open(os.path.join(run_dir, "stats.jsonl"), "a") as f:
        f.write('{"Progress/kimg": {"num": 1, "me')
    with open(os.path.join(run_dir, "metric-fd_cls_shots_all.jsonl"), "w") as f:
        for kimg in (0, 4):
            results = {"fd_cls_many": 10.0 - kimg, "fd_cls_medium": 20.0 - kimg, "fd_cls_few": 30.0 - kimg}
            f.write(json.dumps({"results": results, "metric": "fd_cls_shots_all",
                                "snapshot_pkl": f"network-snapshot-{kimg:06d}.pkl"}) + "\n")
    report.write_report(run_dir)
    stems, _refs = check_report(run_dir)
    assert {"losses", "loss_myplugin", "metric_fd_cls_shots_all", "metric_fd_cls_shots_all_fd_cls_bands"} <= stems


def test_bad_run_dir_gives_a_clear_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "training.report", str(tmp_path)], capture_output=True, text=True,
                            cwd=REPO)
    assert result.returncode != 0
    assert str(tmp_path) in result.stderr and "no stats.jsonl" in result.stderr
    assert not os.path.exists(tmp_path / "report.html")


def test_loader_reads_means_and_kimg():
    assert report._mean({"num": 3, "mean": 2.5, "std": 0}) == 2.5
    assert report._mean(7) == 7.0 and report._mean("x") is None
    assert report.snapshot_kimg("/a/network-snapshot-000123.pkl") == 123
    curves, per_class, bands = report.split_metric_keys(
        {"class_consistency": 0.9, "class_consistency_c0": 1.0, "class_consistency_c1": 0.8, "class_consistency_few": 0.7})
    assert curves == ["class_consistency", "class_consistency_few"]
    assert per_class == {"class_consistency": {0: "class_consistency_c0", 1: "class_consistency_c1"}}
    assert bands == {"class_consistency": {"few": "class_consistency_few"}}
