"""Test helpers for plugin authors: a tiny CPU trainer that runs a few iterations in seconds.

In your tests' conftest.py:

    pytest_plugins = ["plugins.testing"]

then in a test:

    def test_my_plugin(tiny_trainer):
        trainer = tiny_trainer(plugins=[MyPlugin()], options={"my_plugin": {"weight": 1.0}}, iterations=2)
        assert ...   # trainer.G, trainer.D, trainer.run_dir, trainer.stats_collector, ...
"""

import os

import pytest

import dnnlib
from plugins.host import PluginHost, load_plugin_object

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


def build_host(plugins=(), options=None):
    """A PluginHost from plugin names and/or plugin objects, with their options set."""
    host = PluginHost()
    for plugin in plugins:
        if isinstance(plugin, str):
            host.register(*load_plugin_object(plugin))
        else:
            name = getattr(plugin, "plugin_name", None) or type(plugin).__name__.lower()
            host.register(name, plugin, source="test")
    host.validate()
    defaults = {}
    for name, opts in host.option_specs().items():
        defaults[name] = {opt.name: opt.default for opt in opts}
        defaults[name].update((options or {}).get(name, {}))
    host.set_options(defaults)
    return host


def run_tiny_training(run_dir, data, plugins=(), options=None, iterations=2, **overrides):
    """Build a Trainer with the tiny config and the given plugins, run `iterations` steps, return it."""
    from training.training_loop import Trainer

    os.makedirs(run_dir, exist_ok=True)
    host = build_host(plugins, options)
    c = tiny_config(data, run_dir, **overrides)
    c.max_iterations = iterations
    host.configure(config=c, dataset_kwargs=c.training_set_kwargs)
    trainer = Trainer(host=host, **c)
    trainer.run()
    return trainer


@pytest.fixture(scope="session")
def tiny_digits(tmp_path_factory):
    """Path of a 16 px labelled digits ZIP shared by the whole test session."""
    return make_digits_dataset(str(tmp_path_factory.mktemp("data") / "digits16.zip"), resolution=16)


@pytest.fixture
def tiny_trainer(tmp_path, tiny_digits):
    """Factory: tiny_trainer(plugins=[...], options={name: {...}}, iterations=2, **config overrides) -> Trainer."""

    def make(plugins=(), options=None, iterations=2, **overrides):
        return run_tiny_training(str(tmp_path / "run"), tiny_digits, plugins=plugins, options=options,
                                 iterations=iterations, **overrides)

    return make
