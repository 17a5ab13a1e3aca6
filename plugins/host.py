"""The plugin host: discovery, construction from the run config, validation, and the facade the loop calls.

A run's plugins live in its config as ``plugin_kwargs = {name: {class_name | module, version, source,
**options}}`` (JSON-able, in ``--plugins`` order). ``PluginHost.from_config(plugin_kwargs)`` constructs
each plugin with its options as constructor arguments, so the launcher, every torchrun rank and a
replayed run (``train.py --config=RUN_DIR/training_options.json``) all build the same host.

The loop never touches pluggy directly; it calls PluginHost methods, which enforce the result rules,
validate returns and name the guilty plugin in errors. Every hook runs in ``--plugins`` order.
"""

import importlib
import importlib.util
import inspect
import os
import sys
import warnings

import numpy as np
import pluggy
import torch

import dnnlib

from . import PluginError, hookspecs

BUILTINS = {  # name -> "module:Class"
    "noisytwins": "plugins.noisytwins:NoisyTwins",
    "utlo": "plugins.utlo:Utlo",
    "transitional": "plugins.transitional:Transitional",
    "selfcond": "plugins.selfcond:SelfCond",
    "vision_aided": "plugins.vision_aided:VisionAided",
}
ALIASES = {"vision-aided": "vision_aided"}
TRACE_ENV = "GAN_PLUGINS_TRACE"
RESERVED_KEYS = ("class_name", "module", "version", "source")  # plugin_kwargs keys that are not options.
HOOK_NAMES = sorted(name for name in dir(hookspecs) if name.startswith("gan_"))


# ----------------------------------------------------------------------------- discovery


def entry_point_names():
    """{name: entry point value} of installed third-party plugins (read from metadata, nothing imported)."""
    from importlib import metadata

    eps = metadata.entry_points()
    group = eps.select(group=hookspecs.PROJECT_NAME) if hasattr(eps, "select") else eps.get(hookspecs.PROJECT_NAME, [])
    return {ep.name: ep.value for ep in group}


def available_plugins():
    """{name: source} for every plugin that --plugins can name: built-ins and entry points."""
    found = {name: "built-in" for name in BUILTINS}
    for name, value in entry_point_names().items():
        found.setdefault(name, f"entry point ({value})")
    return found


def _load_entry_point(name):
    """(loaded object, distribution version or None) through pluggy's own entry-point loader."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    if pm.load_setuptools_entrypoints(hookspecs.PROJECT_NAME, name=name) == 0:
        return None, None
    obj = pm.get_plugin(name)
    versions = [dist.version for plugin, dist in pm.list_plugin_distinfo() if plugin is obj]
    return obj, (versions[0] if versions else None)


def _load_module_from_file(path):
    module_name = "gan_plugin_file_" + os.path.splitext(os.path.basename(path))[0]
    if module_name in sys.modules and getattr(sys.modules[module_name], "__file__", None) == path:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None:
        raise PluginError(f"--plugins: cannot load {path!r} as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def _import_object(ref):
    """A class or module from 'pkg.module:Class', 'pkg.module' or '/path/file.py'."""
    if ref.endswith(".py"):
        return _load_module_from_file(os.path.abspath(os.path.expanduser(ref)))
    module_name, _, attr = ref.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


def _version_of(obj, default=None):
    version = getattr(obj, "version", None) or getattr(obj, "__version__", None)
    return str(version) if version is not None else (default or "unknown")


class PluginFactory:
    """How to construct one plugin: a class, a module with create_plugin(**options), or a plain module."""

    def __init__(self, name, obj, source, version=None):
        self.name = name
        self.obj = obj
        self.source = source
        self.version = _version_of(obj, version)
        self._options = None  # gan_add_options' answer, asked once (train.py needs it for the command and the config).

    @property
    def record(self):
        """The part of plugin_kwargs that says what to construct."""
        if inspect.isclass(self.obj):
            return dict(class_name=f"{self.obj.__module__}.{self.obj.__qualname__}")
        path = getattr(self.obj, "__file__", None)
        if self.source.startswith("file"):
            return dict(module=os.path.abspath(path))
        return dict(module=self.obj.__name__)

    def declared_options(self):
        """The plugin's click options, from gan_add_options called on the class or module (not an instance)."""
        if self._options is None:
            self._options = self._ask_options()
        return self._options

    def _ask_options(self):
        fn = getattr(self.obj, "gan_add_options", None)
        if fn is None:
            return []
        if inspect.isclass(self.obj) and not isinstance(inspect.getattr_static(self.obj, "gan_add_options"),
                                                        (staticmethod, classmethod)):
            raise PluginError(f"plugin {self.name!r}: gan_add_options must be a @staticmethod: it is called before "
                              "the plugin is constructed (its options are the constructor's arguments)")
        pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        pm.add_hookspecs(hookspecs)
        pm.register(self.obj, name=self.name)
        options = [opt for result in pm.hook.gan_add_options() for opt in (result or [])]
        for opt in options:
            if opt.name in RESERVED_KEYS:
                raise PluginError(f"plugin {self.name!r}: option {opt.opts[0]} uses the reserved name {opt.name!r}")
        return options

    def default_options(self):
        return {opt.name: opt.default for opt in self.declared_options()}


