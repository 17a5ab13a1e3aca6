"""Make a long-tailed subset of a labelled dataset, with many/medium/few shot bands.

\b
  python lt_dataset.py --source=datasets/digits32.zip --imf=10
  python lt_dataset.py --fn=datasets/cifar10/dataset.json --imf=100 --dname=cifar10 --shot-labels

Algorithm (exponential profile, as in LDAM/UTLO):

\b
 1. count the images of each class in the labels file ({"labels": [[path, label], ...]});
 2. order the classes: `count` (descending count, ties by label), `label-desc`
    (highest label first, UTLO's CIFAR/LSUN order) or `seed` (seeded permutation);
    img_max = available count of rank 0;
 3. n_i = min(floor(img_max * imf^(-i/(C-1)) + 1e-9), available_i); with --reverse
    the exponent is (C-1-i)/(C-1); imf < 1 or any n_i = 0 is an error;
 4. per class (classes visited in ascending original label, one
    numpy.random.default_rng(seed) for all), sort the paths, permute, keep the first n_i;
 5. relabel classes by kept count, descending (0 = head; ties keep the order of step 2).

Outputs, written into the source dataset (directory: next to dataset.json; ZIP: added
members, through a temporary copy renamed over the original):

\b
  lt_<imf>[_reverse].json       kept images with rank labels, plus an "lt" section
  lt_<imf>[_reverse]_full.json  all images with rank labels (reference set for metrics)
  class_<a>_<b>.json            with --shot-labels: the full-set images of each band (UTLO)

Every output also records "num_classes" (C), so that each is a valid label file on its own
(train.py --subset=FILE checks class ids against it). Input labels go through the same
validator as train.py's (dnnlib.dataset_format.validate_labels): class ids 0..C-1.

The outputs form one set, replaced as a whole so that a kill leaves either the old set or
the new one. ZIP source: one rename of the rebuilt ZIP. Directory source: each file is
written to a temporary name (.NAME.tmp-HOST-PID-XXXXXXXX, flushed to disk), files being
replaced are kept as hard-linked backups, then a commit record
.lt-commit-HOST-PID-XXXXXXXX.json (written atomically) lists the set: that rename is the
commit. The files are then renamed into place and the record removed. While a record
exists, train.py, calc_metrics.py and lt_dataset.py refuse the files it names (they may
mix the two sets); the next lt_dataset.py run on the dataset completes a killed commit
(or undoes one that was being rolled back after an error) before it does anything else,
and removes temporary files of killed runs. Files identical to what would be written are
left alone, so rerunning a command is never refused because some of its files exist.

The "lt" section (ignored by stylegan2-ada readers) holds source, label_file, imf, seed,
order, reverse, num_classes, rank_to_label, class_names (if known), counts, available,
bands ({"many": [ranks], "medium": [...], "few": [...]}), band_rule, subset and full.

Bands: --bands ranks:A,B (many < A <= medium < B <= few) or counts:H,L (many n > H,
few n < L); else from --dname (cifar10/digits/fashion-mnist 0-2/3-5/6-9, cifar100
0-34/35-69/70-99, flowers 0-19/20-49/50-101, animals 0-4/5-9/10-19, lsun 0-2/3/4); else
any 10-class dataset gets 0-2/3-5/6-9 and other class counts are an error.
"""

import json
import math
import os
import re
import shutil
import zipfile

import click
import numpy as np

from dnnlib.dataset_format import (
    COMMIT_RE,
    DatasetError,
    DatasetFiles,
    commit_record_path,
    crash_point,
    fsync_directory,
    label_class_count,
    label_entries,
    pending_commits,
    read_label_file,
    remove_stale_temps,
    temp_path,
    validate_labels,
    writer_alive,
)

# name -> (number of classes, first medium rank, first few rank)
BAND_TABLE = {
    'cifar10': (10, 3, 6), 'digits': (10, 3, 6), 'fashion-mnist': (10, 3, 6), 'mnist': (10, 3, 6),
    'cifar100': (100, 35, 70), 'flowers': (102, 20, 50), 'animals': (20, 5, 10), 'lsun': (5, 3, 4),
}
BAND_NAMES = ('many', 'medium', 'few')


