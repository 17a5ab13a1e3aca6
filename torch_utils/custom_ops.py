"""Just-in-time building of the optional C++/CUDA plugins.

Nothing here runs unless a caller asks for a plugin: the ops in torch_utils.ops only do so when CUDA
kernels are explicitly enabled (GAN_CUDA_KERNELS=1) and the input lives on a CUDA device.

Plugins are compiled with torch.utils.cpp_extension.load (ninja) into
`<dnnlib cache>/torch_extensions/<module>-<hash>`, where the hash covers the source texts, the build
options and the torch version, so different versions never share (or fight over) one build folder.

Two safety nets that upstream lacked:
- A build interrupted at the wrong moment leaves `<build dir>/lock` behind, and torch then waits for
  it forever. Before building we wait at most TORCH_UTILS_LOCK_TIMEOUT seconds (default 300) for a
  lock to go away, and remove one that is older than that, with a warning naming its path.
- `try_get_plugin` turns a failed build into a single warning (per plugin) and a None result, so
  callers can fall back to their pure-PyTorch implementation.
"""

import glob
import hashlib
import os
import sys
import time
import warnings

import torch
import torch.utils.cpp_extension

import dnnlib

# ----------------------------------------------------------------------------

verbosity = "brief"  # 'none': silent; 'brief': one line per plugin; 'full': the whole compiler output.

_VALID_VERBOSITY = ("none", "brief", "full")
_LOCK_TIMEOUT_ENV = "TORCH_UTILS_LOCK_TIMEOUT"
_DEFAULT_LOCK_TIMEOUT = 300.0
_LOCK_POLL_INTERVAL = 0.5

_loaded_plugins = dict()  # module_name -> loaded Python module
_failed_plugins = dict()  # module_name -> error message (for try_get_plugin)

# ----------------------------------------------------------------------------


def _lock_timeout():
    """Seconds after which a build lock counts as stale (env TORCH_UTILS_LOCK_TIMEOUT)."""
    text = os.environ.get(_LOCK_TIMEOUT_ENV, "")
    if text.strip() == "":
        return _DEFAULT_LOCK_TIMEOUT
    try:
        value = float(text)
    except ValueError as err:
        raise ValueError(f"{_LOCK_TIMEOUT_ENV} must be a number of seconds, got {text!r}") from err
    return max(value, 0.0)


def clear_stale_lock(build_dir, timeout=None, poll_interval=_LOCK_POLL_INTERVAL):
    """Make sure no lock file in build_dir can block the coming build forever.

    A lock younger than `timeout` seconds may belong to a build running in another process: wait for
    it to disappear, but only until it reaches that age. A lock that is (or becomes) older is
    removed with a warning naming its path. Returns True when a lock was removed.
    """
    if timeout is None:
        timeout = _lock_timeout()
    lock_path = os.path.join(build_dir, "lock")
    while True:
        try:
            age = time.time() - os.path.getmtime(lock_path)
        except FileNotFoundError:
            return False
        if age >= timeout:
            warnings.warn(
                f"Removing stale plugin build lock {lock_path} (age {age:.0f} s >= {timeout:g} s; "
                f"a previous build was probably interrupted). Set {_LOCK_TIMEOUT_ENV} to change the timeout.",
                RuntimeWarning,
                stacklevel=2,
            )
            try:
                os.remove(lock_path)
            except FileNotFoundError:
                pass
            return True
        time.sleep(min(poll_interval, max(timeout - age, 0.0) + 1e-3))


def _resolve_paths(sources, headers, source_dir):
    def resolve(names):
        paths = []
        for name in names or []:
            path = os.path.join(source_dir, name) if source_dir is not None else name
            paths.append(os.path.abspath(path))
        return paths

    if isinstance(sources, str):
        sources = [sources]
    if isinstance(headers, str):
        headers = [headers]
    source_paths = resolve(sources)
    header_paths = resolve(headers)
    if len(source_paths) == 0:
        raise ValueError("get_plugin: at least one source file is required")
    for path in source_paths + header_paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"get_plugin: source file not found: {path}")
    names = [os.path.basename(p) for p in source_paths + header_paths]
    if len(set(names)) != len(names):
        raise ValueError(f"get_plugin: source and header file names must be unique, got {names}")
    return source_paths, header_paths


def plugin_build_dir(module_name, sources, headers=None, source_dir=None, **build_kwargs):
    """Build folder that get_plugin uses for these arguments (keyed by a hash of the sources)."""
    source_paths, header_paths = _resolve_paths(sources, headers, source_dir)
    return _build_dir_for(module_name, source_paths, header_paths, build_kwargs)


