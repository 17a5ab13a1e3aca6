"""CLIP image embeddings as a metric detector: FID_CLIP and intra-class FID_CLIP.

NoisyTwins and StudioGAN report a Frechet distance in CLIP's feature space beside Inception FID, because
Inception features are tied to ImageNet's classes (Kynkaanniemi et al., "The Role of ImageNet Classes in
Frechet Inception Distance", ICLR 2023). The features here are the 512-d image embedding of OpenAI's CLIP
ViT-B/32 (the output of its visual tower, projection included). Images are uint8 NCHW as for every detector:
gray is repeated to RGB, the image is resized to CLIP's input size (224) with bicubic interpolation,
scaled to [0, 1] and normalised with CLIP's mean and std.

The weights file is OpenAI's release, ``ViT-B-32.pt`` (a TorchScript archive; a plain state dict of the same
keys loads too). It is found like every detector (metrics/detectors.py: ``--detector-dir``,
``$GAN_DETECTOR_DIR``, the download cache, then a download) and checked against the SHA-256 that OpenAI
publishes in its URL; ``--detector-sha256 ViT-B-32=HEX`` names another file's digest. The architecture is
read off the weights by open_clip (``pip install -e ".[vision]"``), so a tiny random CLIP loads through the
same code (the tests do that). Of OpenAI's archive only the tensors are used; its TorchScript code is never called.
"""

import torch
import torch.nn.functional as F

from torch_utils import vision_libraries

from . import detectors
from .detectors import MetricError

CLIP_URL, CLIP_NAME = detectors.CLIP_URL, detectors.CLIP_NAME
CLIP_SHA256 = detectors.PUBLISHED_SHA256[CLIP_NAME]
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipImageEmbedder(torch.nn.Module):
    """uint8 NCHW images -> CLIP image embeddings [N, d] (``return_features`` is accepted for the detector call)."""

    def __init__(self, visual):
        super().__init__()
        self.visual = visual.float().eval().requires_grad_(False)
        size = visual.image_size
        self.input_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1))

    def forward(self, images, return_features=True):
        if not return_features:
            raise MetricError("the CLIP detector gives features only (return_features=True)")
        x = images.to(torch.float32)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if x.shape[2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bicubic", align_corners=False,
                              antialias=x.shape[2] > self.input_size)
        x = (x.clamp(0, 255) / 255 - self.mean) / self.std
        return self.visual(x)


def _read_state_dict(path):
    try:  # OpenAI's release: a TorchScript archive, of which only the tensors are taken.
        return torch.jit.load(path, map_location="cpu").state_dict()
    except RuntimeError:
        pass
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every unreadable file gets the same message.
        raise MetricError(f"{path} is neither OpenAI's CLIP release file nor a state dict: {_first_line(exc)}") from None
    if not isinstance(state, dict):
        raise MetricError(f"{path} holds a {type(state).__name__}, not a state dict of OpenAI's CLIP")
    return state


def _first_line(exc):
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__


def load_clip_visual(path):
    """OpenAI CLIP's visual tower in float32, from its release file or a state dict with the same keys (the
    architecture is read off the weights); MetricError when the file is neither. The vision-aided plugin's clip
    backbone is built by this too."""
    try:
        vision_libraries.import_vision_library("open_clip")
        from open_clip.model import build_model_from_openai_state_dict
    except ImportError:
        raise MetricError('CLIP needs open_clip: pip install -e ".[vision]" (open-clip-torch)') from None
    state = _read_state_dict(path)
    try:
        model = build_model_from_openai_state_dict(dict(state), cast_dtype=None)
    except (KeyError, RuntimeError, ZeroDivisionError) as exc:
        raise MetricError(f"{path} is not an OpenAI CLIP ViT checkpoint: {_first_line(exc)}") from None
    return model.visual.float()


def load_clip_embedder(path):
    """ClipImageEmbedder from an OpenAI CLIP weights file."""
    return ClipImageEmbedder(load_clip_visual(path))
