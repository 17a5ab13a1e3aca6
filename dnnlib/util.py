"""General helpers with the names NVIDIA's stylegan2-ada-pytorch code (and its pickles) expect.

`EasyDict` must stay defined in this module: network pickles reference it as `dnnlib.util.EasyDict`.
"""

import contextlib
import ctypes
import fnmatch
import hashlib
import html
import importlib
import inspect
import io
import os
import re
import shutil
import sys
import tempfile
import types
import urllib.parse
import uuid
from typing import Any, Dict, List, Optional, Tuple, Union


class EasyDict(dict):
    """A dict whose keys can also be read and written as attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]


# ----------------------------------------------------------------------------
# Console / file logging.


class Logger:
    """Tee everything written to stdout/stderr into a log file as well."""

    def __init__(self, file_name: Optional[str] = None, file_mode: str = "w", should_flush: bool = True):
        self.file = open(file_name, file_mode) if file_name is not None else None
        self.should_flush = should_flush
        self.stdout = sys.stdout
        self.stderr = sys.stderr
        sys.stdout = self
        sys.stderr = self

    def __enter__(self) -> "Logger":
        return self

    def __exit__(self, *args) -> None:
        self.close()

    def write(self, text: Union[str, bytes]) -> None:
        if isinstance(text, bytes):
            text = text.decode()
        if len(text) == 0:  # Python calls write('') on exit; nothing to do.
            return
        if self.file is not None:
            self.file.write(text)
        self.stdout.write(text)
        if self.should_flush:
            self.flush()

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()
        self.stdout.flush()

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        self.flush()
        if sys.stdout is self:
            sys.stdout = self.stdout
        if sys.stderr is self:
            sys.stderr = self.stderr
        if self.file is not None:
            self.file.close()
            self.file = None


# ----------------------------------------------------------------------------
# Cache directory.

_dnnlib_cache_dir = None


def set_cache_dir(path: str) -> None:
    global _dnnlib_cache_dir
    _dnnlib_cache_dir = path


def make_cache_dir_path(*paths: str) -> str:
    """Path under the cache: set_cache_dir(), then $DNNLIB_CACHE_DIR, then ~/.cache/dnnlib."""
    if _dnnlib_cache_dir is not None:
        return os.path.join(_dnnlib_cache_dir, *paths)
    if "DNNLIB_CACHE_DIR" in os.environ:
        return os.path.join(os.environ["DNNLIB_CACHE_DIR"], *paths)
    if "HOME" in os.environ:
        return os.path.join(os.environ["HOME"], ".cache", "dnnlib", *paths)
    if "USERPROFILE" in os.environ:
        return os.path.join(os.environ["USERPROFILE"], ".cache", "dnnlib", *paths)
    return os.path.join(tempfile.gettempdir(), ".cache", "dnnlib", *paths)


# ----------------------------------------------------------------------------
# Small formatting helpers.


def format_time(seconds: Union[int, float]) -> str:
    """'12s', '3m 04s', '2h 03m 04s', '1d 02h 03m'."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 60 * 60:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 24 * 60 * 60:
        return f"{s // 3600}h {(s // 60) % 60:02d}m {s % 60:02d}s"
    return f"{s // 86400}d {(s // 3600) % 24:02d}h {(s // 60) % 60:02d}m"


def ask_yes_no(question: str) -> bool:
    while True:
        answer = input(f"{question} [y/n] ").strip().lower()
        if answer in ("y", "yes"):
            return True
        if answer in ("n", "no"):
            return False


def tuple_product(t: Tuple) -> Any:
    result = 1
    for v in t:
        result *= v
    return result


_str_to_ctype = {
    "uint8": ctypes.c_ubyte, "uint16": ctypes.c_uint16, "uint32": ctypes.c_uint32, "uint64": ctypes.c_uint64,
    "int8": ctypes.c_byte, "int16": ctypes.c_int16, "int32": ctypes.c_int32, "int64": ctypes.c_int64,
    "float32": ctypes.c_float, "float64": ctypes.c_double,
}


def get_dtype_and_ctype(type_obj: Any) -> Tuple[Any, Any]:
    """(numpy dtype, ctypes type) for a dtype name, numpy dtype or ctypes type."""
    import numpy as np

    if isinstance(type_obj, str):
        name = type_obj
    elif hasattr(type_obj, "__name__"):
        name = type_obj.__name__
    elif hasattr(type_obj, "name"):
        name = type_obj.name
    else:
        raise RuntimeError(f"Cannot infer type name from input: {type_obj!r}")
    if name not in _str_to_ctype:
        raise ValueError(f"Unsupported dtype {name!r}; expected one of {sorted(_str_to_ctype)}")
    return np.dtype(name), _str_to_ctype[name]


def is_pickleable(obj: Any) -> bool:
    import pickle

    try:
        with io.BytesIO() as stream:
            pickle.dump(obj, stream)
        return True
    except Exception:
        return False


# ----------------------------------------------------------------------------
# Look up objects by their fully qualified name ("pkg.module.attr").


