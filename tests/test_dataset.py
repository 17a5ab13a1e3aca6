"""Tests for training/dataset.py: NVIDIA's ImageFolderDataset interface, labels, subsets, ZIP handling, errors."""

import io
import json
import os
import pickle
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

import dnnlib
from training import dataset as dataset_module
from training.dataset import DatasetError, ImageFolderDataset


def _png_bytes(array):
    buf = io.BytesIO()
    PIL.Image.fromarray(array).save(buf, format='png')
    return buf.getvalue()


def make_images(count, shape=(8, 8, 3), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=shape, dtype=np.uint8) for _ in range(count)]


def write_dataset(root, images, labels=None, as_zip=False, names=None, extra=None):
    """Write images (HWC or HW arrays) in NVIDIA's layout; labels None -> no dataset.json."""
    names = names or [f'{i // 1000:05d}/img{i:08d}.png' for i in range(len(images))]
    files = {name: _png_bytes(img) for name, img in zip(names, images)}
    if labels is not None:
        files['dataset.json'] = json.dumps({'labels': [[n, lab] for n, lab in zip(names, labels)]}).encode()
    files.update(extra or {})
    if as_zip:
        path = str(root) + '.zip'
        with zipfile.ZipFile(path, 'w') as zf:
            for name, data in files.items():
                zf.writestr(name, data)
        return path
    for name, data in files.items():
        os.makedirs(os.path.join(root, os.path.dirname(name)), exist_ok=True)
        with open(os.path.join(root, name), 'wb') as f:
            f.write(data)
    return str(root)


def chw(img):
    return img[:, :, np.newaxis].transpose(2, 0, 1) if img.ndim == 2 else img.transpose(2, 0, 1)


LABELS = [0, 1, 2, 1, 0, 2]


@pytest.mark.parametrize('as_zip', [False, True])
def test_load_dir_and_zip(tmp_path, as_zip):
    images = make_images(6)
    path = write_dataset(tmp_path / 'ds', images, LABELS, as_zip=as_zip)
    ds = ImageFolderDataset(path, use_labels=True)
    assert len(ds) == 6 and ds.name == 'ds'
    assert ds.image_shape == [3, 8, 8] and ds.num_channels == 3 and ds.resolution == 8
    assert ds.label_shape == [3] and ds.label_dim == 3 and ds.has_labels and ds.has_onehot_labels
    for i in range(6):
        image, label = ds[i]
        assert image.dtype == np.uint8 and image.shape == (3, 8, 8)
        np.testing.assert_array_equal(image, chw(images[i]))
        assert label.dtype == np.float32
        np.testing.assert_array_equal(label, np.eye(3, dtype=np.float32)[LABELS[i]])
    np.testing.assert_array_equal(ds.class_counts(), [2, 2, 2])
    ds.close()


def test_greyscale_gives_one_channel(tmp_path):
    images = make_images(3, shape=(4, 4))
    ds = ImageFolderDataset(write_dataset(tmp_path / 'g', images))
    assert ds.image_shape == [1, 4, 4]
    np.testing.assert_array_equal(ds[2][0], chw(images[2]))
    assert ds.label_shape == [0] and not ds.has_labels
    assert ds[0][1].shape == (0,)


def test_pil_fallback_matches_pyspng(tmp_path, monkeypatch):
    images = make_images(2)
    path = write_dataset(tmp_path / 'p', images)
    with_spng = [ImageFolderDataset(path)[i][0] for i in range(2)]
    monkeypatch.setattr(dataset_module, 'pyspng', None)
    without = [ImageFolderDataset(path)[i][0] for i in range(2)]
    for a, b, img in zip(with_spng, without, images):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, chw(img))


