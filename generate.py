"""Generate images with a trained network pickle (ours or NVIDIA's).

  python generate.py --network=run/network-snapshot-000010.pkl --seeds=0-7 --outdir=out
  python generate.py --network=snap.pkl --seeds=0-9 --class-grid --outdir=out      # one row per class
  python generate.py --network=snap.pkl --seeds=0-4 --video=out/interp.gif           # latent interpolation
"""

import os
import re

import click
import numpy as np
import PIL.Image
import torch

import dnnlib
import legacy
from torch_utils import misc

MAX_SEED = 2 ** 32 - 1


def parse_range(s):
    """'1,2,5-10' -> [1, 2, 5, 6, 7, 8, 9, 10]."""
    if isinstance(s, list):
        return s
    values = []
    for part in s.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)-(\d+)", part)
        if m:
            if int(m.group(2)) < int(m.group(1)):
                raise click.BadParameter(f"{part!r} is an empty range (write the smaller seed first, e.g. "
                                         f"{m.group(2)}-{m.group(1)})")
            values += list(range(int(m.group(1)), int(m.group(2)) + 1))
        elif part.isdigit():
            values.append(int(part))
        else:
            raise click.BadParameter(f"expected numbers or ranges like 0-7, got {part!r}")
    too_big = [v for v in values if v > MAX_SEED]
    if too_big:
        raise click.BadParameter(f"seed {too_big[0]} is out of range: seeds are 0..{MAX_SEED} (numpy's RandomState)")
    return values


def load_generator(network, device):
    print(f'Loading networks from "{network}"...')
    if network.endswith(".safetensors"):  # Weights without code, rebuilt from this project's classes.
        from training.safe_export import SafeExportError, load_networks

        try:
            return load_networks(os.path.expanduser(network), device)[0]["G_ema"]
        except SafeExportError as exc:
            raise click.ClickException(f"--network: {exc}") from None
    try:
        with dnnlib.util.open_url(network) as f:
            data = legacy.load_network_pkl(f)
    except (legacy.NetworkPickleError, FileNotFoundError, OSError) as exc:
        raise click.ClickException(f"--network: {exc}") from None
    G = data.get("G_ema") or data.get("G")
    if G is None:
        raise click.ClickException(f"--network={network}: the pickle holds no generator (G_ema)")
    return G.eval().requires_grad_(False).to(device)


def make_labels(G, class_idx, n, device, seed=None):
    c = torch.zeros([n, G.c_dim], device=device)
    if G.c_dim != 0:
        prior = misc.label_prior(G)
        if class_idx is None and prior is not None and seed is not None:
            # The network's own classes (e.g. self-conditioning's clusters): draw one from its label prior.
            class_idx = int(np.random.RandomState(seed).choice(G.c_dim, p=prior))
            print(f"  class {class_idx} (drawn from the network's label prior; pass --class to choose)")
        if class_idx is None:
            raise click.ClickException(f"--class is required for a conditional network (classes 0..{G.c_dim - 1})")
        if not 0 <= class_idx < G.c_dim:
            raise click.ClickException(f"--class={class_idx} is out of range: the network has {G.c_dim} classes")
        c[:, class_idx] = 1
    elif class_idx is not None:
        print("warning: --class is ignored for an unconditional network")
    return c


def seed_z(G, seed, device):
    return torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).to(device=device, dtype=torch.float32)


