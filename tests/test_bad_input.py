"""Bad input gets a message, not a traceback: one table of (command, arguments, expected message), run as
subprocesses, and the table in docs/bad-input.md generated from it (`python tests/test_bad_input.py`)."""

import os
import subprocess
import sys

import pytest
import torch

from plugins import hookimpl
from plugins.testing import run_tiny_training
from training import checkpoint
from training.training_loop import NonFiniteLossError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "bad-input.md")

# (script, arguments, expected message). {data}, {out} and {snap} are filled in by the test.
CASES = [
    ("train.py", "--data={data} --outdir={out} --gamma=nan", "Invalid value for --gamma: nan is not a finite number"),
    ("train.py", "--data={data} --outdir={out} --gamma=inf", "Invalid value for --gamma: inf is not a finite number"),
    ("train.py", "--data={data} --outdir={out} --kimg=nan", "Invalid value for --kimg: nan is not a finite number"),
    ("train.py", "--data={data} --outdir={out} --plugins=noisytwins --nt-lambda=nan",
     "Invalid value for --nt-lambda: nan is not a finite number"),
    ("train.py", "--data={data} --outdir={out} --plugins=vision_aided --va-backbones=clip",
     "no weights for backbone 'clip' (ViT-B-32.pt, OpenAI CLIP release"),
    ("train.py", "--data={data} --outdir={file}", "is a file, not a directory; pass a directory"),
    ("train.py", "--data={data} --outdir={out} --batch-gpu=0", "--batch-gpu=0 must be at least 1"),
    ("train.py", "--data={data} --outdir={out} --seed=-1", "-1 is not in the range 0<=x<=4294967295"),
    ("train.py", "--data={data} --outdir={out} --device=cuda:99", "--device=cuda:99: "),  # No GPU, or not 100.
    ("train.py", "--data={damaged} --outdir={out} --verify-data=1",
     "--verify-data: 1 damaged image(s) in {damaged}: 00000/img00000005.png: Bad CRC-32"),
    ("dataset_tool.py", "--verify={damaged}", "damaged: 00000/img00000005.png: Bad CRC-32"),
    ("train.py", "--data={data} --outdir={out} --cfg=tiny --cond=0 --resume={snap}",
     "G of the pickle does not fit this configuration (another resolution or architecture?): missing in the pickle: "
     "none; not used here: mapping.embed.bias, mapping.embed.weight"),
    ("train.py", "--data={data} --outdir={out} --cfg=tiny --cond=1 --resume={snap}",
     "G does not match this configuration: copy_params_and_buffers: shape mismatch for 'synthesis.b4.const'"),
    ("calc_metrics.py", "--network={out}/missing.pkl --metrics=fid50k_full", "--network: no such file"),
    ("calc_metrics.py", "--network={snap} --metrics=bogus", "unknown metric(s): bogus"),
    ("lt_dataset.py", "--source={data} --imf=0.5", "0.5 is below 1"),
    ("generate.py", "--network={snap} --outdir={out} --trunc=nan --class=0",
     "Invalid value for --trunc: nan is not a finite number"),
    ("generate.py", "--network={snap} --outdir={out} --seeds=4294967296 --class=0",
     "seed 4294967296 is out of range: seeds are 0..4294967295"),
    ("generate.py", "--network={snap} --outdir={out} --seeds=5-1 --class=0", "'5-1' is an empty range"),
    ("train.py", "--data={data} --outdir={out} --cfg=tiny --cond=1 --freezed=99",
     "--freezed=99: D has 7 layers at 16 px; freeze 0..7 of them"),
    ("generate.py", "--network={snap} --outdir={out} --video={out}/v.gif --frames=0 --class=0",
     "Invalid value for '--frames': 0 is not in the range x>=1"),
    ("generate.py", "--network={snap} --outdir={out} --video={out}/v.avi --class=0 --seeds=0-1",
     "use a .gif or .mp4 file name"),
    ("calc_metrics.py", "--network={snap} --metrics=class_consistency --seed=-1", "-1 is not in the range 0<=x<=4294967295"),
    ("legacy.py", "--source={file} --dest={out}/x.pkl", "--source: {file}: the file is empty"),
    ("train.py", "--data={data} --outdir={out} --cfg=tiny --cond=1 --resume={out}", "--resume={out}: no such file"),
]


def doc_table():
    from tests.bad_input_data import DATA_CASES

    lines = ["# Bad input and the messages it gets", "",
             "Generated from `tests/test_bad_input.py` (`python tests/test_bad_input.py`); every row is a test.", "",
             "| command | message (excerpt) |", "|---|---|"]
    for script, args, expected in CASES + DATA_CASES:
        lines.append(f"| `python {script} {args}` | {expected} |")
    return "\n".join(lines) + "\n"


