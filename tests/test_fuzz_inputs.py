"""Fuzz tests of the files a user may be handed (issue #21): for any generated run config or safetensors header the
outcome is success or a clear refusal (UntrustedInput / SafeExportError / UserError), never another exception, and no
class outside the allow-list is ever imported or constructed. Examples are bounded to keep CI fast."""

import copy
import json

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from training import safe_export, trusted_classes

EVIL_NAMES = ["torch.hub.load", "os.system", "subprocess.Popen", "builtins.eval", "training.augment.AugmentPipe",
              "training.networks.Generator", "training.dataset.ImageFolderDataset", "torch.optim.Adam", "x", ""]
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2 ** 62, max_value=2 ** 62),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8), st.sampled_from(EVIL_NAMES))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                             st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                          max_leaves=6)


def paths_of(tree, prefix=()):
    """Every path (tuple of keys / indices) into a JSON tree, the root included."""
    yield prefix
    if isinstance(tree, dict):
        for key, child in tree.items():
            yield from paths_of(child, prefix + (key,))
    elif isinstance(tree, list):
        for i, child in enumerate(tree):
            yield from paths_of(child, prefix + (i,))


def replaced(tree, path, value):
    if not path:
        return value
    tree = copy.deepcopy(tree)
    node = tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return tree


@st.composite
def mutations(draw, tree, extra_keys=("class_name", "module")):
    """The tree with one node replaced by a random JSON value, or one key added to a random object."""
    paths = list(paths_of(tree))
    path = draw(st.sampled_from(paths))
    if draw(st.booleans()):
        return replaced(tree, path, draw(json_value))
    node = tree
    for key in path:
        node = node[key]
    if not isinstance(node, dict):
        return replaced(tree, path, draw(json_value))
    return replaced(tree, path, dict(node, **{draw(st.sampled_from(extra_keys)): draw(json_value)}))


# ----------------------------------------------------------------------------- run configs


def base_config():
    from plugins.host import find_plugin, make_plugin_kwargs
    from plugins.testing import tiny_config

    c = tiny_config("data.zip", "run")
    c.plugin_kwargs = make_plugin_kwargs([find_plugin("noisytwins")])
    return json.loads(json.dumps(c))


BASE_CONFIG = base_config()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=mutations(BASE_CONFIG))
@example(config=dict(BASE_CONFIG, plugin_kwargs=None))  # Found by CI: null plugin_kwargs is read as no plugins.
def test_any_run_config_is_accepted_only_with_allowed_classes(config):
    try:
        trusted_classes.check_run_config(config, "fuzz")
    except trusted_classes.UntrustedInput:
        return
    named = []

    def collect(node, path):
        if isinstance(node, dict):
            for key, child in node.items():
                if key == "class_name" and not path.startswith("plugin_kwargs"):
                    named.append((path, child))
                collect(child, f"{path}.{key}" if path else key)
        elif isinstance(node, list):
            for child in node:
                collect(child, path)

    collect(config, "")
    assert all(name in trusted_classes.ALLOWED.get(path, ()) for path, name in named), named
    installed = trusted_classes.installed_plugin_classes()
    assert all("module" not in entry and entry.get("class_name") in installed
               for entry in (config.get("plugin_kwargs") or {}).values())  # null: no plugins, as the loader reads it


# ----------------------------------------------------------------------------- safetensors headers


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from safetensors.torch import load_file

    from training.networks import Generator

    torch.manual_seed(0)
    G = Generator(z_dim=8, c_dim=3, w_dim=8, img_resolution=8, img_channels=1, mapping_kwargs=dict(num_layers=1),
                  synthesis_kwargs=dict(channel_base=64, channel_max=8))
    path = str(tmp_path_factory.mktemp("fuzz") / "g.safetensors")
    safe_export.export_networks({"G_ema": G}, path, dict(class_name="training.dataset.ImageFolderDataset"))
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        header = json.loads(f.metadata()["gan_plugins"])
    return load_file(path), header, str(tmp_path_factory.mktemp("fuzz-out"))


def load_with_header(exported, header_text, monkeypatch_imports):
    from safetensors.torch import save_file

    tensors, _header, out_dir = exported
    path = f"{out_dir}/fuzzed.safetensors"
    save_file(tensors, path, metadata={"gan_plugins": header_text})
    return safe_export.load_networks(path)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_any_safetensors_header_loads_or_is_refused_without_foreign_imports(exported, monkeypatch, data):
    _tensors, header, _out = exported
    imported = []
    real_import = safe_export.importlib.import_module
    monkeypatch.setattr(safe_export.importlib, "import_module", lambda name: imported.append(name) or real_import(name))
    if data.draw(st.integers(0, 9)) == 0:
        text = data.draw(st.text(max_size=40))  # Not JSON at all, mostly.
    else:
        text = json.dumps(data.draw(mutations(header)))
    try:
        networks, dataset_kwargs = load_with_header(exported, text, monkeypatch)
        assert "G_ema" in networks and isinstance(dataset_kwargs, dict)
    except safe_export.SafeExportError:
        pass
    assert set(imported) <= set(safe_export.network_modules()), imported
