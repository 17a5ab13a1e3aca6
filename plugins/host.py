"""The plugin host: discovery, options, validation, and the typed facade the training loop calls.

The loop never touches pluggy directly; it calls PluginHost methods, which enforce the result rules,
validate returns and name the guilty plugin in errors.
"""

import importlib
import importlib.util
import os
import sys

import numpy as np
import pluggy
import torch

import dnnlib
from torch_utils import training_stats

from . import PluginError, hookspecs

BUILTINS = {
    "noisytwins": "plugins.noisytwins",
    "utlo": "plugins.utlo",
}
ALIASES = {"vision-aided": "vision_aided"}
TRACE_ENV = "GAN_PLUGINS_TRACE"


# ----------------------------------------------------------------------------- discovery


def _entry_points():
    """{name: EntryPoint} of installed third-party plugins."""
    from importlib import metadata

    eps = metadata.entry_points()
    group = eps.select(group=hookspecs.PROJECT_NAME) if hasattr(eps, "select") else eps.get(hookspecs.PROJECT_NAME, [])
    return {ep.name: ep for ep in group}


def available_plugins():
    """{name: source} for every plugin that --plugins can name: built-ins and entry points."""
    found = {name: "built-in" for name in BUILTINS}
    for name, ep in _entry_points().items():
        found.setdefault(name, f"entry point ({ep.value})")
    return found


