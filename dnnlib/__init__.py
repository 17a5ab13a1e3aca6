"""Small utilities shared by every part of the project (no imports of our own packages)."""

from . import util
from .util import EasyDict, make_cache_dir_path

__all__ = ["EasyDict", "make_cache_dir_path", "util"]
