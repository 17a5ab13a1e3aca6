"""A run report: RUN_DIR/report.html with PNG plots of everything the run logged.

    python -m training.report RUN_DIR [RUN_DIR ...]

Reads only `stats.jsonl` and `metric-*.jsonl` (and shows the newest sample grids), so it works on
NVIDIA's stylegan2-ada-pytorch run directories as well as ours. Plots go to RUN_DIR/report/*.png;
every file is written atomically, so a browser refreshing the page never sees a half-written one.
Needs matplotlib (`pip install matplotlib`, or the project's `report` extra); train.py refreshes the
report at each network snapshot when it is installed.
"""

import glob
import html
import json
import os
import re
import sys
import time

import click

import dnnlib

REPORT_DIR = "report"
GRID_RE = re.compile(r"^(fakes[A-Za-z0-9_]*?)(\d{6})(?:-(\d{9}))?\.png$")  # Sub-kimg grids carry the image count.
PER_CLASS_RE = re.compile(r"^(.+)_c(\d+)$")
BANDS = ("many", "medium", "few")
BAND_RE = re.compile(r"^(.+)_(many|medium|few)$")

# Core stats, grouped into plots: (file stem, title, y label, [stats keys], log scale).
CORE_PLOTS = [
    ("losses", "Generator and discriminator losses", "loss", ["Loss/G/loss", "Loss/D/loss"], False),
    ("scores", "Discriminator outputs (logits)", "logit", ["Loss/scores/real", "Loss/scores/fake"], False),
    ("regularization", "R1 and path-length penalties", "penalty",
     ["Loss/r1_penalty", "Loss/pl_penalty", "Loss/D/reg", "Loss/G/reg"], True),
    ("ada", "ADA: augmentation probability p and overfitting signal r_t", "value",
     ["Progress/augment", "Loss/signs/real"], False),
    ("speed", "Training speed", "seconds per kimg", ["Timing/sec_per_kimg"], False),
    ("memory", "Memory", "GiB", ["Resources/cpu_mem_gb", "Resources/peak_gpu_mem_gb", "Resources/peak_gpu_mem_reserved_gb"], False),
]
# Loss/<group>/... keys that are not plugin terms.
CORE_LOSS_GROUPS = {"G", "D", "scores", "signs"}
CORE_LOSS_KEYS = {"Loss/r1_penalty", "Loss/pl_penalty"}


class ReportError(Exception):
    """The run directory cannot be reported on; the message names it."""


# ----------------------------------------------------------------------------
# Reading the run directory.


def read_jsonl(path):
    """The complete JSON lines of a file (a line being written right now, or a damaged one, is skipped)."""
    rows = []
    with open(path, "r", encoding="utf-8", errors="replace") as f:  # A binary file yields no rows, not a traceback.
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def _mean(value):
    """stats.jsonl holds {num, mean, std} per key (NVIDIA's format); plain numbers are accepted too."""
    if isinstance(value, dict):
        value = value.get("mean")
    return float(value) if isinstance(value, (int, float)) else None


def load_stats(run_dir):
    """{key: ([kimg...], [mean...])} from stats.jsonl; the x axis is Progress/kimg of each line.

    The "timestamp" series holds each tick's time, which places metric results on the kimg axis.
    """
    path = os.path.join(run_dir, "stats.jsonl")
    series = {}
    if not os.path.isfile(path):
        return series
    for row in read_jsonl(path):
        kimg = _mean(row.get("Progress/kimg"))
        if kimg is None:
            continue
        for key, value in row.items():
            y = _mean(value)
            if y is None:
                continue
            xs, ys = series.setdefault(key, ([], []))
            xs.append(kimg)
            ys.append(y)
    return series


def snapshot_kimg(snapshot_pkl):
    m = re.search(r"network-snapshot-(\d+)\.pkl$", str(snapshot_pkl or ""))
    return int(m.group(1)) if m else None


def tick_kimg_at(series, timestamp):
    """kimg of the first tick written at or after `timestamp` (metrics are written just before their tick's stats)."""
    stamps = series.get("timestamp")
    if stamps is None or not isinstance(timestamp, (int, float)):
        return None
    for kimg, stamp in zip(*stamps):
        if stamp >= timestamp:
            return kimg
    return None


def load_metrics(run_dir, series=None):
    """{metric name: [(kimg, results dict), ...]} from metric-*.jsonl, sorted by kimg.

    kimg comes from the tick the result was written in (exact, also below 1 kimg), else from the snapshot's name.
    """
    metrics = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "metric-*.jsonl"))):
        default_name = os.path.basename(path)[len("metric-"):-len(".jsonl")]
        for row in read_jsonl(path):
            results = row.get("results")
            kimg = tick_kimg_at(series or {}, row.get("timestamp"))
            kimg = snapshot_kimg(row.get("snapshot_pkl")) if kimg is None else kimg
            if not isinstance(results, dict) or kimg is None:
                continue
            values = {k: float(v) for k, v in results.items() if isinstance(v, (int, float))}
            metrics.setdefault(row.get("metric", default_name), []).append((kimg, values))
    for rows in metrics.values():
        rows.sort(key=lambda r: r[0])
    return metrics