def _load_module_from_file(path):
    module_name = "gan_plugin_file_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None:
        raise PluginError(f"--plugins: cannot load {path!r} as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def load_plugin_object(name):
    """(canonical name, plugin object, source) for a --plugins entry: built-in, entry point, module or file."""
    name = ALIASES.get(name, name)
    if name in BUILTINS:
        obj, source = importlib.import_module(BUILTINS[name]), "built-in"
    elif name in _entry_points():
        ep = _entry_points()[name]
        obj, source = ep.load(), f"entry point ({ep.value})"
    elif name.endswith(".py") and os.path.isfile(os.path.expanduser(name)):
        path = os.path.expanduser(name)
        obj, source = _load_module_from_file(path), f"file ({path})"
        name = os.path.splitext(os.path.basename(path))[0]
    elif "." in name and importlib.util.find_spec(name.split(".")[0]) is not None:
        obj, source = importlib.import_module(name), f"module ({name})"
        name = name.rsplit(".", 1)[-1]
    else:
        valid = ", ".join(sorted(available_plugins()))
        raise PluginError(f"--plugins: unknown plugin {name!r}. Available: {valid}. "
                          "A third-party plugin can also be given as a module path (mypkg.plugin) or a .py file.")
    # A module may offer a factory so that each run gets a fresh plugin object with its own state.
    if hasattr(obj, "create_plugin") and callable(obj.create_plugin):
        obj = obj.create_plugin()
    name = getattr(obj, "plugin_name", None) or name
    return name, obj, source


def parse_plugin_list(text):
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    return sorted(set(names), key=names.index)


# ----------------------------------------------------------------------------- the host


class PluginHost:
    def __init__(self):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.plugins = {}  # {name: plugin object}, in --plugins order.
        self.sources = {}
        if os.environ.get(TRACE_ENV):
            self.pm.trace.root.setwriter(sys.stderr.write)
            self.pm.enable_tracing()

    @classmethod
    def create(cls, names):
        """A host with the named plugins registered and validated (hook names, conflicts, requirements)."""
        host = cls()
        for name in names:
            host.register(*load_plugin_object(name))
        host.validate()
        return host

    def register(self, name, obj, source="object"):
        if name in self.plugins:
            raise PluginError(f"plugin {name!r} is enabled twice")
        obj.plugin_name = name
        if not hasattr(obj, "options"):
            obj.options = dnnlib.EasyDict()
        self.plugins[name] = obj
        self.sources[name] = source
        self.pm.register(obj, name=name)

    def validate(self):
        """Start-up checks: misspelt hooks, declared conflicts/requirements, firstresult conflicts."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.pm.get_name(exc.plugin) if exc.plugin is not None else "?"
            raise PluginError(f"plugin {name!r} implements a hook that does not exist: {exc}. "
                              f"Valid hooks are listed in plugins/hookspecs.py.") from None
        for name, obj in self.plugins.items():
            for other in getattr(obj, "conflicts", ()):
                if other in self.plugins:
                    reason = getattr(obj, "conflict_reasons", {}).get(other, "")
                    raise PluginError(f"plugins {name!r} and {other!r} cannot be combined{': ' + reason if reason else ''}")
            for required in getattr(obj, "requires_plugins", ()):
                if required not in self.plugins:
                    raise PluginError(f"plugin {name!r} needs plugin {required!r}; add it to --plugins")
        for hook_name in hookspecs.FIRSTRESULT_HOOKS:
            owners = [impl.plugin_name for impl in getattr(self.pm.hook, hook_name).get_hookimpls()]
            if len(owners) > 1:
                raise PluginError(f"plugins {' and '.join(repr(o) for o in owners)} both implement {hook_name}, "
                                  "which only one plugin may answer; enable only one of them")

    def versions(self):
        return {name: str(getattr(obj, "version", getattr(obj, "__version__", "unknown"))) for name, obj in self.plugins.items()}

    def describe(self):
        """[(name, version, source, [hook names])] for --list-plugins."""
        rows = []
        for name, obj in self.plugins.items():
            hooks = sorted(h.name for h in self.pm.get_hookcallers(obj) or [])
            rows.append((name, self.versions()[name], self.sources[name], hooks))
        return rows

    # ------------------------------------------------------------------ options

    def option_specs(self):
        """{plugin name: [click.Option]} from every enabled plugin."""
        specs = {}
        for name, obj in self.plugins.items():
            fn = getattr(obj, "gan_add_options", None)
            specs[name] = list(fn()) if fn is not None else []
        return specs

    def set_options(self, values_by_plugin):
        for name, values in values_by_plugin.items():
            self.plugins[name].options = dnnlib.EasyDict(values)

    def options_record(self):
        """What training_options.json stores under 'plugins'."""
        versions = self.versions()
        return {name: dict(version=versions[name], source=self.sources[name], options=dict(obj.options))
                for name, obj in self.plugins.items()}

    # ------------------------------------------------------------------ calling helpers

    def _call_each(self, hook_name, **kwargs):
        """[(plugin name, result)] calling every implementation (for attributable results)."""
        results = []
        for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):  # Registration order.
            args = {k: kwargs[k] for k in impl.argnames}
            if os.environ.get(TRACE_ENV):
                sys.stderr.write(f"[plugins] {hook_name} -> {impl.plugin_name}\n")
            results.append((impl.plugin_name, impl.function(**args)))
        return results

    def _first(self, hook_name, **kwargs):
        for _name, result in self._call_each(hook_name, **kwargs):
            if result is not None:
                return result
        return None

    # ------------------------------------------------------------------ setup facade

    def configure(self, config, dataset_kwargs):
        self.pm.hook.gan_configure(config=config, dataset_kwargs=dataset_kwargs)

    def dataset_ready(self, dataset, class_counts):
        self.pm.hook.gan_dataset_ready(dataset=dataset, class_counts=class_counts)

    def extend_networks(self, G, D, dataset):
        self.pm.hook.gan_extend_networks(G=G, D=D, dataset=dataset)

    def extra_parameters(self, network, module):
        params = []
        for name, result in self._call_each("gan_extra_parameters", network=network, module=module):
            for p in result or []:
                if not isinstance(p, torch.nn.Parameter):
                    raise PluginError(f"plugin {name!r}: gan_extra_parameters must return torch.nn.Parameter objects")
                params.append(p)
        return params

    def check_resume(self, snapshot, state):
        """Refuse to resume a run trained with other plugins, then let each plugin check the snapshot."""
        enabled = set(self.plugins)
        if state is not None and "plugin_names" in state:
            trained = set(state["plugin_names"])
            mismatch = trained != enabled
        else:  # Weights only: the extension modules inside the networks tell which plugins built them.
            trained = set()
            for key in ("G", "D"):
                net = snapshot.get(key)
                for holder in (getattr(net, "mapping", None), net):
                    trained |= set(getattr(holder, "extensions", None) or {})
            mismatch = not trained <= enabled  # Plain (e.g. NVIDIA) pickles resume with any plugins.
        if mismatch:
            raise PluginError(f"--resume: the snapshot was trained with plugins {sorted(trained) or 'none'}, this run "
                              f"enables {sorted(enabled) or 'none'}; pass --plugins={','.join(sorted(trained))} "
                              "to resume it")
        self.pm.hook.gan_check_resume(snapshot=snapshot, state=state)

    def on_train_start(self, trainer):
        self.pm.hook.gan_train_start(trainer=trainer)

    def on_train_end(self, trainer):
        self.pm.hook.gan_train_end(trainer=trainer)

    def register_metrics(self, register):
        self.pm.hook.gan_register_metrics(register=register)

    # ------------------------------------------------------------------ iteration facade

    def on_step(self, cur_nimg, trainer):
        self.pm.hook.gan_step(cur_nimg=cur_nimg, trainer=trainer)

    def real_labels(self, images, labels, cur_nimg):
        result = self._first("gan_real_labels", images=images, labels=labels, cur_nimg=cur_nimg)
        if result is None:
            return labels
        if tuple(result.shape) != tuple(labels.shape):
            raise PluginError(f"gan_real_labels returned shape {list(result.shape)}, expected {list(labels.shape)}")
        return result.to(labels.device, labels.dtype)

    def sample_fake_labels(self, n, rng, dataset, class_counts):
        return self._first("gan_sample_fake_labels", n=n, rng=rng, dataset=dataset, class_counts=class_counts)

    def generator_batch(self, phase, z, c, cur_nimg):
        result = self._first("gan_generator_batch", phase=phase, z=z, c=c, cur_nimg=cur_nimg)
        if result is None:
            return z, c
        new_z, new_c = result
        if new_z.shape != z.shape or new_c.shape != c.shape:
            raise PluginError("gan_generator_batch must return z and c of the shapes it received")
        return new_z, new_c

    def base_loss_weight(self, phase, cur_nimg):
        weight = 1.0
        for name, result in self._call_each("gan_base_loss_weight", phase=phase, cur_nimg=cur_nimg):
            if result is None:
                continue
            if not np.isfinite(float(result)):
                raise PluginError(f"plugin {name!r}: gan_base_loss_weight returned {result!r}")
            weight *= float(result)
        return weight

    def loss_terms(self, ctx, batch_size):
        """Sum of weight * mean(term) over all plugins' terms; each term is reported in the stats."""
        total = 0
        for name, terms in self._call_each("gan_loss_terms", ctx=ctx):
            for term in terms or []:
                if not (isinstance(term, (tuple, list)) and len(term) == 3):
                    raise PluginError(f"plugin {name!r}: gan_loss_terms must return (name, weight, tensor) tuples, got {term!r}")
                term_name, weight, value = term
                value = torch.as_tensor(value)
                if value.ndim > 1 or (value.ndim == 1 and value.shape[0] != batch_size):
                    raise PluginError(f"plugin {name!r}: loss term {term_name!r} has shape {list(value.shape)}; "
                                      f"expected a scalar or [{batch_size}] (one value per sample)")
                if not torch.isfinite(value.detach()).all():
                    raise PluginError(f"plugin {name!r}: loss term {term_name!r} is not finite in phase {ctx.phase} "
                                      f"at kimg {ctx.cur_nimg / 1000:.1f}")
                training_stats.report(f"Loss/{name}/{term_name}", value)
                if weight != 0:
                    total = total + float(weight) * value.mean()
        return total

    def real_logits_for(self, ctx, default):
        result = self._first("gan_real_logits", ctx=ctx)
        return default if result is None else result

    # ------------------------------------------------------------------ tick / state facade

    def snapshot_images(self, G_ema, grid_z, grid_c):
        images = {}
        for _name, result in self._call_each("gan_snapshot_images", G_ema=G_ema, grid_z=grid_z, grid_c=grid_c):
            images.update(result or {})
        return images

    def log_scalars(self, stats, cur_nimg):
        self.pm.hook.gan_tick(cur_nimg=cur_nimg, stats=stats)

    def state_dict(self):
        state = {}
        for name, result in self._call_each("gan_state_dict"):
            if result is not None:
                state[name] = result
        return state

    def load_state_dict(self, state):
        for impl in self.pm.hook.gan_load_state_dict.get_hookimpls():
            if impl.plugin_name in state:
                impl.function(**{k: state[impl.plugin_name] for k in impl.argnames})
