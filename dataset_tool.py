"""Build a dataset in NVIDIA's stylegan2-ada format: a ZIP or directory of PNGs named
{i//1000:05d}/img{i:08d}.png plus dataset.json ({"labels": [[path, label], ...]} or null).

Examples:

\b
  python dataset_tool.py --source=digits --dest=~/datasets/digits32.zip
  python dataset_tool.py --source=digits:16 --dest=digits16.zip --channels=3
  python dataset_tool.py --source=fashion-mnist --dest=fmnist32.zip
  python dataset_tool.py --source=~/cifar-10-python.tar.gz --dest=cifar10.zip
  python dataset_tool.py --source=~/photos --dest=photos256.zip --resolution=256x256 --transform=center-crop

Sources: an image folder (class = top-level sub-folder name, sorted -> ids 0..; a dataset.json in the
folder takes precedence), a ZIP of images, CIFAR-10 python pickles (cifar-10-batches-py or its tar.gz),
MNIST-style idx files (gzipped or not; 28x28 is zero-padded to 32x32), digits[:16|:32] (scikit-learn,
upscaled, default 32 px) and fashion-mnist[:test] (Debian package dataset-fashion-mnist).

Files without an image extension in folders/ZIPs are skipped with a printed count; a file with an image
extension that cannot be decoded stops the run with an error naming it.  Labels are checked as train.py
checks them (class ids 0..C-1, finite vectors; --remap-labels renumbers stray ids).

Output is written under a temporary name next to --dest (.NAME.tmp-HOST-PID-XXXXXXXX) and put in place in
one rename when complete: a ZIP replaces the old file atomically, a folder is exchanged with the old one
atomically (Linux renameat2) and the old one then removed. A killed run leaves either the old --dest or the
new one, plus its temporary output, which the next run of dataset_tool.py or lt_dataset.py in that folder
removes (only when the process that wrote it no longer exists).
"""

import io
import json
import os
import time
import zipfile

import click
import numpy as np
import PIL.Image
import tqdm

from dnnlib.dataset_format import (
    DatasetError,
    crash_point,
    fsync_directory,
    is_power_of_two,
    remove_path,
    remove_stale_temps,
    rename_noreplace,
    replace_path,
    temp_path,
    validate_labels,
)
from training.dataset_sources import open_source

PROGRESS_MIN_IMAGES = 5000  # Show a progress bar for conversions of at least this many images.
RESIZE_FILTERS = {'box': PIL.Image.BOX, 'lanczos': PIL.Image.LANCZOS}

# ----------------------------------------------------------------------------
# Pixel operations on uint8 [H, W, C] arrays.


def resize(image, width, height, resample):
    if image.shape[0] == height and image.shape[1] == width:
        return image
    pil = PIL.Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    out = np.asarray(pil.resize((width, height), resample))
    return out[:, :, np.newaxis] if out.ndim == 2 else out


def center_crop(image, aspect_w, aspect_h):
    """Largest centred crop with aspect ratio aspect_w:aspect_h."""
    h, w = image.shape[:2]
    crop_h = int(round(w * aspect_h / aspect_w))
    if crop_h <= h:
        top = (h - crop_h) // 2
        return image[top:top + crop_h]
    crop_w = int(round(h * aspect_w / aspect_h))
    left = (w - crop_w) // 2
    return image[:, left:left + crop_w]


def to_channels(image, channels):
    if image.shape[2] == channels:
        return image
    if channels == 3:
        return np.repeat(image, 3, axis=2)
    grey = np.asarray(PIL.Image.fromarray(image).convert('L'))
    return grey[:, :, np.newaxis]


def make_transform(transform, width, height, resize_filter):
    """Function mapping a source image to the output image (before the shape checks)."""
    resample = RESIZE_FILTERS[resize_filter]
    if transform is None:
        if width is None:
            return lambda image: image
        return lambda image: resize(image, width, height, resample)
    if transform == 'center-crop':
        return lambda image: resize(center_crop(image, 1, 1), width, height, resample)

    side = max(width, height)

    def crop_wide(image):
        inner = resize(center_crop(image, width, height), width, height, resample)
        canvas = np.zeros([side, side, image.shape[2]], dtype=np.uint8)
        top, left = (side - height) // 2, (side - width) // 2
        canvas[top:top + height, left:left + width] = inner
        return canvas
    return crop_wide


def encode_png(image):
    buf = io.BytesIO()
    PIL.Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(buf, format='png', compress_level=0)
    return buf.getvalue()

