"""Pickling of network classes together with the source code of their module.

A class decorated with `@persistent_class` pickles as a call to `_reconstruct_persistent_obj(meta)`,
where meta holds the *whole source text* of the defining module, the class name and the instance
state. Unpickling execs that source in a fresh module, so a snapshot runs without the code that
trained it (plugins included) being importable. The format is NVIDIA's (version 6), so pickles move
both ways between this project and stylegan2-ada-pytorch.
"""

import copy
import inspect
import io
import pickle
import sys
import types
import uuid

import dnnlib

_version = 6  # Must match upstream's, or either side refuses the other's pickles.
_decorators = set()  # {decorator_class, ...}
_import_hooks = []  # [hook_function, ...]
_module_to_src_dict = dict()  # {module: src, ...}
_src_to_module_dict = dict()  # {src: module, ...}


def persistent_class(orig_class):
    """Make a class pickle with the source of its module. Idempotent.

    Instances record the constructor arguments as `init_args` / `init_kwargs`, so that a network can
    be rebuilt (e.g. with other fp16 settings) from a loaded snapshot.
    """
    assert isinstance(orig_class, type)
    if is_persistent(orig_class):
        return orig_class

    assert orig_class.__module__ in sys.modules
    orig_module = sys.modules[orig_class.__module__]
    orig_module_src = _module_to_src(orig_module)

    class Decorator(orig_class):
        _orig_module_src = orig_module_src
        _orig_class_name = orig_class.__name__

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._init_args = copy.deepcopy(args)
            self._init_kwargs = copy.deepcopy(kwargs)
            assert orig_class.__name__ in orig_module.__dict__
            _check_pickleable(self.__reduce__())

        @property
        def init_args(self):
            return copy.deepcopy(self._init_args)

        @property
        def init_kwargs(self):
            return dnnlib.EasyDict(copy.deepcopy(self._init_kwargs))

        def __reduce__(self):
            fields = list(super().__reduce__())
            fields += [None] * max(3 - len(fields), 0)
            if fields[0] is not _reconstruct_persistent_obj:
                meta = dict(type="class", version=_version, module_src=self._orig_module_src,
                            class_name=self._orig_class_name, state=fields[2])
                fields[0] = _reconstruct_persistent_obj  # Reconstruct through our own function...
                fields[1] = (meta,)  # ...with the source as its only argument.
                fields[2] = None  # The state now lives inside meta.
            return tuple(fields)

    Decorator.__name__ = orig_class.__name__
    Decorator.__qualname__ = orig_class.__qualname__
    Decorator.__module__ = orig_class.__module__
    Decorator.__doc__ = orig_class.__doc__
    _decorators.add(Decorator)
    return Decorator


def is_persistent(obj):
    """True for a persistent class or an instance of one."""
    try:
        if obj in _decorators:
            return True
    except TypeError:
        pass
    return type(obj) in _decorators  # pylint: disable=unidiomatic-typecheck


def import_hook(hook):
    """Register hook(meta) -> meta, called on every persistent object before it is rebuilt.

    Lets code patch old pickles (e.g. rename a class or edit the embedded source). Hooks run before
    the version check so that they can also upgrade the version.
    """
    assert callable(hook)
    _import_hooks.append(hook)


def _reconstruct_persistent_obj(meta):
    """Called by pickle: exec the embedded module source (once per distinct text) and rebuild the object."""
    meta = dnnlib.EasyDict(meta)
    meta.state = dnnlib.EasyDict(meta.state)
    for hook in _import_hooks:
        meta = hook(meta)
        assert meta is not None

    if meta.version != _version:
        raise ValueError(f"Unsupported persistence version {meta.version!r} (this code reads version {_version})")
    if meta.type != "class":
        raise ValueError(f"Unsupported persistent object type {meta.type!r}")

    module = _src_to_module(meta.module_src)
    orig_class = module.__dict__[meta.class_name]
    decorator_class = persistent_class(orig_class)
    obj = decorator_class.__new__(decorator_class)

    setstate = getattr(obj, "__setstate__", None)
    if callable(setstate):
        setstate(meta.state)
    else:
        obj.__dict__.update(meta.state)
    return obj


def _module_to_src(module):
    src = _module_to_src_dict.get(module, None)
    if src is None:
        src = inspect.getsource(module)
        _module_to_src_dict[module] = src
        _src_to_module_dict[src] = module
    return src


def _src_to_module(src):
    """The module built from src, creating it on first sight. Identical source text shares one module."""
    module = _src_to_module_dict.get(src, None)
    if module is None:
        module_name = "_imported_module_" + uuid.uuid4().hex
        module = types.ModuleType(module_name)
        # Register before exec so that the module's own classes can decorate themselves
        # (persistent_class needs the module in sys.modules and its source in the map).
        sys.modules[module_name] = module
        _module_to_src_dict[module] = src
        _src_to_module_dict[src] = module
        exec(src, module.__dict__)  # noqa: S102 - running the pickle's own network code is the point.
    return module


def _check_pickleable(obj):
    """Fail at construction time (not at the first snapshot) if constructor arguments cannot be pickled."""

    def recurse(obj):
        if isinstance(obj, (list, tuple, set)):
            return [recurse(x) for x in obj]
        if isinstance(obj, dict):
            return [[recurse(x), recurse(y)] for x, y in obj.items()]
        if isinstance(obj, (str, int, float, bool, bytes, bytearray)):
            return None  # Python primitive types are pickleable.
        if f"{type(obj).__module__}.{type(obj).__name__}" in ["numpy.ndarray", "torch.Tensor", "torch.nn.parameter.Parameter"]:
            return None  # Tensors and arrays are pickleable.
        if is_persistent(obj):
            return None  # Persistent objects are pickleable by virtue of the constructor check.
        return obj

    with io.BytesIO() as f:
        pickle.dump(recurse(obj), f)
