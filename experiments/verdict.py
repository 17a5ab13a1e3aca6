"""The collapse benchmark's pre-registered rules (docs/experiments.md section 5), applied to evaluated runs.

  python experiments/verdict.py --out=/work/exp/collapse-lt --baseline=baseline --kimg=18 \\
      --measures=fd_cls_few:low,class_consistency_few:high,div_cls_ratio_few:high

For each measure (``name:high`` when higher is better, ``name:low`` when lower is):

* collapse of the baseline: in every seed the last snapshot is worse than the seed's best trained snapshot (kimg > 0),
  and the mean
  change (best -> last) exceeds the half-range over seeds at the last snapshot;
* effect of each other configuration: its last-snapshot value is better than the baseline's and the ranges
  (min..max over seeds) do not overlap.

Prints a markdown table and writes it to OUT/verdict.md.
"""

import glob
import json
import os

import click
import numpy as np


def curves_of(out, config, kimg):
    """{seed name: [(kimg, {measure: value})...] sorted by kimg} of a configuration's runs evaluated up to kimg."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(out, "runs", config, "seed*", "0*", "curves.json"))):
        seed = path.split(os.sep)[-3]
        points = sorted(((p["kimg"], p) for p in json.load(open(path)).values()), key=lambda kp: kp[0])
        if points and points[-1][0] >= kimg:  # Runs still training or being evaluated are left out.
            runs[seed] = points
    return runs


def collapse(runs, measure, higher_is_better):
    """(collapsed?, text) for the baseline's runs."""
    sign = 1 if higher_is_better else -1
    drops, lasts, worse_everywhere = [], [], True
    for points in runs.values():
        # kimg 0 is left out: an untrained generator's noise is "diverse" and far from nothing, not a state to fall from.
        values = [(k, p[measure]) for k, p in points if k > 0 and isinstance(p.get(measure), (int, float))]
        best_kimg, best = max(values, key=lambda kv: sign * kv[1])
        last = values[-1][1]
        worse_everywhere &= sign * (best - last) > 0
        drops.append(last - best)
        lasts.append(last)
    half_range = (max(lasts) - min(lasts)) / 2
    collapsed = worse_everywhere and abs(float(np.mean(drops))) > half_range
    return collapsed, (f"last - best {np.mean(drops):+.3g} (mean over seeds, {'all' if worse_everywhere else 'not all'} "
                       f"seeds worse at the end; last-snapshot half-range {half_range:.3g})")


def last_values(runs, measure):
    return [points[-1][1][measure] for points in runs.values() if isinstance(points[-1][1].get(measure), (int, float))]


@click.command()
@click.option("--out", required=True, help="The experiment's --out directory")
@click.option("--baseline", default="baseline", show_default=True, help="The baseline configuration's name")
@click.option("--measures", required=True, help="name:high|low[,...]")
@click.option("--kimg", type=float, required=True, help="The runs' length (runs not evaluated up to it are left out)")
def main(out, baseline, measures, kimg):
    out = os.path.abspath(out)
    configs = sorted(d for d in os.listdir(os.path.join(out, "runs")) if os.path.isdir(os.path.join(out, "runs", d)))
    base_runs = curves_of(out, baseline, kimg)
    if not base_runs:
        raise click.ClickException(f"{out}: no runs of {baseline!r} evaluated up to kimg {kimg:g}")
    seeds = {config: sorted(curves_of(out, config, kimg)) for config in configs}
    lines = ["Runs evaluated up to kimg " + f"{kimg:g}: " + "; ".join(f"{c} {', '.join(s) or 'none'}" for c, s in seeds.items())
             + ". Cells: mean [min, max] over seeds at the last snapshot.", "",
             "| measure | baseline collapsed? | " + " | ".join(c for c in configs) + " |",
             "|---" * (len(configs) + 2) + "|"]
    for item in measures.split(","):
        measure, direction = item.split(":")
        higher = direction == "high"
        collapsed, why = collapse(base_runs, measure, higher)
        base_last = last_values(base_runs, measure)
        cells = []
        for config in configs:
            values = last_values(curves_of(out, config, kimg), measure)
            if not values:
                cells.append("-")
                continue
            text = f"{np.mean(values):.3g} [{min(values):.3g}, {max(values):.3g}]"
            if config != baseline:
                better = (np.mean(values) > np.mean(base_last)) == higher
                apart = min(values) > max(base_last) if higher else max(values) < min(base_last)
                text += " **effect**" if better and apart else (" (better, ranges overlap)" if better else " (not better)")
            cells.append(text)
        lines.append(f"| {measure} ({'higher' if higher else 'lower'} is better) | "
                     f"{'yes' if collapsed else 'no'}: {why} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "verdict.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
