"""Tests for dataset_tool.py: every source, the options, atomic output and the input errors."""

import gzip
import io
import json
import os
import pickle
import struct
import tarfile
import zipfile

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

import dataset_tool
from training import dataset_sources
from training.dataset import ImageFolderDataset


def run_tool(*args):
    return CliRunner().invoke(dataset_tool.main, [str(a) for a in args], catch_exceptions=False)


def ok(*args):
    result = run_tool(*args)
    assert result.exit_code == 0, result.output
    return result


def fail(*args):
    result = run_tool(*args)
    assert result.exit_code != 0, result.output
    return result.output


def save_png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    PIL.Image.fromarray(array).save(path)


def rand(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def chw(img):
    return img[:, :, np.newaxis].transpose(2, 0, 1) if img.ndim == 2 else img.transpose(2, 0, 1)


def load(path, **kwargs):
    return ImageFolderDataset(str(path), use_labels=True, **kwargs)


def leftovers(directory):
    return [n for n in os.listdir(directory) if '.tmp-' in n]


@pytest.fixture
def class_folder(tmp_path):
    """Folder with class sub-folders (unsorted creation order), a non-image file and 8x8 RGB PNGs."""
    src = tmp_path / 'src'
    images = {}
    for k, cls in enumerate(['dog', 'ant', 'cat']):
        for j in range(2):
            rel = f'{cls}/{j}.png'
            images[rel] = rand((8, 8, 3), seed=10 * k + j)
            save_png(str(src / rel), images[rel])
    (src / 'readme.txt').write_text('not an image')
    (src / 'cat' / '._0.png').write_bytes(b'macOS resource fork, not a png')
    return src, images

# ----------------------------------------------------------------------------
# Sources.


@pytest.mark.parametrize('dest_name', ['out.zip', 'outdir'])
def test_image_folder_classes_and_round_trip(tmp_path, class_folder, dest_name):
    src, images = class_folder
    dest = tmp_path / dest_name
    result = ok('--source', src, '--dest', dest)
    assert 'skipped 2 non-image file(s)' in result.output
    ds = load(dest)
    assert len(ds) == 6 and ds.image_shape == [3, 8, 8] and ds.label_dim == 3
    order = sorted(images)  # ant/0, ant/1, cat/0, cat/1, dog/0, dog/1
    for i, rel in enumerate(order):
        image, label = ds[i]
        np.testing.assert_array_equal(image, chw(images[rel]))  # pixels identical
        assert int(np.argmax(label)) == ['ant', 'cat', 'dog'].index(rel.split('/')[0])
    meta = json.loads(ds._open_file('dataset.json').read())
    assert meta['class_names'] == ['ant', 'cat', 'dog']
    assert meta['labels'][0] == ['00000/img00000000.png', 0]
    assert leftovers(tmp_path) == []


def test_zip_source_with_dataset_json_round_trip(tmp_path):
    images = [rand((16, 16), seed=i) for i in range(5)]
    src = tmp_path / 'in.zip'
    with zipfile.ZipFile(src, 'w') as zf:
        for i, img in enumerate(images):
            buf = io.BytesIO()
            PIL.Image.fromarray(img).save(buf, format='png')
            zf.writestr(f'x/{i}.png', buf.getvalue())
        zf.writestr('dataset.json', json.dumps({'labels': [[f'x/{i}.png', 4 - i] for i in range(5)]}))
    ok('--source', src, '--dest', tmp_path / 'out')
    ds = load(tmp_path / 'out')
    assert ds.image_shape == [1, 16, 16] and ds.label_dim == 5
    for i in range(5):
        np.testing.assert_array_equal(ds[i][0], chw(images[i]))
        assert int(np.argmax(ds[i][1])) == 4 - i


def _cifar_arrays(n, seed):
    data = np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [(seed + i) % 10 for i in range(n)]
    return data, labels


def _write_cifar_dir(root):
    os.makedirs(root)
    batches = [_cifar_arrays(3, 1), _cifar_arrays(2, 2)]
    for k, (data, labels) in enumerate(batches):
        with open(os.path.join(root, f'data_batch_{k + 1}'), 'wb') as f:
            pickle.dump({'batch_label': 'training batch', 'data': data, 'labels': labels}, f, protocol=2)
    with open(os.path.join(root, 'batches.meta'), 'wb') as f:
        pickle.dump({'label_names': [f'c{i}' for i in range(10)]}, f, protocol=2)
    data = np.concatenate([b[0] for b in batches])
    return data.reshape(-1, 3, 32, 32), sum((b[1] for b in batches), [])


@pytest.mark.parametrize('packed', [False, True])
def test_cifar_pickles(tmp_path, packed):
    root = tmp_path / 'cifar-10-batches-py'
    images, labels = _write_cifar_dir(str(root))
    source = root
    if packed:
        source = tmp_path / 'cifar-10-python.tar.gz'
        with tarfile.open(source, 'w:gz') as tar:
            tar.add(root, arcname='cifar-10-batches-py')
    ok('--source', source, '--dest', tmp_path / 'c.zip')
    ds = load(tmp_path / 'c.zip')
    assert len(ds) == 5 and ds.image_shape == [3, 32, 32]
    for i in range(5):
        np.testing.assert_array_equal(ds[i][0], images[i])
        assert ds.get_details(i).raw_label == labels[i]


def _write_idx(path, array, gz):
    header = struct.pack('>BBBB', 0, 0, 0x08, array.ndim) + struct.pack(f'>{array.ndim}I', *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    with (gzip.open(path, 'wb') if gz else open(path, 'wb')) as f:
        f.write(data)


@pytest.mark.parametrize('gz', [True, False])
def test_idx_files_padded_to_32(tmp_path, gz):
    images = np.random.default_rng(0).integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = np.arange(7) % 3
    ext = '.gz' if gz else ''
    _write_idx(str(tmp_path / f'train-images-idx3-ubyte{ext}'), images, gz)
    _write_idx(str(tmp_path / f'train-labels-idx1-ubyte{ext}'), labels, gz)
    ok('--source', tmp_path / f'train-images-idx3-ubyte{ext}', '--dest', tmp_path / 'a.zip')
    ok('--source', tmp_path, '--dest', tmp_path.parent / f'{tmp_path.name}-b.zip')  # the directory form
    for dest in (tmp_path / 'a.zip', tmp_path.parent / f'{tmp_path.name}-b.zip'):
        ds = load(dest)
        assert len(ds) == 7 and ds.image_shape == [1, 32, 32]
        padded = np.pad(images, [(0, 0), (2, 2), (2, 2)])
        for i in range(7):
            np.testing.assert_array_equal(ds[i][0][0], padded[i])
            assert ds.get_details(i).raw_label == labels[i]


def test_digits_default_32(tmp_path):
    ok('--source', 'digits', '--dest', tmp_path / 'd.zip')
    ds = load(tmp_path / 'd.zip')
    assert len(ds) == 1797 and ds.image_shape == [1, 32, 32] and ds.label_dim == 10
    assert ds[0][0].dtype == np.uint8
    _images, targets = dataset_sources.load_digits_arrays()
    np.testing.assert_array_equal(ds._get_raw_labels(), targets)
    np.testing.assert_array_equal(ds.class_counts(), np.bincount(targets))


def test_digits_16_rgb_and_max_images(tmp_path):
    ok('--source', 'digits:16', '--dest', tmp_path / 'd16', '--channels', 3, '--max-images', 40)
    ds = load(tmp_path / 'd16')
    assert len(ds) == 40 and ds.image_shape == [3, 16, 16]
    image = ds[5][0]
    np.testing.assert_array_equal(image[0], image[1])
    np.testing.assert_array_equal(image[0], image[2])


def test_stacked_digits_channels_are_digits_and_label_names_them(tmp_path):
    ok('--source', 'stacked-digits:300', '--dest', tmp_path / 's.zip')
    ds = load(tmp_path / 's.zip')
    assert len(ds) == 300 and ds.image_shape == [3, 16, 16]
    _images, targets = dataset_sources.load_digits_arrays()
    rng_picks = np.random.default_rng(0).integers(len(targets), size=[300, 3])
    labels = ds._get_raw_labels()
    np.testing.assert_array_equal(labels, targets[rng_picks[:, 0]] * 100 + targets[rng_picks[:, 1]] * 10 + targets[rng_picks[:, 2]])
    assert len(np.unique(labels)) > 200
    single = load_digits_16(tmp_path)
    for ch in range(3):  # Each channel is the picked digit, resized like digits:16.
        np.testing.assert_array_equal(ds[7][0][ch], single[rng_picks[7, ch]])
    fail('--source', 'stacked-digits:0', '--dest', tmp_path / 'bad.zip')


def load_digits_16(tmp_path):
    dest = tmp_path / 'digits16.zip'
    ok('--source', 'digits:16', '--dest', dest)
    ds = load(dest)
    return np.stack([ds[i][0][0] for i in range(len(ds))])


def test_digits_reader_matches_sklearn():
    from sklearn.datasets import load_digits
    images, labels = dataset_sources.load_digits_arrays()
    reference = load_digits()
    np.testing.assert_array_equal(labels, reference.target)
    np.testing.assert_array_equal(images[:, :, :, 0], np.round(reference.images * 255 / 16).astype(np.uint8))


def test_fashion_mnist(tmp_path):
    try:
        source = dataset_sources.open_fashion_mnist('train')
    except dataset_sources.SourceError as err:
        pytest.skip(f'Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): {err}')
    assert source.count == 60000
    ok('--source', 'fashion-mnist', '--dest', tmp_path / 'f.zip', '--max-images', 100)
    ds = load(tmp_path / 'f.zip')
    assert len(ds) == 100 and ds.image_shape == [1, 32, 32]
    first = [item for _k, item in zip(range(100), source)]
    np.testing.assert_array_equal(ds._get_raw_labels(), [label for _name, _image, label in first])
    np.testing.assert_array_equal(ds[7][0][0], first[7][1][:, :, 0])  # 28x28 zero-padded to 32x32
    assert first[7][1][:2].max() == 0 and first[7][1].shape == (32, 32, 1)


def test_fashion_mnist_missing_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(dataset_sources, 'fashion_mnist_search_dirs', lambda: [str(tmp_path)])
    output = fail('--source', 'fashion-mnist', '--dest', tmp_path / 'f.zip')
    assert 'apt-get install dataset-fashion-mnist' in output
    assert not os.path.exists(tmp_path / 'f.zip') and leftovers(tmp_path) == []

# ----------------------------------------------------------------------------
# Options.


def test_channels_conversion(tmp_path):
    rgb = rand((8, 8, 3), seed=3)
    save_png(str(tmp_path / 'src' / 'a.png'), rgb)
    ok('--source', tmp_path / 'src', '--dest', tmp_path / 'g.zip', '--channels', 1)
    ds = ImageFolderDataset(str(tmp_path / 'g.zip'))
    assert ds.image_shape == [1, 8, 8]
    np.testing.assert_array_equal(ds[0][0][0], np.asarray(PIL.Image.fromarray(rgb).convert('L')))


def test_center_crop(tmp_path):
    img = rand((8, 12, 3), seed=4)  # 12 wide, 8 high
    save_png(str(tmp_path / 'src' / 'a.png'), img)
    ok('--source', tmp_path / 'src', '--dest', tmp_path / 'c.zip', '--transform', 'center-crop', '--resolution', '8x8')
    np.testing.assert_array_equal(ImageFolderDataset(str(tmp_path / 'c.zip'))[0][0], chw(img[:, 2:10]))


def test_center_crop_wide_letterboxes(tmp_path):
    img = rand((8, 16, 1), seed=5)[:, :, 0]
    save_png(str(tmp_path / 'src' / 'a.png'), img)
    ok('--source', tmp_path / 'src', '--dest', tmp_path / 'w.zip', '--transform', 'center-crop-wide',
       '--width', 8, '--height', 4, '--resize-filter', 'box')
    out = ImageFolderDataset(str(tmp_path / 'w.zip'))[0][0][0].astype(int)
    assert out.shape == (8, 8)
    assert (out[:2] == 0).all() and (out[6:] == 0).all()
    block_means = img.astype(float).reshape(4, 2, 8, 2).mean(axis=(1, 3))
    assert np.abs(out[2:6] - block_means).max() <= 1


def test_resize_filters_differ_and_box_averages(tmp_path):
    img = rand((16, 16, 3), seed=6)
    save_png(str(tmp_path / 'src' / 'a.png'), img)
    outs = {}
    for name in ('box', 'lanczos'):
        ok('--source', tmp_path / 'src', '--dest', tmp_path / f'{name}.zip', '--resolution', '8x8', '--resize-filter', name)
        outs[name] = ImageFolderDataset(str(tmp_path / f'{name}.zip'))[0][0].astype(int)
    expected = img.astype(float).reshape(8, 2, 8, 2, 3).mean(axis=(1, 3)).transpose(2, 0, 1)
    assert np.abs(outs['box'] - expected).max() <= 1
    assert not np.array_equal(outs['box'], outs['lanczos'])


def test_rgba_is_composited_on_black(tmp_path):
    rgba = rand((4, 4, 4), seed=7)
    save_png(str(tmp_path / 'src' / 'a.png'), rgba)
    ok('--source', tmp_path / 'src', '--dest', tmp_path / 'r.zip')
    out = ImageFolderDataset(str(tmp_path / 'r.zip'))[0][0]
    expected = (rgba[:, :, :3].astype(int) * rgba[:, :, 3:].astype(int) + 127) // 255
    np.testing.assert_array_equal(out, chw(expected.astype(np.uint8)))


def test_overwrite(tmp_path, class_folder):
    src, _images = class_folder
    dest = tmp_path / 'o.zip'
    ok('--source', src, '--dest', dest, '--max-images', 2)
    before = dest.read_bytes()
    output = fail('--source', src, '--dest', dest)
    assert 'already exists' in output and '--overwrite' in output
    assert dest.read_bytes() == before
    ok('--source', src, '--dest', dest, '--overwrite')
    assert len(ImageFolderDataset(str(dest))) == 6 and leftovers(tmp_path) == []
    ok('--source', src, '--dest', tmp_path / 'odir', '--max-images', 1)
    ok('--source', src, '--dest', tmp_path / 'odir', '--overwrite')
    assert len(ImageFolderDataset(str(tmp_path / 'odir'))) == 6 and leftovers(tmp_path) == []

# ----------------------------------------------------------------------------
# Bad input: clear message, nothing written.


def _assert_nothing_written(tmp_path, dest):
    assert not os.path.exists(dest)
    assert leftovers(tmp_path) == []


def test_mixed_sizes(tmp_path):
    save_png(str(tmp_path / 'src' / 'a.png'), rand((8, 8, 3), 1))
    save_png(str(tmp_path / 'src' / 'b.png'), rand((16, 16, 3), 2))
    output = fail('--source', tmp_path / 'src', '--dest', tmp_path / 'o.zip')
    assert 'mixed image sizes' in output and 'b.png' in output and '--resolution' in output
    _assert_nothing_written(tmp_path, tmp_path / 'o.zip')
    ok('--source', tmp_path / 'src', '--dest', tmp_path / 'o.zip', '--resolution', '8x8')


def test_non_square_without_transform(tmp_path):
    save_png(str(tmp_path / 'src' / 'a.png'), rand((8, 16, 3), 1))
    output = fail('--source', tmp_path / 'src', '--dest', tmp_path / 'o')
    assert 'not square' in output and '--transform=center-crop' in output
    _assert_nothing_written(tmp_path, tmp_path / 'o')


def test_non_power_of_two(tmp_path):
    save_png(str(tmp_path / 'src' / 'a.png'), rand((12, 12, 3), 1))
    output = fail('--source', tmp_path / 'src', '--dest', tmp_path / 'o.zip')
    assert 'power of two' in output and '--resolution=16x16' in output
    _assert_nothing_written(tmp_path, tmp_path / 'o.zip')
    assert 'power of two' in fail('--source', tmp_path / 'src', '--dest', tmp_path / 'o.zip', '--resolution', '24x24')
    assert 'not square' in fail('--source', tmp_path / 'src', '--dest', tmp_path / 'o.zip', '--resolution', '16x8')


def test_unreadable_image_is_an_error_and_output_removed(tmp_path):
    for i in range(3):
        save_png(str(tmp_path / 'src' / f'{i}.png'), rand((8, 8, 3), i))
    (tmp_path / 'src' / '9.png').write_bytes(b'garbage, not a png')
    output = fail('--source', tmp_path / 'src', '--dest', tmp_path / 'o.zip')
    assert 'cannot read image' in output and '9.png' in output
    _assert_nothing_written(tmp_path, tmp_path / 'o.zip')


def test_labels_referencing_missing_images(tmp_path):
    save_png(str(tmp_path / 'src' / 'a.png'), rand((8, 8, 3), 1))
    (tmp_path / 'src' / 'dataset.json').write_text(json.dumps({'labels': [['a.png', 0], ['gone.png', 1]]}))
    output = fail('--source', tmp_path / 'src', '--dest', tmp_path / 'o.zip')
    assert 'gone.png' in output and 'not in' in output
    _assert_nothing_written(tmp_path, tmp_path / 'o.zip')


def test_dest_inside_source_folder(tmp_path, class_folder):
    src, _images = class_folder
    output = fail('--source', src, '--dest', src / 'out.zip')
    assert 'inside the source folder' in output
    assert not os.path.exists(src / 'out.zip') and leftovers(src) == []


def test_missing_source(tmp_path):
    output = fail('--source', tmp_path / 'nothing', '--dest', tmp_path / 'o.zip')
    assert 'does not exist' in output
    _assert_nothing_written(tmp_path, tmp_path / 'o.zip')


def test_interrupted_write_leaves_nothing(tmp_path, class_folder, monkeypatch):
    src, _images = class_folder
    calls = []

    def failing_encode(image):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_encode(image)
    real_encode = dataset_tool.encode_png
    monkeypatch.setattr(dataset_tool, 'encode_png', failing_encode)
    for dest in (tmp_path / 'i.zip', tmp_path / 'idir'):
        calls.clear()
        with pytest.raises(KeyboardInterrupt):
            dataset_tool.convert_dataset(str(src), str(dest), log=lambda *a: None)
        _assert_nothing_written(tmp_path, dest)


def test_progress_bar_for_large_conversions_only(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(dataset_tool, 'PROGRESS_MIN_IMAGES', 100)
    dataset_tool.convert_dataset('digits:16', str(tmp_path / 'small.zip'), max_images=50)
    assert 'Converting' not in capsys.readouterr().err
    dataset_tool.convert_dataset('digits:16', str(tmp_path / 'large.zip'), max_images=150)
    err = capsys.readouterr().err
    assert 'Converting' in err and '150/150' in err