def find_plugin(name):
    """The PluginFactory of a --plugins entry: built-in, entry point, 'pkg.module[:Class]' or a .py file."""
    name = ALIASES.get(name, name)
    if name in BUILTINS:
        return PluginFactory(name, _import_object(BUILTINS[name]), "built-in")
    entry_points = entry_point_names()
    if name in entry_points:
        obj, version = _load_entry_point(name)
        return PluginFactory(name, obj, f"entry point ({entry_points[name]})", version)
    if name.endswith(".py") and os.path.isfile(os.path.expanduser(name)):
        path = os.path.abspath(os.path.expanduser(name))
        obj = _import_object(path)
        return PluginFactory(getattr(obj, "plugin_name", None) or os.path.splitext(os.path.basename(path))[0], obj,
                             f"file ({path})")
    if "." in name and importlib.util.find_spec(name.split(".")[0]) is not None:
        obj = _import_object(name)
        return PluginFactory(getattr(obj, "plugin_name", None) or name.rsplit(".", 1)[-1].split(":")[-1], obj,
                             f"module ({name})")
    valid = ", ".join(sorted(available_plugins()))
    raise PluginError(f"--plugins: unknown plugin {name!r}. Available: {valid}. "
                      "A third-party plugin can also be given as a module path (mypkg.plugin) or a .py file.")


def parse_plugin_list(text):
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    return sorted(set(names), key=names.index)


def make_plugin_kwargs(factories, values_by_plugin=None):
    """plugin_kwargs for the run config: {name: {class_name | module, version, source, **options}}."""
    kwargs = {}
    for factory in factories:
        options = factory.default_options()
        options.update((values_by_plugin or {}).get(factory.name, {}))
        kwargs[factory.name] = dnnlib.EasyDict(**factory.record, version=factory.version, source=factory.source, **options)
    return kwargs


def construct_plugin(name, kwargs):
    """(plugin object, source) from one plugin_kwargs entry."""
    kwargs = dict(kwargs)
    ref = kwargs.pop("class_name", None)
    module_ref = kwargs.pop("module", None)
    recorded_version = kwargs.pop("version", None)
    source = kwargs.pop("source", "config")
    if ref is None and module_ref is None:
        raise PluginError(f"plugin_kwargs[{name!r}] names neither class_name nor module")
    try:
        obj = dnnlib.util.get_obj_by_name(ref) if ref is not None else _import_object(module_ref)
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"plugin {name!r}: cannot import {ref or module_ref}: {exc}; is the plugin installed?") from None
    if recorded_version is not None and _version_of(obj) not in (recorded_version, "unknown"):
        warnings.warn(f"plugin {name!r}: the run config was written by version {recorded_version}, "
                      f"version {_version_of(obj)} is installed")
    if inspect.isclass(obj):
        factory = obj
    elif callable(getattr(obj, "create_plugin", None)):
        factory = obj.create_plugin
    elif kwargs:
        raise PluginError(f"plugin {name!r} ({module_ref}) has options {sorted(kwargs)} but no class or "
                          "create_plugin(**options) to receive them")
    else:
        return obj, source
    try:
        return factory(**kwargs), source
    except TypeError as exc:
        raise PluginError(f"plugin {name!r}: cannot construct it with options {sorted(kwargs)}: {exc}") from None


# ----------------------------------------------------------------------------- the host


