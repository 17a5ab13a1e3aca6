"""Where tick statistics go: stats.jsonl always, TensorBoard when installed, Weights & Biases when asked."""

import json
import os
import time


class RunLoggers:
    """Writes one record per tick. options: tensorboard ('auto'|True|False), wandb (bool), wandb_project,
    wandb_name, wandb_mode ('online'|'offline'|None = wandb's default / WANDB_MODE)."""

    def __init__(self, run_dir, rank=0, options=None):
        options = dict(options or {})
        self.run_dir = run_dir
        self.stats_jsonl = open(os.path.join(run_dir, "stats.jsonl"), "at")
        self.tensorboard = None
        self.wandb_run = None
        tb = options.get("tensorboard", "auto")
        if tb:
            try:
                import torch.utils.tensorboard as tensorboard

                self.tensorboard = tensorboard.SummaryWriter(run_dir)
            except ImportError as exc:
                if tb is True:
                    raise RuntimeError("TensorBoard logging was requested but tensorboard is not installed: "
                                       "pip install tensorboard") from exc
                print("Skipping tfevents export: tensorboard is not installed (pip install tensorboard)")
        if options.get("wandb"):
            self.wandb_run = start_wandb(run_dir, options)

    def write(self, stats, metrics, timestamp=None, cur_nimg=0):
        timestamp = time.time() if timestamp is None else timestamp
        record = dict(stats, timestamp=timestamp)
        self.stats_jsonl.write(json.dumps(record) + "\n")  # One write per line: no half lines on a crash.
        self.stats_jsonl.flush()
        global_step = int(cur_nimg / 1e3)
        if self.tensorboard is not None:
            walltime = timestamp
            for name, value in stats.items():
                self.tensorboard.add_scalar(name, value.mean, global_step=global_step, walltime=walltime)
            for name, value in metrics.items():
                self.tensorboard.add_scalar(f"Metrics/{name}", value, global_step=global_step, walltime=walltime)
            self.tensorboard.flush()
        if self.wandb_run is not None:
            data = {name: value.mean for name, value in stats.items()}
            data.update({f"Metrics/{name}": value for name, value in metrics.items()})
            self.wandb_run.log(data, step=global_step)

    def close(self):
        self.stats_jsonl.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


def check_wandb_available():
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise RuntimeError("--wandb needs the wandb package: pip install wandb (or pip install -e .[wandb]); "
                           "set WANDB_MODE=offline to log without an account or network") from None


def start_wandb(run_dir, options):
    check_wandb_available()
    import wandb

    mode = options.get("wandb_mode") or os.environ.get("WANDB_MODE") or None
    return wandb.init(project=options.get("wandb_project") or "gan-plugins", name=options.get("wandb_name"),
                      dir=run_dir, mode=mode, config=options.get("config"), reinit=True)
