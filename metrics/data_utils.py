"""Facts about the data on disk for the metrics: fingerprints for caches, long-tailed label files.

A long-tailed label file (written by lt_dataset.py) is a dataset.json-style file with an extra "lt"
record; the metrics use its "bands" ({"many" | "medium" | "few": [class ranks]}) and "full" (the label
file of the whole source set with the same rank labels, a path next to the file or a dataset member).
"""

import hashlib
import os
import zipfile

import dnnlib
from dnnlib.dataset_format import DatasetError, DatasetFiles, is_image_name, read_label_file

from .detectors import MetricError


def _hash_file(h, path):
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def dataset_fingerprint(dataset_kwargs, content=False, labels=True):
    """Hex digest that changes when the dataset's images or labels change.

    Covers the image files and the label source (the ``label_file`` if given, else dataset.json);
    other files (e.g. lt_dataset.py outputs added later) do not count. ZIP: every member's name,
    size and CRC-32 from the archive directory (content-based, cheap). Directory: (relpath, size,
    mtime) of each file, or with content=True (offline classifier) the bytes themselves.
    labels=False: the images alone (the offline classifier adds the class of each image itself).
    """
    h = hashlib.sha256()
    path = os.path.expanduser(str(dataset_kwargs.get("path", "")))
    label_file = dataset_kwargs.get("label_file") if labels else None
    label_member = str(label_file).replace("\\", "/") if label_file else "dataset.json"
    wanted = lambda name: is_image_name(name) or (labels and name == label_member)
    if os.path.isfile(path) and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                if wanted(info.filename):
                    h.update(repr((info.filename, info.file_size, info.CRC)).encode())
    elif os.path.isdir(path):
        entries = []
        for root, _dirs, files in os.walk(path):
            for name in files:
                full = os.path.join(root, name)
                entries.append((os.path.relpath(full, path).replace(os.sep, "/"), full))
        for rel, full in sorted(entries):
            if wanted(rel):
                st = os.stat(full)
                h.update(repr((rel, st.st_size) if content else (rel, st.st_size, st.st_mtime_ns)).encode())
                if content:
                    _hash_file(h, full)
    else:
        h.update(repr(("other", path, os.path.getsize(path) if os.path.isfile(path) else None)).encode())
    if label_file:
        h.update(repr(("label_file", str(label_file))).encode())
        if os.path.isfile(os.path.expanduser(str(label_file))):  # Otherwise a member, covered above.
            _hash_file(h, os.path.expanduser(str(label_file)))
    return h.hexdigest()


def _read_label_json(dataset_path, label_file):
    """(parsed JSON, directory for relative names or None) of a label file inside the dataset or on disk."""
    files = None
    try:
        files = DatasetFiles(dataset_path) if dataset_path else None
    except (DatasetError, FileNotFoundError):
        pass  # A label file on disk may still be found.
    try:
        obj, _source, base_dir = read_label_file(files, label_file)
        return obj, base_dir
    except (DatasetError, FileNotFoundError) as err:
        raise MetricError(f"label file {label_file!r}: {err}") from None
    finally:
        if files is not None:
            files.close()


def read_lt_info(dataset_kwargs):
    """The "lt" record of dataset_kwargs.label_file (lt_dataset.py output), or None.

    Fields used: "bands" {"many"|"medium"|"few": [class ranks]}, "counts", and "full" (the label file of
    the whole source set), which is resolved to a path on disk, or kept as a dataset member name.
    """
    label_file = dataset_kwargs.get("label_file") if dataset_kwargs else None
    if not label_file:
        return None
    data, base_dir = _read_label_json(dataset_kwargs.get("path"), label_file)
    lt = data.get("lt") if isinstance(data, dict) else None
    if not isinstance(lt, dict):
        return None
    lt = dnnlib.EasyDict(lt)
    full = lt.get("full")
    if full:
        candidates = [full] if os.path.isabs(full) else ([os.path.join(base_dir, full)] if base_dir else []) + [full]
        found = [p for p in candidates if os.path.isfile(os.path.expanduser(p))]
        if found:
            lt.full = os.path.abspath(os.path.expanduser(found[0]))
        else:
            _read_label_json(dataset_kwargs.get("path"), full)  # A member of the dataset, or an error naming it.
    lt.label_file = label_file
    return lt


def reference_dataset_kwargs(opts):
    """Dataset the fakes are compared with: with a long-tailed label file, its full (balanced) set."""
    lt = read_lt_info(opts.dataset_kwargs)
    kwargs = dnnlib.EasyDict(opts.dataset_kwargs)
    if lt is not None and lt.get("full"):
        kwargs.label_file = lt.full
    opts.report["reference"] = dict(path=kwargs.get("path"), label_file=kwargs.get("label_file"))
    return kwargs
