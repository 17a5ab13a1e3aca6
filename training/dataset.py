"""Image datasets in NVIDIA's stylegan2-ada format.

A dataset is a directory or a ZIP archive of images (PNG in practice; square,
power-of-two side, 1 or 3 channels, all the same shape) plus an optional
``dataset.json`` of the form ``{"labels": [["00000/img00000000.png", 6], ...]}``
(``null`` means unlabelled).  Integer labels become one-hot vectors; lists of
numbers are used as float vectors.  Labels from dataset.json and from a label-subset
file (``label_file``) are checked alike by ``dnnlib.dataset_format.validate_labels``
(class ids 0..C-1, finite vectors of one length).

``ImageFolderDataset`` is what snapshots record as
``training_set_kwargs['class_name']``, so this module imports nothing from the
project's plugins and its constructor arguments stay plain picklable values.
"""

import io
import os
import struct
import warnings
import zipfile
import zlib

import numpy as np
import PIL.Image
import torch

import dnnlib
from dnnlib.dataset_format import (  # noqa: F401 (re-exported: the format's names, used across the project)
    IMAGE_EXTENSIONS,
    DatasetError,
    DatasetFiles,
    is_image_name,
    is_power_of_two,
    label_class_count,
    label_entries,
    parse_json,
    pil_error_text,
    read_label_file,
    validate_labels,
)

try:
    import pyspng
except ImportError:  # pragma: no cover - depends on the platform
    pyspng = None

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


# ----------------------------------------------------------------------------
# Image headers and decoding.

# PNG colour type -> number of channels after decoding (palette images decode to RGB).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


def _png_header(head):
    """(channels, height, width, bit_depth, colour_type) from the first 29 bytes of a PNG, or None."""
    if len(head) < 29 or head[:8] != PNG_SIGNATURE or head[12:16] != b'IHDR':
        return None
    width, height, depth, ctype = struct.unpack('>IIBB', head[16:26])
    if ctype not in _PNG_CHANNELS:
        return None
    return _PNG_CHANNELS[ctype], height, width, depth, ctype


def _pil_channels(mode):
    if mode in ('1', 'L'):
        return 1
    if mode in ('RGB', 'P', 'CMYK', 'YCbCr'):
        return 3
    return {'LA': 2, 'La': 2, 'RGBA': 4, 'RGBa': 4, 'PA': 4}.get(mode, -1)


def _png_shape(png, fname):
    channels, height, width, depth, _ctype = png
    if depth == 16:
        raise DatasetError(f'{fname} is a 16-bit PNG; convert the images to 8 bits with dataset_tool.py')
    return _check_channels(channels, height, width, fname)


def _check_channels(channels, height, width, fname):
    if channels not in (1, 3):
        raise DatasetError(f'{fname} has {channels} channels (alpha channel or unsupported mode); images must be '
                           'greyscale or RGB; convert them with dataset_tool.py')
    return channels, height, width


def read_image_shape(f, fname):
    """Return (channels, height, width) of an image file object without decoding its pixels.

    Raises DatasetError for files that are not images, 16-bit PNGs and modes other than grey/RGB.
    """
    head = f.read(29)
    png = _png_header(head)
    if png is not None:
        return _png_shape(png, fname)
    try:
        with PIL.Image.open(io.BytesIO(head + f.read())) as im:
            return _check_channels(_pil_channels(im.mode), im.size[1], im.size[0], fname)
    except (OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f'cannot read image {fname}: {pil_error_text(err)}; remove the file or rebuild the dataset '
                           'with dataset_tool.py') from err


def decode_image(data, fname):
    """Decode encoded image bytes to a uint8 array of shape [C, H, W] (C = 1 for greyscale, 3 for colour)."""
    png = _png_header(data[:29])
    image = None
    if pyspng is not None and png is not None and png[3] == 8 and png[4] in (0, 2):
        try:
            image = pyspng.load(data)
        except Exception as err:  # noqa: BLE001 - pyspng raises RuntimeError/ValueError for damaged streams.
            raise DatasetError(f'cannot decode image {fname}: {err}') from None
    else:
        try:
            with PIL.Image.open(io.BytesIO(data)) as im:
                if im.mode in ('1', 'L'):
                    image = np.asarray(im.convert('L'))
                elif _pil_channels(im.mode) == 3:
                    image = np.asarray(im.convert('RGB'))
                else:
                    raise DatasetError(f'{fname} has image mode {im.mode}; images must be greyscale or RGB; '
                                       'convert them with dataset_tool.py')
        except (OSError, SyntaxError) as err:
            raise DatasetError(f'cannot decode image {fname}: {pil_error_text(err)}') from err
    if image.dtype != np.uint8:
        raise DatasetError(f'{fname} decodes to {image.dtype}, expected 8-bit pixels; convert it with dataset_tool.py')
    if image.ndim == 2:
        image = image[:, :, np.newaxis]
    return image.transpose(2, 0, 1)