class LTError(Exception):
    """Bad input for lt_dataset.py; the message says what to change."""

# ----------------------------------------------------------------------------
# The profile and the selection (pure functions).


def format_imf(imf):
    return str(int(imf)) if float(imf).is_integer() else repr(float(imf))


def lt_profile(img_max, num_classes, imf, reverse=False):
    """Target count per rank: floor(img_max * imf^(-e_i) + 1e-9), e_i = i/(C-1) (reversed: (C-1-i)/(C-1))."""
    if not imf >= 1 or math.isinf(imf):
        raise LTError(f'--imf must be a finite number >= 1 (rho = n_max / n_min), got {imf}')
    if num_classes < 2:
        raise LTError(f'a long-tailed subset needs at least 2 classes, found {num_classes}')
    last = num_classes - 1
    targets = []
    for i in range(num_classes):
        exponent = (last - i) / last if reverse else i / last
        targets.append(int(math.floor(img_max * imf ** (-exponent) + 1e-9)))
    return targets


def class_order(available, order, seed):
    """Original labels in rank order before relabelling (step 2)."""
    labels = sorted(available)
    if order == 'count':
        return sorted(labels, key=lambda label: (-available[label], label))
    if order == 'label-desc':
        return sorted(labels, reverse=True)
    if order == 'seed':
        return [labels[i] for i in np.random.default_rng(seed).permutation(len(labels))]
    raise LTError(f'unknown --order {order!r}; use count, label-desc or seed')


def plan_counts(available, imf, order='count', reverse=False, seed=0):
    """Return (rank_to_label, kept count per original label) for available = {label: count}."""
    ordered = class_order(available, order, seed)
    targets = lt_profile(available[ordered[0]], len(ordered), imf, reverse)
    kept = {label: min(target, available[label]) for label, target in zip(ordered, targets)}
    for i, label in enumerate(ordered):
        if kept[label] == 0:
            last = len(ordered) - 1
            exponent = (last - i) / last if reverse else i / last
            raise LTError(f'class {label} (rank {i} in --order {order}) would keep 0 images: img_max {targets[0]} x '
                          f'imf^-{exponent:.3f} = {targets[0] * imf ** -exponent:.3f} (available {available[label]}); '
                          'lower --imf or use a larger dataset')
    position = {label: i for i, label in enumerate(ordered)}
    rank_to_label = sorted(ordered, key=lambda label: (-kept[label], position[label]))
    return rank_to_label, kept


def select_paths(paths_by_label, kept, seed):
    """Seeded selection of kept[label] paths per class (step 4); returns {label: [paths]}."""
    rng = np.random.default_rng(seed)
    chosen = {}
    for label in sorted(paths_by_label):
        paths = sorted(paths_by_label[label])
        perm = rng.permutation(len(paths))
        chosen[label] = [paths[j] for j in perm[:kept[label]]]
    return chosen


def _two_numbers(text, option):
    parts = text.split(',')
    try:
        if len(parts) != 2:
            raise ValueError
        return int(parts[0]), int(parts[1])
    except ValueError:
        raise LTError(f'--bands {option}:{text}: expected two integers, e.g. {option}:3,6') from None