# ----------------------------------------------------------------------------
# Output: a temporary ZIP or directory next to the destination, renamed when complete.


class AtomicOutput:
    """Collects files under a temporary name beside `dest`; `commit()` puts it in place in one rename
    (dnnlib.dataset_format.replace_path), `abort()` removes it."""

    def __init__(self, dest, overwrite):
        self.dest = dest
        self.overwrite = overwrite
        self.is_zip = os.path.splitext(dest)[1].lower() == '.zip'
        self.parent = os.path.dirname(os.path.abspath(dest))
        # A hidden name in the same directory (same file system, so the final rename is atomic), of the form
        # remove_stale_temps recognises. Created with open()/mkdir() rather than tempfile so that the result gets
        # the usual umask permissions.
        self.tmp = None
        self._file = self._zip = None
        try:
            os.makedirs(self.parent, exist_ok=True)
            tmp = temp_path(dest)
            if self.is_zip:
                self._file = open(tmp, 'xb')
                self._zip = zipfile.ZipFile(self._file, 'w', compression=zipfile.ZIP_STORED)
            else:
                os.mkdir(tmp)
            self.tmp = tmp
        except OSError as err:
            raise DatasetError(f'cannot write --dest {dest}: {err.strerror or err} ({err.filename}); choose a '
                               'destination in a writable folder') from None
        self._made_dirs = set()

    def add(self, name, data):
        if self._zip is not None:
            self._zip.writestr(name, data)
            return
        folder = os.path.dirname(name)
        if folder and folder not in self._made_dirs:
            os.makedirs(os.path.join(self.tmp, folder), exist_ok=True)
            self._made_dirs.add(folder)
        with open(os.path.join(self.tmp, name), 'wb') as f:
            f.write(data)

    def _close_zip(self, sync=False):
        if self._zip is not None:
            try:
                self._zip.close()
                if sync:
                    self._file.flush()
                    os.fsync(self._file.fileno())
            finally:
                self._file.close()
                self._file = self._zip = None

    def commit(self):
        self._close_zip(sync=True)
        crash_point('dataset_tool:written')
        if self.overwrite:
            replace_path(self.tmp, self.dest, before_cleanup=lambda: crash_point('dataset_tool:exchanged'))
        else:
            try:
                rename_noreplace(self.tmp, self.dest)
            except FileExistsError:
                raise DatasetError(f'destination {self.dest} appeared while writing; nothing was replaced (pass '
                                   '--overwrite to replace it)') from None
        self.tmp = None
        fsync_directory(self.parent)

    def abort(self):
        try:
            self._close_zip()
        except OSError:
            pass
        if self.tmp is not None:
            try:
                remove_path(self.tmp)
            except OSError:
                pass  # Left for the next run's remove_stale_temps.
            self.tmp = None


def check_destination(dest, overwrite):
    """Refuse a --dest that cannot be replaced by the output in one rename (or at all)."""
    if not dest:
        raise DatasetError('--dest is empty; pass the output .zip or folder, e.g. --dest=datasets/mydata.zip')
    if not os.path.lexists(dest):
        return
    if not overwrite:
        raise DatasetError(f'destination {dest} already exists; pass --overwrite to replace it or choose another --dest')
    is_zip = os.path.splitext(dest)[1].lower() == '.zip'
    if os.path.islink(dest):
        raise DatasetError(f'--dest {dest} is a symbolic link; pass the path it points to ({os.path.realpath(dest)}) '
                           'or remove the link')
    if is_zip and os.path.isdir(dest):
        raise DatasetError(f'--dest {dest} is a folder, but a .zip destination is written as a ZIP file; remove or '
                           'rename the folder, or choose another --dest')
    if not is_zip and not os.path.isdir(dest):
        raise DatasetError(f'--dest {dest} is a file, but a destination without .zip is written as a folder of '
                           'PNGs; remove the file, or choose another --dest (a .zip name writes a ZIP)')

# ----------------------------------------------------------------------------


def _shape_text(shape):
    return f'{shape[1]}x{shape[0]} with {shape[2]} channel(s)'


def _check_first_shape(shape, name):
    h, w = shape[:2]
    if h != w:
        raise DatasetError(f'{name} is {w}x{h}, not square; output images must be square: pass --transform=center-crop '
                           '(or center-crop-wide) together with --resolution=RxR')
    if not is_power_of_two(w):
        side = 1 << max(w - 1, 0).bit_length()
        raise DatasetError(f'{name} is {w}x{h}; resolution must be a power of two: pass --resolution={side}x{side} '
                           f'(or another power of two)')