def to_uint8(img):
    """[N, C, H, W] in [-1, 1] -> uint8 [N, H, W, C], quantised as upstream."""
    return (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu().numpy()


def to_pil(array):
    return PIL.Image.fromarray(array[:, :, 0], "L") if array.shape[2] == 1 else PIL.Image.fromarray(array, "RGB")


def save_png(pil, path):
    dnnlib.util.atomic_write(path, lambda f: pil.save(f, format="PNG"))


def generate_seed_images(G, seeds, class_idx, truncation_psi, noise_mode, outdir, device):
    for seed_idx, seed in enumerate(seeds):
        print(f"Generating image for seed {seed} ({seed_idx + 1}/{len(seeds)}) ...")
        label = make_labels(G, class_idx, 1, device, seed=seed)
        img = G(seed_z(G, seed, device), label, truncation_psi=truncation_psi, noise_mode=noise_mode)
        save_png(to_pil(to_uint8(img)[0]), os.path.join(outdir, f"seed{seed:04d}.png"))


def generate_class_grid(G, seeds, truncation_psi, noise_mode, outdir, device, scale=None, gap=None):
    """One row per class, one column per seed (the same z in every row); small tiles enlarged and separated."""
    from torch_utils.grid_layout import tile_grid

    if G.c_dim == 0:
        raise click.ClickException("--class-grid needs a conditional network; this one has no classes")
    z = torch.cat([seed_z(G, seed, device) for seed in seeds])
    tiles = []
    for class_idx in range(G.c_dim):
        img = G(z, make_labels(G, class_idx, len(seeds), device), truncation_psi=truncation_psi, noise_mode=noise_mode)
        tiles.append(to_uint8(img))
    grid = tile_grid(np.concatenate(tiles), (len(seeds), G.c_dim), scale=scale, gap=gap)
    path = os.path.join(outdir, "class_grid.png")
    save_png(to_pil(grid), path)
    print(f"Wrote {path} ({G.c_dim} classes x {len(seeds)} seeds)")


def generate_video(G, seeds, class_idx, truncation_psi, noise_mode, path, frames_per_seed, device):
    """Interpolate linearly in W between consecutive seeds (looping back to the first)."""
    import imageio

    if len(seeds) < 2:
        raise click.ClickException("--video needs at least two seeds")
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".gif", ".mp4"):
        raise click.ClickException(f"--video={path}: use a .gif or .mp4 file name")
    if ext == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401 - imageio writes MP4 through it.
        except ImportError:
            raise click.ClickException(f"--video={path}: MP4 needs imageio-ffmpeg (pip install -e \".[video]\"); "
                                       "or write a .gif, which needs nothing more") from None
    label = make_labels(G, class_idx, 1, device)
    ws = [G.mapping(seed_z(G, s, device), label, truncation_psi=truncation_psi) for s in seeds]
    frames = []
    for i in range(len(ws)):
        w0, w1 = ws[i], ws[(i + 1) % len(ws)]
        for t in np.linspace(0, 1, frames_per_seed, endpoint=False):
            img = G.synthesis(w0.lerp(w1, float(t)), noise_mode=noise_mode)
            frame = to_uint8(img)[0]
            frames.append(frame[:, :, 0] if frame.shape[2] == 1 else frame)
    with dnnlib.util.atomic_path(path) as tmp:
        tmp_with_ext = tmp + ext  # imageio picks the format from the extension.
        try:
            if ext == ".gif":
                imageio.mimsave(tmp_with_ext, frames, duration=1 / 30, loop=0)
            else:
                imageio.mimsave(tmp_with_ext, frames, fps=30)
            os.replace(tmp_with_ext, tmp)
        finally:
            if os.path.exists(tmp_with_ext):
                os.remove(tmp_with_ext)
    print(f"Wrote {path} ({len(frames)} frames)")


@click.command()
@click.option("--network", "network_pkl", help="Network pickle filename or URL", required=True)
@click.option("--seeds", type=parse_range, help="List of random seeds, e.g. 0,1,4-6", default="0-7", show_default=True)
@click.option("--trunc", "truncation_psi", type=float, help="Truncation psi", default=1, show_default=True)
@click.option("--class", "class_idx", type=int, help="Class label (conditional networks)")
@click.option("--noise-mode", help="Noise mode", type=click.Choice(["const", "random", "none"]), default="const", show_default=True)
@click.option("--projected-w", help="Generate from a projected W file (.npz with key 'w')", type=str, metavar="FILE")
@click.option("--class-grid", is_flag=True, help="Write class_grid.png: one row per class, one column per seed")
@click.option("--grid-scale", type=click.IntRange(min=1), help="Enlarge --class-grid tiles by this factor; 1 = raw [default: auto, tiles >= 64 px]")
@click.option("--grid-gap", type=click.IntRange(min=0), help="Pixels between --class-grid tiles; 0 = none [default: auto]")
@click.option("--video", help="Write a latent-interpolation video (.gif or .mp4) through the seeds", metavar="FILE")
@click.option("--frames", help="Frames per seed for --video", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--device", help="cpu, cuda, mps or auto", default="auto", show_default=True)
@click.option("--outdir", help="Where to save the output images", type=str, required=True, metavar="DIR")
def generate_images(network_pkl, seeds, truncation_psi, class_idx, noise_mode, projected_w, class_grid, grid_scale,
                    grid_gap, video, frames, device, outdir):
    """Generate images using a pretrained network pickle."""
    if not np.isfinite(truncation_psi):
        raise click.BadParameter(f"{truncation_psi!r} is not a finite number", param_hint="--trunc")
    device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    G = load_generator(network_pkl, device)
    outdir = os.path.expanduser(outdir)
    os.makedirs(outdir, exist_ok=True)

    with torch.no_grad():
        if projected_w is not None:
            ws = np.load(projected_w)["w"]
            ws = torch.tensor(ws, device=device)
            if ws.shape[1:] != (G.num_ws, G.w_dim):
                raise click.ClickException(f"--projected-w: expected shape [N, {G.num_ws}, {G.w_dim}], got {list(ws.shape)}")
            for idx, w in enumerate(ws):
                img = G.synthesis(w.unsqueeze(0), noise_mode=noise_mode)
                save_png(to_pil(to_uint8(img)[0]), os.path.join(outdir, f"proj{idx:02d}.png"))
            return
        if class_grid:
            generate_class_grid(G, seeds, truncation_psi, noise_mode, outdir, device, scale=grid_scale, gap=grid_gap)
        if video is not None:
            generate_video(G, seeds, class_idx, truncation_psi, noise_mode, os.path.expanduser(video), frames, device)
        if not class_grid and video is None:
            generate_seed_images(G, seeds, class_idx, truncation_psi, noise_mode, outdir, device)


if __name__ == "__main__":
    generate_images()  # pylint: disable=no-value-for-parameter