# ----------------------------------------------------------------------------


class Dataset(torch.utils.data.Dataset):
    """Abstract image dataset: index bookkeeping (subset, x-flips) and labels.

    Subclasses implement `_load_raw_image(raw_idx)` -> uint8 [C, H, W] and
    `_load_raw_labels()` -> None, int64 [N] or float32 [N, D].
    """

    def __init__(self, name, raw_shape, max_size=None, use_labels=False, xflip=False, random_seed=0):
        self._name = name
        self._raw_shape = list(raw_shape)
        self._use_labels = bool(use_labels)
        self._raw_labels = None
        self._label_shape = None

        num_raw = self._raw_shape[0]
        self._raw_idx = np.arange(num_raw, dtype=np.int64)
        if max_size is not None:
            if int(max_size) < 1:
                raise DatasetError(f'max_size must be at least 1, got {max_size}')
            if num_raw > max_size:
                # Same subset as upstream: shuffle all indices with the seed, keep a prefix, restore file order.
                np.random.RandomState(random_seed).shuffle(self._raw_idx)
                self._raw_idx = np.sort(self._raw_idx[:int(max_size)])

        self._xflip = np.zeros(self._raw_idx.size, dtype=np.uint8)
        if xflip:
            self._raw_idx = np.concatenate([self._raw_idx, self._raw_idx])
            self._xflip = np.concatenate([self._xflip, np.ones_like(self._xflip)])

    def _get_raw_labels(self):
        if self._raw_labels is None:
            labels = self._load_raw_labels() if self._use_labels else None
            if labels is None:
                labels = np.zeros([self._raw_shape[0], 0], dtype=np.float32)
            labels = np.asarray(labels)
            if labels.shape[0] != self._raw_shape[0]:
                raise DatasetError(f'dataset {self._name}: {labels.shape[0]} labels for {self._raw_shape[0]} images')
            if labels.dtype not in (np.int64, np.float32):
                raise DatasetError(f'dataset {self._name}: labels must be int64 class ids or float32 vectors')
            self._raw_labels = labels
        return self._raw_labels

    def close(self):
        """Release open files; the dataset stays usable (files reopen on demand)."""

    def _load_raw_image(self, raw_idx):
        raise NotImplementedError(f'{type(self).__name__} must implement _load_raw_image')

    def _load_raw_labels(self):
        raise NotImplementedError(f'{type(self).__name__} must implement _load_raw_labels')

    def __getstate__(self):
        return dict(self.__dict__)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __len__(self):
        return self._raw_idx.size

    def __getitem__(self, idx):
        raw_idx = int(self._raw_idx[idx])
        image = self._load_raw_image(raw_idx)
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or list(image.shape) != self.image_shape:
            got = getattr(image, 'shape', None)
            raise DatasetError(f'dataset {self._name}: image {raw_idx} has shape {list(got) if got is not None else got}, '
                               f'expected uint8 {self.image_shape}; rebuild the dataset with dataset_tool.py')
        if self._xflip[idx]:
            image = image[:, :, ::-1]
        return image.copy(), self.get_label(idx)

    def get_label(self, idx):
        label = self._get_raw_labels()[self._raw_idx[idx]]
        if label.dtype == np.int64:
            onehot = np.zeros(self.label_shape, dtype=np.float32)
            onehot[label] = 1
            return onehot
        return label.copy()

    def get_details(self, idx):
        return dnnlib.EasyDict(
            raw_idx=int(self._raw_idx[idx]),
            xflip=int(self._xflip[idx]) != 0,
            raw_label=self._get_raw_labels()[self._raw_idx[idx]].copy(),
        )

    def class_counts(self):
        """Images per class among the used images (x-flip duplicates not counted), int64 [label_dim]."""
        labels = self._get_raw_labels()
        if labels.dtype != np.int64:
            if labels.shape[1] == 0:
                return np.zeros([0], dtype=np.int64)
            raise DatasetError(f'dataset {self._name} has float-vector labels; class_counts needs integer class labels')
        used = self._raw_idx[self._xflip == 0]
        return np.bincount(labels[used], minlength=self.label_dim).astype(np.int64)

    @property
    def name(self):
        return self._name

    @property
    def image_shape(self):
        return list(self._raw_shape[1:])

    @property
    def num_channels(self):
        return self.image_shape[0]

    @property
    def resolution(self):
        channels_height_width = self.image_shape
        if channels_height_width[1] != channels_height_width[2]:
            raise DatasetError(f'dataset {self._name} is not square: {channels_height_width[1:]}')
        return channels_height_width[1]

    @property
    def label_shape(self):
        if self._label_shape is None:
            labels = self._get_raw_labels()
            if labels.dtype == np.int64:
                self._label_shape = [int(labels.max()) + 1 if labels.size else 0]
            else:
                self._label_shape = list(labels.shape[1:])
        return list(self._label_shape)

    @property
    def label_dim(self):
        shape = self.label_shape
        if len(shape) != 1:
            raise DatasetError(f'dataset {self._name}: labels of shape {shape} are not vectors')
        return shape[0]

    @property
    def has_labels(self):
        return any(dim != 0 for dim in self.label_shape)

    @property
    def has_onehot_labels(self):
        return self._get_raw_labels().dtype == np.int64

