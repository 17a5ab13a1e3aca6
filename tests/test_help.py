"""--help texts are complete and true (issue #22): generated from the metric registry and the options."""

import os
import subprocess
import sys

from tests.conftest import REPO


def help_of(script, *args):
    result = subprocess.run([sys.executable, os.path.join(REPO, script), *args, "--help"], capture_output=True,
                            text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return " ".join(result.stdout.split())


def test_calc_metrics_help_lists_every_registered_metric():
    text = help_of("calc_metrics.py")
    registered = subprocess.run([sys.executable, "-c", "from metrics import metric_main; "
                                 "print(','.join(metric_main.list_valid_metrics()))"], capture_output=True, text=True,
                                cwd=REPO).stdout.strip().split(",")  # A fresh registry (tests register plugin metrics).
    assert len(registered) >= 20 and set(registered) >= {"fid50k_full", "cls_shots_all", "modes", "reverse_kl"}
    for name in registered:
        assert f" {name}," in text or f" {name} " in text, name


def test_train_help_lists_every_option_and_the_presets_tick():
    import train

    text = help_of("train.py")
    for option in train.CORE_OPTIONS:
        if not option.hidden:
            assert option.opts[-1] in text, option.opts
    assert "--list-plugins" in text and "1 for tiny and tiny512" in text
    assert "--resume" in text and "continue that run in its directory" in text
