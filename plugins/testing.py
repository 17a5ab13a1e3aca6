"""Test helpers for plugin authors: a tiny CPU trainer that runs a few iterations in seconds.

The fixture is a pytest plugin (it needs pytest). In your tests' conftest.py:

    pytest_plugins = ["plugins.testing"]

then in a test:

    def test_my_plugin(tiny_trainer):
        trainer = tiny_trainer(plugins=[MyPlugin(weight=1.0)], iterations=2)
        assert ...   # trainer.G, trainer.D, trainer.run_dir, trainer.stats_collector, ...

`plugins` takes plugin objects (registered under their `plugin_name` attribute, else their class name
in lower case) and/or --plugins names (built-ins, entry points), whose options come from
`options={name: {dest: value}}` on top of their defaults; names go through the run config
(`plugin_kwargs`), as in train.py. Other keyword arguments override `tiny_config` entries (e.g.
`metrics=[...]`, `batch=16`, `network_snapshot_ticks=1`). Each call gets its own run directory
(`run`, `run-1`, `run-2`, ... under the test's tmp_path).
"""

import os
from typing import Tuple

import pytest
import torch

import dnnlib
from plugins.host import PluginHost, construct_plugin, find_plugin, make_plugin_kwargs

# Prepend to a `python -c` script to make `training` and `plugins` unimportable in that process, e.g. to
# prove that a snapshot runs without the code that trained it (even when the project is pip-installed).
BLOCK_PROJECT_IMPORTS = """
import importlib.abc, sys
class _BlockProject(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('training', 'plugins'):
            raise ImportError('blocked: ' + name)
        return None
sys.meta_path.insert(0, _BlockProject())
"""


class TinyConvBackbone(torch.nn.Module):
    """A small random conv net as a vision-aided TorchScript backbone: (map 16x4x4, vector 16) at a 16 px input."""

    input_size: int

    def __init__(self):
        super().__init__()
        self.input_size = 16
        self.conv1 = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        fmap = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return fmap, fmap.mean(dim=[2, 3])


def save_tiny_backbone(path, seed=0):
    """Write a TinyConvBackbone (weights from ``seed``) as TorchScript; ``--va-backbones=torchscript:PATH``."""
    torch.manual_seed(seed)
    torch.jit.script(TinyConvBackbone()).save(path)
    return path


def make_digits_dataset(dest, resolution=16, max_images=None, channels=None):
    """A labelled digits ZIP (scikit-learn's load_digits, shipped in its wheel; no download)."""
    from dataset_tool import convert_dataset

    if not os.path.exists(dest):
        convert_dataset(f"digits:{resolution}", dest, max_images=max_images, channels=channels, log=lambda *a: None)
    return dest


def tiny_config(data, run_dir, cond=True, batch=8, resolution=16, **overrides):
    """Config for training.training_loop.Trainer: very small networks, batch 8, no metrics, no workers."""
    c = dnnlib.EasyDict(
        run_dir=run_dir,
        training_set_kwargs=dnnlib.EasyDict(class_name="training.dataset.ImageFolderDataset", path=data,
                                            use_labels=cond, max_size=None, xflip=False, resolution=resolution,
                                            random_seed=0),
        data_loader_kwargs=dnnlib.EasyDict(pin_memory=False, num_workers=0),
        G_kwargs=dnnlib.EasyDict(class_name="training.networks.Generator", z_dim=16, w_dim=16,
                                 mapping_kwargs=dnnlib.EasyDict(num_layers=2),
                                 synthesis_kwargs=dnnlib.EasyDict(channel_base=128, channel_max=16, num_fp16_res=0,
                                                                  conv_clamp=256)),
        D_kwargs=dnnlib.EasyDict(class_name="training.networks.Discriminator", channel_base=128, channel_max=16,
                                 num_fp16_res=0, conv_clamp=256, block_kwargs=dnnlib.EasyDict(),
                                 mapping_kwargs=dnnlib.EasyDict(num_layers=2),
                                 epilogue_kwargs=dnnlib.EasyDict(mbstd_group_size=4)),
        G_opt_kwargs=dnnlib.EasyDict(class_name="torch.optim.Adam", lr=0.0025, betas=[0, 0.99], eps=1e-8),
        D_opt_kwargs=dnnlib.EasyDict(class_name="torch.optim.Adam", lr=0.0025, betas=[0, 0.99], eps=1e-8),
        augment_kwargs=dnnlib.EasyDict(class_name="training.augment.AugmentPipe", xflip=1, rotate90=1, xint=1,
                                       scale=1, rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1, lumaflip=1,
                                       hue=1, saturation=1),
        loss_kwargs=dnnlib.EasyDict(class_name="training.loss.StyleGAN2Loss", r1_gamma=0.1),
        metrics=[], random_seed=0, num_gpus=1, rank=0, batch_size=batch, batch_gpu=batch,
        ema_kimg=0.05, ema_rampup=0.05, G_reg_interval=4, D_reg_interval=16,
        augment_p=0.2, ada_target=0.6, ada_interval=4, ada_kimg=100, total_kimg=1000, kimg_per_tick=0.016,
        image_snapshot_ticks=1000, network_snapshot_ticks=1000, device="cpu",
        loggers=dnnlib.EasyDict(tensorboard=False),
    )
    c.update(overrides)
    return c


