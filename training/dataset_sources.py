"""Input readers for dataset_tool.py.

Every reader returns a `Source`: a description, an image count, optional class
names, and an iterator of ``(name, image, label)`` where `image` is a uint8
array of shape [H, W, C] with C = 1 (grey) or 3 (RGB) and `label` is an int,
a list of floats, or None for unlabelled sources.

Supported sources:
  * a directory of images (recursively; class = top-level sub-folder name,
    sorted names -> ids 0.., unless the folder holds a dataset.json);
  * a ZIP of images (same rules);
  * CIFAR-10 python pickles: the cifar-10-batches-py directory or its tar.gz;
  * MNIST-style idx files (gzipped or not): a directory holding them or the
    images file itself (the labels file is found by name);
  * ``digits`` / ``digits:16`` / ``digits:32``: scikit-learn's bundled 8x8 digits;
  * ``fashion-mnist`` / ``fashion-mnist:test``: the Debian package dataset-fashion-mnist.
  * ``stacked-digits`` / ``stacked-digits:N``: N (default 25000) RGB images whose channels are three random
    scikit-learn digits (stacked MNIST's 1000 modes; label 100 * red + 10 * green + blue), 16 px.

Files without an image extension inside folders and ZIPs, hidden files and
macOS debris (``__MACOSX/``, ``._x.png``) are skipped (and counted in
`Source.notes`); a file with an image extension that cannot be decoded is an
error.
"""

import gzip
import importlib.util
import io
import math
import os
import pickle
import re
import struct
import subprocess
import tarfile
import zlib

import numpy as np
import PIL.Image

from dnnlib.dataset_format import (
    DatasetError,
    DatasetFiles,
    is_hidden,
    is_image_name,
    is_power_of_two,
    label_class_count,
    label_entries,
    parse_json,
    pil_error_text,
    validate_labels,
)


class SourceError(DatasetError):
    """The source cannot be read or converted; the message says which file and what to do."""


class Source:
    """A readable collection of images (see the module docstring)."""

    def __init__(self, description, count, iterate, has_labels, class_names=None, default_size=None, notes=()):
        self.description = description
        self.count = count
        self._iterate = iterate
        self.has_labels = has_labels
        self.class_names = class_names
        self.default_size = default_size  # output side used when the user gives no --resolution
        self.notes = list(notes)

    def __iter__(self):
        return iter(self._iterate())

# ----------------------------------------------------------------------------
# Pixel conversion shared by the readers.


