"""Training speed of the `tiny` preset (or any --cfg): sec/kimg, peak RSS, FLOPs, the machine's roofline.

  python bench/train_speed.py --batch=32                       # baseline, 32x32 digits, CPU, at the defaults
  python bench/train_speed.py --batch=32 --roofline --profile  # + FLOPs per phase, machine peak, top ops
  python bench/train_speed.py --batch=32 --variants="default;fp32=0;nhwc=0" --interleave   # A/B of train.py options
  python bench/train_speed.py --batch=32 --upstream            # + NVIDIA's code on the same config (../shared/peer)
  python bench/train_speed.py --plugins=,noisytwins,utlo,noisytwins+utlo --iterations=40
  python bench/train_speed.py --plugins=,vision_aided:va_backbones=torchscript:/path/net.pt:va_warmup_kimg=0

Each measurement runs in its own process; the first --warmup iterations (start-up, first calls) are excluded.
With --rounds=N every configuration (variants, plugin sets, upstream) runs N times, alternating, and the
minimum is reported: a shared machine only ever makes a run slower.

--roofline counts the FLOPs of each phase (Gmain, Dmain, Dreg, ...) with torch.utils.flop_counter's
formulas (convolutions, matmuls, their backward passes), divides by the measured time (achieved GFLOP/s) and
compares with the machine's practical peak, measured in the same run: a large float32 matmul and the tiny
config's own 3x3 convolution (forward + backward, both memory formats); bfloat16 too where the CPU has it
natively (never emulated). --profile prints torch.profiler's top operators by self time.

--upstream runs NVIDIA's stylegan2-ada-pytorch (set up by ../shared/peer/setup.sh under $PEER) on the same
network config: 32 px, conditional, batch 32, z = w = 64, mapping 2, 64 channels, ADA bgc.
"""

import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

import click

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
PEER_HARNESS = os.path.join(os.path.dirname(REPO), "shared", "peer", "train_small.py")


def build_trainer(data, plugins, cfg, device, batch, overrides):
    import contextlib
    import io

    import dnnlib
    from plugins.host import PluginHost, find_plugin, make_plugin_kwargs
    from training.training_config import build_config
    from training.training_loop import Trainer

    names, options = parse_plugin_set(plugins)
    plugin_kwargs = make_plugin_kwargs([find_plugin(name) for name in names], options)
    cond = "selfcond" not in names  # selfcond makes its own labels and refuses --cond=1.
    opts = dnnlib.EasyDict(outdir="/tmp", data=data, cond=cond, cfg=cfg, metrics="none", workers=0, snap=10 ** 6,
                           tensorboard=False, device=device, batch=batch, plugin_kwargs=plugin_kwargs)
    opts.update(overrides)  # e.g. workers=1 against the CPU default 0.
    c, _desc = build_config(opts, PluginHost.from_config(plugin_kwargs))
    c.run_dir = tempfile.mkdtemp(prefix="bench-")
    c.max_iterations = None
    c.image_snapshot_ticks = c.network_snapshot_ticks = None
    with contextlib.redirect_stdout(io.StringIO()):  # The trainer's start-up report.
        return Trainer(**c)


def timed_steps(trainer, count):
    import torch

    times = []
    for _ in range(count):
        start = time.perf_counter()
        trainer.train_step()
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def measure(data, plugins, iterations, warmup, cfg, device, batch, overrides, roofline, profile):
    """Run one configuration in this process; returns a dict of figures."""

    trainer = build_trainer(data, plugins, cfg, device, batch, overrides)
    timed_steps(trainer, warmup)
    result = figures(trainer, timed_steps(trainer, iterations), plugins, overrides)
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    if roofline:
        result["flops"] = phase_flops(trainer, iterations=16)
        result["conv_floor"] = conv_floor(trainer, iterations=16)
    if profile:
        result["profile"] = top_ops(trainer, iterations=8)
    return result


