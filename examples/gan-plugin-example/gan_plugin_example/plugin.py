"""wl2: penalise the squared distance of the generator's w from the running average w_avg.

A deliberately small, real plugin (plugin API v3): one option, one extra generator loss term (reported in
stats.jsonl as Loss/wl2/w_dist), a scalar of its own (Plugin/wl2/batches), and its own state for exact resume
(the number of penalised batches), restored in gan_setup.
"""

import click
import pluggy

from torch_utils import training_stats

hookimpl = pluggy.HookimplMarker("gan_plugins")  # All a third-party plugin needs from the trainer.

version = "0.1.0"


class WL2:
    version = version

    def __init__(self, wl2_weight=0.01):  # The trainer passes the resolved options as keyword arguments.
        if wl2_weight < 0:
            raise ValueError("wl2: --wl2-weight must be non-negative")
        self.weight = wl2_weight
        self.batches = 0

    @staticmethod  # Called on the class, before construction: its options are the constructor's arguments.
    @hookimpl
    def gan_add_options():
        return [click.Option(["--wl2-weight"], type=float, default=0.01, show_default=True,
                             help="wl2: weight of the mean squared distance of w from w_avg")]

    @hookimpl
    def gan_loss_terms(self, ctx):
        if ctx.phase != "Gmain":
            return []
        w = ctx.g_capture["w_streams"]["w"]  # [N, w_dim], before truncation and style mixing.
        w_avg = ctx.G.mapping.w_avg.detach()
        self.batches += 1
        training_stats.report("Plugin/wl2/batches", self.batches)  # Any scalar: stats.jsonl, TensorBoard, report.
        return [("w_dist", self.weight, (w - w_avg).square().mean(dim=1))]

    @hookimpl
    def gan_setup(self, ctx):  # Once, when the run is set up; a resumed run hands back gan_state_dict's answer.
        state = ctx.restored_state(self)
        if state is not None:
            self.batches = int(state["batches"])

    @hookimpl
    def gan_state_dict(self):
        return {"batches": self.batches}