def test_the_doc_table_is_generated_from_the_cases():
    with open(DOC, encoding="utf-8") as f:
        assert f.read() == doc_table(), "docs/bad-input.md is stale: run python tests/test_bad_input.py"


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory, tiny_digits):
    trainer = run_tiny_training(str(tmp_path_factory.mktemp("snap") / "run"), tiny_digits, iterations=1,
                                network_snapshot_ticks=1)
    return checkpoint.latest_snapshot(trainer.run_dir)


@pytest.fixture(scope="module")
def damaged(tmp_path_factory, tiny_digits):
    """The digits ZIP with the compressed bytes of its sixth image flipped (a CRC error when read)."""
    import shutil
    import zipfile

    path = str(tmp_path_factory.mktemp("damaged") / "damaged.zip")
    shutil.copy(tiny_digits, path)
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("00000/img00000005.png")
    data = bytearray(open(path, "rb").read())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 40
    data[start:start + 20] = bytes(b ^ 0xFF for b in data[start:start + 20])
    with open(path, "wb") as f:
        f.write(bytes(data))
    return path


def test_a_damaged_image_names_its_file_or_is_skipped(damaged):
    from training.dataset import DatasetError, ImageFolderDataset

    with pytest.raises(DatasetError, match=r"img00000005\.png.*Bad CRC-32.*\(image 5\).*--skip-bad-images=1"):
        ImageFolderDataset(damaged)[5]
    dataset = ImageFolderDataset(damaged, skip_bad_images=True)
    with pytest.warns(UserWarning, match="skipping damaged image"):
        image, _ = dataset[5]
    assert (image == dataset[6][0]).all()  # Replaced by the next image.