def measure_interleaved(data, plugins, iterations, warmup, cfg, device, batch, variants):
    """Several variants in one process, stepping in turn (A, B, C, A, B, C, ...): a machine whose speed drifts
    from minute to minute (a shared host) slows each of them alike, so their ratios hold."""

    trainers = [build_trainer(data, plugins, cfg, device, batch, overrides) for overrides in variants]
    times = [[] for _ in trainers]
    for step in range(warmup + iterations):
        for i, trainer in enumerate(trainers):
            elapsed = timed_steps(trainer, 1)[0]
            if step >= warmup:
                times[i].append(elapsed)
    return [figures(trainer, steady, plugins, overrides) for overrides, trainer, steady in zip(variants, trainers, times)]


def figures(trainer, steady, plugins, overrides):
    """The speed figures of one configuration from its steady-state step times."""
    import torch

    sec_per_iter = sum(steady) / len(steady)
    return dict(plugins=plugins or "baseline", device=str(trainer.device), batch=trainer.batch_size,
                sec_per_iter=sec_per_iter, sec_per_kimg=sec_per_iter / trainer.batch_size * 1000,
                threads=torch.get_num_threads(), overrides=overrides)


# ----------------------------------------------------------------------------
# FLOPs per phase.


def phase_flops(trainer, iterations):
    """{phase name: mean FLOPs per iteration}, counted over `iterations` steps (a multiple of the reg intervals).

    A dispatch mode with torch.utils.flop_counter's formulas, without FlopCounterMode's module tracking, which
    refuses the double backward of R1 and path length.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    import training.training_loop as loop

    class Counter(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            count = flop_registry.get(func._overloadpacket)
            if count is not None:
                self.total += count(*args, **kwargs, out_val=out)
            return out

    per_phase = {}
    original = loop.accumulate_gradients

    def counted(*args, phase, **kwargs):
        with Counter() as counter:
            original(*args, phase=phase, **kwargs)
        per_phase[phase] = per_phase.get(phase, 0) + counter.total

    loop.accumulate_gradients = counted
    try:
        for _ in range(iterations):
            trainer.train_step()
    finally:
        loop.accumulate_gradients = original
    return {name: total / iterations for name, total in per_phase.items()}


def conv_floor(trainer, iterations, repeats=5):
    """Seconds per iteration that the step's convolutions (forward and backward) take alone: every convolution the
    step dispatches, recorded with its shapes, strides and flags, then replayed in isolation (best of `repeats`).

    A floor for any implementation of this step on these kernels (oneDNN via PyTorch): the elementwise ops, Python
    and allocation between them only add to it.
    """
    import collections

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    aten = torch.ops.aten
    wanted = (aten.convolution.default, aten.convolution_backward.default)

    def signature(value):
        if isinstance(value, torch.Tensor):
            return ("T", tuple(value.shape), tuple(value.stride()), str(value.dtype))
        if isinstance(value, (list, tuple)):
            return tuple(signature(v) for v in value)
        return value

    calls = collections.Counter()

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in wanted:
                calls[(func, signature(args))] += 1
            return func(*args, **(kwargs or {}))

    with Recorder():
        for _ in range(iterations):
            trainer.train_step()

    def materialise(sig):
        if isinstance(sig, tuple) and len(sig) == 4 and sig[0] == "T":
            _, shape, stride, dtype = sig
            extent = 1 + sum((n - 1) * st for n, st in zip(shape, stride))  # Strides may be 0 (expanded grads).
            base = torch.randn(extent if all(shape) else 0, dtype=getattr(torch, dtype.split(".")[-1]))
            return base.as_strided(shape, stride)
        if isinstance(sig, tuple):
            return [materialise(v) for v in sig]
        return sig

    total = 0.0
    for (func, sig), count in calls.items():
        args = materialise(sig)
        func(*args)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            func(*args)
            best = min(best, time.perf_counter() - start)
        total += best * count
    return dict(seconds_per_iter=total / iterations, calls_per_iter=sum(calls.values()) / iterations,
                distinct=len(calls))


def top_ops(trainer, iterations, rows=15):
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(iterations):
            trainer.train_step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [dict(name=e.key, share=e.self_cpu_time_total / total, ms_per_iter=e.self_cpu_time_total / 1e3 / iterations,
                 calls_per_iter=e.count / iterations) for e in events[:rows]]


# ----------------------------------------------------------------------------
# The machine's practical peak.


def native_bf16():
    """True where the CPU has bfloat16 arithmetic (AVX512_BF16 or AMX); never emulate it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = set(re.findall(r"\b(avx512_bf16|amx_bf16)\b", f.read()))
        return bool(flags)
    except OSError:
        return False