class PluginHost:
    """The enabled plugins, registered with pluggy, validated, and called through typed methods."""

    def __init__(self, plugins=()):
        """plugins: [(name, object) or (name, object, source)] in --plugins order (objects already constructed)."""
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.plugins = {}  # {name: plugin object}, in --plugins order.
        self.sources = {}
        # Published state: values one plugin sets for others to read (gan_step's jobs.shared; keys and
        # meanings in hookspecs.SHARED_KEYS). Every rank holds the same values.
        self.shared = {}
        for entry in plugins:
            name, obj, source = (*entry, "object")[:3]
            if name in self.plugins:
                raise PluginError(f"plugin {name!r} is enabled twice")
            self.plugins[name] = obj
            self.sources[name] = source
        # pluggy calls the last registered implementation first: register in reverse so hooks run in --plugins order.
        for name in reversed(list(self.plugins)):
            self.pm.register(self.plugins[name], name=name)
        if os.environ.get(TRACE_ENV):
            self.pm.add_hookcall_monitoring(self._trace_before, self._trace_after)
        self.validate()
        self._callers = self._per_plugin_callers()

    @classmethod
    def from_config(cls, plugin_kwargs):
        """Construct every plugin of a run config's plugin_kwargs, in order, and validate the set."""
        plugins = []
        for name, kwargs in (plugin_kwargs or {}).items():
            obj, source = construct_plugin(name, kwargs)
            plugins.append((name, obj, source))
        return cls(plugins)

    @classmethod
    def create(cls, names, options=None):
        """A host from --plugins names with default options, updated by options={name: {dest: value}}."""
        factories = [find_plugin(name) for name in names]
        return cls.from_config(make_plugin_kwargs(factories, options))

    # ------------------------------------------------------------------ validation

    def validate(self):
        """Start-up checks, after every option is known: misspelt hooks, conflicts, requirements, firstresult."""
        for name, obj in self.plugins.items():
            for attr in dir(obj):
                if attr not in HOOK_NAMES and self.pm.parse_hookimpl_opts(obj, attr) is not None:
                    raise PluginError(f"plugin {name!r} implements a hook that does not exist: {attr}; "
                                      f"did you mean {_closest_hook(attr)}? Valid hooks are listed in plugins/hookspecs.py.")
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.pm.get_name(exc.plugin) if exc.plugin is not None else "?"
            raise PluginError(f"plugin {name!r} implements a hook that does not exist: {exc}. "
                              f"Valid hooks are listed in plugins/hookspecs.py.") from None
        for name, obj in self.plugins.items():
            self._warn_unmarked_hooks(name, obj)
            conflicts = getattr(obj, "conflicts", None) or {}
            if not isinstance(conflicts, dict):
                conflicts = {other: "" for other in conflicts}
            for other, reason in conflicts.items():
                if other in self.plugins and not self._conflict_lifted(name, other):
                    raise PluginError(f"plugins {name!r} and {other!r} cannot be combined{': ' + reason if reason else ''}")
            for required in getattr(obj, "requires_plugins", ()):
                if required not in self.plugins:
                    raise PluginError(f"plugin {name!r} needs plugin {required!r}; add it to --plugins")
        for hook_name in HOOK_NAMES:
            caller = getattr(self.pm.hook, hook_name)
            if caller.spec is None or not caller.spec.opts.get("firstresult"):
                continue
            owners = [impl.plugin_name for impl in reversed(caller.get_hookimpls())]
            if len(owners) > 1:
                raise PluginError(f"plugins {' and '.join(repr(o) for o in owners)} both implement {hook_name}, "
                                  "which only one plugin may answer; enable only one of them")

    def _conflict_lifted(self, a, b):
        """A declared conflict is lifted when either plugin, as constructed with its options, opts in."""
        for this, other in ((a, b), (b, a)):
            fn = getattr(self.plugins[this], "lifts_conflict", None)
            if fn is not None and fn(other):
                return True
        return False

    def _warn_unmarked_hooks(self, name, obj):
        """A gan_* attribute without @hookimpl is silently ignored by pluggy; say so."""
        for attr in dir(obj):
            if not attr.startswith("gan_") or not callable(getattr(obj, attr, None)):
                continue
            if self.pm.parse_hookimpl_opts(obj, attr) is None:
                hint = f"; did you mean {_closest_hook(attr)}?" if attr not in HOOK_NAMES else ""
                warnings.warn(f"plugin {name!r}: {attr} is not marked with @hookimpl and will never be called{hint}")

    # ------------------------------------------------------------------ description

    def versions(self):
        return {name: _version_of(obj) for name, obj in self.plugins.items()}

    def describe(self):
        """[(name, version, source, [hook names])] for --list-plugins."""
        rows = []
        for name, obj in self.plugins.items():
            hooks = sorted(h.name for h in self.pm.get_hookcallers(obj) or [])
            rows.append((name, self.versions()[name], self.sources[name], hooks))
        return rows

    # ------------------------------------------------------------------ calling helpers

    def _per_plugin_callers(self):
        """{hook name: [(plugin name, HookCaller limited to that plugin)]} in --plugins order.

        Calls go through pluggy (so hook-call monitoring and tracing see them) one plugin at a time, so
        that every result can be attributed to its plugin (pluggy drops None results otherwise).
        """
        callers = {}
        for hook_name in HOOK_NAMES:
            impls = {impl.plugin_name for impl in getattr(self.pm.hook, hook_name).get_hookimpls()}
            callers[hook_name] = [
                (name, self.pm.subset_hook_caller(hook_name, [o for n, o in self.plugins.items() if n != name]))
                for name in self.plugins if name in impls]
        return callers

    def _call_each(self, hook_name, **kwargs):
        """[(plugin name, result)] of every plugin implementing hook_name, in --plugins order."""
        results = []
        for name, caller in self._callers[hook_name]:
            result = caller(**kwargs)
            if isinstance(result, list):  # Not firstresult: pluggy returns the list of non-None results.
                result = result[0] if result else None
            results.append((name, result))
        return results

    def _first(self, hook_name, **kwargs):
        for _name, result in self._call_each(hook_name, **kwargs):
            if result is not None:
                return result
        return None

    @staticmethod
    def _trace_before(hook_name, hook_impls, kwargs):
        names = ", ".join(impl.plugin_name for impl in reversed(hook_impls))
        sys.stderr.write(f"[plugins] {hook_name} -> {names} ({', '.join(sorted(kwargs))})\n")

    @staticmethod
    def _trace_after(outcome, hook_name, hook_impls, kwargs):
        exc = outcome.exception
        if exc is not None:
            sys.stderr.write(f"[plugins] {hook_name} raised {exc.__class__.__name__}: {exc}\n")

    # ------------------------------------------------------------------ setup facade

    def configure(self, config, dataset_kwargs):
        self.pm.hook.gan_configure(config=config, dataset_kwargs=dataset_kwargs)

    def dataset_ready(self, dataset, class_counts):
        self.pm.hook.gan_dataset_ready(dataset=dataset, class_counts=class_counts)

    def label_dim(self, dataset, label_dim):
        result = self._first("gan_label_dim", dataset=dataset, label_dim=label_dim)
        if result is None:
            return label_dim
        if not isinstance(result, (int, np.integer)) or result < 1:
            raise PluginError(f"gan_label_dim must return a positive int, got {result!r}")
        return int(result)

    def extend_networks(self, G, D, dataset):
        self.pm.hook.gan_extend_networks(G=G, D=D, dataset=dataset)

    def extra_optimizers(self, G, D, G_opt_kwargs=None, D_opt_kwargs=None):
        """[dict(name, params, opt_kwargs, step_with, plugin)] declared by the plugins, validated."""
        found = []
        for plugin, result in self._call_each("gan_extra_optimizers", G=G, D=D, G_opt_kwargs=dict(G_opt_kwargs or {}),
                                              D_opt_kwargs=dict(D_opt_kwargs or {})):
            for spec in result or []:
                if not isinstance(spec, dict) or not {"name", "params", "opt_kwargs", "step_with"} <= set(spec):
                    raise PluginError(f"plugin {plugin!r}: gan_extra_optimizers must return dicts with name, params, "
                                      f"opt_kwargs and step_with, got {spec!r}")
                if spec["step_with"] not in ("G", "D"):
                    raise PluginError(f"plugin {plugin!r}: optimiser {spec['name']!r} has step_with="
                                      f"{spec['step_with']!r}; use 'G' or 'D'")
                params = list(spec["params"])
                if not params or not all(isinstance(p, torch.nn.Parameter) for p in params):
                    raise PluginError(f"plugin {plugin!r}: optimiser {spec['name']!r} needs a non-empty list of parameters")
                name = f"{plugin}/{spec['name']}"
                if any(f["name"] == name for f in found):
                    raise PluginError(f"plugin {plugin!r} declares optimiser {spec['name']!r} twice")
                found.append(dict(spec, name=name, params=params, plugin=plugin))
        return found

    def frozen_modules(self, device):
        """{name: module} of every plugin's frozen modules, moved to device, in eval mode, without gradients."""
        modules = {}
        for plugin, result in self._call_each("gan_frozen_modules", device=device):
            for name, module in (result or {}).items():
                if name in modules:
                    raise PluginError(f"plugin {plugin!r}: frozen module name {name!r} is already taken")
                if not isinstance(module, torch.nn.Module):
                    raise PluginError(f"plugin {plugin!r}: frozen module {name!r} is not a torch.nn.Module")
                modules[name] = module.to(device).eval().requires_grad_(False)
        return modules

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

    def on_train_start(self, batch_size=None, **kwargs):
        self.pm.hook.gan_train_start(batch_size=batch_size, **kwargs)

    def on_train_end(self, cur_nimg, run_dir):
        self.pm.hook.gan_train_end(cur_nimg=cur_nimg, run_dir=run_dir)

    def register_metrics(self, register):
        self.pm.hook.gan_register_metrics(register=register)

    # ------------------------------------------------------------------ iteration facade

    def on_step(self, cur_nimg, batch_idx, jobs):
        self.pm.hook.gan_step(cur_nimg=cur_nimg, batch_idx=batch_idx, jobs=jobs)

    def class_counts_changed(self, class_counts):
        self.pm.hook.gan_class_counts_changed(class_counts=class_counts)

    def grid_labels(self, grid_size, labels):
        return self._first("gan_grid_labels", grid_size=grid_size, labels=labels)

    def real_labels(self, images, labels, cur_nimg, c_dim):
        """The real batch's labels for networks with c_dim classes (a plugin's when the width is its own)."""
        result = self._first("gan_real_labels", images=images, labels=labels, cur_nimg=cur_nimg)
        if result is None:
            if labels.shape[1] != c_dim:
                raise PluginError(f"the networks have c_dim={c_dim} but the data's labels are {labels.shape[1]} wide "
                                  "and no plugin provides real labels (gan_real_labels)")
            return labels
        if tuple(result.shape) != (labels.shape[0], c_dim):
            raise PluginError(f"gan_real_labels returned shape {list(result.shape)}, expected {[labels.shape[0], c_dim]}")
        return torch.as_tensor(result).to(labels.device, torch.float32)

    def sample_fake_labels(self, n, rng, dataset, class_counts, real_labels):
        return self._first("gan_sample_fake_labels", n=n, rng=rng, dataset=dataset, class_counts=class_counts,
                           real_labels=real_labels)

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
        """The plugins' validated terms for one pass, as training.loss.LossTerm (owner = the plugin's name)."""
        from training.loss import LossTerm

        result = []
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
                if not np.isfinite(float(weight)):
                    raise PluginError(f"plugin {name!r}: loss term {term_name!r} has weight {weight!r}")
                result.append(LossTerm(owner=name, name=str(term_name), weight=float(weight), value=value))
        return result

    def real_logits_for(self, ctx, default):
        result = self._first("gan_real_logits", ctx=ctx)
        return default if result is None else result

    # ------------------------------------------------------------------ tick / state facade

    def snapshot_images(self, G_ema, grid_z, grid_c):
        images = {}
        for _name, result in self._call_each("gan_snapshot_images", G_ema=G_ema, grid_z=grid_z, grid_c=grid_c):
            images.update(result or {})
        return images

    def on_tick(self, stats, cur_nimg):
        self.pm.hook.gan_tick(cur_nimg=cur_nimg, stats=stats)

    def state_dict(self):
        state = {}
        for name, result in self._call_each("gan_state_dict"):
            if result is not None:
                state[name] = result
        return state

    def load_state_dict(self, state):
        for name, caller in self._callers["gan_load_state_dict"]:
            if name in state:
                caller(state=state[name])


def _closest_hook(attr):
    import difflib

    matches = difflib.get_close_matches(attr, HOOK_NAMES, n=1)
    return matches[0] if matches else "one of the hooks in plugins/hookspecs.py"