def get_module_from_obj_name(obj_name: str) -> Tuple[types.ModuleType, str]:
    """Import the longest importable module prefix of obj_name; return it and the remaining attribute path."""
    obj_name = re.sub("^np.", "numpy.", obj_name)
    obj_name = re.sub("^tf.", "tensorflow.", obj_name)
    parts = obj_name.split(".")
    candidates = [(".".join(parts[:i]), ".".join(parts[i:])) for i in range(len(parts), 0, -1)]

    for module_name, local_name in candidates:
        try:
            module = importlib.import_module(module_name)
            get_obj_from_module(module, local_name)
            return module, local_name
        except Exception:
            pass

    # Re-raise the import error of the innermost module that exists but failed to import.
    for module_name, _ in candidates:
        try:
            importlib.import_module(module_name)
        except ImportError:
            if not str(sys.exc_info()[1]).startswith("No module named '" + module_name + "'"):
                raise
    for module_name, local_name in candidates:
        try:
            module = importlib.import_module(module_name)
            get_obj_from_module(module, local_name)
        except ImportError:
            pass
    raise ImportError(f"Cannot find object {obj_name!r}: no importable module defines it")


def get_obj_from_module(module: types.ModuleType, obj_name: str) -> Any:
    if obj_name == "":
        return module
    obj = module
    for part in obj_name.split("."):
        obj = getattr(obj, part)
    return obj


def get_obj_by_name(name: str) -> Any:
    module, obj_name = get_module_from_obj_name(name)
    return get_obj_from_module(module, obj_name)


def call_func_by_name(*args, func_name: str = None, **kwargs) -> Any:
    assert func_name is not None
    func_obj = get_obj_by_name(func_name)
    if not callable(func_obj):
        raise TypeError(f"{func_name!r} is not callable")
    return func_obj(*args, **kwargs)


def construct_class_by_name(*args, class_name: str = None, **kwargs) -> Any:
    return call_func_by_name(*args, func_name=class_name, **kwargs)


def get_module_dir_by_obj_name(obj_name: str) -> str:
    module, _ = get_module_from_obj_name(obj_name)
    return os.path.dirname(inspect.getfile(module))


def is_top_level_function(obj: Any) -> bool:
    return callable(obj) and obj.__name__ in sys.modules[obj.__module__].__dict__


def get_top_level_function_name(obj: Any) -> str:
    assert is_top_level_function(obj)
    module = obj.__module__
    if module == "__main__":
        module = os.path.splitext(os.path.basename(sys.modules[module].__file__))[0]
    return module + "." + obj.__name__


# ----------------------------------------------------------------------------
# File system helpers.


def list_dir_recursively_with_ignore(dir_path: str, ignores: List[str] = None, add_base_to_relative: bool = False) -> List[Tuple[str, str]]:
    """[(absolute path, relative path)] of every file under dir_path, skipping names matching ignores."""
    assert os.path.isdir(dir_path)
    base_name = os.path.basename(os.path.normpath(dir_path))
    ignores = ignores or []
    result = []
    for root, dirs, files in os.walk(dir_path, topdown=True):
        for pattern in ignores:
            dirs[:] = [d for d in dirs if not fnmatch.fnmatch(d, pattern)]
            files = [f for f in files if not fnmatch.fnmatch(f, pattern)]
        for f in files:
            absolute = os.path.join(root, f)
            relative = os.path.relpath(absolute, dir_path)
            if add_base_to_relative:
                relative = os.path.join(base_name, relative)
            result.append((absolute, relative))
    return result


def copy_files_and_create_dirs(files: List[Tuple[str, str]]) -> None:
    for src, dst in files:
        os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
        shutil.copyfile(src, dst)


# ----------------------------------------------------------------------------
# Atomic file output: readers never see a partial file, and an interrupted write loses nothing.


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary path beside `path`; when the block ends without error, rename it over `path`.

    The temporary file is created by whoever writes it (open(), PIL, torch.save...), so it gets the
    permissions of any new file: 0666 less the user's umask, like the files a user makes by hand.
    On error or interrupt the temporary file is removed and the previous `path` is left intact.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp_path = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        try:
            os.remove(tmp_path)
        except OSError:
            pass
        raise


