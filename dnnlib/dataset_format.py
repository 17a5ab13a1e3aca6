"""NVIDIA's dataset format, read in one place: a directory or ZIP of images plus an optional labels file.

``dataset.json`` (or any label file of the same form, e.g. an lt_dataset.py output) is
``{"labels": [["00000/img00000000.png", 6], ...]}`` or ``{"labels": null}``. Used by
training/dataset.py, training/dataset_sources.py, lt_dataset.py and metrics/data_utils.py, so that
they list members, open ZIPs and resolve label files the same way. Imports nothing of the project.

Also here, shared by dataset_tool.py and lt_dataset.py:

* ``validate_labels``: the one validator of labels, whatever file they come from (see its docstring);
* temporary outputs named ``.<name>.tmp-<host>-<pid>-<8 hex>`` beside their destination, renamed into
  place when complete (``temp_path``, ``replace_path``, ``rename_noreplace``); ``remove_stale_temps`` removes
  those of killed runs (the writer's process no longer exists on this host) at the next run of either tool,
  and restores a destination that a killed fallback replacement had moved aside (``.old``);
* lt_dataset.py's commit records (``.lt-commit-<host>-<pid>-<8 hex>.json``): while one names a label file,
  ``read_label_file`` refuses that file (the set it belongs to is half replaced), see lt_dataset.py;
* ``crash_point``: fault injection for the kill tests ($GAN_CRASH_AT=name ends the process at that point).
"""

import ctypes
import errno
import json
import math
import os
import re
import secrets
import shutil
import socket
import zipfile
import zlib

import numpy as np

# File name extensions treated as images, lower case. A curated list rather than everything Pillow can
# open (PDF, EPS, MPEG ... are never dataset images).
IMAGE_EXTENSIONS = frozenset([
    ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".gif", ".tif", ".tiff",
    ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".qoi",
])


READABLE_ZIP_METHODS = frozenset([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])


class DatasetError(ValueError):
    """A dataset (or its label file) cannot be used as it is; the message says why and what to do."""


def is_power_of_two(n):
    return n >= 1 and (n & (n - 1)) == 0


def pil_error_text(err):
    """Pillow's error as a reader can act on it (its "cannot identify image file <_io.BytesIO object at 0x...>"
    names a memory buffer, not the file)."""
    if type(err).__name__ == "UnidentifiedImageError":  # PIL.UnidentifiedImageError, without importing Pillow here.
        return "not an image in a format Pillow can read (another kind of file, or damaged)"
    return str(err)


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
                members = [n for n in self.zipfile().namelist() if not n.endswith("/")]
                self._names = set(members)
                if len(self._names) != len(members):
                    seen = set()
                    for twice in members:
                        if twice in seen:
                            break
                        seen.add(twice)
                    raise DatasetError(f"ZIP {self.path} holds two members named {twice}; which one a reader gets is "
                                       "undefined, so it is not used. Rebuild it with dataset_tool.py from the "
                                       "original images, or remove one of them (e.g. zip -d)")
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
        info = self.zipfile().getinfo(name)
        if info.flag_bits & 0x1:
            raise DatasetError(f"{self.path}:{name} is encrypted; datasets cannot be password-protected: rebuild the "
                               "ZIP without a password (dataset_tool.py writes plain ZIPs)")
        if info.compress_type not in READABLE_ZIP_METHODS:
            raise DatasetError(f"{self.path}:{name} uses ZIP compression method {info.compress_type}, which Python "
                               "cannot read; rebuild the ZIP with dataset_tool.py (stored) or plain deflate")
        return self.zipfile().open(info, "r")

    def read(self, name):
        try:
            with self.open(name) as f:
                return f.read()
        except (zipfile.BadZipFile, zlib.error, EOFError) as err:  # A damaged ZIP member (bad CRC, cut short).
            raise DatasetError(f"cannot read {self.describe(name)}: {err}; the ZIP is damaged: rebuild it with "
                               "dataset_tool.py") from None

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
    except ValueError as err:  # JSONDecodeError, and UnicodeDecodeError for bytes that are not UTF-8 text.
        raise DatasetError(f"{source} is not valid JSON: {err}; fix the file or rebuild it") from err
    except RecursionError:
        raise DatasetError(f"{source} is not a label file: its JSON is nested too deeply to read; fix the file or "
                           "rebuild it") from None


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
        if not files.is_zip:
            refuse_pending_commit(files.path, member, source)
        return parse_json(files.read(member), source), source, None
    if os.path.isfile(disk):
        directory = os.path.dirname(os.path.abspath(disk))
        refuse_pending_commit(directory, os.path.basename(disk), disk)
        with open(disk, "rb") as f:
            return parse_json(f.read(), disk), disk, directory
    where = files.path if files is not None else "the dataset"
    raise FileNotFoundError(f"label file {label_file} not found (neither on disk nor inside dataset {where}); "
                            "make one with lt_dataset.py or check the path")