def _build_dir_for(module_name, source_paths, header_paths, build_kwargs):
    digest = hashlib.sha256()
    digest.update(f"torch={torch.__version__};python={sys.version_info[:2]}\n".encode())
    for key in sorted(build_kwargs):
        digest.update(f"{key}={build_kwargs[key]!r}\n".encode())
    for path in source_paths + header_paths:
        digest.update(os.path.basename(path).encode() + b"\0")
        with open(path, "rb") as fh:
            digest.update(fh.read())
        digest.update(b"\0")
    return dnnlib.make_cache_dir_path("torch_extensions", f"{module_name}-{digest.hexdigest()[:16]}")


def _copy_sources(build_dir, paths):
    """Copy the sources next to the build products (same content for the same hash)."""
    copied = []
    for path in paths:
        dst = os.path.join(build_dir, os.path.basename(path))
        if not os.path.isfile(dst):
            with open(path, "rb") as f:
                data = f.read()
            dnnlib.util.atomic_write(dst, lambda out, data=data: out.write(data))
        copied.append(dst)
    return copied


def get_plugin(module_name, sources, headers=None, source_dir=None, **build_kwargs):
    """Build (if needed) and import a torch C++/CUDA extension; cached per module_name.

    `sources` and `headers` are file names, relative to `source_dir` when given. Extra keyword
    arguments go to torch.utils.cpp_extension.load (e.g. extra_cflags, extra_cuda_cflags).
    Raises RuntimeError with the build folder and the cause when the build or import fails.
    """
    if verbosity not in _VALID_VERBOSITY:
        raise ValueError(f"custom_ops.verbosity must be one of {list(_VALID_VERBOSITY)}, got {verbosity!r}")
    if module_name in _loaded_plugins:
        return _loaded_plugins[module_name]

    source_paths, header_paths = _resolve_paths(sources, headers, source_dir)
    build_dir = _build_dir_for(module_name, source_paths, header_paths, build_kwargs)
    if verbosity == "full":
        print(f'Setting up PyTorch plugin "{module_name}" in {build_dir}...')
    elif verbosity == "brief":
        print(f'Setting up PyTorch plugin "{module_name}"... ', end="", flush=True)

    try:
        torch.utils.cpp_extension.verify_ninja_availability()
        os.makedirs(build_dir, exist_ok=True)
        clear_stale_lock(build_dir)
        copied_sources = _copy_sources(build_dir, source_paths)
        _copy_sources(build_dir, header_paths)
        module = torch.utils.cpp_extension.load(
            name=module_name,
            sources=copied_sources,
            build_directory=build_dir,
            verbose=(verbosity == "full"),
            **build_kwargs,
        )
    except Exception as err:
        if verbosity == "brief":
            print("Failed!")
        log_hint = ""
        logs = sorted(glob.glob(os.path.join(build_dir, "*.ninja")))
        if logs:
            log_hint = f" (ninja file: {logs[0]})"
        raise RuntimeError(
            f'Failed to build or load PyTorch plugin "{module_name}" in {build_dir}{log_hint}: '
            f"{type(err).__name__}: {err}. Set torch_utils.custom_ops.verbosity = 'full' to see the "
            f"compiler output."
        ) from err

    if verbosity == "full":
        print(f'Done setting up PyTorch plugin "{module_name}".')
    elif verbosity == "brief":
        print("Done.")
    _loaded_plugins[module_name] = module
    return module


def try_get_plugin(module_name, sources, headers=None, source_dir=None, **build_kwargs):
    """Like get_plugin, but returns None when the plugin cannot be built.

    The first failure for a module name emits one warning; later calls return None at once
    without trying to build again (callers then use their reference implementation).
    """
    if module_name in _loaded_plugins:
        return _loaded_plugins[module_name]
    if module_name in _failed_plugins:
        return None
    try:
        return get_plugin(module_name, sources, headers=headers, source_dir=source_dir, **build_kwargs)
    except Exception as err:
        _failed_plugins[module_name] = str(err)
        warnings.warn(
            f'PyTorch plugin "{module_name}" is unavailable, falling back to the reference '
            f"implementation. Cause: {err}",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def cuda_kernels_requested():
    """True when the user opted in to the custom CUDA kernels (env GAN_CUDA_KERNELS=1)."""
    return os.environ.get("GAN_CUDA_KERNELS", "0").strip().lower() in ("1", "true", "yes", "on")


# ----------------------------------------------------------------------------
