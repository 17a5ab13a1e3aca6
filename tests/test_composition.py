"""The composition matrix of docs/plugins.md: every ordered pair of the five built-in methods trains for two
iterations, or is refused at start-up with a message that names both plugins and a fix that works."""

import itertools

import numpy as np
import pytest
import torch

from plugins import PluginError
from plugins.noisytwins import class_scales
from plugins.testing import save_tiny_backbone

METHODS = ["noisytwins", "utlo", "transitional", "selfcond", "vision_aided"]
REFUSED = {frozenset({"utlo", "transitional"}): ({"transitional": {"trans_with_utlo": True}}, "--trans-with-utlo")}


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return save_tiny_backbone(str(tmp_path_factory.mktemp("composition") / "tiny.pt"))


def pair_options(names, backbone):
    options = {"selfcond": dict(sc_k=10, sc_nimgs=500),
               "vision_aided": dict(va_backbones=f"torchscript:{backbone}", va_warmup_kimg=0)}
    return {name: options[name] for name in names if name in options}


@pytest.mark.parametrize("pair", list(itertools.permutations(METHODS, 2)), ids="+".join)
def test_pair_trains_or_is_refused_with_a_working_fix(tiny_trainer, backbone, pair):
    options = pair_options(pair, backbone)
    cond = "selfcond" not in pair  # selfcond makes its own labels and refuses dataset labels.
    refused = REFUSED.get(frozenset(pair))
    if refused is not None:
        with pytest.raises(PluginError) as info:
            tiny_trainer(plugins=list(pair), options=options, cond=cond)
        message = str(info.value)
        assert all(repr(name) in message for name in pair) and refused[1] in message
        fix, _flag = refused
        options = {**options, **{k: {**options.get(k, {}), **v} for k, v in fix.items()}}
    trainer = tiny_trainer(plugins=list(pair), options=options, cond=cond)
    assert trainer.batch_idx == 2
    assert list(trainer.host.plugins) == list(pair)
    stats = trainer.stats_collector.as_dict()
    assert any(key.startswith(f"Loss/{pair[0]}/") or key.startswith(f"Loss/{pair[1]}/") for key in stats) or \
        "selfcond" in pair  # selfcond adds labels, not loss terms.
    for key in ("G", "G_ema", "D"):
        assert all(torch.isfinite(t).all() for t in getattr(trainer, key).state_dict().values() if t.is_floating_point())


@pytest.mark.parametrize("other", ["noisytwins", "utlo"])
def test_selfcond_clusters_are_the_label_space_of_label_methods(tiny_trainer, other):
    """selfcond announces its clusters in a tryfirst gan_setup: noisytwins and utlo, which need class counts, see them
    in either --plugins order (the v2 host refused this combination)."""
    for order in ([ "selfcond", other], [other, "selfcond"]):
        trainer = tiny_trainer(plugins=order, options={"selfcond": dict(sc_k=10, sc_nimgs=500)}, cond=False)
        selfcond = trainer.host.plugins["selfcond"]
        assert trainer.c_dim == 10 and np.array_equal(trainer.class_counts, selfcond.counts)
        if other == "noisytwins":
            nt = trainer.host.plugins["noisytwins"]
            expected = torch.as_tensor(class_scales(selfcond.counts, nt.beta), dtype=torch.float32)
            assert torch.equal(trainer.G.mapping.extensions["noisytwins"].lambda_k, expected)
            assert torch.equal(trainer.D.mapping.extensions["noisytwins"].lambda_k, expected)


def test_noisytwins_lambda_follows_reclustering(tiny_trainer):
    """After a re-clustering (every 0.016 kimg here), noisytwins' lambda_k are those of the new cluster sizes."""
    trainer = tiny_trainer(plugins=["selfcond", "noisytwins"], iterations=5, cond=False,
                           options={"selfcond": dict(sc_k=10, sc_nimgs=500, sc_recluster_kimg=0.016)})
    selfcond = trainer.host.plugins["selfcond"]
    assert selfcond.done == 2  # Clustered at setup, then at 0.016 and 0.032 kimg (batch 8: every second step).
    nt = trainer.host.plugins["noisytwins"]
    expected = torch.as_tensor(class_scales(selfcond.counts, nt.beta), dtype=torch.float32)
    assert np.array_equal(nt.counts, selfcond.counts)
    assert torch.equal(trainer.G.mapping.extensions["noisytwins"].lambda_k, expected)


def test_any_plugin_adds_a_term_on_any_head(tiny_trainer):
    """D's captures name every head's logits: a plugin listed before utlo puts a term on UTLO's low-resolution head
    (UTLO records them tryfirst) and on D's own output."""
    from plugins import hookimpl

    class OnEveryHead:
        plugin_name = "heads"
        seen = set()

        @hookimpl
        def gan_loss_terms(self, ctx):
            if ctx.d_capture is None:
                return []
            logits = ctx.d_capture["logits"]
            self.seen.update((ctx.phase, ctx.side, name) for name in logits)
            return [(f"sq_{name}", 0.01, logits[name].square().mean()) for name in sorted(logits)]

    heads = OnEveryHead()
    trainer = tiny_trainer(plugins=[heads, "utlo"], iterations=1)
    assert {("Gmain", "fake", "utlo_uc_fake"), ("Gmain", "fake", "D"), ("Dmain", "real", "utlo_uc_real"),
            ("Dmain", "real", "D")} <= heads.seen
    assert "Loss/heads/sq_utlo_uc_real" in trainer.stats_collector.as_dict()
