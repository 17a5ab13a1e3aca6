"""Tests for lt_dataset.py: closed-form profile, seeded selection, relabelling, bands, outputs and errors."""

import json
import os
import shutil
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

import dataset_tool
import lt_dataset
from training.dataset import ImageFolderDataset

DIGITS_COUNTS = [183, 141, 109, 84, 65, 50, 39, 30, 23, 18]
DIGITS_RANK_TO_LABEL = [3, 1, 5, 4, 6, 9, 7, 0, 2, 8]


def run_lt(*args):
    return CliRunner().invoke(lt_dataset.main, [str(a) for a in args], catch_exceptions=False)


def ok(*args):
    result = run_lt(*args)
    assert result.exit_code == 0, result.output
    return result


def fail(*args):
    result = run_lt(*args)
    assert result.exit_code != 0, result.output
    return result.output


def read_member(path, name):
    if os.path.isdir(path):
        with open(os.path.join(path, name), 'rb') as f:
            return f.read()
    with zipfile.ZipFile(path) as zf:
        return zf.read(name)


@pytest.fixture(scope='module')
def digits_zip(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('digits') / 'digits16.zip')
    dataset_tool.convert_dataset('digits:16', path, log=lambda *a: None)
    return path


@pytest.fixture
def digits_copy(digits_zip, tmp_path):
    path = str(tmp_path / 'digits16.zip')
    shutil.copyfile(digits_zip, path)
    return path


def make_label_dir(root, per_class):
    """A dataset directory of empty placeholder files with a dataset.json (lt_dataset never decodes images)."""
    labels = []
    for label, count in enumerate(per_class):
        os.makedirs(os.path.join(root, f'c{label}'))
        for i in range(count):
            name = f'c{label}/{i:05d}.png'
            os.close(os.open(os.path.join(root, name), os.O_CREAT | os.O_WRONLY))
            labels.append([name, label])
    with open(os.path.join(root, 'dataset.json'), 'w') as f:
        json.dump({'labels': labels}, f)
    return str(root)