def make_bands(counts, bands=None, dname=None):
    """Shot bands as ({'many': [ranks], 'medium': [...], 'few': [...]}, rule text) for counts per rank."""
    num = len(counts)
    if bands:
        kind, _, values = bands.partition(':')
        if kind == 'ranks':
            first_medium, first_few = _two_numbers(values, kind)
            if not 0 < first_medium < first_few < num:
                raise LTError(f'--bands ranks:{values}: need 0 < A < B < {num} (number of classes) so that every '
                              'band has a class')
            rank_band = [0 if r < first_medium else 1 if r < first_few else 2 for r in range(num)]
        elif kind == 'counts':
            high, low = _two_numbers(values, kind)
            if low > high + 1:
                raise LTError(f'--bands counts:{values}: need L <= H + 1 (many: n > H, few: n < L)')
            rank_band = [0 if n > high else 2 if n < low else 1 for n in counts]
        else:
            raise LTError(f'--bands {bands}: use ranks:A,B or counts:H,L')
        rule = bands
    else:
        key = (dname or '').lower().replace('_', '-')
        key = {'fmnist': 'fashion-mnist', 'fashionmnist': 'fashion-mnist'}.get(key, key)
        if key in BAND_TABLE:
            expected, first_medium, first_few = BAND_TABLE[key]
            if expected != num:
                raise LTError(f'--dname {dname} expects {expected} classes but the labels have {num}; '
                              'pass --bands ranks:A,B or counts:H,L')
        elif num == 10:
            first_medium, first_few = 3, 6
        else:
            raise LTError(f'no default shot bands for {num} classes; pass --bands ranks:A,B or counts:H,L, or --dname '
                          f'one of {", ".join(sorted(BAND_TABLE))}')
        rank_band = [0 if r < first_medium else 1 if r < first_few else 2 for r in range(num)]
        rule = f'ranks:{first_medium},{first_few}'
    result = {name: [r for r in range(num) if rank_band[r] == b] for b, name in enumerate(BAND_NAMES)}
    for name, ranks in result.items():
        if not ranks:
            raise LTError(f'shot band "{name}" is empty with {rule} (counts per rank: {list(counts)}); choose other --bands')
    return result, rule

# ----------------------------------------------------------------------------
# Reading the source.


class SourceDataset(DatasetFiles):
    """A dataset directory or ZIP given as --source (dnnlib.dataset_format), with lt_dataset.py's errors."""

    def __init__(self, path):
        try:
            super().__init__(path)
            if self.is_zip:
                self.names()  # Parse the directory now: a broken ZIP is an error before anything is computed.
        except (DatasetError, FileNotFoundError) as err:
            raise LTError(f'--source: {err}') from err


def load_labels(source, label_file):
    """Return (description, [(path, int label)], class names or None) from the label file."""
    try:
        if label_file is None and not source.has('dataset.json'):  # Never a dataset.json of the working directory.
            raise FileNotFoundError('dataset.json')
        obj, desc, _base_dir = read_label_file(source, label_file or 'dataset.json')
    except FileNotFoundError:
        raise LTError(f'label file {label_file or "dataset.json"} not found on disk or in {source.path}; pass '
                      '--label-file or build the dataset with labels (dataset_tool.py)') from None
    except DatasetError as err:
        raise LTError(str(err)) from err
    if isinstance(obj, dict) and obj.get('labels') is None:
        raise LTError(f'{desc} has no labels ("labels" missing or null); lt_dataset.py needs class labels')
    if desc == source.describe('dataset.json'):
        fix = f'Renumber them: python dataset_tool.py --source={source.path} --dest=<new.zip> --remap-labels'
    else:
        fix = None  # The validator's default: renumber them in the file.
    try:
        mapping = label_entries(obj, desc)
        paths = list(mapping)
        labels = validate_labels([mapping[p] for p in paths], desc, paths, label_class_count(obj, desc), fix=fix)
    except DatasetError as err:
        raise LTError(str(err)) from None
    if not paths:
        raise LTError(f'{desc} lists no images')
    if labels.dtype != np.int64:
        raise LTError(f'{desc} has float-vector labels (e.g. {mapping[paths[0]]!r} for {paths[0]}); lt_dataset.py '
                      'needs integer class ids')
    missing = [p for p in paths if not source.has(p)]
    if missing:
        raise LTError(f'{desc} references {len(missing)} image(s) that are not in {source.path}, e.g. {missing[0]}; '
                      'use the label file that belongs to this dataset')
    names = obj.get('class_names')
    return desc, list(zip(paths, (int(x) for x in labels))), names if isinstance(names, list) else None

# ----------------------------------------------------------------------------
# Writing: the set of outputs is replaced as a whole (see the module docstring).


def _dumps(obj):
    return (json.dumps(obj, separators=(',', ':')) + '\n').encode('utf-8')


