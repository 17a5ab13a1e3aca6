"""Multi-process data-parallel training: process-group set-up for torchrun and for train.py --gpus=N.

One process per device. Under ``torchrun`` the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT) describes the job, single-node or multi-node; ``train.py --gpus=N`` spawns N local workers with
the same environment, as torchrun would. The backend is NCCL when the workers train on CUDA devices and gloo
otherwise (CPU, tests). Every collective of the trainer (gradient and ADA sums, statistics, metrics, plugin
decisions) goes through torch.distributed once the group exists.
"""

import os
import socket

import torch


def env_world_size():
    """WORLD_SIZE set by torchrun (or a --gpus worker), else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank():
    return int(os.environ.get("RANK", "0"))


def local_rank():
    return int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))


def is_initialized():
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def init(device_type):
    """Join the process group described by the environment (idempotent); returns (rank, world size)."""
    if env_world_size() <= 1:
        return 0, 1
    if not is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank())
        torch.distributed.init_process_group(backend=backend, init_method="env://")
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def shutdown(wait=True):
    """Leave the process group; wait=True first waits for every rank (a clean end)."""
    if is_initialized():
        if wait:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def broadcast_object(obj, src=0):
    """obj of rank src on every rank (picklable objects only)."""
    if not is_initialized():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_tensors(tensors, src=0):
    """Overwrite every tensor with rank src's values (e.g. freshly initialised weights)."""
    if not is_initialized():
        return
    for tensor in tensors:
        torch.distributed.broadcast(tensor.data, src=src)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world_size, port, fn, args):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), LOCAL_WORLD_SIZE=str(world_size))
    fn(rank, *args)


def spawn(world_size, fn, args=()):
    """Run fn(rank, *args) in world_size local processes with torchrun's environment (train.py --gpus=N)."""
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(world_size, free_port(), fn, args), nprocs=world_size, join=True)