def machine_peak(channels=64, res=32, batch=32):
    """Practical GFLOP/s of this machine: big matmul, and the tiny config's 3x3 conv (forward + backward)."""
    import torch
    import torch.nn.functional as F

    def best_seconds(fn, repeats=8):
        fn()
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    peaks = {}
    dtypes = [torch.float32] + ([torch.bfloat16] if native_bf16() else [])
    for dtype in dtypes:
        name = "fp32" if dtype == torch.float32 else "bf16"
        a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        peaks[f"matmul_{name}"] = 2 * 2048 ** 3 / best_seconds(lambda a=a, b=b: a @ b) / 1e9
        for fmt_name, fmt in (("nchw", torch.contiguous_format), ("nhwc", torch.channels_last)):
            x = torch.randn(batch, channels, res, res, dtype=dtype).contiguous(memory_format=fmt).requires_grad_()
            w = torch.randn(channels, channels, 3, 3, dtype=dtype).contiguous(memory_format=fmt).requires_grad_()

            def conv_fwd_bwd(x=x, w=w):
                y = F.conv2d(x, w, padding=1)
                y.backward(torch.ones_like(y))

            flops = 3 * 2 * batch * channels * channels * 9 * res * res  # Forward, input grad, weight grad.
            peaks[f"conv3x3_{fmt_name}_{name}"] = flops / best_seconds(conv_fwd_bwd) / 1e9
    if not native_bf16():
        peaks["bf16"] = "not native on this CPU (not measured: emulation would only be slower)"
    return peaks


# ----------------------------------------------------------------------------
# Upstream (NVIDIA's code) on the same config.


