"""Where the metrics' feature detectors come from, and how they are checked and loaded.

NVIDIA's metrics use two TorchScript networks published on NVIDIA's CDN:

* Inception-v3 (`inception-2015-12-05.pt`): ``det(images_uint8_nchw, return_features=True)`` gives
  2048-d pool features (FID, KID); ``det(images, no_output_bias=True)`` gives 1008-way softmax
  probabilities (IS).
* VGG16 (`vgg16.pt`): ``det(images, return_features=True)`` gives 4096-d fc features (precision /
  recall); ``det(images_float_0_255, resize_images=False, return_lpips=True)`` gives the normalised
  feature vector whose squared differences are LPIPS (PPL).

A detector named by URL is looked for, in this order:

1. ``<dir>/<file name>`` for the directory given by the ``detector_dir`` option
   (``--detector-dir`` of calc_metrics.py / train.py);
2. ``<dir>/<file name>`` for ``$GAN_DETECTOR_DIR``;
3. dnnlib's download cache (``<cache>/downloads/<md5(url)>_<file name>``);
4. a download into that cache.

When all of them fail (e.g. an offline machine) a :class:`DetectorUnavailableError` is raised
within seconds; its message names the file, the URL and the places where the file can be put.
A plain local path (or ``file://`` URL) is used as it is.

Besides TorchScript detectors, OpenAI's CLIP ViT-B/32 (``ViT-B-32.pt``) is a detector: its image embedding,
for FID_CLIP (clip_features.py).

Integrity: the only digest built in is the one a publisher gives (OpenAI's, in CLIP's URL). When an expected SHA-256 is given (option ``detector_sha256`` /
``--detector-sha256`` or ``$GAN_DETECTOR_SHA256``, as ``name=hex[,name=hex...]`` where name is the
file name without ``.pt``), a mismatch is an error. The computed digest of every detector used is
always recorded next to the metric results.
"""

import os
import re
from typing import Dict, Optional, Tuple

import torch

import dnnlib

INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
VGG16_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/vgg16.pt"
# OpenAI's CLIP ViT-B/32 release; its SHA-256 is the hex in its URL (clip_features.py).
CLIP_URL = ("https://openaipublic.azureedge.net/clip/models/"
            "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt")
CLIP_NAME = "ViT-B-32"
PUBLISHED_SHA256 = {CLIP_NAME: "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"}
DETECTOR_DIR_ENV = "GAN_DETECTOR_DIR"
DETECTOR_SHA256_ENV = "GAN_DETECTOR_SHA256"

# ----------------------------------------------------------------------------
# Errors shared by the whole metrics package.


class MetricError(RuntimeError):
    """A metric cannot run with the given network, data or options; the message says why."""


class DetectorUnavailableError(MetricError):
    """A feature detector could not be found locally, in the cache, or downloaded."""


class DetectorChecksumError(MetricError):
    """A detector file does not have the SHA-256 digest that was asked for."""


# ----------------------------------------------------------------------------
# Names and digests.