@pytest.mark.parametrize("script,args,expected", CASES, ids=[f"{c[0]} {c[1].split()[-1]}" for c in CASES])
def test_bad_input_gets_its_message_and_leaves_nothing(script, args, expected, tmp_path, tiny_digits, snapshot, damaged):
    out = tmp_path / "out"
    (tmp_path / "a-file").write_text("")
    names = dict(data=tiny_digits, out=out, snap=snapshot, file=tmp_path / "a-file", damaged=damaged)
    argv = args.format(**names).split()
    expected = expected.format(**names)
    result = subprocess.run([sys.executable, os.path.join(REPO, script), *argv], capture_output=True, text=True,
                            cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"))
    message = result.stdout + result.stderr
    assert result.returncode != 0 and expected in message, message[-2000:]
    assert "Traceback" not in message
    assert not out.exists() or not any(out.iterdir())  # No run directory, no images.


class PoisonD:
    """Sets one D weight to NaN at iteration 3: the next D pass gives NaN logits."""

    plugin_name = "poison"

    @hookimpl
    def gan_step(self, ctx):
        if ctx.batch_idx == 3:
            with torch.no_grad():
                next(iter(ctx.D.parameters())).view(-1)[0] = float("nan")


def test_a_nan_loss_mid_run_stops_naming_the_term_and_no_nan_snapshot(tmp_path, tiny_digits):
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at kimg 0\.024, phase Gmain: Loss/G/loss = nan"):
        run_tiny_training(str(tmp_path / "run"), tiny_digits, plugins=[PoisonD()], iterations=6,
                          network_snapshot_ticks=1)
    snaps = sorted(p for p in os.listdir(tmp_path / "run") if p.endswith(".pkl"))
    assert snaps  # The snapshots written before the NaN are finite.
    import pickle

    with open(tmp_path / "run" / snaps[-1], "rb") as f:
        data = pickle.load(f)
    assert all(torch.isfinite(t).all() for key in ("G", "D", "G_ema") for t in data[key].state_dict().values()
               if t.is_floating_point())


if __name__ == "__main__":
    sys.path.insert(0, REPO)  # `tests.bad_input_data` when run as a script.
    with open(DOC, "w", encoding="utf-8") as f:
        f.write(doc_table())
    print(f"wrote {DOC}")


def test_a_pickle_of_another_resolution_needs_resume_partial(tmp_path, tiny_digits):
    from plugins.testing import make_digits_dataset

    digits32 = make_digits_dataset(str(tmp_path / "digits32.zip"), resolution=32)
    big = run_tiny_training(str(tmp_path / "big"), digits32, iterations=1, resolution=32, network_snapshot_ticks=1)
    snap = checkpoint.latest_snapshot(big.run_dir)
    with pytest.raises(ValueError, match=r"G of the pickle does not fit .*not used here: synthesis\.b32\..*"
                                         r"--resume-partial=1"):
        run_tiny_training(str(tmp_path / "small"), tiny_digits, iterations=1, resume_pkl=snap)
    small = run_tiny_training(str(tmp_path / "partial"), tiny_digits, iterations=1, resume_pkl=snap,
                              resume_partial=True)
    # The tensors that fit were copied (noise_const is a buffer: never trained, random in a fresh network).
    assert torch.equal(small.G.synthesis.b8.conv0.noise_const, big.G.synthesis.b8.conv0.noise_const)


def test_stray_class_ids_are_refused_with_the_remap_command(tmp_path, tiny_digits):
    import json
    import zipfile

    from training.dataset import DatasetError, ImageFolderDataset

    bad = str(tmp_path / "bad.zip")
    with zipfile.ZipFile(tiny_digits) as src, zipfile.ZipFile(bad, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "dataset.json":
                meta = json.loads(data)
                meta["labels"] = [[n, 15 if c == 9 else c] for n, c in meta["labels"]]  # Classes {0..8, 15}.
                meta.pop("class_names", None)
                data = json.dumps(meta).encode()
            dst.writestr(name, data)
    with pytest.raises(DatasetError, match=r"must be 0\.\.C-1 for its C=10 classes; found ids 15 and none for 9\. "
                                           r"Renumber them: python dataset_tool.py --source=.*--remap-labels"):
        _ = ImageFolderDataset(bad, use_labels=True).label_dim
    fixed = str(tmp_path / "fixed.zip")
    result = subprocess.run([sys.executable, "dataset_tool.py", f"--source={bad}", f"--dest={fixed}", "--remap-labels"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0 and "15->9" in result.stdout, result.stderr[-2000:]
    assert ImageFolderDataset(fixed, use_labels=True).label_dim == 10


def test_kimg_below_the_resumed_kimg_is_a_setup_error(tmp_path, tiny_digits):
    from plugins.testing import tiny_config
    from training.training_loop import SetupError, training_loop

    first = run_tiny_training(str(tmp_path / "a"), tiny_digits, iterations=3, network_snapshot_ticks=1)
    snap, state = checkpoint.resolve_resume(first.run_dir)
    c = tiny_config(tiny_digits, str(tmp_path / "b"), total_kimg=0.008, resume_pkl=snap, resume_state=state)
    os.makedirs(c.run_dir)
    with pytest.raises(SetupError, match=r"--kimg=0\.008, but the resumed run is already at 0\.024 kimg"):
        training_loop(**c)


def test_a_full_disk_names_the_path_and_keeps_earlier_snapshots(tmp_path, tiny_digits, monkeypatch):
    import errno

    from training.training_loop import CheckpointWriteError

    calls = []
    real = checkpoint.save_state

    def fail_second(path, state, before_rename=None):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", path + ".tmp")
        return real(path, state, before_rename=before_rename)

    monkeypatch.setattr(checkpoint, "save_state", fail_second)
    with pytest.raises(CheckpointWriteError, match=r"No space left on device .*earlier files are intact.* resume "
                                                   r"with --resume="):
        run_tiny_training(str(tmp_path / "run"), tiny_digits, iterations=4, network_snapshot_ticks=1)
    snap, state = checkpoint.resolve_resume(str(tmp_path / "run"), log=lambda *a: None)
    assert os.path.basename(snap) == "network-snapshot-000000.pkl" and state is not None  # The first pair.


def test_a_full_disk_while_a_grid_is_written_gets_the_same_message(tmp_path, tiny_digits, monkeypatch):
    """The grid is written before any snapshot exists: the advice is to start again, not to resume."""
    import errno

    from training import image_grid
    from training.training_loop import CheckpointWriteError

    def full(img, path, drange, grid_size, **layout):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(image_grid, "save_image_grid", full)
    with pytest.raises(CheckpointWriteError, match=r"writing the image grid .*reals.png failed: No space left on "
                                                   r"device.*start the run again"):
        run_tiny_training(str(tmp_path / "run"), tiny_digits, iterations=1)


def test_runs_started_at_the_same_instant_get_their_own_directories(tmp_path):
    import threading

    sys.path.insert(0, REPO)
    from train import allocate_run_dir

    made, barrier = [], threading.Barrier(8)

    def start():
        barrier.wait()
        made.append(allocate_run_dir(str(tmp_path), "digits-tiny"))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 8 and sorted(os.listdir(tmp_path)) == [f"{i:05d}-digits-tiny" for i in range(8)]