def plugin_entries(plugins=(), options=None):
    """[(name, plugin object, source)] from --plugins names (constructed with options) and plugin objects."""
    entries = []
    for plugin in plugins:
        if isinstance(plugin, str):
            factory = find_plugin(plugin)
            kwargs = make_plugin_kwargs([factory], options)[factory.name]
            entries.append((factory.name, *construct_plugin(factory.name, kwargs)))
        else:
            entries.append((getattr(plugin, "plugin_name", None) or type(plugin).__name__.lower(), plugin, "test"))
    return entries


def build_host(plugins=(), options=None):
    """A validated PluginHost from plugin names (with options) and/or plugin objects."""
    return PluginHost(plugin_entries(plugins, options))


def run_tiny_training(run_dir, data, plugins=(), options=None, iterations=2, resume=None, **overrides):
    """Build a Trainer with the tiny config and the given plugins, run `iterations` steps, return it.

    With names only, the plugins travel in the config (`plugin_kwargs`), as in a real run. The plugins are
    constructed once and gan_configure runs on the config, as train.py does. ``resume``: a run directory (its
    newest complete snapshot and training state: an exact resume, plugin state included) or a snapshot pickle
    (with the training state beside it when there is one), as ``train.py --resume``.
    """
    from training.checkpoint import resolve_resume
    from training.training_loop import Trainer

    os.makedirs(run_dir, exist_ok=True)
    c = tiny_config(data, run_dir, **overrides)
    c.max_iterations = iterations
    if resume is not None:
        c.resume_pkl, c.resume_state = resolve_resume(str(resume), log=lambda *a: None)
    if all(isinstance(p, str) for p in plugins):
        c.plugin_kwargs = make_plugin_kwargs([find_plugin(p) for p in plugins], options)
        host = PluginHost.from_config(c.plugin_kwargs)
    else:
        host = build_host(plugins, options)
    host.pm.hook.gan_configure(config=c, dataset_kwargs=c.training_set_kwargs)  # The launcher's step.
    trainer = Trainer(host=host, **c)
    trainer.run()
    return trainer


@pytest.fixture(scope="session")
def tiny_digits(tmp_path_factory):
    """Path of a 16 px labelled digits ZIP shared by the whole test session."""
    return make_digits_dataset(str(tmp_path_factory.mktemp("data") / "digits16.zip"), resolution=16)


@pytest.fixture
def tiny_trainer(tmp_path, tiny_digits):
    """Factory: tiny_trainer(plugins=[...], options={name: {...}}, iterations=2, resume=None, **config overrides)
    -> Trainer. ``resume=trainer.run_dir`` continues an earlier call's run exactly."""

    calls = []

    def make(plugins=(), options=None, iterations=2, resume=None, **overrides):
        run_dir = tmp_path / ("run" if not calls else f"run-{len(calls)}")
        calls.append(run_dir)
        return run_tiny_training(str(run_dir), tiny_digits, plugins=plugins, options=options,
                                 iterations=iterations, resume=resume, **overrides)

    return make