# ----------------------------------------------------------------------------


class ImageFolderDataset(Dataset):
    """Directory or ZIP of same-shaped square power-of-two images, with optional dataset.json labels.

    `label_file` names another labels JSON (same format): a file of the dataset such as an
    lt_dataset.py output ('lt_10.json'; a relative name is looked up in the dataset first),
    or a path on disk.  Only the images it lists are used and its labels replace dataset.json's.  The ZIP is opened lazily, once per process.
    """

    def __init__(self, path, resolution=None, max_size=None, use_labels=False, xflip=False, random_seed=0,
                 label_file=None, skip_bad_images=False, **super_kwargs):
        self._skip_bad_images = bool(skip_bad_images)  # Damaged images: replaced by the next one, with a warning.
        self._files = DatasetFiles(path)
        self._path = self._files.path
        self._label_file = label_file
        self._all_fnames = self._files.names()

        names = sorted(f for f in self._all_fnames if is_image_name(f))
        if not names:
            raise DatasetError(f'dataset {self._path} contains no images (looked for {", ".join(sorted(IMAGE_EXTENSIONS))}); '
                               'build one with dataset_tool.py')
        self._subset_labels = None
        if label_file is not None:
            names, self._subset_labels = self._select_label_file(label_file, set(names))
        self._image_fnames = names

        raw_shape = [len(names)] + self._scan_shapes(names)
        self._check_resolution(raw_shape, resolution)
        name = os.path.splitext(os.path.basename(os.path.normpath(self._path)))[0]
        super().__init__(name=name, raw_shape=raw_shape, max_size=max_size, use_labels=use_labels, xflip=xflip,
                         random_seed=random_seed, **super_kwargs)
        if self._use_labels:
            self._get_raw_labels()  # fail now, not in the first DataLoader worker

    # -- files ---------------------------------------------------------------

    def _open_file(self, fname):
        return self._files.open(fname)

    def close(self):
        self._files.close()

    # -- structure -----------------------------------------------------------

    def _scan_shapes(self, names):
        """Check that all images share one shape (reading headers only); return [C, H, W]."""
        first_shape = None
        for fname, head in self._iter_heads(names):
            png = _png_header(head)
            if png is not None:
                shape = list(_png_shape(png, self._describe(fname)))
            else:
                with self._open_file(fname) as f:
                    shape = list(read_image_shape(f, self._describe(fname)))
            if first_shape is None:
                first_shape, first_name = shape, fname
            elif shape != first_shape:
                raise DatasetError(f'images in {self._path} are not all the same shape: {first_name} is '
                                   f'{_shape_str(first_shape)} but {fname} is {_shape_str(shape)}; '
                                   'rebuild the dataset with dataset_tool.py --resolution WxH')
        return first_shape

    def _iter_heads(self, names):
        """Yield (fname, first 29 bytes or b'') quickly: raw reads, no ZipExtFile per member."""
        if not self._files.is_zip:
            flags = os.O_RDONLY | getattr(os, 'O_BINARY', 0)
            for fname in names:
                try:
                    fd = os.open(os.path.join(self._path, fname), flags)
                except OSError as err:  # A dangling link, a file removed meanwhile, no permission.
                    raise DatasetError(f'cannot read {self._describe(fname)}: {err.strerror or err}; remove or fix '
                                       'the file, or rebuild the dataset with dataset_tool.py') from None
                try:
                    head = os.read(fd, 29)
                finally:
                    os.close(fd)
                yield fname, head
            return
        zf = self._files.zipfile()
        with open(self._path, 'rb') as raw:
            for fname in names:
                yield fname, _zip_member_head(raw, zf.getinfo(fname))

    def _check_resolution(self, raw_shape, resolution):
        _channels, height, width = raw_shape[1:]
        if height != width or not is_power_of_two(width):
            kind = 'square' if height != width else 'a power of two'
            raise DatasetError(f'dataset {self._path} has {width}x{height} images; resolution must be a power of two '
                               f'and square (these are not {kind}); run dataset_tool.py with --resolution '
                               '(and --transform center-crop for non-square images)')
        if resolution is not None and int(resolution) != width:
            raise DatasetError(f'dataset {self._path} has resolution {width} but resolution={resolution} was requested')

    def _describe(self, fname):
        return self._files.describe(fname)

    # -- labels --------------------------------------------------------------

    def _read_json(self, fname):
        return parse_json(self._files.read(fname), self._describe(fname))

    def _select_label_file(self, label_file, image_names):
        """Read `label_file`; return (sorted image names it lists, their labels in that order)."""
        obj, source, _base_dir = read_label_file(self._files, label_file)
        self._subset_source = source
        self._subset_class_count = label_class_count(obj, source)
        mapping = label_entries(obj, source)
        if mapping is None:
            raise DatasetError(f'label file {source} has "labels": null; a label file must list the images to use')
        missing = sorted(n for n in mapping if n not in image_names)
        if missing:
            raise DatasetError(f'label file {source} references {len(missing)} image(s) not in dataset {self._path}, '
                               f'e.g. {missing[0]}; was it made for this dataset?')
        if not mapping:
            raise DatasetError(f'label file {source} lists no images')
        names = sorted(mapping)
        return names, [mapping[n] for n in names]

    def _load_raw_labels(self):
        """Labels of the used images, checked by the one validator (dnnlib.dataset_format.validate_labels)."""
        if self._subset_labels is not None:
            source = self._subset_source
            return validate_labels(self._subset_labels, source, self._image_fnames, self._subset_class_count,
                                   fix=f'Renumber them to 0..C-1 in {source}, or declare the number of classes with '
                                   '"num_classes" or "class_names" (lt_dataset.py writes such files)')
        source = self._describe('dataset.json')
        mapping = None
        class_count = None
        if 'dataset.json' in self._all_fnames:
            meta = self._read_json('dataset.json')
            mapping = label_entries(meta, source)
            class_count = label_class_count(meta, source)
        if mapping is None:
            raise DatasetError(f'dataset {self._path} has no labels (dataset.json missing or labels null); '
                               'use --cond=0 or add labels with dataset_tool.py')
        names = set(self._image_fnames)
        extra = sorted(n for n in mapping if n not in names)
        if extra:
            raise DatasetError(f'{source} references {len(extra)} image(s) not in the dataset, e.g. {extra[0]}; '
                               'rebuild the dataset with dataset_tool.py')
        unlabelled = [n for n in self._image_fnames if n not in mapping]
        if unlabelled:
            raise DatasetError(f'{source} has no label for {len(unlabelled)} image(s), e.g. {unlabelled[0]}; '
                               'rebuild the dataset with dataset_tool.py')
        values = [mapping[n] for n in self._image_fnames]
        return validate_labels(values, source, self._image_fnames, class_count,
                               fix=f'Renumber them: python dataset_tool.py --source={self._path} --dest=<new.zip> '
                               '--remap-labels')

    # -- images --------------------------------------------------------------

    def _load_raw_image(self, raw_idx):
        fname = self._image_fnames[raw_idx]
        try:
            with self._open_file(fname) as f:
                data = f.read()
            return decode_image(data, self._describe(fname))
        except (DatasetError, OSError, zipfile.BadZipFile, zlib.error, EOFError) as err:
            if not self._skip_bad_images:
                message = str(err) if isinstance(err, DatasetError) else f'cannot read {self._describe(fname)}: {err}'
                raise DatasetError(f'{message} (image {raw_idx}). List every damaged image with python dataset_tool.py '
                                   f'--verify={self._path}, or train on without them: --skip-bad-images=1') from None
            warnings.warn(f'skipping damaged image {self._describe(fname)}: {err}')
            return self._load_raw_image((raw_idx + 1) % len(self._image_fnames))

    def verify(self):
        """[(member, error)] of every image that cannot be read or decoded (reads the whole dataset)."""
        bad = []
        for fname in self._image_fnames:
            try:
                with self._open_file(fname) as f:
                    decode_image(f.read(), self._describe(fname))
            except (DatasetError, OSError, zipfile.BadZipFile, zlib.error, EOFError) as err:
                bad.append((fname, str(err)))
        return bad


def _zip_member_head(raw, info, size=29):
    """First `size` bytes of a stored or deflated, unencrypted ZIP member read from the raw file; b'' otherwise."""
    if info.flag_bits & 1 or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return b''
    raw.seek(info.header_offset)
    local = raw.read(30)
    if len(local) != 30 or local[:4] != b'PK\x03\x04':
        return b''
    name_len, extra_len = struct.unpack('<HH', local[26:30])
    raw.seek(name_len + extra_len, 1)
    if info.compress_type == zipfile.ZIP_STORED:
        return raw.read(min(size, info.compress_size))
    try:
        return zlib.decompressobj(-15).decompress(raw.read(min(info.compress_size, 4096)), size)
    except zlib.error:
        return b''


def _shape_str(shape):
    channels, height, width = shape
    return f'{width}x{height} with {channels} channel(s)'