def is_remote(url_or_path: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", url_or_path)) and not url_or_path.startswith("file://")


def detector_file_name(url_or_path: str) -> str:
    """'https://.../vgg16.pt' -> 'vgg16.pt'."""
    return os.path.basename(url_or_path.split("?")[0].rstrip("/"))


def detector_name(url_or_path: str) -> str:
    """'https://.../inception-2015-12-05.pt' -> 'inception-2015-12-05' (NVIDIA's naming of cache files)."""
    return os.path.splitext(detector_file_name(url_or_path))[0]


def parse_sha256_spec(spec) -> Dict[str, str]:
    """'name=hex,name=hex' (or a dict) -> {name: lower-case hex}. None or '' -> {}."""
    if not spec:
        return {}
    items = spec.items() if isinstance(spec, dict) else [part.split("=", 1) if "=" in part else (None, part) for part in str(spec).split(",") if part.strip()]
    result = {}
    for name, digest in items:
        digest = str(digest).strip().lower()
        if name is None or not str(name).strip():
            raise MetricError(f"detector SHA-256 {digest!r} needs a detector name: write it as NAME=HEX, e.g. 'inception-2015-12-05={digest}'")
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise MetricError(f"detector SHA-256 for {name!r} is not 64 hex digits: {digest!r}")
        result[str(name).strip()] = digest
    return result


def expected_sha256(url_or_path: str, spec=None) -> Optional[str]:
    """The digest asked for `url_or_path` by the option (spec), else by $GAN_DETECTOR_SHA256."""
    name = detector_name(url_or_path)
    for source in (spec, os.environ.get(DETECTOR_SHA256_ENV)):
        digests = parse_sha256_spec(source)
        if name in digests:
            return digests[name]
    return None


file_sha256 = dnnlib.util.file_sha256  # Remembered per (path, size, mtime): large detectors are hashed once.


# ----------------------------------------------------------------------------
# Lookup.


def _search_dirs(detector_dir: Optional[str]):
    dirs = []
    for d in (detector_dir, os.environ.get(DETECTOR_DIR_ENV)):
        if d:
            dirs.append(os.path.abspath(os.path.expanduser(d)))
    return dirs


def resolve_detector_file(url_or_path: str, detector_dir: Optional[str] = None, verbose: bool = False) -> Tuple[str, str]:
    """Local file of a detector and where it was found ('path', 'dir', 'cache' or 'download')."""
    if not is_remote(url_or_path):
        path = url_or_path[len("file://"):] if url_or_path.startswith("file://") else url_or_path
        path = os.path.expanduser(path)
        if not os.path.isfile(path):
            raise DetectorUnavailableError(f"Feature detector file not found: {path!r}")
        return path, "path"

    file_name = detector_file_name(url_or_path)
    searched = []
    for d in _search_dirs(detector_dir):
        candidate = os.path.join(d, file_name)
        searched.append(candidate)
        if os.path.isfile(candidate):
            return candidate, "dir"

    cache_dir = dnnlib.make_cache_dir_path("downloads")
    cache_path = os.path.join(cache_dir, dnnlib.util.url_cache_name(url_or_path))
    was_cached = os.path.isfile(cache_path)
    try:
        path = dnnlib.util.open_url(url_or_path, cache_dir=cache_dir, return_filename=True, verbose=verbose, num_attempts=2)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        looked = "; ".join(searched) if searched else f"none (neither --detector-dir nor ${DETECTOR_DIR_ENV} is set)"
        reason = str(exc).split(". ")[0] or exc.__class__.__name__  # dnnlib's own hint is repeated below.
        raise DetectorUnavailableError(
            f"Feature detector '{file_name}' is not available here and cannot be downloaded ({reason}). "
            f"Download {url_or_path} on a machine with internet access and either put it "
            f"into a directory passed as --detector-dir (or in ${DETECTOR_DIR_ENV}) under the name '{file_name}', "
            f"or copy it to the cache as {cache_path!r}. Directories searched: {looked}."
        ) from None
    return path, ("cache" if was_cached else "download")


# ----------------------------------------------------------------------------
# Loading.


def load_detector(url_or_path: str, device=torch.device("cpu"), detector_dir: Optional[str] = None, sha256=None,
                  verbose: bool = False, name: Optional[str] = None):
    """Find, check and load a detector: a TorchScript module, or CLIP's image tower (clip_features.py).

    Returns (module in eval mode on device, info dict {name, file, source, sha256, url}).
    `sha256` is the expected digest (hex) or None; see module docstring for the environment variable.
    `name` is the detector's name when `url_or_path` is a local copy of it (e.g. the cached download of its URL).
    """
    path, source = resolve_detector_file(url_or_path, detector_dir=detector_dir, verbose=verbose)
    name = name or detector_name(url_or_path)
    digest = file_sha256(path)
    want = sha256.lower() if isinstance(sha256, str) and sha256 else expected_sha256(url_or_path)
    want = want or PUBLISHED_SHA256.get(name)
    if want is not None and digest != want:
        raise DetectorChecksumError(
            f"Feature detector {path!r} (for {url_or_path}) has SHA-256 {digest}, expected {want}. "
            "The file is damaged or is another version: replace it, or correct the expected digest "
            f"(--detector-sha256 {name}=HEX)."
        )
    if name == CLIP_NAME:
        from . import clip_features

        module = clip_features.load_clip_embedder(path)
    else:
        try:
            module = torch.jit.load(path, map_location=device)
        except Exception as exc:
            raise MetricError(f"Feature detector file {path!r} is not a loadable TorchScript module: {exc}") from None
    module = module.eval().to(device)
    info = dict(name=name, file=os.path.abspath(path), source=source, sha256=digest,
                url=url_or_path if is_remote(url_or_path) else None)
    return module, info