def test_xflip_doubles_and_details(tmp_path):
    images = make_images(3)
    ds = ImageFolderDataset(write_dataset(tmp_path / 'x', images, [0, 1, 1]), use_labels=True, xflip=True)
    assert len(ds) == 6
    np.testing.assert_array_equal(ds._raw_idx, [0, 1, 2, 0, 1, 2])
    np.testing.assert_array_equal(ds._xflip, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(ds[4][0], chw(images[1])[:, :, ::-1])
    details = ds.get_details(4)
    assert details.raw_idx == 1 and details.xflip is True and int(details.raw_label) == 1
    assert not ds.get_details(0).xflip
    np.testing.assert_array_equal(ds.class_counts(), [1, 2])  # x-flip duplicates not counted


def test_max_size_is_seeded_sorted_subset(tmp_path):
    path = write_dataset(tmp_path / 'm', make_images(20, shape=(4, 4)))
    a = ImageFolderDataset(path, max_size=5, random_seed=3)
    b = ImageFolderDataset(path, max_size=5, random_seed=3)
    c = ImageFolderDataset(path, max_size=5, random_seed=4)
    expected = np.arange(20)
    np.random.RandomState(3).shuffle(expected)
    np.testing.assert_array_equal(a._raw_idx, np.sort(expected[:5]))
    np.testing.assert_array_equal(a._raw_idx, b._raw_idx)
    assert not np.array_equal(a._raw_idx, c._raw_idx)
    assert len(ImageFolderDataset(path, max_size=100)) == 20


def test_pickle_drops_zip_handle(tmp_path):
    images = make_images(4)
    ds = ImageFolderDataset(write_dataset(tmp_path / 'z', images, [0, 1, 0, 1], as_zip=True), use_labels=True)
    ds[0]
    assert ds._files._zipfile is not None
    state = ds._files.__getstate__()
    assert state['_zipfile'] is None and state['_zip_pid'] is None
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[3][0], chw(images[3]))
    np.testing.assert_array_equal(clone[3][1], [0, 1])


def test_zip_reopened_in_other_process(tmp_path):
    images = make_images(12)
    ds = ImageFolderDataset(write_dataset(tmp_path / 'w', images, as_zip=True))
    first = ds._files.zipfile()
    ds._files._zip_pid = -1  # as if this object had been inherited through fork
    assert ds._files.zipfile() is not first and ds._files._zip_pid == os.getpid()
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, multiprocessing_context='fork')
    batches = torch.cat([x for x, _ in loader]).numpy()
    np.testing.assert_array_equal(batches, np.stack([chw(img) for img in images]))


def test_construct_from_training_set_kwargs(tmp_path):
    path = write_dataset(tmp_path / 'k', make_images(4), [0, 1, 2, 3], as_zip=True)
    kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=path, use_labels=True,
                             max_size=None, xflip=False, resolution=8, random_seed=0)
    ds = dnnlib.util.construct_class_by_name(**pickle.loads(pickle.dumps(kwargs)))
    assert len(ds) == 4 and ds.label_dim == 4


@pytest.mark.parametrize('inside', [False, True])
def test_label_file_selects_subset(tmp_path, inside):
    images = make_images(6)
    subset = {'labels': [['00000/img00000004.png', 1], ['00000/img00000001.png', 0], ['00000/img00000005.png', 1]]}
    extra = {'lt_5.json': json.dumps(subset).encode()} if inside else None
    path = write_dataset(tmp_path / 'l', images, LABELS, as_zip=True, extra=extra)
    label_file = 'lt_5.json'
    if not inside:
        label_file = str(tmp_path / 'subset.json')
        with open(label_file, 'w') as f:
            json.dump(subset, f)
    ds = ImageFolderDataset(path, use_labels=True, label_file=label_file)
    assert len(ds) == 3 and ds.label_dim == 2
    np.testing.assert_array_equal(ds[0][0], chw(images[1]))  # sorted by path
    np.testing.assert_array_equal(ds[0][1], [1, 0])
    np.testing.assert_array_equal(ds[2][0], chw(images[5]))
    np.testing.assert_array_equal(ds.class_counts(), [1, 2])
    unlabelled = ImageFolderDataset(path, label_file=label_file)
    assert len(unlabelled) == 3 and unlabelled.label_dim == 0


def test_label_file_name_prefers_the_dataset_member(tmp_path, monkeypatch):
    subset = {'labels': [['00000/img00000002.png', 0]]}
    path = write_dataset(tmp_path / 'pref', make_images(3), [0, 1, 0], as_zip=True,
                         extra={'lt_2.json': json.dumps(subset).encode()})
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'lt_2.json').write_text(json.dumps({'labels': [['00000/img00000000.png', 0]]}))
    ds = ImageFolderDataset(path, label_file='lt_2.json')
    assert ds._image_fnames == ['00000/img00000002.png']


def test_float_vector_labels(tmp_path):
    path = write_dataset(tmp_path / 'v', make_images(2), [[0.5, -1.0], [2.0, 3.0]])
    ds = ImageFolderDataset(path, use_labels=True)
    assert ds.label_shape == [2] and not ds.has_onehot_labels
    np.testing.assert_array_equal(ds[1][1], np.array([2.0, 3.0], dtype=np.float32))
    with pytest.raises(DatasetError, match='integer class labels'):
        ds.class_counts()

