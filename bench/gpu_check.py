"""One prepared GPU check: correctness of the CUDA paths and the speed of each, in one JSON and one table.

  python bench/gpu_check.py                      # on a CUDA machine: under 8 minutes on one GPU
  python bench/gpu_check.py --smoke              # end to end on the CPU with tiny sizes (CI runs this)

Sections (each recorded even when it fails, with its error):
  1. ops:     the CUDA kernel tests against the reference ops, double backward included
              (pytest tests/test_ops.py -m cuda, with GAN_CUDA_KERNELS=1; skipped without CUDA);
  2. fp16:    a generator with NVIDIA's mixed precision (num_fp16_res=4, conv_clamp=256) against the same
              weights in float32: relative difference of the images;
  3. speed:   training sec/kimg at 64 and 256 px (NVIDIA's auto preset, conditional, ADA) for
              (a) reference ops, (b) the project's CUDA kernels (GAN_CUDA_KERNELS=1), each with peak GPU
              memory; and (c) torch.compile: the main phases (G and D forward and backward; R1 needs double
              backward, which compiled graphs refuse) compiled against the same phases eager, with its compile time;
  4. nccl:    a one-process NCCL process group (gloo with --smoke) and one all_reduce.
Each speed figure runs in its own process (clean memory statistics, one kernel setting per process).
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

import click

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def dataset_for(res):
    path = os.path.join(tempfile.gettempdir(), f"gpu-check-digits{res}.zip")
    if not os.path.exists(path):
        from dataset_tool import convert_dataset

        convert_dataset(f"digits:{res}", path, log=lambda *a: None)
    return path


def check_ops(smoke):
    import torch

    if not torch.cuda.is_available():
        return dict(status="skipped", reason="no CUDA device")
    env = dict(os.environ, GAN_CUDA_KERNELS="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests/test_ops.py", "tests/test_custom_ops.py", "-p", "no:cacheprovider"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-500:]
    return dict(status="passed" if out.returncode == 0 else "failed", summary=summary)


def check_fp16(device, res):
    import torch

    from training.networks import Generator

    torch.manual_seed(0)
    kwargs = dict(z_dim=64, c_dim=10, w_dim=64, img_resolution=res, img_channels=3, mapping_kwargs=dict(num_layers=2),
                  synthesis_kwargs=dict(channel_base=4096, channel_max=128, num_fp16_res=4, conv_clamp=256))
    G = Generator(**kwargs).to(device).eval()
    z = torch.randn(8, 64, device=device)
    c = torch.nn.functional.one_hot(torch.arange(8, device=device) % 10, 10).float()
    with torch.no_grad():
        ws = G.mapping(z, c)
        mixed = G.synthesis(ws, noise_mode="const")
        full = G.synthesis(ws, noise_mode="const", force_fp32=True)
    rel = float((mixed.float() - full).abs().max() / full.abs().max().clamp(min=1e-8))
    used_fp16 = device.type == "cuda"
    return dict(status="passed" if rel < 0.05 else "failed", max_rel_diff=rel, fp16_ran=used_fp16, bound=0.05)


def train_speed(res, kernels, smoke, iterations, warmup):
    """sec/kimg of the trainer at the auto preset (or tiny with --smoke) in a child process."""
    spec = dict(res=res, kernels=kernels, smoke=smoke, iterations=iterations, warmup=warmup)
    env = dict(os.environ, GAN_CUDA_KERNELS="1" if kernels else "0")
    out = subprocess.run([sys.executable, __file__, f"--child={json.dumps(spec)}"], capture_output=True, text=True,
                         cwd=REPO, env=env)
    if out.returncode != 0:
        return dict(status="failed", error=out.stderr[-1500:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def child_train_speed(spec):
    import torch

    from bench.train_speed import build_trainer, timed_steps

    device = "cuda" if torch.cuda.is_available() and not spec["smoke"] else "cpu"
    cfg = "tiny" if spec["smoke"] else "auto"
    trainer = build_trainer(dataset_for(spec["res"]), "", cfg, device, None, {})
    timed_steps(trainer, spec["warmup"])
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    steady = timed_steps(trainer, spec["iterations"])
    sec_per_iter = sum(steady) / len(steady)
    return dict(status="ok", device=device, cfg=cfg, batch=trainer.batch_size, sec_per_kimg=sec_per_iter / trainer.batch_size * 1000,
                peak_gpu_gib=torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else None)


def child_compile_speed(spec):
    """Main phases (G forward, D forward, backward through both) eager vs torch.compile, same networks."""
    import torch
    import torch.nn.functional as F

    from training.networks import Discriminator, Generator

    device = torch.device("cuda" if torch.cuda.is_available() and not spec["smoke"] else "cpu")
    res, batch = spec["res"], (4 if spec["smoke"] else max(min(4096 // spec["res"], 32), 1))
    cbase, cmax = (256, 16) if spec["smoke"] else (16384, 512)
    torch.manual_seed(0)
    G = Generator(z_dim=512 if not spec["smoke"] else 16, c_dim=10, w_dim=512 if not spec["smoke"] else 16, img_resolution=res,
                  img_channels=3, mapping_kwargs=dict(num_layers=2),
                  synthesis_kwargs=dict(channel_base=cbase, channel_max=cmax, num_fp16_res=4, conv_clamp=256)).to(device)
    D = Discriminator(c_dim=10, img_resolution=res, img_channels=3, channel_base=cbase, channel_max=cmax, num_fp16_res=4,
                      conv_clamp=256).to(device)
    z = torch.randn(batch, G.z_dim, device=device)
    c = F.one_hot(torch.arange(batch, device=device) % 10, 10).float()

    def main_phases(g, d):
        loss = F.softplus(-d(g(z, c), c)).mean() + F.softplus(d(g(z, c).detach(), c)).mean()
        loss.backward()

    def timed(g, d, n):
        for _ in range(2):
            main_phases(g, d)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(n):
            main_phases(g, d)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / n / batch * 1000

    eager = timed(G, D, spec["iterations"])
    start = time.perf_counter()
    Gc, Dc = torch.compile(G), torch.compile(D)
    main_phases(Gc, Dc)
    compile_s = time.perf_counter() - start
    compiled = timed(Gc, Dc, spec["iterations"])
    return dict(status="ok", device=str(device), batch=batch, eager_main_sec_per_kimg=eager, compiled_main_sec_per_kimg=compiled,
                compile_seconds=compile_s, speedup=eager / compiled)


def compile_speed(res, smoke, iterations):
    spec = dict(res=res, smoke=smoke, iterations=iterations, compile=True)
    out = subprocess.run([sys.executable, __file__, f"--child={json.dumps(spec)}"], capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        return dict(status="failed", error=out.stderr[-1500:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def check_nccl(smoke):
    import torch
    import torch.distributed as dist

    backend = "gloo" if smoke or not torch.cuda.is_available() else "nccl"
    init = "file://" + os.path.join(tempfile.mkdtemp(prefix="gpu-check-"), "pg")
    start = time.perf_counter()
    dist.init_process_group(backend, init_method=init, rank=0, world_size=1)
    try:
        x = torch.ones(4, device="cuda" if backend == "nccl" else "cpu")
        dist.all_reduce(x)
        ok = bool((x == 1).all())
    finally:
        dist.destroy_process_group()
    return dict(status="passed" if ok else "failed", backend=backend, seconds=time.perf_counter() - start)


def guarded(fn, *args):
    try:
        return fn(*args)
    except Exception as exc:  # A failing section is a result, not the end of the check.
        return dict(status="failed", error=f"{type(exc).__name__}: {exc}", trace=traceback.format_exc()[-1500:])


@click.command()
@click.option("--smoke", is_flag=True, help="Tiny sizes on the CPU: every section end to end, in a minute or two")
@click.option("--out", "out_path", default="gpu-check.json", show_default=True, help="JSON result file")
@click.option("--child", hidden=True)
def main(smoke, out_path, child):
    if child is not None:
        spec = json.loads(child)
        print(json.dumps(child_compile_speed(spec) if spec.get("compile") else child_train_speed(spec)))
        return
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() and not smoke else "cpu")
    resolutions = [16] if smoke else [64, 256]
    iterations, warmup = (3, 1) if smoke else (20, 5)
    started = time.perf_counter()
    result = dict(device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu", torch=torch.__version__,
                  smoke=smoke, date=time.strftime("%Y-%m-%d"))
    result["ops"] = guarded(check_ops, smoke)
    result["fp16"] = guarded(check_fp16, device, 16 if smoke else 64)
    result["speed"] = {}
    for res in resolutions:
        result["speed"][str(res)] = dict(
            reference_ops=guarded(train_speed, res, False, smoke, iterations, warmup),
            cuda_kernels=guarded(train_speed, res, True, smoke, iterations, warmup),
            torch_compile=guarded(compile_speed, res, smoke, iterations))
    result["nccl"] = guarded(check_nccl, smoke)
    result["seconds"] = time.perf_counter() - started
    tmp = out_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, out_path)

    print(f"device {result['device']}, torch {result['torch']}, {result['seconds']:.0f} s -> {out_path}")
    print(f"ops   {result['ops']['status']:<8s} {result['ops'].get('summary') or result['ops'].get('reason') or result['ops'].get('error', '')}")
    fp16 = result["fp16"]
    print(f"fp16  {fp16['status']:<8s} max relative difference {fp16.get('max_rel_diff', float('nan')):.2e} "
          f"(float16 ran: {fp16.get('fp16_ran')})")
    for res, rows in result["speed"].items():
        for name, r in rows.items():
            if r.get("status") != "ok":
                print(f"{res:>4s} px {name:<14s} failed: {r.get('error', '')[-300:]}")
            elif name == "torch_compile":
                print(f"{res:>4s} px {name:<14s} main phases {r['eager_main_sec_per_kimg']:.2f} -> {r['compiled_main_sec_per_kimg']:.2f} "
                      f"s/kimg (x{r['speedup']:.2f}), compile {r['compile_seconds']:.0f} s")
            else:
                mem = f", peak {r['peak_gpu_gib']:.2f} GiB" if r.get("peak_gpu_gib") is not None else ""
                print(f"{res:>4s} px {name:<14s} {r['sec_per_kimg']:.2f} s/kimg (batch {r['batch']}, {r['cfg']}, {r['device']}{mem})")
    print(f"nccl  {result['nccl']['status']:<8s} backend {result['nccl'].get('backend')}")
    failed = [k for k in ("ops", "fp16", "nccl") if result[k].get("status") == "failed"]
    failed += [f"speed {res} {name}" for res, rows in result["speed"].items() for name, r in rows.items() if r.get("status") == "failed"]
    if failed:
        raise click.ClickException("failed: " + ", ".join(failed))


if __name__ == "__main__":
    main()
