"""torch_utils.custom_ops: JIT build of a tiny CPU extension, stale-lock handling, failed-build fallback."""

import os
import shutil
import time
import uuid
import warnings

import pytest
import torch
import torch.utils.cpp_extension

import dnnlib
from torch_utils import custom_ops
from torch_utils.ops import bias_act, upfirdn2d

# A minimal extension written against the Python C API: it goes through exactly the same
# torch.utils.cpp_extension.load / ninja path as the real plugins but compiles in about a second
# (including <torch/extension.h> would take close to a minute on a small CPU).
ADD_SOURCE = r"""
#include <Python.h>
#define GAN_GLUE_(a, b) a##b
#define GAN_GLUE(a, b) GAN_GLUE_(a, b)

static PyObject* add_ints(PyObject*, PyObject* args) {
    long a = 0, b = 0;
    if (!PyArg_ParseTuple(args, "ll", &a, &b))
        return nullptr;
    return PyLong_FromLong(a + b);
}

static PyMethodDef kMethods[] = {
    {"add", add_ints, METH_VARARGS, "Add two integers."},
    {nullptr, nullptr, 0, nullptr},
};

static struct PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "tiny_add", nullptr, -1, kMethods};

PyMODINIT_FUNC GAN_GLUE(PyInit_, TORCH_EXTENSION_NAME)(void) { return PyModule_Create(&kModule); }
"""

BROKEN_SOURCE = "int broken( { return 0 }\n"