def _convert_image(image, name, first, transform, channels):
    """Apply channels + transform to one image; check it against the first image's output shape."""
    target = channels if channels is not None else (first['channels'] if first else image.shape[2])
    if channels is None and image.shape[2] > target:
        raise DatasetError(f'{name} is in colour but {first["name"]} is greyscale; pass --channels=3 (or --channels=1)')
    out = transform(to_channels(image, target))
    if not first:
        _check_first_shape(out.shape, name)
        first.update(name=name, shape=out.shape, channels=target)
    elif out.shape != first['shape']:
        raise DatasetError(f'mixed image sizes: {first["name"]} gives {_shape_text(first["shape"])} but {name} gives '
                           f'{_shape_text(out.shape)}; pass --resolution=RxR (and --transform=center-crop when the '
                           'aspect ratios differ) to make them the same size')
    return out


def convert_dataset(source, dest, max_images=None, resolution=None, transform=None, resize_filter='lanczos',
                    channels=None, overwrite=False, log=print, show_progress=True, remap_labels=False):
    """Convert `source` (see dataset_sources.open_source) into a dataset at `dest`. Returns a summary dict."""
    start = time.time()
    dest = os.path.expanduser(str(dest)) if dest else ''
    if dest:  # What killed runs left beside the destination (temporary outputs; a destination moved aside).
        remove_stale_temps(os.path.dirname(os.path.abspath(dest)), log=log)
    check_destination(dest, overwrite)
    src = open_source(source)
    if os.path.isdir(src.description) and not os.path.relpath(os.path.abspath(dest), os.path.abspath(src.description)).startswith('..'):
        raise DatasetError(f'--dest {dest} is inside the source folder {src.description}; choose a destination outside it')
    for note in src.notes:
        log(note)
    width, height = resolution if resolution is not None else (src.default_size, src.default_size)
    if transform is not None and width is None:
        raise DatasetError(f'--transform={transform} needs --resolution=WxH')
    convert = make_transform(transform, width, height, resize_filter)
    total = src.count if max_images is None else min(src.count, max_images)

    out = AtomicOutput(dest, overwrite)
    # A progress bar for conversions that take more than a moment (Fashion-MNIST, photo folders).
    progress = tqdm.tqdm(total=total, unit='img', desc='Converting', disable=(total < PROGRESS_MIN_IMAGES or not show_progress))
    try:
        labels = [] if src.has_labels else None
        source_names = []
        first = {}
        for index, (name, image, label) in enumerate(src):
            if index >= total:
                break
            progress.update(1)
            result = _convert_image(image, f'{src.description}/{name}', first, convert, channels)
            archive_name = f'{index // 1000:05d}/img{index:08d}.png'
            out.add(archive_name, encode_png(result))
            if labels is not None:
                labels.append([archive_name, label])
                source_names.append(f'{src.description}/{name}')
        if not first:
            raise DatasetError(f'{src.description} yielded no images')
        class_names = src.class_names
        if remap_labels and labels and isinstance(labels[0][1], int):
            old_ids = sorted({label for _, label in labels})
            new_id = {old: new for new, old in enumerate(old_ids)}
            labels = [[name, new_id[label]] for name, label in labels]
            if class_names is not None:
                class_names = [class_names[old] for old in old_ids] if len(class_names) > old_ids[-1] else None
            log('Class ids renumbered: ' + ', '.join(f'{old}->{new}' for old, new in new_id.items() if old != new))
        if labels:  # What is written is what training accepts: the one validator, as train.py applies it.
            validate_labels([label for _, label in labels], src.description, source_names,
                            len(class_names) if class_names else None,
                            fix='Renumber them: add --remap-labels to this command')
        meta = {'labels': labels}
        if class_names is not None and labels is not None:
            meta['class_names'] = class_names
        out.add('dataset.json', json.dumps(meta).encode('utf-8'))
        out.commit()
    finally:
        progress.close()
        out.abort()
    shape = first['shape']
    num_classes = len({int(x[1]) for x in labels}) if labels and isinstance(labels[0][1], int) else None
    summary = dict(dest=dest, count=total, resolution=shape[0], channels=shape[2], num_classes=num_classes,
                   seconds=time.time() - start)
    label_text = 'no labels' if labels is None else (f'{num_classes} classes' if num_classes else 'vector labels')
    log(f'Wrote {total} images ({shape[2]}x{shape[0]}x{shape[1]}, {label_text}) to {dest} in {summary["seconds"]:.1f} s')
    return summary