# ----------------------------------------------------------------------------
# Errors.


def test_missing_path_is_named(tmp_path):
    missing = str(tmp_path / 'nope.zip')
    with pytest.raises(FileNotFoundError, match='nope.zip does not exist'):
        ImageFolderDataset(missing)


def test_no_images(tmp_path):
    os.makedirs(tmp_path / 'empty')
    (tmp_path / 'empty' / 'notes.txt').write_text('hello')
    with pytest.raises(DatasetError, match='contains no images'):
        ImageFolderDataset(str(tmp_path / 'empty'))


def test_mixed_shapes(tmp_path):
    path = write_dataset(tmp_path / 'mix', [make_images(1, (8, 8, 3))[0], make_images(1, (16, 16, 3))[0]], as_zip=True)
    with pytest.raises(DatasetError, match=r'not all the same shape.*img00000001\.png.*--resolution'):
        ImageFolderDataset(path)


@pytest.mark.parametrize('shape, word', [((8, 16, 3), 'square'), ((12, 12, 3), 'power of two')])
def test_bad_resolution(tmp_path, shape, word):
    path = write_dataset(tmp_path / 'r', make_images(2, shape))
    with pytest.raises(DatasetError, match='resolution must be a power of two') as info:
        ImageFolderDataset(path)
    assert word in str(info.value) and 'dataset_tool.py with --resolution' in str(info.value)


def test_requested_resolution_must_match(tmp_path):
    with pytest.raises(DatasetError, match='resolution=16 was requested'):
        ImageFolderDataset(write_dataset(tmp_path / 'q', make_images(1)), resolution=16)


def test_alpha_channel_rejected(tmp_path):
    path = write_dataset(tmp_path / 'a', make_images(2, (8, 8, 4)))
    with pytest.raises(DatasetError, match='4 channels'):
        ImageFolderDataset(path)


@pytest.mark.parametrize('labels_json', [None, {'labels': None}])
def test_use_labels_without_labels(tmp_path, labels_json):
    extra = None if labels_json is None else {'dataset.json': json.dumps(labels_json).encode()}
    path = write_dataset(tmp_path / 'u', make_images(2), extra=extra)
    with pytest.raises(DatasetError) as info:
        ImageFolderDataset(path, use_labels=True)
    assert str(info.value) == (f'dataset {path} has no labels (dataset.json missing or labels null); '
                               'use --cond=0 or add labels with dataset_tool.py')
    assert len(ImageFolderDataset(path)) == 2  # fine when labels are not asked for


@pytest.mark.parametrize('labels', [['cat', 'dog'], [1, [0.5]], [True, False], [-1, 0]])
def test_bad_label_values(tmp_path, labels):
    path = write_dataset(tmp_path / 'b', make_images(2), labels)
    with pytest.raises(DatasetError, match='labels in'):
        ImageFolderDataset(path, use_labels=True)


def test_label_file_referencing_missing_image(tmp_path):
    path = write_dataset(tmp_path / 'f', make_images(2), [0, 1])
    label_file = tmp_path / 'bad.json'
    label_file.write_text(json.dumps({'labels': [['00000/img00000000.png', 0], ['00000/img00000099.png', 1]]}))
    with pytest.raises(DatasetError, match=r'references 1 image\(s\) not in dataset .*img00000099\.png'):
        ImageFolderDataset(path, label_file=str(label_file))
    with pytest.raises(FileNotFoundError, match='label file missing.json not found'):
        ImageFolderDataset(path, label_file='missing.json')


def test_dataset_json_referencing_missing_image(tmp_path):
    names = ['00000/img00000000.png', '00000/img00000001.png']
    labels = {'labels': [[names[0], 0], [names[1], 1], ['00000/img00000002.png', 0]]}
    path = write_dataset(tmp_path / 'd', make_images(2), names=names, extra={'dataset.json': json.dumps(labels).encode()})
    with pytest.raises(DatasetError, match=r'references 1 image\(s\) not in the dataset'):
        ImageFolderDataset(path, use_labels=True)


def test_bad_zip(tmp_path):
    bad = tmp_path / 'broken.zip'
    bad.write_bytes(b'this is not a zip')
    with pytest.raises(DatasetError, match='not a valid ZIP'):
        ImageFolderDataset(str(bad))