# ----------------------------------------------------------------------------
# The one label validator: dataset.json, label-subset files (train.py --subset=FILE.json, lt_dataset.py
# outputs) and the labels dataset_tool.py writes all go through validate_labels().

MAX_DECLARED_CLASSES = 2 ** 31 - 1  # Bound for a file's "num_classes" (keeps every accepted id within int64).


def label_class_count(obj, source):
    """Number of classes a label file declares: len("class_names"), or "num_classes"; None when it declares
    neither (then the ids themselves must be 0..C-1)."""
    if not isinstance(obj, dict):
        return None
    names, count = obj.get("class_names"), obj.get("num_classes")
    if names is not None and not isinstance(names, list):
        raise DatasetError(f'"class_names" in {source} must be a list of class names, found {type(names).__name__} '
                           f'{_short(names)}; fix the file or rebuild it with dataset_tool.py')
    if count is not None and (not isinstance(count, int) or isinstance(count, bool)
                              or not 1 <= count <= MAX_DECLARED_CLASSES):
        raise DatasetError(f'"num_classes" in {source} must be a whole number of classes (1 or more), found '
                           f'{_short(count)}; fix the file or remove the key')
    if names and count is not None and count != len(names):
        raise DatasetError(f'{source} declares "num_classes": {count} but lists {len(names)} "class_names"; make them '
                           'agree')
    return len(names) if names else count


