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
import secrets
import shutil
import zipfile

import click
import numpy as np

from dnnlib.dataset_format import DatasetError, DatasetFiles, read_label_file

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
    if not isinstance(obj, dict) or not isinstance(obj.get('labels'), list):
        raise LTError(f'{desc} has no labels ("labels" missing or null); lt_dataset.py needs class labels')
    entries, seen = [], set()
    for entry in obj['labels']:
        if (not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[0], str)
                or not isinstance(entry[1], int) or isinstance(entry[1], bool) or entry[1] < 0):
            raise LTError(f'{desc}: every entry must be [path, non-negative integer class]; found {entry!r}')
        path = entry[0].replace('\\', '/')
        if path in seen:
            raise LTError(f'{desc} lists {path} more than once')
        seen.add(path)
        entries.append((path, entry[1]))
    if not entries:
        raise LTError(f'{desc} lists no images')
    missing = [p for p, _ in entries if not source.has(p)]
    if missing:
        raise LTError(f'{desc} references {len(missing)} image(s) that are not in {source.path}, e.g. {missing[0]}; '
                      'use the label file that belongs to this dataset')
    names = obj.get('class_names')
    return desc, entries, names if isinstance(names, list) else None

# ----------------------------------------------------------------------------
# Writing: every output under a temporary name first, then renamed.


def _dumps(obj):
    return (json.dumps(obj, separators=(',', ':')) + '\n').encode('utf-8')


def write_into_dir(directory, files, overwrite):
    temps, renamed = {}, []
    try:
        for name, data in files.items():
            tmp = os.path.join(directory, f'.{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}')
            temps[name] = tmp
            with open(tmp, 'xb') as f:
                f.write(data)
        for name, tmp in temps.items():
            final = os.path.join(directory, name)
            existed = os.path.exists(final)
            if existed and not overwrite:
                raise LTError(f'{final} appeared while writing; nothing was written')
            os.replace(tmp, final)
            renamed.append((final, existed))
    except BaseException:
        for tmp in temps.values():
            if os.path.exists(tmp):
                os.remove(tmp)
        for final, existed in renamed:
            if not existed:
                os.remove(final)
        raise


def write_into_zip(zip_path, files, overwrite, names):
    """Add `files` to the ZIP through a temporary copy renamed over it; `names` = its current members."""
    replaced = sorted(n for n in names if n in files)
    if replaced and not overwrite:
        raise LTError(f'{zip_path} already holds {replaced[0]}; pass --overwrite')
    tmp = os.path.join(os.path.dirname(os.path.abspath(zip_path)),
                       f'.{os.path.basename(zip_path)}.tmp-{os.getpid()}-{secrets.token_hex(4)}')
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
        os.replace(tmp, zip_path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


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
        return _make_lt(src, imf, label_file, seed, order, reverse, dname, bands, shot_labels, overwrite, log)
    finally:
        src.close()


def _make_lt(src, imf, label_file, seed, order, reverse, dname, bands, shot_labels, overwrite, log):
    desc, entries, class_names = load_labels(src, label_file)
    meta, files = build_lt(entries, imf, seed=seed, order=order, reverse=reverse, dname=dname, bands=bands,
                           shot_labels=shot_labels, class_names=class_names, source=os.path.abspath(src.path),
                           label_file=desc)
    existing = [name for name in files if src.has(name)]
    if existing and not overwrite:
        raise LTError(f'{existing[0]} already exists in {src.path}; pass --overwrite to replace it')
    _print_table(log, src.path, meta, sum(meta['counts']), sum(meta['available']))
    if src.is_zip:
        src.close()
        write_into_zip(src.path, files, overwrite, src.names())
    else:
        write_into_dir(src.path, files, overwrite)
    kept, full = sum(meta['counts']), sum(meta['available'])
    log(f'Wrote into {src.path}:')
    for name in files:
        what = {meta['subset']: f'the long-tailed subset ({kept} of {full} images)',
                meta['full']: f'all {full} images with shot bands (reference set for metrics)'}.get(name, 'one shot band')
        log(f'  {name:<24s} {what}')
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
    files = {
        meta['subset']: _dumps({'labels': [list(e) for e in subset], 'lt': meta}),
        meta['full']: _dumps({'labels': [list(e) for e in full], 'lt': meta}),
    }
    if shot_labels:
        for ranks in band_ranks.values():
            members = set(ranks)
            files[f'class_{ranks[0]}_{ranks[-1]}.json'] = _dumps({'labels': [list(e) for e in full if e[1] in members]})
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


@click.command(help=__doc__)
@click.option('--source', metavar='DIR|ZIP', help='Dataset made by dataset_tool.py')
@click.option('--fn', metavar='DIR/dataset.json', help="UTLO's spelling: the label file inside a dataset directory")
@click.option('--label-file', metavar='JSON', help='Labels to subsample (path, or member of the source)  [default: dataset.json]')
@click.option('--imf', type=float, required=True, help='Imbalance factor rho = n_max / n_min (>= 1)')
@click.option('--seed', type=int, default=0, show_default=True, help='Selection seed')
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
    if not imf >= 1 or math.isinf(imf):
        raise click.BadParameter(f'{imf} is below 1; the imbalance factor rho = n_max / n_min must be >= 1 '
                                 '(1 = balanced, 100 = CIFAR-10-LT)', param_hint='--imf')
    try:
        make_lt(source, imf, label_file=label_file, seed=seed, order=order, reverse=reverse, dname=dname, bands=bands,
                shot_labels=shot_labels, overwrite=overwrite)
    except (LTError, OSError) as err:
        raise click.ClickException(str(err)) from err


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