def _write_synced(path, data):
    with open(path, 'xb') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_record(path, record):
    """Write a commit record atomically (temporary name, flush, rename): its rename is the commit."""
    tmp = temp_path(path)
    try:
        _write_synced(tmp, _dumps(record))
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.remove(tmp)
        raise
    fsync_directory(os.path.dirname(path))


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:  # File systems without hard links.
        shutil.copy2(src, dst)


def _roll_forward(directory, items):
    """Rename every staged file into place (those still staged), then drop the backups."""
    for k, item in enumerate(items):
        tmp = os.path.join(directory, item['temp'])
        if os.path.lexists(tmp):
            os.replace(tmp, os.path.join(directory, item['name']))
        if k == 0:
            crash_point('lt_dataset:renamed-one')
    for item in items:
        if item.get('backup') and os.path.lexists(os.path.join(directory, item['backup'])):
            os.remove(os.path.join(directory, item['backup']))


def _roll_back(directory, items):
    """Put the old set back: restore the backups, remove new files that had no predecessor and staged files."""
    for item in items:
        final, tmp = os.path.join(directory, item['name']), os.path.join(directory, item['temp'])
        backup = os.path.join(directory, item['backup']) if item.get('backup') else None
        if backup is not None and os.path.lexists(backup):
            os.replace(backup, final)
            if os.path.lexists(backup):  # rename() of a hard link onto its own file does nothing.
                os.remove(backup)
        elif not item['existed'] and not os.path.lexists(tmp) and os.path.lexists(final):
            os.remove(final)  # Renamed into place before the error; there was no old file.
        if os.path.lexists(tmp):
            os.remove(tmp)


def write_into_dir(directory, files, overwrite, command=None):
    """Replace the set `files` ({name: bytes}) in `directory` through a commit record (module docstring)."""
    items, record_path = [], None
    try:
        for name, data in files.items():
            final = os.path.join(directory, name)
            tmp = temp_path(final)
            item = dict(name=name, temp=os.path.basename(tmp), backup=None, existed=os.path.lexists(final))
            items.append(item)
            _write_synced(tmp, data)
            if item['existed']:
                if not overwrite:
                    raise LTError(f'{final} appeared while writing; nothing was written')
                backup = temp_path(final, role='bak')
                _link_or_copy(final, backup)
                item['backup'] = os.path.basename(backup)
        crash_point('lt_dataset:staged')
        record_path = commit_record_path(directory)
        _write_record(record_path, dict(mode='forward', command=command, files=items))
    except BaseException:
        for item in items:
            for key in ('temp', 'backup'):
                if item.get(key) and os.path.lexists(os.path.join(directory, item[key])):
                    os.remove(os.path.join(directory, item[key]))
        raise
    crash_point('lt_dataset:committed')
    try:
        _roll_forward(directory, items)
    except BaseException:
        try:  # Undo: the record says so first, so that a kill during the undo is undone by the next run.
            _write_record(record_path, dict(mode='back', command=command, files=items))
            _roll_back(directory, items)
            os.remove(record_path)
        except OSError:
            pass  # The record stays; the next lt_dataset.py run finishes what it says.
        raise
    os.remove(record_path)
    fsync_directory(directory)


def _valid_record(record):
    """The record's items when every name is a plain file name of this directory (a tampered record must not make
    recovery rename files elsewhere), else None."""
    if not isinstance(record, dict) or record.get('mode') not in ('forward', 'back'):
        return None
    items = record.get('files')
    plain = re.compile(r'^[^/\\]+$')
    for item in items if isinstance(items, list) else [None]:
        if not isinstance(item, dict) or not isinstance(item.get('name'), str) or not plain.match(item['name']) \
                or item['name'] in ('.', '..') or not isinstance(item.get('existed'), bool):
            return None
        for key in ('temp', 'backup'):
            value = item.get(key)
            if (key == 'temp' or value is not None) and not (isinstance(value, str) and plain.match(value)
                                                            and value.startswith(f'.{item["name"]}.tmp-')):
                return None
    return items


