"""Import the optional vision libraries (timm, open_clip, antialiased_cnns) and the torchvision they import.

A torchvision wheel built for another torch variant (e.g. the CUDA wheel from PyPI next to a CPU-only torch) fails
while registering its compiled detection ops, which neither the vision-aided backbones nor the CLIP metrics use; it is
then imported without them, with a warning.
"""

import sys
import types
import warnings

import torch


def import_torchvision():
    try:
        import torchvision  # noqa: F401
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        for key in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[key]
        # The failing module only registers meta kernels of torchvision's C++ ops (nms, roi_align...).
        sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
        import torchvision  # noqa: F401

        warnings.warn(f"torchvision's compiled ops do not match torch {torch.__version__} ({exc}); imported without "
                      "them (the vision backbones and CLIP metrics do not use them). Install the torchvision build made "
                      "for this torch to silence this.")


def import_vision_library(module_name):
    """The imported module; ImportError when it (or torchvision) is not installed."""
    import_torchvision()
    return __import__(module_name)
