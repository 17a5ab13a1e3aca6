"""Plugins: methods that hook into the trainer (see plugins/hookspecs.py and docs/plugins.md).

Third-party plugins need only `pluggy.HookimplMarker("gan_plugins")`, re-exported here as `hookimpl`.
"""


from training.plugin_api import PluginError

from .hookspecs import PROJECT_NAME, hookimpl

__all__ = ["PROJECT_NAME", "PluginError", "hookimpl"]