def recover_interrupted_writes(directory, log=print):
    """Complete (or undo, if it was being undone) every commit of a killed lt_dataset.py run in `directory`."""
    for path, record in pending_commits(directory):
        match = COMMIT_RE.match(os.path.basename(path))
        host, pid = match.group('host'), match.group('pid')
        if writer_alive(host, pid):
            raise LTError(f'another lt_dataset.py (pid {pid} on host {host}) is replacing label files in {directory} '
                          f'(commit record {os.path.basename(path)}); wait until it ends and run this again (if it '
                          f'was killed on another machine, run lt_dataset.py on {host} to complete its set)')
        items = _valid_record(record)
        if items is None:
            raise LTError(f'commit record {path} cannot be read (damaged, or not written by lt_dataset.py), so the '
                          'label files it covered may mix two sets; remove it and rewrite those files with '
                          'lt_dataset.py --overwrite')
        names = ', '.join(item['name'] for item in items)
        if record['mode'] == 'forward':
            _roll_forward(directory, items)
            log(f'Completed an interrupted write of {names} in {directory}')
        else:
            _roll_back(directory, items)
            log(f'Undid an interrupted write of {names} in {directory}: the previous files are back')
        os.remove(path)
        fsync_directory(directory)


def write_into_zip(zip_path, files, overwrite, names):
    """Add `files` to the ZIP through a temporary copy renamed over it; `names` = its current members."""
    replaced = sorted(n for n in names if n in files)
    if replaced and not overwrite:
        raise LTError(f'{zip_path} already holds {replaced[0]}; pass --overwrite')
    tmp = temp_path(zip_path)
    try:
        if not replaced:
            shutil.copyfile(zip_path, tmp)
            with zipfile.ZipFile(tmp, 'a') as zout:
                _add_files(zout, files)
        else:
            with zipfile.ZipFile(zip_path) as zin, zipfile.ZipFile(tmp, 'x') as zout:
                for info in zin.infolist():
                    if info.filename in files:
                        continue
                    copy = zipfile.ZipInfo(info.filename, info.date_time)
                    copy.compress_type, copy.external_attr = info.compress_type, info.external_attr
                    with zin.open(info) as src, zout.open(copy, 'w') as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                _add_files(zout, files)
        shutil.copymode(zip_path, tmp)
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        crash_point('lt_dataset:zip-written')
        os.replace(tmp, zip_path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_directory(os.path.dirname(os.path.abspath(zip_path)))


def _add_files(zout, files):
    for name, data in files.items():
        zout.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)

# ----------------------------------------------------------------------------


def make_lt(source, imf, label_file=None, seed=0, order='count', reverse=False, dname=None, bands=None,
            shot_labels=False, overwrite=False, log=print):
    """Build and write the long-tailed label files; returns the 'lt' metadata dict."""
    if not imf >= 1:
        raise LTError(f'--imf must be >= 1 (rho = n_max / n_min), got {imf}')
    src = SourceDataset(source)
    try:
        if src.is_zip:  # Temporary copies of the ZIP left by killed runs.
            remove_stale_temps(os.path.dirname(os.path.abspath(src.path)), log=log)
        else:  # A killed commit first (its record names the temporary files it needs), then the leftovers.
            recover_interrupted_writes(src.path, log=log)
            remove_stale_temps(src.path, log=log)
        command = ' '.join(['python lt_dataset.py', f'--source={src.path}', f'--imf={format_imf(imf)}']
                           + [f'--{k}={v}' for k, v in [('label-file', label_file), ('seed', seed or None),
                                                        ('order', None if order == 'count' else order),
                                                        ('dname', dname), ('bands', bands)] if v is not None]
                           + [f for f, on in [('--reverse', reverse), ('--shot-labels', shot_labels),
                                              ('--overwrite', overwrite)] if on])
        return _make_lt(src, imf, label_file, seed, order, reverse, dname, bands, shot_labels, overwrite, log, command)
    finally:
        src.close()