# ----------------------------------------------------------------------------


def verify_dataset(path):
    """Decode every image of a dataset; list the damaged ones and exit 1 if there are any."""
    from training.dataset import ImageFolderDataset

    try:
        dataset = ImageFolderDataset(path)
        bad = dataset.verify()
    except (DatasetError, OSError) as err:
        raise click.ClickException(str(err)) from err
    for name, error in bad:
        click.echo(f'damaged: {name}: {error}')
    click.echo(f'{len(dataset)} images, {len(bad)} damaged')
    if bad:
        raise SystemExit(1)


def _parse_resolution(_ctx, _param, value):
    if value is None:
        return None
    text = value.lower().strip()
    parts = text.split('x') if 'x' in text else [text, text]
    try:
        width, height = (int(p) for p in parts)
    except ValueError:
        raise click.BadParameter(f'{value!r}: expected WxH, e.g. 32x32') from None
    if width < 1 or height < 1:
        raise click.BadParameter(f'{value!r}: width and height must be positive')
    return width, height


@click.command(help=__doc__)
@click.option('--source', metavar='PATH|digits[:16|:32]|fashion-mnist[:test]', help='Input (see above)')
@click.option('--dest', metavar='PATH', help='Output .zip or directory')
@click.option('--verify', metavar='PATH', help='Decode every image of an existing dataset and list the damaged ones')
@click.option('--max-images', type=click.IntRange(min=1), help='Write at most this many images (the first ones)')
@click.option('--resolution', callback=_parse_resolution, metavar='WxH', help='Output size, e.g. 32x32')
@click.option('--width', type=click.IntRange(min=1), help='Output width (NVIDIA spelling; same as --resolution)')
@click.option('--height', type=click.IntRange(min=1), help='Output height (NVIDIA spelling; same as --resolution)')
@click.option('--transform', type=click.Choice(['center-crop', 'center-crop-wide']), help='Crop before resizing')
@click.option('--resize-filter', type=click.Choice(['box', 'lanczos']), default='lanczos', show_default=True,
              help='Resampling filter')
@click.option('--channels', type=click.Choice(['1', '3']), help='1 = greyscale, 3 = RGB  [default: keep the source\'s]')
@click.option('--overwrite', is_flag=True, help='Replace an existing --dest')
@click.option('--remap-labels', is_flag=True, help='Renumber class ids to 0..C-1 in sorted order (and class_names)')
def main(source, dest, verify, max_images, resolution, width, height, transform, resize_filter, channels, overwrite,
         remap_labels):
    if verify is not None:
        verify_dataset(verify)
        return
    if source is None or dest is None:
        raise click.UsageError('--source and --dest are required (or --verify=PATH to check a dataset)')
    if width is not None or height is not None:
        given = (width or height, height or width)
        if resolution is not None and resolution != given:
            raise click.UsageError(f'--resolution {resolution[0]}x{resolution[1]} disagrees with --width/--height '
                                   f'{given[0]}x{given[1]}; pass only one of them')
        resolution = given
    if resolution is not None:
        w, h = resolution
        if w != h and transform != 'center-crop-wide':
            raise click.BadParameter(f'{w}x{h} is not square; use a square size, or --transform=center-crop-wide to '
                                     'letterbox into a square', param_hint='--resolution')
        if not is_power_of_two(max(w, h)):
            raise click.BadParameter(f'{w}x{h}: the output side must be a power of two (e.g. 32, 64, 256)',
                                     param_hint='--resolution')
    try:
        convert_dataset(source, dest, max_images=max_images, resolution=resolution, transform=transform,
                        resize_filter=resize_filter, channels=None if channels is None else int(channels),
                        overwrite=overwrite, remap_labels=remap_labels)
    except DatasetError as err:
        raise click.ClickException(str(err)) from err
    except MemoryError:  # An image at a huge --resolution; the temporary output is already removed.
        side = f'{resolution[0]}x{resolution[1]}' if resolution else 'the source size'
        raise click.ClickException(f'out of memory while converting {source} at {side}; choose a smaller --resolution '
                                   f'(nothing was written to {dest})') from None
    except OSError as err:  # Reading the source or writing the output; the temporary output is already removed.
        raise click.ClickException(f'{err}; nothing was written to {dest}') from err


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
