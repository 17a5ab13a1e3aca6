"""Plugins: methods that hook into the trainer (see plugins/hookspecs.py and docs/plugins.md).

Third-party plugins need only `pluggy.HookimplMarker("gan_plugins")`, re-exported here as `hookimpl`.
"""


class PluginError(ValueError):
    """A plugin cannot run with this configuration; the message says why and what to do."""


from .hookspecs import PROJECT_NAME, hookimpl  # noqa: E402

__all__ = ["PROJECT_NAME", "PluginError", "hookimpl"]