def _make_lt(src, imf, label_file, seed, order, reverse, dname, bands, shot_labels, overwrite, log, command):
    desc, entries, class_names = load_labels(src, label_file)
    meta, files = build_lt(entries, imf, seed=seed, order=order, reverse=reverse, dname=dname, bands=bands,
                           shot_labels=shot_labels, class_names=class_names, source=os.path.abspath(src.path),
                           label_file=desc)
    # Files already there with exactly these bytes are left alone (a rerun, or a set that lost a file).
    unchanged = {name for name, data in files.items() if src.has(name) and src.read(name) == data}
    changed = {name: data for name, data in files.items() if name not in unchanged}
    existing = [name for name in changed if src.has(name)]
    if existing and not overwrite:
        raise LTError(f'{existing[0]} already exists in {src.path} with other contents; pass --overwrite to replace it')
    _print_table(log, src.path, meta, sum(meta['counts']), sum(meta['available']))
    if changed and src.is_zip:
        src.close()
        write_into_zip(src.path, changed, overwrite, src.names())
    elif changed:
        write_into_dir(src.path, changed, overwrite, command)
    kept, full = sum(meta['counts']), sum(meta['available'])
    log(f'Wrote into {src.path}:' if changed else f'Nothing to write: {src.path} already holds these files:')
    for name in files:
        what = {meta['subset']: f'the long-tailed subset ({kept} of {full} images)',
                meta['full']: f'all {full} images with shot bands (reference set for metrics)'}.get(name, 'one shot band')
        log(f'  {name:<24s} {what}' + (' (unchanged)' if name in unchanged and changed else ''))
    log(f'Train on the subset with: python train.py --data={src.path} --cond=1 --subset={meta["subset"]} ...')
    return meta


def build_lt(entries, imf, seed=0, order='count', reverse=False, dname=None, bands=None, shot_labels=False,
             class_names=None, source=None, label_file=None):
    """The whole algorithm on [(path, label)] in memory; returns (lt metadata, {output name: JSON bytes})."""
    paths_by_label = {}
    for path, label in entries:
        paths_by_label.setdefault(label, []).append(path)
    available = {label: len(paths) for label, paths in paths_by_label.items()}
    rank_to_label, kept = plan_counts(available, imf, order, reverse, seed)
    label_to_rank = {label: rank for rank, label in enumerate(rank_to_label)}
    counts = [kept[label] for label in rank_to_label]
    band_ranks, rule = make_bands(counts, bands, dname)

    stem = f'lt_{format_imf(imf)}' + ('_reverse' if reverse else '')
    meta = {
        'source': source, 'label_file': label_file, 'imf': float(imf), 'seed': int(seed), 'order': order,
        'reverse': bool(reverse), 'num_classes': len(rank_to_label), 'rank_to_label': [int(x) for x in rank_to_label],
    }
    if class_names is not None and all(0 <= label < len(class_names) for label in rank_to_label):
        meta['class_names'] = [class_names[label] for label in rank_to_label]
    meta.update(counts=counts, available=[available[label] for label in rank_to_label], bands=band_ranks,
                band_rule=rule, subset=f'{stem}.json', full=f'{stem}_full.json')

    chosen = select_paths(paths_by_label, kept, seed)
    subset = sorted((path, label_to_rank[label]) for label, paths in chosen.items() for path in paths)
    full = sorted((path, label_to_rank[label]) for path, label in entries)
    num = len(rank_to_label)  # Declared in every file: a band file's ranks alone (6..9) do not say C = 10.
    files = {
        meta['subset']: _dumps({'labels': [list(e) for e in subset], 'num_classes': num, 'lt': meta}),
        meta['full']: _dumps({'labels': [list(e) for e in full], 'num_classes': num, 'lt': meta}),
    }
    if shot_labels:
        for ranks in band_ranks.values():
            members = set(ranks)
            files[f'class_{ranks[0]}_{ranks[-1]}.json'] = _dumps({'labels': [list(e) for e in full if e[1] in members],
                                                                  'num_classes': num})
    return meta, files


