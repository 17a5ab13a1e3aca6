"""Issue #21, data side: atomic outputs of dataset_tool.py and lt_dataset.py (tested by killing them), one label
validator for every label source, duplicate ZIP members refused, and no traceback for bad input
(tests/bad_input_data.py's DATA_CASES, run as subprocesses)."""

import errno
import hashlib
import json
import os
import pickle
import shutil
import string
import struct
import subprocess
import sys
import warnings
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest

import lt_dataset
from dataset_tool import convert_dataset
from dnnlib import dataset_format
from dnnlib.dataset_format import DatasetError, DatasetFiles, host_tag, is_image_name, remove_stale_temps, replace_path
from plugins.testing import make_digits_dataset
from tests.bad_input_data import DATA_CASES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEAD_PID = 99999999  # Above Linux's largest possible pid (2**22): no process has it.


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A 60-image, 10-class, 16 px digits dataset as a ZIP and as a folder (copy them before changing anything)."""
    root = tmp_path_factory.mktemp("template")
    zip_path = make_digits_dataset(str(root / "digits.zip"), resolution=16, max_images=60)
    folder = root / "digits"
    with zipfile.ZipFile(zip_path) as z:
        z.extractall(folder)
    labels = json.loads((folder / "dataset.json").read_text())["labels"]
    assert sorted({c for _n, c in labels}) == list(range(10))
    return SimpleNamespace(zip=zip_path, dir=str(folder), labels=labels)


def run_tool(script, *args, crash=None, expect=0):
    """SCRIPT ARGS in a fresh process, optionally killed at a crash point ($GAN_CRASH_AT); its output."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("GAN_CRASH_AT", None)
    if crash is not None:
        env["GAN_CRASH_AT"] = crash
    result = subprocess.run([sys.executable, os.path.join(REPO, script), *map(str, args)], capture_output=True,
                            text=True, cwd=REPO, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == expect, output[-3000:]
    assert "Traceback" not in output
    return output


def leftovers(directory):
    return sorted(n for n in os.listdir(directory) if ".tmp-" in n or n.startswith(".lt-commit-"))


def tree(root):
    """{relative path: content digest} of every file below root (links by their target): to show that nothing
    was written, removed or changed."""
    found = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                digest = "link:" + os.readlink(path)
            else:
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            found[os.path.relpath(path, root)] = digest
    return found


def image_count(path):
    files = DatasetFiles(path)
    try:
        return sum(1 for n in files.names() if is_image_name(n))
    finally:
        files.close()

# ----------------------------------------------------------------------------
# Inputs of the bad-input table: each builder makes one named input under the test's tmp_path.


def _copy_dir(t, dest):
    shutil.copytree(t.dir, dest)
    return str(dest)


def _labels(transform, **extra):
    """A copy of the digits folder whose dataset.json labels are transform(index, class id)."""
    def build(t, dest, _tmp):
        _copy_dir(t, dest)
        meta = dict(labels=[[n, transform(i, c)] for i, (n, c) in enumerate(t.labels)], **extra)
        with open(os.path.join(dest, "dataset.json"), "w") as f:
            json.dump(meta, f)  # NaN and Infinity are written as JSON's common extension, as Python reads them.
        return str(dest)
    return build


def _raw_dataset_json(data):
    def build(t, dest, _tmp):
        _copy_dir(t, dest)
        with open(os.path.join(dest, "dataset.json"), "wb") as f:
            f.write(data)
        return str(dest)
    return build


def _central_entry(data, name):
    """Offset of `name`'s central-directory entry in the ZIP bytes."""
    pos = 0
    while True:
        pos = data.index(b"PK\x01\x02", pos)
        length = int.from_bytes(data[pos + 28:pos + 30], "little")
        if bytes(data[pos + 46:pos + 46 + length]) == name.encode():
            return pos
        pos += 4


def _zip_edit(edit):
    def build(t, dest, _tmp):
        data = bytearray(open(t.zip, "rb").read())
        with zipfile.ZipFile(t.zip) as z:
            infos = {i.filename: i for i in z.infolist()}
        edit(data, infos)
        with open(dest, "wb") as f:
            f.write(bytes(data))
        return str(dest)
    return build


def _flip_data_of_member_5(data, infos):
    info = infos["00000/img00000005.png"]
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 40
    data[start:start + 16] = bytes(b ^ 0xFF for b in data[start:start + 16])


def _overwrite_data_of_dataset_json(data, infos):
    info = infos["dataset.json"]
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 5
    data[start:start + 3] = bytes(b ^ 0x20 for b in data[start:start + 3])


def _encrypt_flag_of_member_2(data, _infos):
    data[_central_entry(data, "00000/img00000002.png") + 8] |= 1


def _method_99_for_member_2(data, infos):
    local = infos["00000/img00000002.png"].header_offset
    data[local + 8:local + 10] = (99).to_bytes(2, "little")
    central = _central_entry(data, "00000/img00000002.png")
    data[central + 10:central + 12] = (99).to_bytes(2, "little")


def _zip_with_duplicate_member(t, dest, _tmp):
    with zipfile.ZipFile(t.zip) as src, zipfile.ZipFile(dest, "w") as dst, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name it is asked to write.
        for name in src.namelist():
            dst.writestr(name, src.read(name))
        dst.writestr("00000/img00000003.png", src.read("00000/img00000007.png"))
    return str(dest)


class _RunsCode:
    """Pickles as a call of os.system: what a malicious "CIFAR batch" would hold."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _cifar(batch, meta=None):
    def build(_t, dest, tmp):
        os.makedirs(dest)
        value = batch(tmp) if callable(batch) else batch
        with open(os.path.join(dest, "data_batch_1"), "wb") as f:
            pickle.dump(value, f, protocol=2)
        if meta is not None:
            with open(os.path.join(dest, "batches.meta"), "wb") as f:
                pickle.dump(meta, f, protocol=2)
        return str(dest)
    return build


def _idx(dims):
    def build(_t, dest, _tmp):
        with open(dest, "wb") as f:
            f.write(b"\x00\x00\x08" + bytes([len(dims)]) + struct.pack(f">{len(dims)}I", *dims))
        return str(dest)
    return build


def _folder_with(second):
    def build(t, dest, _tmp):
        os.makedirs(dest)
        shutil.copy(os.path.join(t.dir, "00000", "img00000000.png"), os.path.join(dest, "a.png"))
        second(os.path.join(dest, "b.png"))
        return str(dest)
    return build


def _label_file(transform):
    def build(t, dest, _tmp):
        with open(dest, "w") as f:
            json.dump({"labels": [[n, transform(c)] for n, c in t.labels[:10]]}, f)
        return str(dest)
    return build


def _damaged_commit_record(t, dest, _tmp):
    _copy_dir(t, dest)
    with open(os.path.join(dest, f".lt-commit-{host_tag()}-{DEAD_PID}-0123abcd.json"), "wb") as f:
        f.write(b"\x00\xff not json")
    return str(dest)


def _folder_named_zip(_t, dest, _tmp):
    os.makedirs(dest)
    (dest / "keep.txt").write_text("not to be lost")
    return str(dest)


BUILDERS = {
    "out": lambda t, dest, tmp: str(dest),
    "digits": lambda t, dest, tmp: shutil.copy(t.zip, dest),
    "a_file": lambda t, dest, tmp: (dest.write_text("a file"), str(dest))[1],
    "folder_named_zip": _folder_named_zip,
    "zip_with_duplicate_member": _zip_with_duplicate_member,
    "zip_with_crc_error": _zip_edit(_flip_data_of_member_5),
    "zip_with_damaged_dataset_json": _zip_edit(_overwrite_data_of_dataset_json),
    "zip_with_encrypted_member": _zip_edit(_encrypt_flag_of_member_2),
    "zip_with_unknown_compression": _zip_edit(_method_99_for_member_2),
    "labels_nan": _labels(lambda i, c: [float("nan") if i == 0 else float(c), 1.0]),
    "labels_beyond_float32": _labels(lambda i, c: [1e39 if i == 0 else float(c), 1.0]),
    "labels_id_2_63": _labels(lambda i, c: 2 ** 63 if c == 9 else c),
    "labels_nested": _labels(lambda i, c: [[c]]),
    "labels_one_element_lists": _labels(lambda i, c: [c]),
    "labels_stray_id": _labels(lambda i, c: 15 if c == 9 else c),
    "labels_empty_vector": _labels(lambda i, c: []),
    "labels_class_names_not_a_list": _labels(lambda i, c: c, class_names="0123456789"),
    "labels_deeply_nested_json": _raw_dataset_json(b"[" * 100000 + b"]" * 100000),
    "labels_binary_file": _raw_dataset_json(bytes(range(256)) * 4),
    "subset_stray_ids": _label_file(lambda c: 15 if c == 9 else c),
    "subset_float_vectors": _label_file(lambda c: [c / 10 + 0.5, 1.0]),
    "cifar_pickle_running_code": _cifar(lambda tmp: _RunsCode(f"touch {tmp / 'code-ran'}")),
    "cifar_string_labels": _cifar({"data": np.zeros((2, 3072), np.uint8), "labels": ["cat", "dog"]}),
    "cifar_label_names_not_a_list": _cifar({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]},
                                           meta={"label_names": 5}),
    "cifar_negative_label": _cifar({"data": np.zeros((2, 3072), np.uint8), "labels": [0, -1]}),
    "idx_header_of_2_93_pixels": _idx([2 ** 31, 2 ** 31, 2 ** 31]),
    "idx_images_of_size_0": _idx([1, 0, 0]),
    "folder_with_text_as_png": _folder_with(lambda path: open(path, "w").write("not a picture")),
    "folder_with_dangling_link": _folder_with(lambda path: os.symlink(path + ".gone", path)),
    "dataset_with_damaged_commit_record": _damaged_commit_record,
}
# Names that need a file name ending (the tools pick the reader by it).
SUFFIX = {"digits": ".zip", "folder_named_zip": ".zip", "idx_header_of_2_93_pixels": "-images-idx3-ubyte",
          "idx_images_of_size_0": "-images-idx3-ubyte", "subset_stray_ids": ".json", "subset_float_vectors": ".json",
          **{name: ".zip" for name in BUILDERS if name.startswith("zip_")}}


def _placeholders(*texts):
    return sorted({field for text in texts for _, field, _, _ in string.Formatter().parse(text) if field})


@pytest.mark.parametrize("script,args,expected", DATA_CASES,
                         ids=[f"{c[0]} {c[1]}" for c in DATA_CASES])
def test_bad_data_input_gets_its_message_and_changes_nothing(script, args, expected, tmp_path, template):
    names = {}
    for name in _placeholders(args, expected):
        names[name] = BUILDERS[name](template, tmp_path / (name + SUFFIX.get(name, "")), tmp_path)
    before = tree(tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("GAN_CRASH_AT", None)
    result = subprocess.run([sys.executable, os.path.join(REPO, script), *args.format(**names).split()],
                            capture_output=True, text=True, cwd=REPO, env=env, timeout=120)  # (Training would run.)
    message = result.stdout + result.stderr
    assert result.returncode != 0 and expected.format(**names) in message, message[-2000:]
    assert "Traceback" not in message
    assert tree(tmp_path) == before  # Nothing written (no output, no temporary file), nothing removed or changed.
    assert not (tmp_path / "code-ran").exists()


def test_every_builder_is_used_by_a_row():
    used = {name for _script, args, expected in DATA_CASES for name in _placeholders(args, expected)}
    assert used == set(BUILDERS)

# ----------------------------------------------------------------------------
# 1. Atomic outputs, tested by killing the tools at their write phases.


@pytest.mark.parametrize("dest_name", ["x.zip", "x"])
@pytest.mark.parametrize("crash", ["dataset_tool:written", "dataset_tool:exchanged"])
def test_a_killed_overwrite_leaves_the_old_or_the_new_dataset_and_the_next_run_cleans_up(tmp_path, template,
                                                                                        dest_name, crash):
    dest = tmp_path / dest_name
    run_tool("dataset_tool.py", f"--source={template.zip}", f"--dest={dest}", "--max-images=20")
    old = tree(dest) if dest.is_dir() else dest.read_bytes()
    killed = not (dest_name.endswith(".zip") and crash == "dataset_tool:exchanged")  # A ZIP needs no exchange.
    run_tool("dataset_tool.py", f"--source={template.zip}", f"--dest={dest}", "--max-images=30", "--overwrite",
             crash=crash, expect=137 if killed else 0)
    if crash == "dataset_tool:written":  # Killed with the new dataset complete under its temporary name.
        assert (tree(dest) if dest.is_dir() else dest.read_bytes()) == old and image_count(str(dest)) == 20
    else:  # Killed after the exchange: the new dataset is in place, the old one waits to be removed.
        assert image_count(str(dest)) == 30
    assert len(leftovers(tmp_path)) == (1 if killed else 0)
    output = run_tool("dataset_tool.py", f"--source={template.zip}", f"--dest={tmp_path / 'other.zip'}",
                      "--max-images=2")
    assert ("Removed 1 temporary file(s) left by interrupted runs" in output) == killed
    assert leftovers(tmp_path) == [] and image_count(str(dest)) == (20 if crash == "dataset_tool:written" else 30)


def test_without_an_atomic_exchange_a_kill_between_the_two_renames_is_repaired(tmp_path, template, monkeypatch):
    # Where renameat2 is missing, a folder is replaced in two renames; a kill between them leaves this:
    moved_aside = tmp_path / f".x.tmp-{host_tag()}-{DEAD_PID}-0123abcd.old"
    shutil.copytree(template.dir, moved_aside)
    unfinished = tmp_path / f".x.tmp-{host_tag()}-{DEAD_PID}-4567cdef"
    os.makedirs(unfinished)
    logs = []
    convert_dataset(template.zip, str(tmp_path / "y.zip"), max_images=2, log=logs.append)
    assert tree(tmp_path / "x") == tree(template.dir) and leftovers(tmp_path) == []
    assert any("Restored" in line and "x" in line for line in logs), logs

    # The earlier writer's two renames, killed between them: X.zip gone, the old data under a hidden name.
    legacy = tmp_path / f".old.zip.tmp-{DEAD_PID}-89abcdef.old"
    shutil.copy(template.zip, legacy)
    convert_dataset(template.zip, str(tmp_path / "z.zip"), max_images=2, log=logs.append)
    assert (tmp_path / "old.zip").read_bytes() == open(template.zip, "rb").read() and leftovers(tmp_path) == []

    monkeypatch.setattr(dataset_format, "_renameat2", lambda *a: False)  # The fallback itself, uninterrupted.
    new = tmp_path / "new"
    os.makedirs(new / "sub")
    (new / "sub" / "f").write_text("new")
    replace_path(str(new), str(tmp_path / "x"))
    assert tree(tmp_path / "x") == {os.path.join("sub", "f"): hashlib.sha256(b"new").hexdigest()}
    assert leftovers(tmp_path) == [] and not new.exists()


def test_temporary_files_of_a_live_writer_or_another_host_are_kept(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".x.zip.tmp-{host_tag()}-{child.pid}-0123abcd"
        dead = tmp_path / f".x.zip.tmp-{host_tag()}-{DEAD_PID}-0123abcd"
        elsewhere = tmp_path / f".x.zip.tmp-another-machine-{DEAD_PID}-0123abcd"
        for path in (live, dead, elsewhere):
            path.write_bytes(b"partial")
        assert remove_stale_temps(str(tmp_path), log=lambda *a: None) == [dead.name]
        assert live.exists() and elsewhere.exists()
    finally:
        child.kill()
        child.wait()
    assert remove_stale_temps(str(tmp_path), log=lambda *a: None) == [live.name]


def lt_set(folder, names):
    """The parsed lt_dataset.py outputs, without the paths they record (they differ between copies)."""
    result = {}
    for name in names:
        with open(os.path.join(folder, name)) as f:
            obj = json.load(f)
        for key in ("source", "label_file"):
            obj.get("lt", {}).pop(key, None)
        result[name] = obj
    return result


LT_SET = ["lt_2.json", "lt_2_full.json", "class_0_2.json", "class_3_5.json", "class_6_9.json"]


@pytest.mark.parametrize("crash", ["lt_dataset:staged", "lt_dataset:committed", "lt_dataset:renamed-one"])
def test_a_killed_lt_dataset_leaves_the_old_set_or_a_refused_one_and_a_rerun_completes_it(tmp_path, template, crash):
    from training.dataset import ImageFolderDataset

    reference = _copy_dir(template, tmp_path / "reference")
    lt_dataset.make_lt(reference, 2, seed=5, shot_labels=True, log=lambda *a: None)
    folder = _copy_dir(template, tmp_path / "data")
    lt_dataset.make_lt(folder, 2, seed=0, shot_labels=True, log=lambda *a: None)
    old, new = lt_set(folder, LT_SET), lt_set(reference, LT_SET)
    assert old["lt_2.json"] != new["lt_2.json"]
    command = ["lt_dataset.py", f"--source={folder}", "--imf=2", "--seed=5", "--shot-labels", "--overwrite"]
    run_tool(*command, crash=crash, expect=137)
    if crash == "lt_dataset:staged":  # Before the commit: the old set, readable.
        assert lt_set(folder, LT_SET) == old
        assert ImageFolderDataset(folder, use_labels=True, label_file="lt_2_full.json").label_dim == 10
    else:  # Committed, maybe half renamed: no reader gets a file being replaced until the set is complete.
        changing = [name for name in LT_SET if old[name] != new[name]]  # The band files do not depend on --seed.
        assert changing == ["lt_2.json", "lt_2_full.json"]
        for name in changing:
            with pytest.raises(DatasetError, match="that lt_dataset.py was replacing when it was interrupted"):
                ImageFolderDataset(folder, use_labels=True, label_file=os.path.join(folder, name))
        assert ImageFolderDataset(folder, use_labels=True, label_file="class_0_2.json").label_dim == 3  # Ranks 0-2.
    assert leftovers(folder)
    output = run_tool(*command)
    assert ("Completed an interrupted write" in output) == (crash != "lt_dataset:staged")
    assert lt_set(folder, LT_SET) == new and leftovers(folder) == []
    assert ImageFolderDataset(folder, use_labels=True, label_file="class_6_9.json").label_dim == 10


def test_a_killed_lt_dataset_on_a_zip_leaves_the_zip_as_it_was(tmp_path, template):
    source = shutil.copy(template.zip, tmp_path / "digits.zip")
    before = open(source, "rb").read()
    run_tool("lt_dataset.py", f"--source={source}", "--imf=2", crash="lt_dataset:zip-written", expect=137)
    assert open(source, "rb").read() == before and len(leftovers(tmp_path)) == 1
    output = run_tool("lt_dataset.py", f"--source={source}", "--imf=2")
    assert "Removed 1 temporary file(s)" in output and leftovers(tmp_path) == []
    with zipfile.ZipFile(source) as z:
        assert {"lt_2.json", "lt_2_full.json"} <= set(z.namelist())


def test_a_rerun_is_not_refused_by_a_half_written_set(tmp_path, template):
    folder = _copy_dir(template, tmp_path / "data")
    lt_dataset.make_lt(folder, 2, log=lambda *a: None)
    complete = lt_set(folder, ["lt_2.json", "lt_2_full.json"])
    os.remove(os.path.join(folder, "lt_2_full.json"))  # What the earlier two-rename writer left when killed.
    logs = []
    lt_dataset.make_lt(folder, 2, log=logs.append)  # Same command, no --overwrite.
    assert lt_set(folder, ["lt_2.json", "lt_2_full.json"]) == complete
    assert any("lt_2.json" in line and "(unchanged)" in line for line in logs), logs
    with pytest.raises(lt_dataset.LTError, match="lt_2.json already exists in .* with other contents; pass --overwrite"):
        lt_dataset.make_lt(folder, 2, seed=3, log=lambda *a: None)


def test_an_error_while_renaming_puts_the_old_set_back(tmp_path, template, monkeypatch):
    folder = _copy_dir(template, tmp_path / "data")
    lt_dataset.make_lt(folder, 2, shot_labels=True, log=lambda *a: None)
    before = tree(folder)
    real_replace, calls = os.replace, []

    def disk_full_at_the_second_file(src, dst):
        calls.append(dst)
        if len(calls) == 3:  # 1: the commit record, 2: the first file, 3: the second file.
            raise OSError(errno.ENOSPC, "No space left on device (simulated)", dst)
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", disk_full_at_the_second_file)
    with pytest.raises(OSError, match="simulated"):
        lt_dataset.make_lt(folder, 2, seed=5, shot_labels=True, overwrite=True, log=lambda *a: None)
    monkeypatch.undo()
    assert tree(folder) == before and leftovers(folder) == []


def test_a_tampered_commit_record_cannot_move_files_elsewhere(tmp_path, template):
    folder = _copy_dir(template, tmp_path / "data")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    record = {"mode": "back", "command": None,
              "files": [{"name": "../victim.txt", "temp": ".x.tmp-h-1-0123abcd", "backup": None, "existed": False}]}
    with open(os.path.join(folder, f".lt-commit-{host_tag()}-{DEAD_PID}-0123abcd.json"), "w") as f:
        json.dump(record, f)
    with pytest.raises(lt_dataset.LTError, match="cannot be read"):
        lt_dataset.make_lt(folder, 2, log=lambda *a: None)
    assert victim.read_text() == "keep"

# ----------------------------------------------------------------------------
# 2. One validator for every label source: dataset.json and label-subset files alike.


def _write_labels(tmp_path, template, where, values, **extra):
    """(dataset path, label_file or None, file named in messages) with `values` for the first 10 images."""
    names = [n for n, _c in template.labels[:10]]
    obj = dict(labels=[[n, v] for n, v in zip(names, values)], **extra)
    os.makedirs(tmp_path, exist_ok=True)
    if where == "subset":
        path = tmp_path / "subset.json"
        path.write_text(json.dumps(obj))
        return template.dir, str(path), str(path)
    folder = tmp_path / "data"
    os.makedirs(folder / "00000")
    for name in names:
        shutil.copy(os.path.join(template.dir, name), folder / name)
    (folder / "dataset.json").write_text(json.dumps(obj))
    return str(folder), None, str(folder / "dataset.json")


CLASSES = list(range(10))
BAD_LABELS = [  # (case, labels of images 0-9, excerpt, image named)
    ("nan", [[float("nan") if c == 3 else c / 10, 1.0] for c in CLASSES], "must be finite numbers", 3),
    ("inf", [[float("inf") if c == 3 else c / 10, 1.0] for c in CLASSES], "must be finite numbers", 3),
    ("beyond float32", [[1e39 if c == 3 else c / 10, 1.0] for c in CLASSES], "within float32 range", 3),
    ("id 2**63", [2 ** 63 if c == 9 else c for c in CLASSES], "found ids 9223372036854775808 and none for 9", 9),
    ("stray id", [15 if c == 9 else c for c in CLASSES], "found ids 15 and none for 9", 9),
    ("negative id", [-1 if c == 3 else c for c in CLASSES], "must be non-negative class ids", 3),
    ("nested", [[[c]] for c in CLASSES], "has the nested list [[0]]", 0),
    ("one-element int list", [[c] for c in CLASSES], "are one-element lists of integers", 0),
    ("ragged", [[1.0] if c == 3 else [1.0, 2.0] for c in CLASSES], "must all be vectors of one length", 3),
    ("mixed", [[1.0] if c == 3 else c for c in CLASSES], "mix class ids and vectors", 3),
    ("bool", [True if c == 3 else c for c in CLASSES], "must be integer class ids or lists of numbers", 3),
    ("string", ["3" if c == 3 else c for c in CLASSES], "must be integer class ids or lists of numbers", 3),
]


@pytest.mark.parametrize("where", ["dataset.json", "subset"])
@pytest.mark.parametrize("case,values,excerpt,image", BAD_LABELS, ids=[c[0] for c in BAD_LABELS])
def test_every_label_source_is_refused_alike_naming_file_and_image(tmp_path, template, where, case, values, excerpt,
                                                                   image):
    from training.dataset import ImageFolderDataset

    path, label_file, named = _write_labels(tmp_path, template, where, values)
    with pytest.raises(DatasetError) as info:
        ImageFolderDataset(path, use_labels=True, label_file=label_file)
    message = str(info.value)
    assert excerpt in message and named in message and f"00000/img{image:08d}.png" in message, message


def test_valid_labels_of_every_source_are_accepted(tmp_path, template):
    from training.dataset import ImageFolderDataset

    path, label_file, _ = _write_labels(tmp_path, template, "subset", [[c / 10, 1.0] for c in CLASSES])
    vectors = ImageFolderDataset(path, use_labels=True, label_file=label_file)
    assert vectors.label_shape == [2] and vectors.get_label(3).tolist() == pytest.approx([0.3, 1.0])
    # Stray-looking ids are fine where the file declares its classes (a subset of the classes, original ids).
    path, label_file, _ = _write_labels(tmp_path / "declared", template, "subset", [15 if c == 9 else c for c in CLASSES],
                                        num_classes=16)
    assert ImageFolderDataset(path, use_labels=True, label_file=label_file).label_dim == 16
    path, label_file, _ = _write_labels(tmp_path / "too-few", template, "subset", [15 if c == 9 else c for c in CLASSES],
                                        num_classes=12)
    with pytest.raises(DatasetError, match=r"must be below its 12 declared classes; found 15"):
        ImageFolderDataset(path, use_labels=True, label_file=label_file)


def test_a_shot_band_file_is_a_valid_label_subset(tmp_path, template):
    from training.dataset import ImageFolderDataset

    folder = _copy_dir(template, tmp_path / "data")
    lt_dataset.make_lt(folder, 2, shot_labels=True, log=lambda *a: None)
    few = ImageFolderDataset(folder, use_labels=True, label_file="class_6_9.json")
    assert few.label_dim == 10 and set(np.flatnonzero(few.class_counts())) == {6, 7, 8, 9}


def test_dataset_tool_writes_only_labels_training_accepts(tmp_path, template):
    source = _labels(lambda i, c: 15 if c == 9 else c)(template, tmp_path / "stray", tmp_path)
    with pytest.raises(DatasetError, match=r"found ids 15 and none for 9\. Renumber them: add --remap-labels"):
        convert_dataset(source, str(tmp_path / "o.zip"), log=lambda *a: None)
    assert not (tmp_path / "o.zip").exists() and leftovers(tmp_path) == []
    convert_dataset(source, str(tmp_path / "o.zip"), remap_labels=True, log=lambda *a: None)
    from training.dataset import ImageFolderDataset

    assert ImageFolderDataset(str(tmp_path / "o.zip"), use_labels=True).label_dim == 10

# ----------------------------------------------------------------------------
# 3. Duplicate ZIP members; damaged files of a dataset get messages, not tracebacks.


def test_a_zip_with_a_duplicate_member_is_refused_naming_it(tmp_path, template):
    from training.dataset import ImageFolderDataset

    dup = _zip_with_duplicate_member(template, tmp_path / "dup.zip", tmp_path)
    with zipfile.ZipFile(dup) as z:  # What used to happen: the reader silently got the second copy (image 7).
        assert z.read("00000/img00000003.png") == z.read("00000/img00000007.png")
    with pytest.raises(DatasetError, match=rf"ZIP {dup} holds two members named 00000/img00000003\.png"):
        ImageFolderDataset(dup)


def test_unreadable_members_and_files_of_a_dataset_are_named(tmp_path, template):
    from training.dataset import ImageFolderDataset

    encrypted = _zip_edit(_encrypt_flag_of_member_2)(template, tmp_path / "enc.zip", tmp_path)
    with pytest.raises(DatasetError, match=r"enc\.zip:00000/img00000002\.png is encrypted"):
        ImageFolderDataset(encrypted)
    folder = _copy_dir(template, tmp_path / "data")
    os.remove(os.path.join(folder, "00000", "img00000004.png"))
    os.symlink("gone.png", os.path.join(folder, "00000", "img00000004.png"))
    with pytest.raises(DatasetError, match=r"cannot read .*img00000004\.png: No such file or directory"):
        ImageFolderDataset(folder)


def test_genuine_cifar_pickles_still_load_with_every_protocol(tmp_path):
    from training.dataset_sources import open_source

    for protocol in (2, 4, 5):
        folder = tmp_path / f"p{protocol}"
        os.makedirs(folder)
        data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
        with open(folder / "data_batch_1", "wb") as f:
            pickle.dump({b"data": data, b"labels": np.array([3, 1]), b"filenames": [b"a.png", b"b.png"]}, f,
                        protocol=protocol)
        with open(folder / "batches.meta", "wb") as f:
            pickle.dump({b"label_names": [b"c%d" % i for i in range(10)]}, f, protocol=protocol)
        source = open_source(str(folder))
        items = list(source)
        assert [label for _n, _img, label in items] == [3, 1] and source.class_names[3] == "c3"
        assert items[1][1].tobytes() == data[1].reshape(3, 32, 32).transpose(1, 2, 0).tobytes()