def run_upstream(batch, kimg):
    peer = os.environ.get("PEER") or os.path.join(os.path.expanduser("~"), ".cache", "sg2ada-peer")
    python = os.path.join(peer, "venv", "bin", "python")
    if not (os.path.isfile(python) and os.path.isfile(PEER_HARNESS)):
        raise click.ClickException(f"--upstream: no peer harness at {peer} (run ../shared/peer/setup.sh first)")
    cmd = [python, PEER_HARNESS, "--kimg", str(kimg), "--batch", str(batch), "--channel-max", "64", "--z-dim", "64",
           "--w-dim", "64"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    found = re.findall(r"^sec_per_kimg=([0-9.]+)", out.stdout, flags=re.M)
    if out.returncode != 0 or not found:
        raise click.ClickException(f"--upstream failed:\n{out.stderr[-2000:]}")
    return dict(plugins="upstream", device="cpu", batch=batch, sec_per_kimg=float(found[-1]),
                sec_per_iter=float(found[-1]) * batch / 1000)


# ----------------------------------------------------------------------------


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


def parse_variant(text):
    """'fp32=0,nhwc=1' -> {'fp32': 0, 'nhwc': 1}; 'default' or '' -> {} (train.py's defaults)."""
    overrides = {}
    for setting in filter(None, text.strip().split(",")):
        if setting == "default":
            continue
        key, sep, value = setting.partition("=")
        if not sep:
            raise click.BadParameter(f"{setting!r}: use key=value (a train.py option, e.g. fp32=0)", param_hint="--variants")
        overrides[key.strip().replace("-", "_")] = json.loads(value)
    return overrides


def print_roofline(r, peaks):
    flops = r["flops"]
    total = sum(flops.values())
    print(f"  FLOPs per iteration (batch {r['batch']}, regularisation amortised): {total / 1e9:.2f} GFLOP = "
          + ", ".join(f"{name} {value / 1e9:.2f}" for name, value in flops.items()))
    achieved = total / r["sec_per_iter"] / 1e9
    print(f"  achieved {achieved:.1f} GFLOP/s over the whole step")
    floor = r.get("conv_floor")
    if floor:
        print(f"  its convolutions alone ({floor['calls_per_iter']:.0f} calls/iter, each replayed in isolation at its "
              f"shapes, best of 5): {floor['seconds_per_iter']:.3f} s/iter "
              f"({floor['seconds_per_iter'] / r['batch'] * 1000:.1f} s/kimg, {100 * floor['seconds_per_iter'] / r['sec_per_iter']:.0f}% "
              f"of the step; {total / floor['seconds_per_iter'] / 1e9:.1f} GFLOP/s if the FLOPs were all theirs)")
    for name, value in peaks.items():
        if isinstance(value, str):
            print(f"  peak {name}: {value}")
        else:
            print(f"  peak {name}: {value:.1f} GFLOP/s -> the step reaches {100 * achieved / value:.0f}%; "
                  f"its FLOPs alone need {total / value / 1e9:.3f} s/iter ({total / value / 1e9 / r['batch'] * 1000:.1f} s/kimg)")


@click.command()
@click.option("--data", help="Dataset (built from digits at --res if missing)", default=None)
@click.option("--res", type=int, default=32, show_default=True)
@click.option("--cfg", default="tiny", show_default=True)
@click.option("--batch", type=int, default=None, help="Batch size [default: the preset's]")
@click.option("--plugins", "plugin_sets", default="", show_default=True,
              help="Comma-separated plugin sets; '+' joins plugins in one set; empty = baseline; "
                   "'name:key=value' sets a plugin option (e.g. noisytwins:nt_d_noise=0)")
@click.option("--variants", default="default", show_default=True,
              help="';'-separated sets of train.py options to compare, e.g. 'default;fp32=0;nhwc=1'")
@click.option("--iterations", type=int, default=24, show_default=True)
@click.option("--warmup", type=int, default=4, show_default=True)
@click.option("--rounds", type=int, default=1, show_default=True, help="Alternating repeats; the minimum is reported")
@click.option("--device", default="cpu", show_default=True)
@click.option("--roofline", is_flag=True, help="FLOPs per phase, achieved GFLOP/s and the machine's peak")
@click.option("--profile", is_flag=True, help="torch.profiler's top operators")
@click.option("--upstream", is_flag=True, help="Also time NVIDIA's code on the same config (../shared/peer)")
@click.option("--interleave", is_flag=True,
              help="Run the --variants in one process, one step each in turn (ratios robust to a drifting machine)")
@click.option("--json-out", help="Write all figures to this JSON file")
@click.option("--child", hidden=True)
def main(data, res, cfg, batch, plugin_sets, variants, iterations, warmup, rounds, device, roofline, profile, upstream,
         interleave, json_out, child):
    if data is None:
        data = f"/tmp/bench-digits{res}.zip"
        if not os.path.exists(data):
            from dataset_tool import convert_dataset

            convert_dataset(f"digits:{res}", data, log=lambda *a: None)
    if child is not None:
        spec = json.loads(child)
        if "variants" in spec:
            print(json.dumps(measure_interleaved(data, spec["plugins"], iterations, warmup, cfg, spec["device"], batch,
                                                 spec["variants"])))
            return
        print(json.dumps(measure(data, spec["plugins"], iterations, warmup, cfg, spec["device"], batch, spec["overrides"],
                                 spec["roofline"], spec["profile"])))
        return
    import torch

    devices = [device] + (["cuda"] if device == "cpu" and torch.cuda.is_available() else [])
    configs = [dict(plugins=p, device=d, variant=v.strip() or "default", overrides=parse_variant(v))
               for d in devices for v in variants.split(";") for p in plugin_sets.split(",")]
    if upstream:
        configs.append(dict(plugins="upstream", device="cpu", variant="upstream", overrides={}))
    print(f"cfg={cfg} res={res} batch={batch or 'preset'} iterations={iterations} (after {warmup} warm-up), "
          f"{rounds} round(s), min reported; {os.cpu_count()} CPU(s), torch {torch.__version__}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    best = {}
    if interleave:
        variant_list = [v.strip() or "default" for v in variants.split(";")]
        for _round in range(rounds):
            spec = dict(plugins=plugin_sets.split(",")[0], device=device, variants=[parse_variant(v) for v in variant_list])
            cmd = [sys.executable, __file__, f"--data={data}", f"--cfg={cfg}", *([f"--batch={batch}"] if batch else []),
                   f"--iterations={iterations}", f"--warmup={warmup}", f"--child={json.dumps(spec)}"]
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            if out.returncode != 0:
                raise click.ClickException(f"interleaved run failed:\n{out.stderr[-2000:]}")
            for i, (name, r) in enumerate(zip(variant_list, json.loads(out.stdout.strip().splitlines()[-1]))):
                r["variant"] = name
                if i not in best or r["sec_per_iter"] < best[i]["sec_per_iter"]:
                    best[i] = r
        configs = [spec for spec in configs if spec["plugins"] == "upstream"]
    for round_idx in range(rounds):
        for i, spec in enumerate(configs):
            if spec["plugins"] == "upstream":
                r = run_upstream(batch or 32, kimg=max(0.6, (iterations + warmup) * (batch or 32) / 1000))
            else:
                first = round_idx == 0
                child_spec = dict(plugins=spec["plugins"], device=spec["device"], overrides=spec["overrides"],
                                  roofline=roofline and first, profile=profile and first)
                cmd = [sys.executable, __file__, f"--data={data}", f"--cfg={cfg}", *([f"--batch={batch}"] if batch else []),
                       f"--iterations={iterations}", f"--warmup={warmup}", f"--child={json.dumps(child_spec)}"]
                out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
                if out.returncode != 0:
                    print(f"{spec['variant']} {spec['plugins'] or 'baseline'} on {spec['device']}: failed\n{out.stderr[-2000:]}")
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
            r["variant"] = spec["variant"]
            prev = best.get(i)
            if prev is None or r["sec_per_iter"] < prev["sec_per_iter"]:
                best[i] = {**(prev or {}), **r}  # Keeps the first round's FLOPs/profile.
    peaks = machine_peak() if roofline else None
    reference = next((r for r in best.values() if r["plugins"] != "upstream"), None)
    for i in sorted(best):
        r = best[i]
        ratio = ""
        if reference is not None and r is not reference:
            ratio = f"  x{r['sec_per_iter'] / reference['sec_per_iter']:.2f} of the first"
        rss = f"  peak RSS {r['peak_rss_gib']:.2f} GiB  threads {r['threads']}" if "peak_rss_gib" in r else ""
        print(f"{r['variant']:<14s} {r['plugins'] or 'baseline':<18s} {r['device']:<5s} {r['sec_per_iter']:.3f} s/iter  "
              f"{r['sec_per_kimg']:.1f} s/kimg{rss}{ratio}")
        if r.get("flops") and peaks:
            print_roofline(r, peaks)
        for op in r.get("profile", []):
            print(f"    {100 * op['share']:5.1f}%  {op['ms_per_iter']:8.1f} ms/iter  {op['calls_per_iter']:7.1f} calls/iter  {op['name']}")
    if json_out:
        with open(json_out, "w", encoding="utf-8") as f:
            json.dump(dict(results=list(best.values()), peaks=peaks), f, indent=1)


if __name__ == "__main__":
    main()