def _short(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_labels(values, source, names, class_count=None, fix=None, dense_ids=True):
    """Check the labels of a dataset and return them as int64 class ids [N] or float32 vectors [N, D].

    values[i] is the label of image names[i] as parsed from JSON; `source` names the file in messages.
    Class ids must be integers in 0..C-1, C = class_count (the file's "class_names" or "num_classes") or, when
    the file declares none, the number of distinct ids (so a stray id such as 15 among classes 0-8 is refused
    instead of widening every network's label to 16). Vectors must be flat lists of finite numbers (float32),
    all of one length; a one-element list of integers ([3]) is refused as ambiguous. `fix` is appended to the
    message about stray ids (how to renumber them for this kind of source). dense_ids=False skips the 0..C-1 rule
    (only for labels that are renumbered or checked again before anything uses them: dataset_tool.py's sources);
    class ids then come back as None.
    """
    if len(values) == 0:
        return np.zeros([0], dtype=np.int64)
    ids = [i for i, v in enumerate(values) if _is_int(v)]
    vectors = [i for i, v in enumerate(values) if isinstance(v, (list, tuple))]
    for i, v in enumerate(values):
        if not (_is_int(v) or isinstance(v, (list, tuple))):
            raise DatasetError(f"labels in {source} must be integer class ids or lists of numbers; image {names[i]} has "
                               f"{_short(v)}. Fix the file or rebuild it with dataset_tool.py")
    if ids and vectors:
        a, b = ids[0], vectors[0]
        raise DatasetError(f"labels in {source} mix class ids and vectors: image {names[a]} has {_short(values[a])} but "
                           f"image {names[b]} has {_short(values[b])}; give every image the same kind of label")
    if ids:
        return _validate_class_ids(values, source, names, class_count, fix, dense_ids)
    return _validate_vectors(values, source, names)


def _validate_class_ids(values, source, names, class_count, fix, dense_ids):
    negative = next((i for i, v in enumerate(values) if v < 0), None)
    if negative is not None:
        raise DatasetError(f"labels in {source} must be non-negative class ids; image {names[negative]} has "
                           f"{values[negative]}. Fix the file or rebuild it with dataset_tool.py")
    if not dense_ids:
        return None
    fix = fix or f"Renumber them to 0..C-1 in {source}"
    distinct = sorted(set(values))
    if class_count is not None:
        stray = [i for i in distinct if i >= class_count]
        if stray:
            first = next(names[i] for i, v in enumerate(values) if v >= class_count)
            raise DatasetError(f"class ids in {source} must be below its {class_count} declared classes; found "
                               f"{', '.join(str(i) for i in stray[:8])}. {fix}, or fix class_names / num_classes "
                               f"(first image with a stray id: {first})")
    elif distinct[-1] != len(distinct) - 1:
        count = len(distinct)
        stray = [i for i in distinct if i >= count]
        gaps = sorted(set(range(count)) - set(distinct))
        first = next(names[i] for i, v in enumerate(values) if v >= count)
        raise DatasetError(f"class ids in {source} must be 0..C-1 for its C={count} classes; found ids "
                           f"{', '.join(map(str, stray[:8]))} and none for {', '.join(map(str, gaps[:8]))}. {fix} "
                           f"(first image with a stray id: {first})")
    return np.asarray(values, dtype=np.int64)  # Every id is now below C <= 2**31 or the number of images.


def _validate_vectors(values, source, names):
    length = len(values[0])
    rows = []
    for i, v in enumerate(values):
        nested = next((x for x in v if isinstance(x, (list, tuple, dict))), None)
        if nested is not None:
            raise DatasetError(f"labels in {source} must be class ids or flat lists of numbers; image {names[i]} has "
                               f"the nested list {_short(v)}. Write a class id as a plain integer (3, not [[3]]), a "
                               "vector as a flat list of numbers")
        if not all(_is_number(x) for x in v):
            raise DatasetError(f"labels in {source} must be class ids or lists of numbers; image {names[i]} has "
                               f"{_short(v)}. Fix the file or rebuild it with dataset_tool.py")
        if not v:
            raise DatasetError(f"labels in {source} must be class ids or non-empty lists of numbers; image {names[i]} "
                               "has an empty list. Fix the file (null labels for the whole file mean unlabelled)")
        if len(v) != length:
            raise DatasetError(f"labels in {source} must all be vectors of one length: image {names[0]} "
                               f"has {length} value(s) but image {names[i]} has {len(v)}; fix the file or rebuild it "
                               "with dataset_tool.py")
        try:
            rows.append([float(x) for x in v])
        except OverflowError:
            rows.append([math.inf])  # An integer beyond any float: reported as not finite below.
    if length == 1 and all(_is_int(v[0]) for v in values):
        raise DatasetError(f"labels in {source} are one-element lists of integers (image {names[0]} has "
                           f"{_short(values[0])}): write class ids as plain integers (3, not [3]), or floats ([3.0]) "
                           "for a one-dimensional float condition")
    for i, row in enumerate(rows):
        if not all(math.isfinite(x) and abs(x) <= FLOAT32_MAX for x in row):
            raise DatasetError(f"labels in {source} must be finite numbers within float32 range; image {names[i]} has "
                               f"{_short(values[i])}. Fix the file or rebuild it with dataset_tool.py")
    return np.asarray(rows, dtype=np.float32).reshape(len(values), length)


FLOAT32_MAX = float(np.finfo(np.float32).max)


# ----------------------------------------------------------------------------
# Temporary outputs, atomic replacement and the removal of what killed runs left behind.

_TEMP_RE = re.compile(r"^\.(?P<base>.+)\.tmp-(?:(?P<host>[A-Za-z0-9_.-]+)-)?(?P<pid>\d+)-[0-9a-f]{8}"
                      r"(?:\.(?P<role>old|bak))?$")
COMMIT_RE = re.compile(r"^\.lt-commit-(?P<host>[A-Za-z0-9_.-]+)-(?P<pid>\d+)-[0-9a-f]{8}\.json$")


def host_tag():
    """This machine's name as it appears in temporary file names."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:64] or "host"


def temp_path(path, role=None):
    """A new temporary name beside `path` (same directory, so the final rename is atomic), owned by this process.
    role 'old' = a destination moved aside, 'bak' = a backup kept until a commit completes."""
    directory, base = os.path.split(os.path.abspath(path))
    name = f".{base}.tmp-{host_tag()}-{os.getpid()}-{secrets.token_hex(4)}" + (f".{role}" if role else "")
    return os.path.join(directory, name)


def commit_record_path(directory):
    return os.path.join(directory, f".lt-commit-{host_tag()}-{os.getpid()}-{secrets.token_hex(4)}.json")


def writer_alive(host, pid):
    """False only when the process that wrote a temporary file surely no longer exists: same host, no such pid.
    Files of other hosts (a shared file system) and of live processes are never touched."""
    if host not in (None, host_tag()) or os.name != "posix":
        return True
    from dnnlib.util import process_exists

    return int(pid) == os.getpid() or process_exists(pid)


def remove_path(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def remove_stale_temps(directory, log=print):
    """Clean up after killed runs of dataset_tool.py / lt_dataset.py in `directory`: remove their temporary files
    and folders, and move back a destination that a killed replacement had moved aside (``.old``, only when the
    destination is missing). Files named by a pending lt_dataset.py commit record are kept (they are needed to
    complete it). Returns the names removed."""
    try:
        entries = os.listdir(directory)
    except OSError:
        return []
    keep = set()
    for name in entries:
        if COMMIT_RE.match(name):
            record = _read_commit_record(os.path.join(directory, name))
            for item in (record or {}).get("files", []):
                keep.update(os.path.basename(str(item.get(k))) for k in ("temp", "backup") if item.get(k))
    removed = []
    for name in sorted(entries):
        m = _TEMP_RE.match(name)
        if m is None or name in keep or writer_alive(m.group("host"), m.group("pid")):
            continue
        path = os.path.join(directory, name)
        dest = os.path.join(directory, m.group("base"))
        if m.group("role") == "old" and not os.path.lexists(dest):
            os.rename(path, dest)
            log(f"Restored {dest} from {name} (an interrupted --overwrite had moved it aside)")
            continue
        remove_path(path)
        removed.append(name)
    if removed:
        log(f"Removed {len(removed)} temporary file(s) left by interrupted runs in {directory}: {', '.join(removed)}")
    return removed


_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2


def _renameat2(src, dst, flags):
    """Linux renameat2(2). True when done; False when this system or file system cannot do it; raises OSError
    for other failures (EEXIST with _RENAME_NOREPLACE)."""
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError, TypeError):  # Not Linux/glibc (TypeError: Windows has no CDLL(None)).
        return False
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd = -100
    if func(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), src, None, dst)


def rename_noreplace(src, dst):
    """Rename src to dst; FileExistsError if dst exists (atomic check where the system has renameat2)."""
    if _renameat2(src, dst, _RENAME_NOREPLACE):
        return
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "File exists", dst)
    os.rename(src, dst)


def replace_path(src, dst, before_cleanup=None):
    """Put the finished file or folder `src` in place of `dst` in one rename: a file replaces a file atomically
    (os.replace); a folder replaces a folder by an atomic exchange (Linux renameat2), after which the old folder,
    now at `src`, is removed. Where no exchange exists, dst is moved aside to a '.old' temporary name first; a kill
    between the two renames is repaired by the next run's remove_stale_temps (it moves the old one back).
    `dst` and `src` must be of the same kind when dst exists."""
    if not (os.path.isdir(dst) and not os.path.islink(dst)):
        os.replace(src, dst)
        return
    if _renameat2(src, dst, _RENAME_EXCHANGE):
        if before_cleanup is not None:
            before_cleanup()
        _remove_or_leave(src)
        return
    old = temp_path(dst, role="old")
    os.rename(dst, old)
    crash_point("replace:moved-aside")
    try:
        os.rename(src, dst)
    except OSError:
        os.rename(old, dst)
        raise
    _remove_or_leave(old)


def _remove_or_leave(path):
    """Remove the replaced dataset; if that fails, the new one is in place all the same and the next run's
    remove_stale_temps removes the rest."""
    try:
        remove_path(path)
    except OSError:
        pass


def fsync_directory(directory):
    """Make renames in `directory` durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def crash_point(name):
    """Fault injection for the kill tests: with $GAN_CRASH_AT=name the process dies here at once (os._exit, as under
    SIGKILL: no cleanup, no flush). Names: dataset_tool:written, dataset_tool:exchanged, replace:moved-aside,
    lt_dataset:staged, lt_dataset:committed, lt_dataset:renamed-one, lt_dataset:zip-written."""
    if os.environ.get("GAN_CRASH_AT") == name:
        os._exit(137)


# ----------------------------------------------------------------------------
# lt_dataset.py's commit records (see lt_dataset.py): readers refuse a label file while one names it.


def _read_commit_record(path):
    try:
        with open(path, "rb") as f:
            record = json.loads(f.read())
    except (OSError, ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("files"), list) else None


def pending_commits(directory):
    """[(path, record or None)] of lt_dataset.py commit records in `directory` (None: unreadable)."""
    try:
        names = sorted(n for n in os.listdir(directory) if COMMIT_RE.match(n))
    except OSError:
        return []
    return [(os.path.join(directory, n), _read_commit_record(os.path.join(directory, n))) for n in names]


def refuse_pending_commit(directory, name, source):
    """DatasetError when `name` in `directory` belongs to a set of label files whose replacement by lt_dataset.py
    has not completed (killed, or still running): the files on disk may mix the old set and the new one."""
    for path, record in pending_commits(directory):
        if record is None:
            raise DatasetError(f"{source}: the lt_dataset.py commit record {path} beside it cannot be read, so whether "
                               "the label files there are complete is unknown; run lt_dataset.py on this dataset again "
                               "(it says how to repair it)")
        if any(isinstance(i, dict) and i.get("name") == name for i in record["files"]):
            command = (record or {}).get("command") or f"python lt_dataset.py --source={directory} --imf=..."
            raise DatasetError(f"{source} belongs to a set of label files that lt_dataset.py was replacing when it was "
                               f"interrupted, or is replacing now (commit record {path}); run lt_dataset.py on this "
                               f"dataset again to complete the set first, e.g. {command}")
