"""generate.py --video: GIF with the core install, MP4 only with the video extra, and a clear error without it."""

import sys

import click
import numpy as np
import PIL.Image
import pytest
import torch

import generate


class Tiny(torch.nn.Module):
    """A mapping/synthesis pair whose images follow w, enough for an interpolation video."""

    z_dim, c_dim, w_dim, img_channels, img_resolution = 4, 0, 4, 1, 8

    def mapping(self, z, c, truncation_psi=1):
        return z

    def synthesis(self, w, noise_mode="const"):
        return torch.tanh(w.mean(dim=1)).view(-1, 1, 1, 1).expand(-1, 1, 8, 8)


def test_gif_is_written_and_mp4_without_imageio_ffmpeg_names_the_extra(tmp_path, monkeypatch):
    gif = tmp_path / "v.gif"
    generate.generate_video(Tiny(), [0, 1], None, 1, "const", str(gif), 3, torch.device("cpu"))
    with PIL.Image.open(gif) as im:
        assert im.n_frames == 6 and np.asarray(im.convert("L")).shape == (8, 8)
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # As if the video extra were not installed.
    with pytest.raises(click.ClickException, match=r'MP4 needs imageio-ffmpeg \(pip install -e "\.\[video\]"\)'):
        generate.generate_video(Tiny(), [0, 1], None, 1, "const", str(tmp_path / "v.mp4"), 3, torch.device("cpu"))
    assert not (tmp_path / "v.mp4").exists()