def _print_table(log, path, meta, kept_total, full_total):
    log(f'{path}: imf {format_imf(meta["imf"])}, seed {meta["seed"]}, order {meta["order"]}'
        f'{", reverse" if meta["reverse"] else ""}: kept {kept_total} of {full_total} images')
    band_of = {rank: band for band, ranks in meta['bands'].items() for rank in ranks}
    names = meta.get('class_names')
    log(f'{"rank":>4} {"label":>5} {"available":>9} {"kept":>6}  band' + ('    name' if names else ''))
    for rank, label in enumerate(meta['rank_to_label']):
        line = f'{rank:>4} {label:>5} {meta["available"][rank]:>9} {meta["counts"][rank]:>6}  {band_of[rank]:<6}'
        log(line + (f'  {names[rank]}' if names else ''))
    log(f'bands ({meta["band_rule"]}): ' + ', '.join(f'{band} {ranks[0]}-{ranks[-1]}' for band, ranks in meta['bands'].items()))
    log(renumbering_note(meta))


def renumbering_note(meta):
    """One line that says how the written files number the classes (rank = position by kept count)."""
    pairs = [(rank, label) for rank, label in enumerate(meta['rank_to_label'])]
    if all(rank == label for rank, label in pairs):
        return 'Class ids are unchanged (the head is already class 0).'
    shown = ', '.join(f'{rank} = label {label}' for rank, label in pairs[:10]) + (', ...' if len(pairs) > 10 else '')
    return (f'Classes are renumbered by kept count in these files (class id = rank, 0 = head): {shown}.\n'
            'Grids, per-class metrics and --class use the new ids; "rank_to_label" in the files maps them back.')


@click.command(help=__doc__)
@click.option('--source', metavar='DIR|ZIP', help='Dataset made by dataset_tool.py')
@click.option('--fn', metavar='DIR/dataset.json', help="UTLO's spelling: the label file inside a dataset directory")
@click.option('--label-file', metavar='JSON', help='Labels to subsample (path, or member of the source)  [default: dataset.json]')
@click.option('--imf', type=float, required=True, help='Imbalance factor rho = n_max / n_min (>= 1)')
@click.option('--seed', type=click.IntRange(min=0), default=0, show_default=True, help='Selection seed')
@click.option('--order', type=click.Choice(['count', 'label-desc', 'seed']), default='count', show_default=True,
              help='Which classes become the head')
@click.option('--reverse', is_flag=True, help='Reverse the profile (the head becomes the tail before relabelling)')
@click.option('--dname', metavar='NAME', help='Dataset name for the shot-band table (cifar10, cifar100, flowers, animals, lsun, digits, ...)')
@click.option('--bands', metavar='ranks:A,B|counts:H,L', help='Shot bands: by rank or by kept count')
@click.option('--shot-labels', is_flag=True, help='Also write UTLO-style class_<a>_<b>.json per band')
@click.option('--overwrite', is_flag=True, help='Replace existing output files')
def main(source, fn, label_file, imf, seed, order, reverse, dname, bands, shot_labels, overwrite):
    if fn is not None:
        if source is not None or label_file is not None:
            raise click.UsageError('--fn replaces --source and --label-file; pass either --fn or --source')
        source, label_file = os.path.dirname(os.path.abspath(os.path.expanduser(fn))), fn
    if source is None:
        raise click.UsageError('pass --source=DIR|ZIP (or --fn=DIR/dataset.json)')
    if not math.isfinite(imf):
        raise click.BadParameter(f'{imf} is not a finite number; the imbalance factor rho = n_max / n_min must be a '
                                 'number >= 1 (1 = balanced, 100 = CIFAR-10-LT)', param_hint='--imf')
    if not imf >= 1:
        raise click.BadParameter(f'{imf} is below 1; the imbalance factor rho = n_max / n_min must be >= 1 '
                                 '(1 = balanced, 100 = CIFAR-10-LT)', param_hint='--imf')
    try:
        make_lt(source, imf, label_file=label_file, seed=seed, order=order, reverse=reverse, dname=dname, bands=bands,
                shot_labels=shot_labels, overwrite=overwrite)
    except LTError as err:
        raise click.ClickException(str(err)) from err
    except OSError as err:  # Reading or writing the source (permissions, full disk); a failed write is undone.
        raise click.ClickException(f'{err} (in {source}; its label files are either all old or all new)') from err


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