needs_toolchain = pytest.mark.skipif(
    shutil.which("ninja") is None or shutil.which(os.environ.get("CXX", "c++")) is None,
    reason="needs ninja and a C++ compiler",
)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """Route every build into tmp_path and start from empty plugin caches."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(cache))
    monkeypatch.setattr(dnnlib.util, "_dnnlib_cache_dir", None)
    monkeypatch.setattr(custom_ops, "_loaded_plugins", {})
    monkeypatch.setattr(custom_ops, "_failed_plugins", {})
    monkeypatch.setattr(custom_ops, "verbosity", "none")
    monkeypatch.delenv("TORCH_UTILS_LOCK_TIMEOUT", raising=False)

    # If our stale-lock handling ever regresses, torch would wait on the lock forever: fail instead.
    def no_waiting(self):
        raise AssertionError(f"torch waited on build lock {self.lock_file_path}")

    monkeypatch.setattr(torch.utils.cpp_extension.FileBaton, "wait", no_waiting)
    return cache


def _write(directory, name, text):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)
    return directory


def _unique(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@needs_toolchain
def test_get_plugin_builds_loads_and_caches(cache_dir, tmp_path, monkeypatch):
    src = _write(tmp_path / "src", "tiny_add.cpp", ADD_SOURCE)
    name = _unique("gan_test_add")
    module = custom_ops.get_plugin(name, sources=["tiny_add.cpp"], source_dir=str(src))
    assert module.add(2, 40) == 42

    build_dir = custom_ops.plugin_build_dir(name, ["tiny_add.cpp"], source_dir=str(src))
    assert build_dir.startswith(str(cache_dir / "torch_extensions"))
    assert os.path.basename(build_dir).startswith(name + "-")
    assert os.path.isfile(os.path.join(build_dir, "tiny_add.cpp"))
    assert not os.path.exists(os.path.join(build_dir, "lock"))

    # Second request: served from the per-name cache without touching the compiler.
    def refuse(*args, **kwargs):
        raise AssertionError("rebuilt a cached plugin")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", refuse)
    assert custom_ops.get_plugin(name, sources=["tiny_add.cpp"], source_dir=str(src)) is module
    assert custom_ops.try_get_plugin(name, sources=["tiny_add.cpp"], source_dir=str(src)) is module


def test_build_dir_depends_on_source_text(cache_dir, tmp_path):
    src = _write(tmp_path / "src", "a.cpp", "int a() { return 1; }\n")
    first = custom_ops.plugin_build_dir("plug", ["a.cpp"], source_dir=str(src))
    assert first == custom_ops.plugin_build_dir("plug", [str(src / "a.cpp")])
    assert first != custom_ops.plugin_build_dir("plug", ["a.cpp"], source_dir=str(src), extra_cflags=["-O3"])
    (src / "a.cpp").write_text("int a() { return 2; }\n")
    assert first != custom_ops.plugin_build_dir("plug", ["a.cpp"], source_dir=str(src))
    with pytest.raises(FileNotFoundError):
        custom_ops.plugin_build_dir("plug", ["missing.cpp"], source_dir=str(src))


@needs_toolchain
def test_stale_lock_is_removed_with_warning(cache_dir, tmp_path, monkeypatch):
    src = _write(tmp_path / "src", "tiny_add.cpp", ADD_SOURCE)
    name = _unique("gan_test_lock")
    build_dir = custom_ops.plugin_build_dir(name, ["tiny_add.cpp"], source_dir=str(src))
    os.makedirs(build_dir)
    lock = os.path.join(build_dir, "lock")
    open(lock, "w").close()
    old = time.time() - 3600
    os.utime(lock, (old, old))
    monkeypatch.setenv("TORCH_UTILS_LOCK_TIMEOUT", "60")

    start = time.monotonic()
    with pytest.warns(RuntimeWarning, match="stale") as record:
        module = custom_ops.get_plugin(name, sources=["tiny_add.cpp"], source_dir=str(src))
    assert module.add(1, 2) == 3
    assert any(lock in str(w.message) for w in record), "the warning must name the lock file"
    assert time.monotonic() - start < 120
    assert not os.path.exists(lock)


def test_clear_stale_lock_waits_at_most_the_timeout(tmp_path):
    lock = tmp_path / "lock"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert custom_ops.clear_stale_lock(str(tmp_path), timeout=5) is False  # no lock: returns at once

    lock.write_text("")  # fresh lock, e.g. held by a build that died a moment ago
    start = time.monotonic()
    with pytest.warns(RuntimeWarning, match=str(lock).replace("\\", "\\\\")):
        assert custom_ops.clear_stale_lock(str(tmp_path), timeout=0.3, poll_interval=0.05) is True
    assert time.monotonic() - start < 5
    assert not lock.exists()


def test_lock_timeout_env(monkeypatch):
    monkeypatch.delenv("TORCH_UTILS_LOCK_TIMEOUT", raising=False)
    assert custom_ops._lock_timeout() == 300
    monkeypatch.setenv("TORCH_UTILS_LOCK_TIMEOUT", "12.5")
    assert custom_ops._lock_timeout() == 12.5
    monkeypatch.setenv("TORCH_UTILS_LOCK_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="TORCH_UTILS_LOCK_TIMEOUT"):
        custom_ops._lock_timeout()


@needs_toolchain
def test_failed_build_raises_clear_error(cache_dir, tmp_path):
    src = _write(tmp_path / "src", "broken.cpp", BROKEN_SOURCE)
    name = _unique("gan_test_broken")
    with pytest.raises(RuntimeError) as info:
        custom_ops.get_plugin(name, sources=["broken.cpp"], source_dir=str(src))
    assert name in str(info.value)
    assert str(cache_dir / "torch_extensions") in str(info.value)
    assert "error" in str(info.value).lower()  # the compiler output is part of the message


@needs_toolchain
def test_failed_build_falls_back_with_one_warning(cache_dir, tmp_path, monkeypatch):
    src = _write(tmp_path / "src", "broken.cpp", BROKEN_SOURCE)
    name = _unique("gan_test_fallback")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert custom_ops.try_get_plugin(name, sources=["broken.cpp"], source_dir=str(src)) is None
    relevant = [w for w in record if name in str(w.message)]
    assert len(relevant) == 1 and issubclass(relevant[0].category, RuntimeWarning)
    assert "falling back" in str(relevant[0].message)

    loads = []
    monkeypatch.setattr(torch.utils.cpp_extension, "load", lambda *a, **k: loads.append(1))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(3):
            assert custom_ops.try_get_plugin(name, sources=["broken.cpp"], source_dir=str(src)) is None
    assert [w for w in record if name in str(w.message)] == []
    assert loads == []  # no second build attempt


def test_verbosity_is_validated_and_none_is_silent(cache_dir, tmp_path, monkeypatch, capsys):
    src = _write(tmp_path / "src", "broken.cpp", BROKEN_SOURCE)
    monkeypatch.setattr(custom_ops, "verbosity", "loud")
    with pytest.raises(ValueError, match="verbosity"):
        custom_ops.get_plugin("anything", sources=["broken.cpp"], source_dir=str(src))
    monkeypatch.setattr(custom_ops, "verbosity", "none")
    monkeypatch.setattr(torch.utils.cpp_extension, "verify_ninja_availability",
                        lambda: (_ for _ in ()).throw(RuntimeError("Ninja is required")))
    with pytest.raises(RuntimeError, match="Ninja is required"):
        custom_ops.get_plugin(_unique("gan_test_noninja"), sources=["broken.cpp"], source_dir=str(src))
    assert capsys.readouterr().out == ""


def test_ops_do_not_build_without_opt_in_or_cuda(cache_dir, monkeypatch):
    calls = []
    monkeypatch.setattr(custom_ops, "try_get_plugin", lambda *a, **k: calls.append(a) or None)
    monkeypatch.delenv("GAN_CUDA_KERNELS", raising=False)
    assert not custom_ops.cuda_kernels_requested()
    assert bias_act._get_plugin() is None and upfirdn2d._get_plugin() is None
    monkeypatch.setenv("GAN_CUDA_KERNELS", "1")
    assert custom_ops.cuda_kernels_requested()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bias_act._get_plugin() is None and upfirdn2d._get_plugin() is None
    assert calls == []
    assert not (cache_dir / "torch_extensions").exists()
