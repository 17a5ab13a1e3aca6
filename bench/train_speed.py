"""Training speed of the `tiny` preset (or any --cfg): steady-state sec/kimg and peak RSS, per plugin set.

  python bench/train_speed.py                                  # baseline, 32x32 digits, CPU
  python bench/train_speed.py --plugins=,noisytwins,utlo,noisytwins+utlo --iterations=40
  python bench/train_speed.py --plugins=,noisytwins,noisytwins:nt_d_noise=0      # with/without D-side noise
  python bench/train_speed.py --plugins=,transitional,selfcond   # selfcond runs without labels (its own clusters)
  python bench/train_speed.py --plugins=,vision_aided:va_backbones=torchscript:/path/net.pt:va_warmup_kimg=0

Each plugin set runs in its own process. The first iterations (start-up, first-call overheads) are
excluded; the figure is the mean over the remaining iterations. Prints one line per set and, when CUDA
is present, the same on the GPU.
"""

import json
import os
import re
import resource
import subprocess
import sys
import time

import click

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def measure(data, plugins, iterations, warmup, cfg, device, batch):
    """Run one configuration in this process; returns a dict of figures."""
    import dnnlib
    from plugins.host import PluginHost, find_plugin, make_plugin_kwargs
    from training.training_config import build_config
    from training.training_loop import Trainer

    names, options = parse_plugin_set(plugins)
    plugin_kwargs = make_plugin_kwargs([find_plugin(name) for name in names], options)
    cond = "selfcond" not in names  # selfcond makes its own labels and refuses --cond=1.
    opts = dnnlib.EasyDict(outdir="/tmp", data=data, cond=cond, cfg=cfg, metrics="none", workers=0, snap=10 ** 6,
                           tensorboard=False, device=device, batch=batch, plugin_kwargs=plugin_kwargs)
    import tempfile

    c, _desc = build_config(opts, PluginHost.from_config(plugin_kwargs))
    c.run_dir = tempfile.mkdtemp(prefix="bench-")
    c.max_iterations = None
    c.image_snapshot_ticks = c.network_snapshot_ticks = None
    trainer = Trainer(**c)
    times = []
    for _ in range(warmup + iterations):
        start = time.perf_counter()
        trainer.train_step()
        if trainer.device.type == "cuda":
            import torch

            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    steady = times[warmup:]
    sec_per_iter = sum(steady) / len(steady)
    return dict(plugins=plugins or "baseline", device=str(trainer.device), batch=trainer.batch_size,
                sec_per_iter=sec_per_iter, sec_per_kimg=sec_per_iter / trainer.batch_size * 1000,
                peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
                threads=__import__("torch").get_num_threads())


def parse_plugin_set(text):
    """'noisytwins:nt_d_noise=0+utlo' -> (['noisytwins', 'utlo'], {'noisytwins': {'nt_d_noise': 0}})."""
    names, options = [], {}
    for token in filter(None, text.split("+")):
        name, *settings = re.split(r":(?=\w+=)", token)  # A value may hold ':' (torchscript:PATH).
        names.append(name)
        for setting in settings:
            key, _, value = setting.partition("=")
            try:
                options.setdefault(name, {})[key] = json.loads(value)
            except ValueError:
                options.setdefault(name, {})[key] = value
    return names, options


@click.command()
@click.option("--data", help="Dataset (built from digits at --res if missing)", default=None)
@click.option("--res", type=int, default=32, show_default=True)
@click.option("--cfg", default="tiny", show_default=True)
@click.option("--batch", type=int, default=None, help="Batch size [default: the preset's]")
@click.option("--plugins", "plugin_sets", default="", show_default=True,
              help="Comma-separated plugin sets; '+' joins plugins in one set; empty = baseline; "
                   "'name:key=value' sets a plugin option (e.g. noisytwins:nt_d_noise=0)")
@click.option("--iterations", type=int, default=24, show_default=True)
@click.option("--warmup", type=int, default=4, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--child", is_flag=True, hidden=True)
def main(data, res, cfg, batch, plugin_sets, iterations, warmup, device, child):
    if data is None:
        data = f"/tmp/bench-digits{res}.zip"
        if not os.path.exists(data):
            from dataset_tool import convert_dataset

            convert_dataset(f"digits:{res}", data, log=lambda *a: None)
    if child:
        print(json.dumps(measure(data, plugin_sets, iterations, warmup, cfg, device, batch)))
        return
    devices = [device]
    import torch

    if device == "cpu" and torch.cuda.is_available():
        devices.append("cuda")
    print(f"cfg={cfg} res={res} batch={batch or 'preset'} iterations={iterations} (after {warmup} warm-up)")
    baseline = {}
    for dev in devices:
        for plugins in plugin_sets.split(","):
            cmd = [sys.executable, __file__, f"--data={data}", f"--cfg={cfg}", *([f"--batch={batch}"] if batch else []),
                   f"--plugins={plugins}",
                   f"--iterations={iterations}", f"--warmup={warmup}", f"--device={dev}", "--child"]
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            if out.returncode != 0:
                print(f"{plugins or 'baseline'} on {dev}: failed\n{out.stderr[-2000:]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            baseline.setdefault(dev, r["sec_per_iter"]) if not plugins else None
            overhead = ""
            if plugins and dev in baseline:
                overhead = f"  overhead {100 * (r['sec_per_iter'] / baseline[dev] - 1):+.1f}%"
            print(f"{r['plugins']:<18s} {dev:<5s} {r['sec_per_iter']:.3f} s/iter  {r['sec_per_kimg']:.1f} s/kimg  "
                  f"peak RSS {r['peak_rss_gib']:.2f} GiB  threads {r['threads']}{overhead}")


if __name__ == "__main__":
    main()
