"""Which classes an input file may name: the trust boundary of run configs, safetensors headers and the dataset
kwargs stored in snapshots.

A run config (``training_options.json``, replayed with ``train.py --config``) is data: each ``*_kwargs.class_name``
in it must be one of this project's classes for that role, checked as a string before anything is imported.
A plugin in its ``plugin_kwargs`` must be installed (an entry point of the ``gan_plugins`` group, the built-in
methods included) or given on the command line with ``--plugins``: the command line is the user's own decision, a
file is not. Network pickles remain code (Python's pickle); that risk is the documented one.
"""

import dnnlib

# {config key: class names a file may name there}. To train with another class, write a plugin or change the code.
ALLOWED = {
    "training_set_kwargs": {"training.dataset.ImageFolderDataset"},
    "G_kwargs": {"training.networks.Generator"},
    "D_kwargs": {"training.networks.Discriminator"},
    "loss_kwargs": {"training.loss.StyleGAN2Loss"},
    "augment_kwargs": {"training.augment.AugmentPipe"},
    "G_opt_kwargs": {"torch.optim.Adam", "torch.optim.AdamW", "torch.optim.SGD", "torch.optim.RMSprop"},
    "D_opt_kwargs": {"torch.optim.Adam", "torch.optim.AdamW", "torch.optim.SGD", "torch.optim.RMSprop"},
}


class UntrustedInput(ValueError):
    """An input file names code that it may not; the message names the file, the entry and what to do."""


def check_class(key, class_name, source):
    """Refuse ``class_name`` at config key ``key`` unless it is on the allow-list (nothing is imported)."""
    allowed = ALLOWED.get(key, set())
    if not isinstance(class_name, str) or class_name not in allowed:
        choices = ", ".join(sorted(allowed)) or "no class at all"
        raise UntrustedInput(f"{source}: {key}.class_name = {class_name!r} is not allowed there (allowed: {choices}); "
                             "a file may not name other code. Change it back, or train with a plugin")


def installed_plugin_classes():
    """{'module.Class' of every installed plugin entry point}."""
    from plugins.host import entry_point_names

    return {value.replace(":", ".") for value in entry_point_names().values()}


# Types of the run config's scalar settings (a replayed file must have them; nested kwargs are checked by the
# constructors they reach, and by the allow-list above for class names).
NUMBER = (int, float)
SCALAR_TYPES = {
    "num_gpus": int, "batch_size": int, "batch_gpu": int, "random_seed": int, "total_kimg": NUMBER,
    "kimg_per_tick": NUMBER, "ema_kimg": NUMBER, "ema_rampup": (NUMBER, type(None)), "G_reg_interval": (int, type(None)),
    "D_reg_interval": (int, type(None)), "augment_p": NUMBER, "ada_target": (NUMBER, type(None)), "ada_interval": int,
    "ada_kimg": NUMBER, "image_snapshot_ticks": (int, type(None)), "network_snapshot_ticks": (int, type(None)),
    "state_ticks": (int, type(None)), "fake_labels": (str, type(None)), "metrics": list, "device": str,
    "num_threads": (int, type(None)), "omp_wait_policy": (str, type(None)), "grid_scale": (int, type(None)), "grid_gap": (int, type(None)), "state_minutes": (NUMBER, type(None)),
}
POSITIVE = ("num_gpus", "batch_size", "batch_gpu", "total_kimg", "kimg_per_tick")


def check_config_types(config, source):
    """Refuse a run config whose settings have the wrong type or range, naming the key."""
    import math

    for key, expected in SCALAR_TYPES.items():
        if key not in config:
            continue
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, expected):
            raise UntrustedInput(f"{source}: {key} = {value!r} has the wrong type (a {type(value).__name__}); "
                                 "fix the file or start the run from its command line")
        if isinstance(value, float) and not math.isfinite(value):
            raise UntrustedInput(f"{source}: {key} = {value!r} is not a finite number")
        if key in POSITIVE and value <= 0:
            raise UntrustedInput(f"{source}: {key} = {value!r} must be positive")
    for key in ALLOWED:
        if key in config and config[key] is not None and not isinstance(config[key], dict):
            raise UntrustedInput(f"{source}: {key} must be a JSON object, not {type(config[key]).__name__}")
    if isinstance(config.get("random_seed"), int) and not 0 <= config["random_seed"] < 2 ** 32:
        raise UntrustedInput(f"{source}: random_seed = {config['random_seed']} is out of range 0..2^32-1")
    if isinstance(config.get("batch_size"), int) and isinstance(config.get("batch_gpu"), int) and \
            isinstance(config.get("num_gpus"), int) and config["batch_size"] % (config["batch_gpu"] * config["num_gpus"]):
        raise UntrustedInput(f"{source}: batch_size must be a multiple of batch_gpu * num_gpus")


def check_run_config(config, source, command_line_plugins=()):
    """Refuse a run config that names code outside the allow-list (see the module docstring) or has settings of
    the wrong type."""
    if not isinstance(config, dict):
        raise UntrustedInput(f"{source}: not a JSON object")
    check_config_types(config, source)
    _check_tree(config, source, path="")
    plugin_kwargs = config.get("plugin_kwargs") or {}
    if not isinstance(plugin_kwargs, dict):
        raise UntrustedInput(f"{source}: plugin_kwargs must be a mapping of plugin names to options")
    installed = None
    for name, entry in plugin_kwargs.items():
        if not isinstance(entry, dict):
            raise UntrustedInput(f"{source}: plugin_kwargs[{name!r}] must be a mapping of options")
        if name in command_line_plugins:
            continue  # The user named it on the command line: their decision.
        if "module" in entry:
            raise UntrustedInput(f"{source}: plugin {name!r} is a module or file ({entry['module']!r}), which a config "
                                 f"file may not load; give --plugins={name} on the command line to run it yourself")
        installed = installed_plugin_classes() if installed is None else installed
        if not isinstance(entry.get("class_name"), str) or entry["class_name"] not in installed:
            raise UntrustedInput(f"{source}: plugin {name!r} names class {entry.get('class_name')!r}, which is not an "
                                 "installed plugin; install the plugin (pip) or give --plugins on the command line")


def _check_tree(value, source, path):
    if isinstance(value, dict):
        for key, child in value.items():
            if key == "plugin_kwargs" and not path:
                continue  # Checked by check_run_config.
            if key == "class_name":
                check_class(path, child, source)
            else:
                _check_tree(child, source, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            _check_tree(child, source, f"{path}[{i}]")


def check_dataset_kwargs(kwargs, source):
    """The dataset kwargs a snapshot or safetensors header carries: an allowed class, or none (the default)."""
    kwargs = dnnlib.EasyDict(kwargs or {})
    if "class_name" in kwargs:
        check_class("training_set_kwargs", kwargs.class_name, source)
    return kwargs