def atomic_write(path: str, write_fn, mode: str = "wb", encoding: Optional[str] = None) -> str:
    """Call write_fn(file) on a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp_path:
        with open(tmp_path, mode.replace("w", "x"), encoding=encoding) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
    return path


def atomic_write_text(path: str, text: str) -> str:
    return atomic_write(path, lambda f: f.write(text), mode="w")


# ----------------------------------------------------------------------------
# URLs: local paths, file:// URLs and http(s) downloads with a cache.


def is_url(obj: Any, allow_file_urls: bool = False) -> bool:
    if not isinstance(obj, str) or "://" not in obj:
        return False
    if allow_file_urls and obj.startswith("file://"):
        return True
    try:
        res = urllib.parse.urlparse(obj)
        if not res.scheme or not res.netloc or "." not in res.netloc:
            return False
        res = urllib.parse.urlparse(urllib.parse.urljoin(obj, "/"))
        if not res.scheme or not res.netloc or "." not in res.netloc:
            return False
    except Exception:
        return False
    return True


def url_cache_name(url: str) -> str:
    """Name of url's file inside the cache's downloads/ folder (upstream's scheme: md5(url) + '_' + name)."""
    url_md5 = hashlib.md5(url.encode("utf-8")).hexdigest()
    safe_name = re.sub(r"[^0-9a-zA-Z-._]", "_", os.path.basename(urllib.parse.urlparse(url).path) or "download")
    return f"{url_md5}_{safe_name}"


class DownloadError(IOError):
    """A URL could not be fetched; the message says where the file can be placed by hand."""


def open_url(url: str, cache_dir: str = None, num_attempts: int = 10, verbose: bool = True,
             return_filename: bool = False, cache: bool = True, timeout: float = 5.0) -> Any:
    """Open a local path, a file:// URL or an http(s) URL (downloaded once into the cache).

    Returns a binary file object, or its path with return_filename=True. When the machine is
    offline, fails within seconds: connection errors are not retried, and the error names the URL
    and the cache path where the file can be placed by hand.
    """
    assert num_attempts >= 1
    assert not (return_filename and not cache)

    if not re.match("^[a-z]+://", url):
        path = os.path.expanduser(url)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No such file: {path!r}")
        return path if return_filename else open(path, "rb")

    if url.startswith("file://"):
        filename = urllib.parse.urlparse(url).path
        if re.match(r"^/[a-zA-Z]:", filename):  # Windows drive letters.
            filename = filename[1:]
        if not os.path.isfile(filename):
            raise FileNotFoundError(f"No such file: {filename!r} (from {url!r})")
        return filename if return_filename else open(filename, "rb")

    assert is_url(url), f"Not a URL: {url!r}"

    if cache_dir is None:
        cache_dir = make_cache_dir_path("downloads")
    cache_path = os.path.join(cache_dir, url_cache_name(url))

    if cache:
        if os.path.isfile(cache_path):
            return cache_path if return_filename else open(cache_path, "rb")
        # Older caches (and upstream) name files md5_<anything>; accept any of them.
        url_md5 = hashlib.md5(url.encode("utf-8")).hexdigest()
        if os.path.isdir(cache_dir):
            matches = sorted(f for f in os.listdir(cache_dir) if f.startswith(url_md5 + "_"))
            if matches:
                path = os.path.join(cache_dir, matches[0])
                return path if return_filename else open(path, "rb")

    data = _download(url, num_attempts=num_attempts, verbose=verbose, timeout=timeout, cache_path=cache_path)

    if cache:
        os.makedirs(cache_dir, exist_ok=True)
        atomic_write(cache_path, lambda f: f.write(data))
        if return_filename:
            return cache_path
    return io.BytesIO(data)


def _download(url: str, num_attempts: int, verbose: bool, timeout: float, cache_path: str) -> bytes:
    import requests

    hint = f"Download it elsewhere and place it at {cache_path!r}, or pass a local path instead of the URL."
    with requests.Session() as session:
        if verbose:
            print(f"Downloading {url} ...", end="", flush=True)
        for attempts_left in reversed(range(num_attempts)):
            try:
                with session.get(url, timeout=timeout) as res:
                    res.raise_for_status()
                    if len(res.content) == 0:
                        raise OSError("No data received")
                    if len(res.content) < 8192:
                        content_str = res.content.decode("utf-8", errors="replace")
                        if "download_warning" in res.headers.get("Set-Cookie", ""):
                            links = [html.unescape(link) for link in content_str.split('"') if "export=download" in link]
                            if len(links) == 1:
                                url = urllib.parse.urljoin(url, links[0])
                                raise OSError("Google Drive virus checker nag")
                        if "Google Drive - Quota exceeded" in content_str:
                            raise OSError("Google Drive download quota exceeded -- please try again later")
                    if verbose:
                        print(" done")
                    return res.content
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
                # No network (or no route to the host): retrying only makes the user wait.
                if verbose:
                    print(" failed")
                raise DownloadError(f"Cannot download {url}: {exc.__class__.__name__} (offline?). {hint}") from None
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                if not attempts_left:
                    if verbose:
                        print(" failed")
                    raise DownloadError(f"Cannot download {url}: {exc}. {hint}") from None
                if verbose:
                    print(".", end="", flush=True)
    raise DownloadError(f"Cannot download {url}. {hint}")


_sha256_cache: Dict[Tuple[str, int, int], str] = {}


def file_sha256(path: str) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) so a large file checked twice is read once."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _sha256_cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _sha256_cache[key] = h.hexdigest()
    return _sha256_cache[key]


def process_exists(pid):
    """Whether a process with this pid exists on this machine (POSIX; a process of another user counts)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else.
        return True
    return True
