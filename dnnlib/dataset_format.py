"""NVIDIA's dataset format, read in one place: a directory or ZIP of images plus an optional labels file.

``dataset.json`` (or any label file of the same form, e.g. an lt_dataset.py output) is
``{"labels": [["00000/img00000000.png", 6], ...]}`` or ``{"labels": null}``. Used by
training/dataset.py, training/dataset_sources.py, lt_dataset.py and metrics/data_utils.py, so that
they list members, open ZIPs and resolve label files the same way. Imports nothing of the project.
"""

import json
import os
import zipfile

# File name extensions treated as images, lower case. A curated list rather than everything Pillow can
# open (PDF, EPS, MPEG ... are never dataset images).
IMAGE_EXTENSIONS = frozenset([
    ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".gif", ".tif", ".tiff",
    ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".qoi",
])


class DatasetError(ValueError):
    """A dataset (or its label file) cannot be used as it is; the message says why and what to do."""


def is_image_name(name):
    """True when the file name has an image extension."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_hidden(name):
    """Hidden files and macOS archive debris (__MACOSX/, ._foo.png) are never dataset images."""
    return any(part.startswith(".") or part == "__MACOSX" for part in name.split("/"))


def list_directory(path):
    """Relative '/'-separated names of every file below path, in a stable (sorted-walk) order."""
    found = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        rel_root = os.path.relpath(root, path)
        for name in sorted(files):
            rel = name if rel_root == "." else os.path.join(rel_root, name)
            found.append(rel.replace(os.sep, "/"))
    return found


class DatasetFiles:
    """The members of a dataset directory or ZIP. The ZIP is opened lazily, once per process (a handle
    inherited through fork would share its file position with the parent), and is never pickled."""

    def __init__(self, path):
        self.path = os.path.expanduser(str(path))
        self._zipfile = None
        self._zip_pid = None
        self._names = None
        if os.path.isdir(self.path):
            self.kind = "dir"
        elif os.path.isfile(self.path):
            if os.path.splitext(self.path)[1].lower() != ".zip":
                raise DatasetError(f"dataset path {self.path} is a file but not a .zip; pass a directory or a .zip made "
                                   "by dataset_tool.py")
            self.kind = "zip"
        else:
            raise FileNotFoundError(f"dataset path {self.path} does not exist; pass a directory or .zip made by "
                                    "dataset_tool.py")

    @property
    def is_zip(self):
        return self.kind == "zip"

    def names(self):
        """Set of member names (files only)."""
        if self._names is None:
            if self.kind == "dir":
                self._names = set(list_directory(self.path))
            else:
                self._names = {n for n in self.zipfile().namelist() if not n.endswith("/")}
        return self._names

    def has(self, name):
        return name in self.names()

    def zipfile(self):
        assert self.kind == "zip"
        if self._zipfile is None or self._zip_pid != os.getpid():
            try:
                self._zipfile = zipfile.ZipFile(self.path)
            except zipfile.BadZipFile as err:
                raise DatasetError(f"dataset {self.path} is not a valid ZIP file ({err}); rebuild it with "
                                   "dataset_tool.py") from err
            self._zip_pid = os.getpid()
        return self._zipfile

    def open(self, name):
        if self.kind == "dir":
            return open(os.path.join(self.path, name), "rb")
        return self.zipfile().open(name, "r")

    def read(self, name):
        with self.open(name) as f:
            return f.read()

    def describe(self, name):
        return f"{self.path}/{name}" if self.kind == "dir" else f"{self.path}:{name}"

    def close(self):
        if self._zipfile is not None and self._zip_pid == os.getpid():
            self._zipfile.close()
        self._zipfile = None
        self._zip_pid = None

    def __getstate__(self):
        return dict(self.__dict__, _zipfile=None, _zip_pid=None)


def parse_json(data, source):
    try:
        return json.loads(data)
    except ValueError as err:
        raise DatasetError(f"{source} is not valid JSON: {err}") from err


def label_entries(obj, source):
    """Validate the parsed JSON of a labels file; return a dict relpath -> label, or None when labels is null."""
    if not isinstance(obj, dict) or "labels" not in obj:
        raise DatasetError(f'{source} must be a JSON object with a "labels" key, like '
                           '{"labels": [["00000/img00000000.png", 0], ...]}')
    entries = obj["labels"]
    if entries is None:
        return None
    if not isinstance(entries, list):
        raise DatasetError(f'"labels" in {source} must be a list of [path, label] pairs or null')
    mapping = {}
    for entry in entries:
        if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[0], str):
            raise DatasetError(f'"labels" in {source} must be a list of [path, label] pairs; found {entry!r}')
        name = entry[0].replace("\\", "/")
        if name in mapping:
            raise DatasetError(f"{source} lists image {name} more than once")
        mapping[name] = entry[1]
    return mapping


def read_label_file(files, label_file):
    """(parsed JSON, description, directory for relative names or None) of a label file.

    A relative name that is a member of the dataset wins (lt_dataset.py writes its files into the dataset);
    otherwise a path on disk. `files` is a DatasetFiles, or None when only a path on disk can match.
    Raises FileNotFoundError naming both places.
    """
    disk = os.path.expanduser(str(label_file))
    member = str(label_file).replace("\\", "/")
    if files is not None and not os.path.isabs(disk) and files.has(member):
        source = files.describe(member)
        return parse_json(files.read(member), source), source, None
    if os.path.isfile(disk):
        with open(disk, "rb") as f:
            return parse_json(f.read(), disk), disk, os.path.dirname(os.path.abspath(disk))
    where = files.path if files is not None else "the dataset"
    raise FileNotFoundError(f"label file {label_file} not found (neither on disk nor inside dataset {where}); "
                            "make one with lt_dataset.py or check the path")