def pil_to_array(im, name):
    """Pillow image -> uint8 [H, W, C], C in (1, 3).

    Alpha is composited onto black; 16-bit greyscale is scaled to 8 bits.
    """
    mode = im.mode
    if mode in ('1', 'L'):
        arr = np.asarray(im.convert('L'))
    elif mode.startswith('I'):
        wide = np.asarray(im).astype(np.float64)
        arr = np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8)
    elif mode == 'F':
        raise SourceError(f'{name} holds floating-point pixels (mode F); convert it to an 8-bit PNG first')
    elif mode in ('LA', 'La'):
        la = np.asarray(im.convert('LA')).astype(np.uint32)
        arr = ((la[:, :, 0] * la[:, :, 1] + 127) // 255).astype(np.uint8)
    elif mode in ('RGBA', 'RGBa', 'PA') or (mode == 'P' and 'transparency' in im.info):
        rgba = np.asarray(im.convert('RGBA')).astype(np.uint32)
        arr = ((rgba[:, :, :3] * rgba[:, :, 3:4] + 127) // 255).astype(np.uint8)
    else:
        arr = np.asarray(im.convert('RGB'))
    if arr.ndim == 2:
        arr = arr[:, :, np.newaxis]
    return np.ascontiguousarray(arr)


def decode_bytes(data, name):
    try:
        with PIL.Image.open(io.BytesIO(data)) as im:
            im.load()
            return pil_to_array(im, name)
    except SourceError:
        raise
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for corrupt files
        raise SourceError(f'cannot read image {name}: {pil_error_text(err)}; remove or fix the file '
                          '(files without an image extension are skipped, files with one must decode)') from err


def pad_to_power_of_two(images):
    """Zero-pad a square [N, H, W, C] stack to the next power-of-two side (28 -> 32), centred."""
    side = images.shape[1]
    if images.shape[1] != images.shape[2] or is_power_of_two(side):
        return images
    target = 1 << (side - 1).bit_length()
    before = (target - side) // 2
    after = target - side - before
    return np.pad(images, [(0, 0), (before, after), (before, after), (0, 0)])


def _array_source(description, images, labels, class_names=None, default_size=None, prefix='img'):
    """Source over an in-memory [N, H, W, C] uint8 stack."""
    def iterate():
        for i in range(images.shape[0]):
            label = None if labels is None else int(labels[i])  # Checked on output (dataset_format.validate_labels).
            yield f'{prefix}{i:08d}', images[i], label
    return Source(description, int(images.shape[0]), iterate, labels is not None, class_names, default_size)

# ----------------------------------------------------------------------------
# Image folders and ZIPs.


def _collection_labels(description, image_names, json_obj, json_name):
    """Labels for an image collection: dataset.json if present, else top-level sub-folder names."""
    notes = []
    if json_obj is not None:
        mapping = label_entries(json_obj, json_name)
        if mapping is None:
            return None, None, notes
        names = set(image_names)
        missing = sorted(n for n in mapping if n not in names)
        if missing:
            raise SourceError(f'{json_name} references {len(missing)} image(s) that are not in {description}, '
                              f'e.g. {missing[0]}; fix or remove dataset.json')
        unlabelled = [n for n in image_names if n not in mapping]
        if unlabelled:
            raise SourceError(f'{json_name} has no label for {len(unlabelled)} image(s), e.g. {unlabelled[0]}; '
                              'add them to dataset.json or remove the images')
        values = [mapping[n] for n in image_names]
        # The one validator; class ids are checked for 0..C-1 on what dataset_tool.py writes (after --remap-labels).
        validate_labels(values, json_name, image_names, dense_ids=False)
        class_count = label_class_count(json_obj, json_name)
        names = json_obj.get('class_names') if class_count is not None else None
        return dict(zip(image_names, values)), names or None, notes
    in_folders = [n for n in image_names if '/' in n]
    if not in_folders:
        return None, None, notes
    if len(in_folders) != len(image_names):
        notes.append(f'{description}: some images are at the top level and some in sub-folders; writing no labels '
                     '(put every image in a class sub-folder to get class labels)')
        return None, None, notes
    class_names = sorted({n.split('/', 1)[0] for n in image_names})
    class_ids = {c: i for i, c in enumerate(class_names)}
    return {n: class_ids[n.split('/', 1)[0]] for n in image_names}, class_names, notes


def _collection_source(description, all_names, read_bytes):
    names = sorted(all_names)
    image_names = [n for n in names if is_image_name(n) and not is_hidden(n)]
    chosen = set(image_names)
    others = [n for n in names if n != 'dataset.json' and n not in chosen]
    if not image_names:
        raise SourceError(f'{description} contains no images (files with an image extension such as .png or .jpg)')
    json_obj = None
    json_name = f'{description}/dataset.json'
    if 'dataset.json' in all_names:
        json_obj = parse_json(_read_member(read_bytes, 'dataset.json', description), json_name)
    labels, class_names, notes = _collection_labels(description, image_names, json_obj, json_name)
    if others:
        notes.append(f'skipped {len(others)} non-image file(s) in {description}, e.g. {others[0]}')

    def iterate():
        for name in image_names:
            image = decode_bytes(_read_member(read_bytes, name, description), f'{description}/{name}')
            yield name, image, None if labels is None else labels[name]
    return Source(description, len(image_names), iterate, labels is not None, class_names, notes=notes)


def _read_member(read_bytes, name, description):
    """Bytes of one file of a folder or ZIP source; a file that cannot be read is an error naming it."""
    try:
        return read_bytes(name)
    except SourceError:
        raise
    except DatasetError as err:  # A damaged, encrypted or unreadable ZIP member (DatasetFiles.read names it).
        raise SourceError(str(err)) from None
    except OSError as err:
        raise SourceError(f'cannot read {description}/{name}: {err.strerror or err}; remove or replace the '
                          'file') from None


def open_image_folder(path):
    files = DatasetFiles(path)
    return _collection_source(path, files.names(), files.read)


def open_image_zip(path):
    files = DatasetFiles(path)
    try:
        names = files.names()
    except DatasetError as err:  # Its message names the ZIP: not a ZIP, or a duplicate member.
        raise SourceError(str(err)) from err
    source = _collection_source(path, names, files.read)
    inner = source._iterate

    def iterate():
        try:
            yield from inner()
        finally:
            files.close()
    source._iterate = iterate
    return source

# ----------------------------------------------------------------------------
# CIFAR-10 python pickles.


def _batch_number(name):
    match = re.fullmatch(r'data_batch_(\d+)', os.path.basename(name))
    return int(match.group(1)) if match else None


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Reads CIFAR-10's python pickles (dicts of numpy arrays, lists, numbers and strings) without running code:
    any other global a pickle names (os.system, subprocess.Popen, ...) is refused before it is looked up."""

    ALLOWED = {
        ('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
        ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
        ('numpy.core.numeric', '_frombuffer'), ('numpy._core.numeric', '_frombuffer'),
        ('numpy', 'ndarray'), ('numpy', 'dtype'),
        ('_codecs', 'encode'), ('builtins', 'bytes'), ('__builtin__', 'bytes'),  # bytes in protocol-2 pickles
    }

    def __init__(self, fileobj, name):
        super().__init__(fileobj, encoding='latin1')
        self._name = name

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise SourceError(f'{self._name} is not a CIFAR-10 batch: it names {module}.{name}, and only numpy arrays, '
                              'lists, numbers and strings are read from CIFAR pickles (a pickle can run code; this one '
                              'was not loaded). Use the cifar-10-python.tar.gz from the CIFAR-10 site')
        if module.startswith('numpy.core.') and hasattr(np, '_core'):
            module = 'numpy._core.' + module[len('numpy.core.'):]  # numpy 2 moved numpy.core to numpy._core.
        return super().find_class(module, name)


def _unpickle(fileobj, name):
    try:
        obj = _ArraysOnlyUnpickler(fileobj, name).load()
    except SourceError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged pickle raises almost any type; none of it is our bug.
        raise SourceError(f'cannot read CIFAR pickle {name}: {err}; use the files of cifar-10-python.tar.gz') from err
    if not isinstance(obj, dict):
        raise SourceError(f'{name} is not a CIFAR-10 batch (expected a pickled dict)')
    return {k.decode('latin1') if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_batch(obj, name):
    if 'data' not in obj or 'labels' not in obj:
        raise SourceError(f'{name} is not a CIFAR-10 batch (needs "data" and "labels")')
    data, labels = obj['data'], obj['labels']
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise SourceError(f'{name}: "data" must be a uint8 numpy array of shape [N, 3072], got '
                          f'{type(data).__name__} {getattr(data, "dtype", "")}')
    if isinstance(labels, np.ndarray) and labels.ndim == 1 and labels.dtype.kind in 'iu':
        labels = labels.tolist()
    if not isinstance(labels, list) or not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool)
                                               for x in labels):
        raise SourceError(f'{name}: "labels" must be a list of integer class ids, got {str(labels)[:60]}')
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != len(labels):
        raise SourceError(f'{name}: expected data of shape [N, 3072] and N labels, got {list(data.shape)} and {len(labels)}')
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), [int(x) for x in labels]


def _cifar_names(meta, name):
    names = meta.get('label_names') if meta else None
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, (str, bytes)) for n in names):
        raise SourceError(f'{name}: "label_names" must be a list of class names, got {str(names)[:60]}')
    return [n.decode('latin1') if isinstance(n, bytes) else n for n in names] or None


def _cifar_source(description, batches, meta, meta_name):
    images = np.concatenate([b[0] for b in batches])
    labels = [label for b in batches for label in b[1]]
    return _array_source(description, np.ascontiguousarray(images), labels, _cifar_names(meta, meta_name))


def open_cifar_dir(path):
    files = sorted((n for n in os.listdir(path) if _batch_number(n) is not None), key=_batch_number)
    batches = []
    for fname in files:
        with open(os.path.join(path, fname), 'rb') as f:
            batches.append(_cifar_batch(_unpickle(f, os.path.join(path, fname)), os.path.join(path, fname)))
    meta = None
    meta_path = os.path.join(path, 'batches.meta')
    if os.path.isfile(meta_path):
        with open(meta_path, 'rb') as f:
            meta = _unpickle(f, meta_path)
    return _cifar_source(path, batches, meta, meta_path)


def open_cifar_tar(path):
    try:
        with tarfile.open(path, 'r:*') as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            batch_members = sorted((m for m in members if _batch_number(m.name) is not None), key=lambda m: _batch_number(m.name))
            if not batch_members:
                raise SourceError(f'{path} holds no CIFAR-10 data_batch_N files; pass cifar-10-python.tar.gz')
            batches = [_cifar_batch(_unpickle(tar.extractfile(m), m.name), f'{path}:{m.name}') for m in batch_members]
            meta_members = [m for m in members if os.path.basename(m.name) == 'batches.meta']
            meta_name = f'{path}:{meta_members[0].name}' if meta_members else None
            meta = _unpickle(tar.extractfile(meta_members[0]), meta_name) if meta_members else None
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise SourceError(f'cannot read archive {path}: {err}') from err
    return _cifar_source(path, batches, meta, meta_name)

# ----------------------------------------------------------------------------
# MNIST-style idx files.

_IDX_TYPES = {0x08: '>u1', 0x09: '>i1', 0x0B: '>i2', 0x0C: '>i4', 0x0D: '>f4', 0x0E: '>f8'}


def read_idx(path):
    """Read an idx file (optionally gzipped) into a numpy array."""
    try:
        opener = gzip.open if path.endswith('.gz') else open
        with opener(path, 'rb') as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise SourceError(f'cannot read idx file {path}: {err}') from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise SourceError(f'{path} is not an idx file (bad magic number)')
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise SourceError(f'{path} is truncated (header)')
    dims = struct.unpack(f'>{ndim}I', data[4:header])
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = math.prod(dims) * dtype.itemsize  # Python integers: a forged header cannot overflow.
    if len(data) - header != expected:
        raise SourceError(f'{path} holds {len(data) - header} data bytes but its header {list(dims)} needs {expected}')
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


def idx_labels_path(images_path):
    """The labels file next to an images idx file (images-idx3 -> labels-idx1), or None."""
    base = os.path.basename(images_path)
    if 'images-idx3' not in base:
        return None
    candidate = os.path.join(os.path.dirname(images_path), base.replace('images-idx3', 'labels-idx1'))
    for path in (candidate, candidate[:-3] if candidate.endswith('.gz') else candidate + '.gz'):
        if os.path.isfile(path):
            return path
    return None


def open_idx(images_path, class_names=None, require_labels=False):
    images = read_idx(images_path)
    if images.ndim == 3:
        images = images[:, :, :, np.newaxis]
    if images.ndim != 4 or images.shape[3] not in (1, 3) or images.dtype != np.uint8 or 0 in images.shape[1:3]:
        raise SourceError(f'{images_path}: expected unsigned-byte images of shape [N, H, W] or [N, H, W, 1|3] with '
                          f'H, W >= 1, got {images.dtype} {list(images.shape)}')
    labels_path = idx_labels_path(images_path)
    labels = None
    notes = []
    if labels_path is not None:
        labels = read_idx(labels_path)
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise SourceError(f'{labels_path} holds {list(labels.shape)} labels for {images.shape[0]} images in {images_path}')
        labels = labels.astype(np.int64)
    elif require_labels:
        raise SourceError(f'no labels file found next to {images_path} (expected the name with labels-idx1)')
    else:
        notes.append(f'no labels-idx1 file next to {images_path}: writing no labels')
    padded = pad_to_power_of_two(images)
    if padded.shape != images.shape:
        notes.append(f'padded {images.shape[1]}x{images.shape[2]} idx images to {padded.shape[1]}x{padded.shape[2]}')
    source = _array_source(images_path, padded, labels, class_names)
    source.notes.extend(notes)
    return source


def find_idx_images(path):
    """The images idx file to use in a directory (train split preferred), or None."""
    found = sorted(n for n in os.listdir(path) if re.search(r'images[-.]idx3[-.]ubyte(\.gz)?$', n))
    if not found:
        return None
    train = [n for n in found if n.startswith('train')]
    if train:
        return os.path.join(path, train[0])
    if len(found) > 1:
        raise SourceError(f'{path} holds several idx image files ({", ".join(found)}); pass one of them as --source')
    return os.path.join(path, found[0])

# ----------------------------------------------------------------------------
# Built-in offline sources.


def _digits_csv_path():
    """Path of the digits table inside the installed scikit-learn (found without importing it), or None."""
    spec = importlib.util.find_spec('sklearn')
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        path = os.path.join(root, 'datasets', 'data', 'digits.csv.gz')
        if os.path.isfile(path):
            return path
    return None


def load_digits_arrays():
    """scikit-learn's 8x8 digits as (uint8 [1797, 8, 8, 1] scaled 0..16 -> 0..255, int64 [1797] labels).

    Reads the table bundled with scikit-learn directly (importing scikit-learn takes seconds);
    falls back to sklearn.datasets.load_digits when the file is not where expected.
    """
    path = _digits_csv_path()
    table = None
    if path is not None:
        with gzip.open(path, 'rt') as f:
            table = np.loadtxt(f, delimiter=',')
        if table.ndim != 2 or table.shape[1] != 65:
            table = None
    if table is not None:
        values, labels = table[:, :64].reshape(-1, 8, 8), table[:, 64]
    else:
        try:
            from sklearn.datasets import load_digits
        except ImportError as err:
            raise SourceError('--source=digits needs scikit-learn: pip install scikit-learn') from err
        digits = load_digits()
        values, labels = digits.images, digits.target
    images = np.clip(np.round(values * (255.0 / 16.0)), 0, 255).astype(np.uint8)[:, :, :, np.newaxis]
    return images, labels.astype(np.int64)


def open_digits(size=32):
    images, labels = load_digits_arrays()
    return _array_source(f'digits:{size}', images, labels, [str(i) for i in range(10)], default_size=size)


def open_stacked_digits(count=25000, seed=0):
    """Stacked digits: each channel a random digit image (seeded), the label the three digits as one number."""
    images, labels = load_digits_arrays()
    picks = np.random.default_rng(seed).integers(len(labels), size=[count, 3])
    stacked = np.concatenate([images[picks[:, ch]] for ch in range(3)], axis=3)
    mode = labels[picks[:, 0]] * 100 + labels[picks[:, 1]] * 10 + labels[picks[:, 2]]
    return _array_source(f'stacked-digits:{count}', stacked, mode, [f'{m:03d}' for m in range(1000)], default_size=16)


FASHION_MNIST_ENV = 'FASHION_MNIST_DIR'
FASHION_MNIST_CLASSES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot']


def fashion_mnist_search_dirs():
    """Directories that may hold the Fashion-MNIST idx files, most specific first."""
    dirs = []
    if os.environ.get(FASHION_MNIST_ENV):
        dirs.append(os.path.expanduser(os.environ[FASHION_MNIST_ENV]))
    dirs.append('/usr/share/datasets/fashion-mnist')
    try:
        listing = subprocess.run(['dpkg', '-L', 'dataset-fashion-mnist'], capture_output=True, text=True, timeout=20)
        for line in listing.stdout.splitlines():
            if line.endswith('-images-idx3-ubyte.gz') or line.endswith('-images-idx3-ubyte'):
                dirs.append(os.path.dirname(line))
    except (OSError, subprocess.SubprocessError):
        pass
    return list(dict.fromkeys(dirs))


def open_fashion_mnist(split='train'):
    prefix = {'train': 'train', 'test': 't10k'}[split]
    for directory in fashion_mnist_search_dirs():
        for ext in ('.gz', ''):
            path = os.path.join(directory, f'{prefix}-images-idx3-ubyte{ext}')
            if os.path.isfile(path):
                source = open_idx(path, FASHION_MNIST_CLASSES, require_labels=True)
                source.description = f'fashion-mnist:{split} ({path})'
                return source
    raise SourceError('Fashion-MNIST not found: install the Debian package with '
                      '`apt-get install dataset-fashion-mnist` (it puts the idx files in /usr/share/datasets/fashion-mnist), '
                      f'or set {FASHION_MNIST_ENV} to a directory holding {prefix}-images-idx3-ubyte.gz and '
                      f'{prefix}-labels-idx1-ubyte.gz, or use --source=digits')

# ----------------------------------------------------------------------------


def open_source(spec):
    """Open a source given as on the command line (see the module docstring)."""
    spec = str(spec)
    key, _, arg = spec.partition(':')
    if key == 'digits' and not os.path.exists(spec):
        if arg not in ('', '16', '32'):
            raise SourceError(f'--source={spec}: use digits, digits:16 or digits:32')
        return open_digits(int(arg) if arg else 32)
    if key == 'stacked-digits' and not os.path.exists(spec):
        if arg and not (arg.isdigit() and int(arg) > 0):
            raise SourceError(f'--source={spec}: use stacked-digits or stacked-digits:N with N a positive image count')
        return open_stacked_digits(int(arg) if arg else 25000)
    if key == 'fashion-mnist' and not os.path.exists(spec):
        if arg not in ('', 'train', 'test'):
            raise SourceError(f'--source={spec}: use fashion-mnist, fashion-mnist:train or fashion-mnist:test')
        return open_fashion_mnist(arg or 'train')
    path = os.path.expanduser(spec)
    if os.path.isdir(path):
        entries = os.listdir(path)
        if any(_batch_number(n) is not None for n in entries):
            return open_cifar_dir(path)
        nested = os.path.join(path, 'cifar-10-batches-py')
        if os.path.isdir(nested) and any(_batch_number(n) is not None for n in os.listdir(nested)):
            return open_cifar_dir(nested)
        idx_path = find_idx_images(path)
        if idx_path is not None:
            return open_idx(idx_path)
        return open_image_folder(path)
    if os.path.isfile(path):
        lower = path.lower()
        if lower.endswith('.zip'):
            return open_image_zip(path)
        if lower.endswith(('.tar.gz', '.tgz', '.tar')):
            return open_cifar_tar(path)
        if re.search(r'idx3[-.]ubyte(\.gz)?$', lower):
            return open_idx(path)
        raise SourceError(f'--source {spec}: unknown file type; pass an image folder, a .zip, a CIFAR-10 directory or '
                          'tar.gz, an idx images file, digits or fashion-mnist')
    raise SourceError(f'--source {spec} does not exist; pass an image folder, a .zip, a CIFAR-10 directory or tar.gz, '
                      'an idx images file or directory, digits[:16|:32], stacked-digits[:N] or fashion-mnist[:test]')
