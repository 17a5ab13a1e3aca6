"""Two plugins that implement every hook and record each call (tests/test_host.py).

RecordingA implements all hooks; RecordingB all but the firstresult ones (two answers to a firstresult
hook are a conflict). Every call is appended to CALLS as (plugin name, hook name).
"""

import inspect

import click

from plugins import hookimpl, hookspecs

CALLS = []
RESTORED = []  # (plugin name, ctx.restored_state(plugin)) of each gan_setup.
INSTANCES = {}  # {plugin name: the newest instance}
FIRSTRESULT = {name for name in dir(hookspecs) if name.startswith("gan_")
               and getattr(getattr(hookspecs, name), "gan_plugins_spec", {}).get("firstresult")}


def _recorder(plugin_name, hook_name):
    """A hook implementation with the spec's own signature that records its call and returns None."""
    spec_fn = getattr(hookspecs, hook_name)

    def record(*args):  # The arguments in the spec's order (the real signature is made below).
        CALLS.append((plugin_name, hook_name))
        if hook_name == "gan_register_metrics":
            args[0](_recording_metric, name="recording_metric")
        if hook_name == "gan_step" and plugin_name == "rec_a" and args[0].batch_idx == 0:  # (ctx,)
            args[0].set_class_counts(args[0].dataset.class_counts())  # Reaches gan_class_counts_changed.
        if hook_name == "gan_setup":
            RESTORED.append((plugin_name, args[0].restored_state(INSTANCES[plugin_name])))
        if hook_name == "gan_state_dict":
            return {"saved_by": plugin_name}  # Comes back in gan_setup of a resumed run (ctx.restored_state).
        return None

    return hookimpl(with_signature_of(spec_fn, record))


def with_signature_of(spec_fn, body):
    """A function with spec_fn's real parameter names (pluggy reads them from the code object) calling body(*args)."""
    names = list(inspect.signature(spec_fn).parameters)
    namespace = {"_body": body}
    exec(f"def {spec_fn.__name__}({', '.join(names)}):\n    return _body({''.join(n + ', ' for n in names)})\n", namespace)
    return namespace[spec_fn.__name__]


def _recording_metric(opts):
    return {"recording_metric": 1.0}


class _Recording:
    plugin_name = None
    skip = ()

    def __init__(self, rec_tag="x"):
        self.rec_tag = rec_tag
        INSTANCES[self.plugin_name] = self
        for hook_name in dir(hookspecs):
            if hook_name.startswith("gan_") and hook_name != "gan_add_options" and hook_name not in self.skip:
                setattr(self, hook_name, _recorder(self.plugin_name, hook_name))


def _options_of(plugin_name, flag):
    def gan_add_options():
        CALLS.append((plugin_name, "gan_add_options"))
        return [click.Option([flag], type=str, default="x", help="recording tag")]

    return staticmethod(hookimpl(gan_add_options))


class RecordingA(_Recording):
    plugin_name = "rec_a"
    gan_add_options = _options_of("rec_a", "--rec-a-tag")

    def __init__(self, rec_a_tag="x"):
        super().__init__(rec_a_tag)


class RecordingB(_Recording):
    plugin_name = "rec_b"
    skip = tuple(FIRSTRESULT)
    gan_add_options = _options_of("rec_b", "--rec-b-tag")

    def __init__(self, rec_b_tag="x"):
        super().__init__(rec_b_tag)
