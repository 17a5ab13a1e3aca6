"""The plugin host: discovery, construction from the run config, and start-up checks.

A run's plugins live in its config as ``plugin_kwargs = {name: {class_name | module, version, source,
**options}}`` (JSON-able, in ``--plugins`` order). ``PluginHost.from_config(plugin_kwargs)`` constructs
each plugin with its options as constructor arguments, so the launcher, every torchrun rank and a
replayed run (``train.py --config=RUN_DIR/training_options.json``) all build the same host.

The loop calls pluggy directly (``host.pm.hook.gan_*``); the typed objects of training/plugin_api.py and
training/loss.py check what hooks return. Every hook runs in ``--plugins`` order.
"""

import importlib
import importlib.util
import inspect
import os
import sys
import warnings

import pluggy

import dnnlib

from . import PluginError, hookspecs

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
    """{name: source} for every plugin that --plugins can name: the entry points of the gan_plugins group (this
    project's own methods are entry points of its pyproject.toml, like any third-party plugin)."""
    return {name: _source_of(value) for name, value in entry_point_names().items()}


def _source_of(value):
    return "built-in" if value.startswith("plugins.") else f"entry point ({value})"


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
    entry_points = entry_point_names()
    if name in entry_points:
        obj, version = _load_entry_point(name)
        # An alias (vision-aided) runs under the plugin's own name.
        return PluginFactory(getattr(obj, "plugin_name", None) or name, obj, _source_of(entry_points[name]), version)
    if name.endswith(".py") and os.path.isfile(os.path.expanduser(name)):
        path = os.path.abspath(os.path.expanduser(name))
        obj = _import_object(path)
        return PluginFactory(getattr(obj, "plugin_name", None) or os.path.splitext(os.path.basename(path))[0], obj,
                             f"file ({path})")
    if "." in name and importlib.util.find_spec(name.split(".")[0]) is not None:
        obj = _import_object(name)
        return PluginFactory(getattr(obj, "plugin_name", None) or name.rsplit(".", 1)[-1].split(":")[-1], obj,
                             f"module ({name})")
    valid = ", ".join(sorted(available_plugins())) or "none (is the project installed? pip install -e .)"
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
    """The enabled plugins and the sg2ada baseline, registered with one pluggy PluginManager (``host.pm``), and
    checked at start-up. The loop calls ``host.pm.hook.gan_*`` directly; ``each`` is for the few hooks whose
    answers must be attributed to their plugin (loss terms, optimisers, state)."""

    def __init__(self, plugins=()):
        """plugins: [(name, object) or (name, object, source)] in --plugins order (objects already constructed)."""
        from .sg2ada import PLUGIN_NAME as BASELINE
        from .sg2ada import Sg2Ada

        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.plugins = {}  # {name: plugin object}, in --plugins order (the baseline is not listed).
        self.sources = {}
        self.metrics_registered = False
        for entry in plugins:
            name, obj, source = (*entry, "object")[:3]
            if name in self.plugins or name == BASELINE:
                raise PluginError(f"plugin {name!r} is enabled twice" if name != BASELINE else
                                  f"{BASELINE!r} is the baseline, always on; drop it from --plugins")
            self.plugins[name] = obj
            self.sources[name] = source
        self.check_v2(self.plugins)
        self._register(BASELINE, Sg2Ada())
        # pluggy calls the last registered implementation first: register in reverse so hooks run in --plugins order.
        for name in reversed(list(self.plugins)):
            self._register(name, self.plugins[name])
        if os.environ.get(TRACE_ENV):
            self.pm.add_hookcall_monitoring(self._trace_before, self._trace_after)
        self.validate()
        self._callers = {}
        self.order = {name: i for i, name in enumerate(self.plugins)}  # --plugins order (tryfirst may call earlier).

    def _register(self, name, obj):
        try:
            self.pm.register(obj, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name!r}: {_v3_hint(str(exc))}") from None

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

    @staticmethod
    def check_v2(plugins):
        """A plugin written against API v2 is told what changed, never silently ignored."""
        for name, obj in plugins.items():
            for attr, replacement in hookspecs.REMOVED_IN_V3.items():
                if getattr(obj, attr, None) is not None:
                    raise PluginError(f"plugin {name!r} uses {attr}, removed in plugin API v3; use {replacement} "
                                      "(docs/plugins.md, 'Porting from v2')")

    def validate(self):
        """Start-up checks: misspelt hooks, plugins without hooks, two answers to one firstresult hook."""
        from .sg2ada import PLUGIN_NAME as BASELINE

        for name, obj in self.plugins.items():
            for attr in dir(obj):
                if attr not in HOOK_NAMES and self.pm.parse_hookimpl_opts(obj, attr) is not None:
                    raise PluginError(f"plugin {name!r} implements a hook that does not exist: {attr}; "
                                      f"did you mean {_closest_hook(attr)}? Valid hooks are listed in plugins/hookspecs.py.")
            self._warn_unmarked_hooks(name, obj)
            if not self.pm.get_hookcallers(obj):
                raise PluginError(f"plugin {name!r} ({self.sources[name]}) implements no hook, so it would do nothing; "
                                  "check the name in --plugins (a plugin marks its hooks with plugins.hookimpl)")
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.pm.get_name(exc.plugin) if exc.plugin is not None else "?"
            raise PluginError(f"plugin {name!r} implements a hook that does not exist: {exc}. "
                              f"Valid hooks are listed in plugins/hookspecs.py.") from None
        for hook_name in HOOK_NAMES:
            caller = getattr(self.pm.hook, hook_name)
            if caller.spec is None or not caller.spec.opts.get("firstresult"):
                continue
            owners = [impl.plugin_name for impl in reversed(caller.get_hookimpls()) if impl.plugin_name != BASELINE]
            if len(owners) > 1:
                raise PluginError(f"plugins {' and '.join(repr(o) for o in owners)} both implement {hook_name}, "
                                  "which only one plugin may answer; enable only one of them")

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

    # ------------------------------------------------------------------ calling

    def each(self, hook_name, **kwargs):
        """[(plugin name, answer)] of every plugin implementing hook_name, in call order, None answers included.

        Through pluggy one plugin at a time (so hook-call monitoring sees the calls), so that each answer can be
        attributed to its plugin. Only for hooks that are not firstresult.
        """
        callers = self._callers.get(hook_name)
        if callers is None:
            impls = list(reversed(getattr(self.pm.hook, hook_name).get_hookimpls()))
            everyone = [self.pm.get_plugin(impl.plugin_name) for impl in impls]
            callers = self._callers[hook_name] = [
                (impl.plugin_name, self.pm.subset_hook_caller(hook_name, [o for o in everyone if o is not obj]))
                for impl, obj in zip(impls, everyone)]
        results = []
        for name, caller in callers:
            answers = caller(**kwargs)  # A list of the one plugin's non-None answer (not firstresult).
            results.append((name, answers[0] if answers else None))
        return results

    def answerer(self, hook_name):
        """The plugin whose answer a firstresult hook returns (for error messages)."""
        impls = getattr(self.pm.hook, hook_name).get_hookimpls()
        return impls[-1].plugin_name if impls else None  # pluggy calls the last one first.

    def register_metrics(self):
        """gan_register_metrics, once per process: the metrics are bound to these plugin instances."""
        if not self.metrics_registered:
            from metrics import metric_main

            self.pm.hook.gan_register_metrics(register=metric_main.register_metric)
            self.metrics_registered = True

    def check_resume_plugins(self, snapshot, state):
        """Refuse to resume a run trained with other plugins."""
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
            trained.discard("label_prior")  # The networks' own (training.networks.LabelPrior), set by any plugin.
            mismatch = not trained <= enabled  # Plain (e.g. NVIDIA) pickles resume with any plugins.
        if mismatch:
            raise PluginError(f"--resume: the snapshot was trained with plugins {sorted(trained) or 'none'}, this run "
                              f"enables {sorted(enabled) or 'none'}; pass --plugins={','.join(sorted(trained))} "
                              "to resume it")

    @staticmethod
    def _trace_before(hook_name, hook_impls, kwargs):
        names = ", ".join(impl.plugin_name for impl in reversed(hook_impls))
        sys.stderr.write(f"[plugins] {hook_name} -> {names} ({', '.join(sorted(kwargs))})\n")

    @staticmethod
    def _trace_after(outcome, hook_name, hook_impls, kwargs):
        exc = outcome.exception
        if exc is not None:
            sys.stderr.write(f"[plugins] {hook_name} raised {exc.__class__.__name__}: {exc}\n")


def _v3_hint(message):
    """pluggy's registration error, plus what replaces a v2 argument it names."""
    for hook, renamed in hookspecs.RENAMED_ARGS_IN_V3.items():
        if hook in message:
            for old, new in renamed.items():
                if repr(old) in message or f"'{old}'" in message:
                    return f"{message}. In plugin API v3, {hook} receives ctx: use {new} (docs/plugins.md, 'Porting from v2')"
    return message


def _closest_hook(attr):
    import difflib

    matches = difflib.get_close_matches(attr, HOOK_NAMES, n=1)
    return matches[0] if matches else "one of the hooks in plugins/hookspecs.py"