def grid_display_width(path, min_width=480, max_width=1200):
    """Width to show a grid at: small-image grids are enlarged by a whole factor (pixels stay sharp)."""
    import PIL.Image

    try:
        with PIL.Image.open(path) as img:
            width = img.size[0]
    except OSError:
        return min_width
    return min(width * max(1, min_width // max(width, 1)), max_width)


def report_grids(run_dir):
    """{file name: display width}: the reals, then the newest sample grid of each kind."""
    names = (["reals.png"] if os.path.isfile(os.path.join(run_dir, "reals.png")) else []) + list(latest_grids(run_dir).values())
    return {name: grid_display_width(os.path.join(run_dir, name)) for name in names}


def latest_grids(run_dir):
    """{grid prefix: file name} of the newest sample grid of each kind (fakes, and plugin grids such as fakes_uc)."""
    latest = {}
    for path in glob.glob(os.path.join(run_dir, "fakes*.png")):
        m = GRID_RE.match(os.path.basename(path))
        if m is None:
            continue
        prefix, nimg = m.group(1), int(m.group(3)) if m.group(3) else int(m.group(2)) * 1000
        if prefix not in latest or nimg > latest[prefix][0]:
            latest[prefix] = (nimg, os.path.basename(path))
    return {prefix: name for prefix, (_kimg, name) in sorted(latest.items())}


def plugin_loss_groups(series):
    """{plugin or term group: [stats keys]} for Loss/<group>/<term> keys that the core does not write."""
    groups = {}
    for key in sorted(series):
        parts = key.split("/")
        if len(parts) < 3 or parts[0] != "Loss" or parts[1] in CORE_LOSS_GROUPS or key in CORE_LOSS_KEYS:
            continue
        groups.setdefault(parts[1], []).append(key)
    return groups


def split_metric_keys(results):
    """(curve keys, {base: {class: key}}, {base: {band: key}}) of one metric's result keys."""
    curves, per_class, bands = [], {}, {}
    for key in results:
        m = PER_CLASS_RE.match(key)
        if m is not None:
            per_class.setdefault(m.group(1), {})[int(m.group(2))] = key
            continue
        curves.append(key)
        m = BAND_RE.match(key)
        if m is not None:
            bands.setdefault(m.group(1), {})[m.group(2)] = key
    return curves, per_class, bands


# ----------------------------------------------------------------------------
# Plotting.


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ReportError("the run report needs matplotlib: pip install matplotlib "
                          "(or pip install -e \".[report]\" in the project)") from None
    matplotlib.use("Agg")  # No display needed; never opens a window.
    import matplotlib.pyplot as plt

    return plt


class Plotter:
    """Writes one PNG per figure into RUN_DIR/report and remembers what it wrote, in order."""

    def __init__(self, run_dir):
        self.plt = _pyplot()
        self.run_dir = run_dir
        self.out_dir = os.path.join(run_dir, REPORT_DIR)
        os.makedirs(self.out_dir, exist_ok=True)
        self.figures = []  # (section, title, relative path)

    def save(self, fig, stem, section, title):
        rel = f"{REPORT_DIR}/{stem}.png"
        fig.tight_layout()
        dnnlib.util.atomic_write(os.path.join(self.run_dir, rel), lambda f: fig.savefig(f, format="png", dpi=90))
        self.plt.close(fig)
        self.figures.append((section, title, rel))

    def curves(self, stem, section, title, ylabel, lines, log_scale=False):
        """lines: [(label, xs, ys)]; empty lines are dropped, nothing is written when none is left."""
        lines = [(label, xs, ys) for label, xs, ys in lines if len(xs) > 0]
        if not lines:
            return
        fig, ax = self.plt.subplots(figsize=(6.4, 3.4))
        for label, xs, ys in lines:
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=label)
        ax.set_xlabel("kimg")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        if log_scale and all(y > 0 for _l, _x, ys in lines for y in ys):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        self.save(fig, stem, section, title)

    def bars(self, stem, section, title, ylabel, labels, values):
        fig, ax = self.plt.subplots(figsize=(max(4.0, 0.45 * len(labels) + 1.5), 3.2))
        ax.bar(range(len(values)), values, color="tab:blue")
        ax.set_xticks(range(len(values)))
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        self.save(fig, stem, section, title)


def _safe_stem(text):
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", text).strip("_") or "plot"


def plot_run(plotter, series, metrics):
    for stem, title, ylabel, keys, log_scale in CORE_PLOTS:
        lines = [(key, *series[key]) for key in keys if key in series]
        plotter.curves(stem, "Training", title, ylabel, lines, log_scale)
    for group, keys in plugin_loss_groups(series).items():
        lines = [(key, *series[key]) for key in keys]
        plotter.curves(f"loss_{_safe_stem(group)}", "Plugin terms", f"Loss terms: {group}", "value", lines)
    for name, rows in sorted(metrics.items()):
        curves, per_class, bands = split_metric_keys(rows[-1][1])
        lines = [(key, [k for k, r in rows if key in r], [r[key] for _k, r in rows if key in r]) for key in curves]
        plotter.curves(f"metric_{_safe_stem(name)}", "Metrics", f"{name} over training", "value", lines)
        kimg, latest = rows[-1]
        for base, keys in sorted(per_class.items()):
            classes = sorted(keys)
            labels = [str(k) for k in classes]
            plotter.bars(f"metric_{_safe_stem(name)}_{_safe_stem(base)}_per_class", "Per class",
                         f"{base} per class (kimg {kimg:g})", base, labels, [latest[keys[k]] for k in classes])
        for base, keys in sorted(bands.items()):
            present = [b for b in BANDS if b in keys]
            plotter.bars(f"metric_{_safe_stem(name)}_{_safe_stem(base)}_bands", "Per class",
                         f"{base} per shot band (kimg {kimg:g})", base, present, [latest[keys[b]] for b in present])


# ----------------------------------------------------------------------------
# HTML.


def _summary_rows(run_dir, series, metrics):
    rows = [("run directory", os.path.abspath(run_dir))]
    if "Progress/kimg" in series:
        rows.append(("kimg", f"{series['Progress/kimg'][1][-1]:.1f}"))
    if "Timing/total_sec" in series:
        rows.append(("training time", dnnlib.util.format_time(series["Timing/total_sec"][1][-1])))
    if "Timing/sec_per_kimg" in series:
        rows.append(("sec/kimg (last tick)", f"{series['Timing/sec_per_kimg'][1][-1]:.2f}"))
    for name, rows_ in sorted(metrics.items()):
        kimg, results = rows_[-1]
        curves, _per_class, _bands = split_metric_keys(results)
        rows.append((f"{name} (kimg {kimg:g})", ", ".join(f"{k} = {results[k]:.4g}" for k in curves)))
    return rows


def render_html(run_dir, figures, grids, summary):
    esc = html.escape
    title = f"Run report: {os.path.basename(os.path.abspath(run_dir))}"
    parts = [
        "<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;color:#222} h2{border-bottom:1px solid #ccc;margin-top:1.6em}"
        " .figs{display:flex;flex-wrap:wrap;gap:12px} figure{margin:0} figcaption{font-size:0.85em;color:#555}"
        " img.plot{max-width:600px} img.grid{image-rendering:pixelated;max-width:100%;border:1px solid #ddd}"
        " table{border-collapse:collapse} td{padding:2px 10px;border-bottom:1px solid #eee;vertical-align:top}</style>",
        "</head><body>", f"<h1>{esc(title)}</h1>",
        f"<p>Written {esc(time.strftime('%Y-%m-%d %H:%M:%S'))} from stats.jsonl and metric-*.jsonl.</p>",
        "<table>" + "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in summary) + "</table>",
    ]
    if grids:
        parts.append("<h2>Latest samples</h2><div class='figs'>")
        for name, width in grids.items():
            parts.append(f"<figure><img class='grid' src='{esc(name)}' alt='{esc(name)}' width='{width}'>"
                         f"<figcaption>{esc(name)}</figcaption></figure>")
        parts.append("</div>")
    section = None
    for fig_section, fig_title, rel in figures:
        if fig_section != section:
            if section is not None:
                parts.append("</div>")
            parts.append(f"<h2>{esc(fig_section)}</h2><div class='figs'>")
            section = fig_section
        parts.append(f"<figure><img class='plot' src='{esc(rel)}' alt='{esc(fig_title)}'></figure>")
    if section is not None:
        parts.append("</div>")
    if not figures:
        parts.append("<p>No statistics yet: stats.jsonl has no complete tick.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(run_dir):
    """Write RUN_DIR/report.html and its plots; returns the HTML path. Raises ReportError."""
    if not os.path.isdir(run_dir):
        raise ReportError(f"{run_dir}: not a directory; pass a training run directory")
    if not os.path.isfile(os.path.join(run_dir, "stats.jsonl")) and not glob.glob(os.path.join(run_dir, "metric-*.jsonl")):
        raise ReportError(f"{run_dir}: no stats.jsonl or metric-*.jsonl; is it a training run directory?")
    plotter = Plotter(run_dir)
    series = load_stats(run_dir)
    metrics = load_metrics(run_dir, series)
    plot_run(plotter, series, metrics)
    html_text = render_html(run_dir, plotter.figures, report_grids(run_dir), _summary_rows(run_dir, series, metrics))
    path = os.path.join(run_dir, "report.html")
    dnnlib.util.atomic_write_text(path, html_text)
    return path


def matplotlib_available():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR...")
def main(run_dirs):
    """Write RUN_DIR/report.html with plots of the run's losses, ADA, metrics and samples."""
    for run_dir in run_dirs:
        try:
            path = write_report(run_dir)
        except ReportError as exc:
            raise click.ClickException(str(exc)) from None
        print(f"Wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
