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
