"""Where the backbones' pretrained weights come from: never a silent download.

Lookup order for a backbone ``name``:
  1. ``--va-weights name=PATH`` (a file);
  2. ``$GAN_VA_WEIGHTS_DIR/<file name>``;
  3. the cache, ``<dnnlib cache>/vision_aided/<file name>``;
  4. only with ``--va-download``: the official URL, fetched into the cache.
A ``torchscript:PATH`` backbone is its own file. Absent everywhere, the run stops within seconds with a message
that names the backbone, the file, where it comes from and the option to pass.

Integrity: the SHA-256 of the file is computed and compared with ``--va-sha256 name=HEX`` or the known digest
(only CLIP's release publishes one); the digest is recorded in the training state, and a resumed run refuses a
file with another digest.
"""

import os
from dataclasses import dataclass
from typing import Dict, Optional

import dnnlib
from metrics import detectors
from plugins import PluginError

WEIGHTS_DIR_ENV = "GAN_VA_WEIGHTS_DIR"


@dataclass(frozen=True)
class WeightsSource:
    file_name: str
    origin: str
    url: Optional[str]
    sha256: Optional[str] = None


SOURCES: Dict[str, WeightsSource] = {
    "clip": WeightsSource("ViT-B-32.pt", "OpenAI CLIP release", detectors.CLIP_URL,  # The CLIP metrics' file too.
                          detectors.PUBLISHED_SHA256[detectors.CLIP_NAME]),
    "dino": WeightsSource("dino_vitbase16_pretrain.pth", "DINO release (facebookresearch/dino)",
                          "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth"),
    "swin": WeightsSource("moby_swin_t_300ep_pretrained.pth", "MoBY self-supervised Swin-T (SwinTransformer/"
                          "Transformer-SSL release)",
                          "https://github.com/SwinTransformer/storage/releases/download/v1.0.3/"
                          "moby_swin_t_300ep_pretrained.pth"),
    "vgg": WeightsSource("vgg16_lpf4_finetune-79c9dff7.pth", "antialiased-cnns release (adobe/antialiased-cnns)",
                         "https://antialiased-cnns.s3.us-east-2.amazonaws.com/weights_v0.1/vgg16_lpf4_finetune-79c9dff7.pth"),
}


def parse_pairs(text, option):
    """'a=x,b=y' -> {'a': 'x', 'b': 'y'} (a torchscript:PATH name may itself contain ':')."""
    pairs = {}
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        name, sep, value = item.rpartition("=")
        if not sep or not name or not value:
            raise PluginError(f"vision_aided: {option} expects name=value[,name=value...], got {item!r}")
        pairs[name.strip()] = value.strip()
    return pairs


def cache_dir():
    return dnnlib.make_cache_dir_path("vision_aided")


def resolve(name, explicit=None, download=False):
    """(path, where) of the weights of backbone ``name``; raises PluginError when absent."""
    if name.startswith("torchscript:"):
        path = os.path.expanduser(name[len("torchscript:"):])
        if not os.path.isfile(path):
            raise PluginError(f"vision_aided: backbone {name!r}: TorchScript file not found: {path}")
        return path, "path"
    source = SOURCES[name]
    looked = []
    if explicit:
        path = os.path.expanduser(explicit)
        if os.path.isfile(path):
            return path, "--va-weights"
        raise PluginError(f"vision_aided: --va-weights {name}={explicit}: no such file")
    env_dir = os.environ.get(WEIGHTS_DIR_ENV)
    if env_dir:
        path = os.path.join(os.path.expanduser(env_dir), source.file_name)
        looked.append(path)
        if os.path.isfile(path):
            return path, f"${WEIGHTS_DIR_ENV}"
    else:
        looked.append(f"${WEIGHTS_DIR_ENV} (not set)")
    cached = os.path.join(cache_dir(), source.file_name)
    looked.append(cached)
    if os.path.isfile(cached):
        return cached, "cache"
    if download:
        try:
            tmp = dnnlib.util.open_url(source.url, cache_dir=os.path.join(cache_dir(), "downloads"),
                                       return_filename=True, num_attempts=2)
        except Exception as exc:  # noqa: BLE001 - network errors of every kind.
            raise PluginError(f"vision_aided: downloading {source.url} for backbone {name!r} failed "
                              f"({str(exc).split('. ')[0]}); put {source.file_name} at {cached} or pass "
                              f"--va-weights {name}=/path/{source.file_name}") from None
        os.replace(tmp, cached)
        return cached, "download"
    raise PluginError(f"vision_aided: no weights for backbone {name!r} ({source.file_name}, {source.origin}, "
                      f"{source.url}); looked in {'; '.join(looked)}. Pass --va-weights {name}=/path/{source.file_name}, "
                      f"or --va-download to fetch it into the cache (tests only: --va-random-init)")


def check_sha256(name, path, expected=None):
    """The file's SHA-256; raises PluginError if it differs from ``expected`` (else the known digest)."""
    digest = dnnlib.util.file_sha256(path)
    want = (expected or (SOURCES[name].sha256 if name in SOURCES else None) or "").lower() or None
    if want is not None and digest != want:
        raise PluginError(f"vision_aided: weights file {path} of backbone {name!r} has SHA-256 {digest}, expected "
                          f"{want}; the file is damaged or another release (replace it, or pass --va-sha256 "
                          f"{name}=<digest> if you mean this file)")
    return digest