def test_closed_form_profile():
    assert lt_dataset.lt_profile(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert lt_dataset.lt_profile(5000, 10, 50)[-1] == 100
    assert lt_dataset.lt_profile(5000, 10, 200)[-1] == 25
    assert lt_dataset.lt_profile(5000, 10, 100, reverse=True) == lt_dataset.lt_profile(5000, 10, 100)[::-1]
    assert lt_dataset.lt_profile(7, 3, 1) == [7, 7, 7]


def test_synthetic_5000_per_class(tmp_path):
    """The full algorithm on a synthetic 10 x 5000 label file (in memory: 50k placeholder files would be slow)."""
    label_file = tmp_path / 'dataset.json'
    label_file.write_text(json.dumps({'labels': [[f'c{c}/{i:05d}.png', c] for c in range(10) for i in range(5000)]}))
    entries = [tuple(e) for e in json.loads(label_file.read_text())['labels']]
    tails = {}
    for imf in (100, 50, 200):
        meta, files = lt_dataset.build_lt(entries, imf)
        subset = json.loads(files[f'lt_{imf}.json'])
        assert subset['lt'] == meta and set(files) == {f'lt_{imf}.json', f'lt_{imf}_full.json'}
        kept = np.bincount([label for _path, label in subset['labels']], minlength=10)
        assert list(kept) == meta['counts']
        assert len(json.loads(files[f'lt_{imf}_full.json'])['labels']) == 50000
        tails[imf] = meta['counts'][-1]
        if imf == 100:
            assert meta['counts'] == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
            assert meta['rank_to_label'] == list(range(10))  # all tied: ties by label
    assert tails == {100: 50, 50: 100, 200: 25}


def test_small_synthetic_dir_through_cli(tmp_path):
    source = make_label_dir(tmp_path / 'syn', [40] * 10)
    ok('--source', source, '--imf', 4)
    meta = json.loads(read_member(source, 'lt_4.json'))['lt']
    assert meta['counts'] == lt_dataset.lt_profile(40, 10, 4)
    assert meta['counts'] == [40, 34, 29, 25, 21, 18, 15, 13, 11, 10]


def test_digits_imf_10(digits_copy):
    result = ok('--source', digits_copy, '--imf', 10)
    table = [line.split() for line in result.output.splitlines() if line.split() and line.split()[0].isdigit()]
    assert [(int(t[0]), int(t[1]), int(t[3])) for t in table] == list(zip(range(10), DIGITS_RANK_TO_LABEL, DIGITS_COUNTS))
    # The renumbering is said in words, not only in the table's columns.
    note = ', '.join(f'{rank} = label {label}' for rank, label in enumerate(DIGITS_RANK_TO_LABEL))
    assert f'Classes are renumbered by kept count in these files (class id = rank, 0 = head): {note}.' in result.output
    subset = json.loads(read_member(digits_copy, 'lt_10.json'))
    meta = subset['lt']
    assert meta['counts'] == DIGITS_COUNTS and meta['rank_to_label'] == DIGITS_RANK_TO_LABEL
    assert meta['full'] == 'lt_10_full.json' and meta['imf'] == 10 and meta['seed'] == 0
    # every kept image carries the rank of its original class
    original = dict(map(tuple, json.loads(read_member(digits_copy, 'dataset.json'))['labels']))
    for path, rank in subset['labels']:
        assert original[path] == DIGITS_RANK_TO_LABEL[rank]
    # bands: each class in exactly one band
    ranks = sorted(r for band in meta['bands'].values() for r in band)
    assert ranks == list(range(10))
    assert meta['bands'] == {'many': [0, 1, 2], 'medium': [3, 4, 5], 'few': [6, 7, 8, 9]}
    full = json.loads(read_member(digits_copy, 'lt_10_full.json'))
    assert len(full['labels']) == 1797
    assert all(DIGITS_RANK_TO_LABEL[rank] == original[path] for path, rank in full['labels'])
    # the loader's label_file subset (train.py --subset-labels)
    ds = ImageFolderDataset(digits_copy, use_labels=True, label_file='lt_10.json')
    assert len(ds) == sum(DIGITS_COUNTS)
    assert list(ds.class_counts()) == DIGITS_COUNTS


def test_same_seed_same_bytes_other_seed_other_files(digits_copy):
    ok('--source', digits_copy, '--imf', 10)
    first = read_member(digits_copy, 'lt_10.json')
    ok('--source', digits_copy, '--imf', 10, '--overwrite')
    assert read_member(digits_copy, 'lt_10.json') == first
    ok('--source', digits_copy, '--imf', 10, '--overwrite', '--seed', 1)
    other = json.loads(read_member(digits_copy, 'lt_10.json'))
    assert other['lt']['counts'] == DIGITS_COUNTS
    assert {p for p, _ in other['labels']} != {p for p, _ in json.loads(first)['labels']}


def test_reverse_and_orders(tmp_path):
    source = make_label_dir(tmp_path / 'r', [30, 40, 50, 20])  # labels 0..3
    meta = lt_dataset.make_lt(source, 4, bands='ranks:1,3', log=lambda *a: None)  # count order: 2, 1, 0, 3
    assert meta['rank_to_label'] == [2, 1, 0, 3] and meta['counts'] == [50, 31, 19, 12]
    assert not meta['reverse'] and meta['available'] == [50, 40, 30, 20]
    meta = lt_dataset.make_lt(source, 4, reverse=True, bands='ranks:1,3', log=lambda *a: None)
    # targets before relabelling: label 2 -> 12, 1 -> 19, 0 -> 31 (cap 30), 3 -> 50 (cap 20)
    assert meta['rank_to_label'] == [0, 3, 1, 2] and meta['counts'] == [30, 20, 19, 12]
    assert os.path.exists(os.path.join(source, 'lt_4_reverse.json'))
    assert os.path.exists(os.path.join(source, 'lt_4_reverse_full.json'))
    meta = lt_dataset.make_lt(source, 2, order='label-desc', bands='ranks:1,2', log=lambda *a: None)
    assert meta['rank_to_label'] == [3, 2, 1, 0] and meta['counts'] == [20, 15, 12, 10]
    meta = lt_dataset.make_lt(source, 2, order='seed', seed=5, bands='ranks:1,2', overwrite=True, log=lambda *a: None)
    available = [30, 40, 50, 20]
    ordered = [int(i) for i in np.random.default_rng(5).permutation(4)]
    kept = [min(t, available[label]) for label, t in zip(ordered, lt_dataset.lt_profile(available[ordered[0]], 4, 2))]
    expected = sorted(range(4), key=lambda i: (-kept[i], i))
    assert meta['rank_to_label'] == [ordered[i] for i in expected]
    assert meta['counts'] == [kept[i] for i in expected]


def test_band_rules(tmp_path):
    counts = [183, 141, 109, 84, 65, 50, 39, 30, 23, 18]
    assert lt_dataset.make_bands(counts, 'counts:100,20')[0] == {'many': [0, 1, 2], 'medium': [3, 4, 5, 6, 7, 8],
                                                                 'few': [9]}
    assert lt_dataset.make_bands(counts, 'ranks:2,5')[0]['medium'] == [2, 3, 4]
    bands, rule = lt_dataset.make_bands(list(range(100, 0, -1)), dname='cifar100')
    assert bands['few'][0] == 70 and rule == 'ranks:35,70'
    assert lt_dataset.make_bands([5, 4, 3, 2, 1], dname='lsun')[0] == {'many': [0, 1, 2], 'medium': [3], 'few': [4]}
    with pytest.raises(lt_dataset.LTError, match='no default shot bands for 4 classes'):
        lt_dataset.make_bands([4, 3, 2, 1])
    with pytest.raises(lt_dataset.LTError, match='expects 100 classes'):
        lt_dataset.make_bands(counts, dname='cifar100')
    with pytest.raises(lt_dataset.LTError, match='is empty'):
        lt_dataset.make_bands(counts, 'counts:500,10')
    with pytest.raises(lt_dataset.LTError, match='need 0 < A < B'):
        lt_dataset.make_bands(counts, 'ranks:0,5')


def test_shot_labels_and_fn_alias(tmp_path):
    source = make_label_dir(tmp_path / 's', [20] * 10)
    ok('--fn', os.path.join(source, 'dataset.json'), '--imf', 2, '--shot-labels', '--dname', 'cifar10')
    meta = json.loads(read_member(source, 'lt_2.json'))['lt']
    few = json.loads(read_member(source, 'class_6_9.json'))['labels']
    assert len(few) == 4 * 20 and {rank for _p, rank in few} == {6, 7, 8, 9}
    assert len(json.loads(read_member(source, 'class_0_2.json'))['labels']) == 60
    assert meta['counts'][0] == 20 and meta['counts'][-1] == 10

# ----------------------------------------------------------------------------
# Errors.


def test_imf_below_one(digits_copy):
    before = open(digits_copy, 'rb').read()
    output = fail('--source', digits_copy, '--imf', 0.5)
    assert '--imf' in output and '>= 1' in output
    assert open(digits_copy, 'rb').read() == before


def test_class_with_zero_images(tmp_path):
    source = make_label_dir(tmp_path / 'z', [5] * 10)
    output = fail('--source', source, '--imf', 10)
    assert 'would keep 0 images' in output and 'lower --imf' in output
    assert sorted(os.listdir(source)) == sorted(['dataset.json'] + [f'c{i}' for i in range(10)])


def test_no_labels(tmp_path):
    source = make_label_dir(tmp_path / 'n', [3, 3])
    with open(os.path.join(source, 'dataset.json'), 'w') as f:
        json.dump({'labels': None}, f)
    assert 'needs class labels' in fail('--source', source, '--imf', 2)


def test_label_file_referencing_missing_images(tmp_path):
    source = make_label_dir(tmp_path / 'm', [3, 3])
    os.remove(os.path.join(source, 'c1/00002.png'))
    output = fail('--source', source, '--imf', 2)
    assert "c1/00002.png" in output and 'not in' in output


def test_existing_output_needs_overwrite(digits_copy):
    ok('--source', digits_copy, '--imf', 10)
    before = open(digits_copy, 'rb').read()
    output = fail('--source', digits_copy, '--imf', 10, '--seed', 3)
    assert 'already exists' in output and '--overwrite' in output
    assert open(digits_copy, 'rb').read() == before


def test_interrupted_write_leaves_nothing(tmp_path, digits_copy, monkeypatch):
    source = make_label_dir(tmp_path / 'i', [20] * 10)
    real_replace = os.replace
    calls = []

    def failing_replace(a, b):
        calls.append(b)
        if len(calls) == 2:
            raise OSError('disk full (simulated)')
        return real_replace(a, b)
    monkeypatch.setattr(lt_dataset.os, 'replace', failing_replace)
    with pytest.raises(OSError, match='simulated'):
        lt_dataset.make_lt(source, 2, shot_labels=True, log=lambda *a: None)
    assert sorted(os.listdir(source)) == sorted(['dataset.json'] + [f'c{i}' for i in range(10)])

    before = open(digits_copy, 'rb').read()
    def failing_writestr(*args, **kwargs):
        raise OSError('simulated write failure')
    monkeypatch.setattr(lt_dataset.zipfile.ZipFile, 'writestr', failing_writestr)
    with pytest.raises(OSError, match='simulated'):
        lt_dataset.make_lt(digits_copy, 10, log=lambda *a: None)
    assert open(digits_copy, 'rb').read() == before
    assert [n for n in os.listdir(os.path.dirname(digits_copy)) if '.tmp-' in n] == []


def test_cli_says_what_it_wrote_and_where(tmp_path):
    source = make_label_dir(tmp_path / 'syn', [20] * 10)
    out = ok('--source', source, '--imf', 2).output
    assert f'Wrote into {source}:' in out
    assert 'lt_2.json' in out and 'long-tailed subset' in out and 'lt_2_full.json' in out
    assert '--subset=lt_2.json' in out
