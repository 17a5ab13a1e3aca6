"""The example plugin's own test, using the trainer's tiny-trainer fixture (plugins.testing)."""

import json
import os

from gan_plugin_example.plugin import WL2


def test_wl2_term_is_reported(tiny_trainer):
    plugin = WL2(wl2_weight=0.5)
    trainer = tiny_trainer(plugins=[plugin], iterations=2)
    rows = [json.loads(line) for line in open(os.path.join(trainer.run_dir, "stats.jsonl"))]
    assert any("Loss/wl2/w_dist" in row for row in rows)
    assert plugin.batches == 2
    assert any("Plugin/wl2/batches" in row for row in rows)


def test_wl2_state_resumes_exactly(tiny_trainer):
    first = tiny_trainer(plugins=[WL2(wl2_weight=0.5)], iterations=2, network_snapshot_ticks=1)
    again = WL2(wl2_weight=0.5)
    tiny_trainer(plugins=[again], iterations=1, resume=first.run_dir)
    assert again.batches == 3  # 2 restored from the run directory's training state, then 1 more.
