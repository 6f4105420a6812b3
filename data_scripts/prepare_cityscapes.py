#!/usr/bin/env python
"""Prepare Cityscapes (gtFine) in the layout `cps_repro.data` reads, from the zip files you downloaded.

    python data_scripts/prepare_cityscapes.py --zips ~/Downloads --root data/cityscapes

Cityscapes needs a (free) login, so this script does not download it: get `leftImg8bit_trainvaltest.zip` (11 GB)
and `gtFine_trainvaltest.zip` (241 MB), and for the coarse-split experiments `leftImg8bit_trainextra.zip` (44 GB),
from https://www.cityscapes-dataset.com/downloads/ and pass the folder holding them as --zips.

Steps (each one is skipped when a previous run finished it, so re-running resumes):
1. extract leftImg8bit/ and gtFine/ into ROOT (ROOT/leftImg8bit/{train,val,test}/<city>/<id>_leftImg8bit.png ...);
   with --extra also leftImg8bit/train_extra/ (the unlabeled images of the coarse lists);
2. convert every train/val `<id>_gtFine_labelIds.png` into `<id>_gtFine_labelTrainIds.png` (the 19 evaluation
   classes as trainIds 0-18, everything else 255 = ignore), with cityscapesscripts' label table when that package
   is installed and otherwise with the same table copied below;
3. fetch the official CPS partition lists into ROOT/partitions (`cps_repro.partitions.fetch`, sha256-verified).

Finished output is never overwritten: existing trainId masks are kept, extracted files that differ are refused.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PrepareError, Summary, create_file, extract, run, step, next_commands  # noqa: E402

try:
    from cps_repro.partitions import FetchError, fetch
except ImportError as e:  # pragma: no cover - exercised only without the package
    sys.exit(f'prepare_cityscapes.py: cannot import cps_repro ({e}); install the package first: `pip install -e .` '
             f'in the repository root')

DOWNLOAD_PAGE = 'https://www.cityscapes-dataset.com/downloads/'
IMAGES_ZIP, LABELS_ZIP = 'leftImg8bit_trainvaltest.zip', 'gtFine_trainvaltest.zip'
EXTRA_ZIP = 'leftImg8bit_trainextra.zip'
ZIP_SIZES = {IMAGES_ZIP: '11 GB', LABELS_ZIP: '241 MB', EXTRA_ZIP: '44 GB'}
SUBSETS = ('train', 'val')                     # test has no public labels
EXPECTED = {'train': 2975, 'val': 500}         # images (and fine masks) of the official release, recipe §6
IGNORE = 255

# labelId -> trainId of the 19 evaluation classes: the standard Cityscapes table (cityscapesscripts/helpers/labels.py,
# the `trainId` column). Every other labelId (unlabeled, ego vehicle, rectification border, out of roi, static,
# dynamic, ground, parking, rail track, guard rail, bridge, tunnel, polegroup, caravan, trailer, license plate)
# is ignored in training and evaluation and becomes 255.
TRAIN_IDS = {
    7: 0,    # road
    8: 1,    # sidewalk
    11: 2,   # building
    12: 3,   # wall
    13: 4,   # fence
    17: 5,   # pole
    19: 6,   # traffic light
    20: 7,   # traffic sign
    21: 8,   # vegetation
    22: 9,   # terrain
    23: 10,  # sky
    24: 11,  # person
    25: 12,  # rider
    26: 13,  # car
    27: 14,  # truck
    28: 15,  # bus
    31: 16,  # train
    32: 17,  # motorcycle
    33: 18,  # bicycle
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog='prepare_cityscapes.py', description=__doc__.split('\n\n')[0],
        epilog=f'Download the zip files (login required) from {DOWNLOAD_PAGE}. Re-running the same command resumes '
               f'an interrupted run; finished steps are skipped.')
    p.add_argument('--zips', required=True, type=Path, help=f'folder holding {IMAGES_ZIP} and {LABELS_ZIP} '
                                                            f'(and {EXTRA_ZIP} with --extra)')
    p.add_argument('--root', required=True, type=Path,
                   help='dataset folder to create (leftImg8bit/, gtFine/, partitions/)')
    p.add_argument('--extra', action='store_true', help=f'also extract {EXTRA_ZIP} (train_extra images, used as '
                                                        f'unlabeled data by the coarse-split lists)')
    p.add_argument('--no-partitions', action='store_true', help='do not fetch the official partition lists')
    p.add_argument('--partitions-source', help='base URL or folder to fetch the lists from (default: the pinned commit '
                                               'of the official repository)')
    p.add_argument('--no-progress', action='store_true', help='no progress bars')
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------------ label table
def builtin_lut() -> np.ndarray:
    "A 256-entry uint8 lookup table labelId -> trainId from TRAIN_IDS (255 elsewhere)."
    lut = np.full(256, IGNORE, dtype=np.uint8)
    for label_id, train_id in TRAIN_IDS.items():
        lut[label_id] = train_id
    return lut


def cityscapesscripts_lut() -> np.ndarray | None:
    """The lookup table built from `cityscapesscripts.helpers.labels.labels` (trainIds outside 0-254, e.g. -1 and
    255, become 255), or None when cityscapesscripts is not installed."""
    try:
        from cityscapesscripts.helpers.labels import labels
    except ImportError:
        return None
    lut = np.full(256, IGNORE, dtype=np.uint8)
    for label in labels:
        if 0 <= label.id < 256:
            lut[label.id] = label.trainId if 0 <= label.trainId < IGNORE else IGNORE
    return lut


def label_lut() -> tuple[np.ndarray, str]:
    "(labelId -> trainId lookup table, where it came from): cityscapesscripts' table when installed, else ours."
    lut = cityscapesscripts_lut()
    if lut is not None:
        return lut, 'cityscapesscripts.helpers.labels'
    return builtin_lut(), 'the built-in copy of the Cityscapes table (cityscapesscripts not installed)'


def to_train_ids(label_ids: np.ndarray, lut: np.ndarray) -> np.ndarray:
    "Map a uint8 labelId mask to trainIds with `lut`."
    return lut[label_ids]


def convert_label(src: Path, dst: Path, lut: np.ndarray) -> None:
    "Write `dst` (8-bit grayscale trainId PNG) from the labelId PNG `src`; a non 8-bit grayscale source is refused."
    with Image.open(src) as im:
        if im.mode != 'L':
            raise PrepareError(f'{src}: mode {im.mode!r}, expected an 8-bit grayscale labelIds PNG; '
                               f'the extracted file is damaged: delete it and re-run')
        train_ids = to_train_ids(np.asarray(im), lut)
    create_file(dst, lambda tmp: Image.fromarray(train_ids).save(tmp, format='PNG'))


def convert_labels(root: Path, lut: np.ndarray, progress: bool = True) -> Counter:
    "Convert every train/val `*_gtFine_labelIds.png` under ROOT/gtFine; counts 'converted' / 'present' / per subset."
    counts = Counter()
    sources = [p for sub in SUBSETS for p in sorted((root / 'gtFine' / sub).glob('*/*_gtFine_labelIds.png'))]
    for src in tqdm(sources, desc='labelTrainIds', unit='mask', disable=not progress, leave=False):
        dst = src.with_name(src.name[:-len('labelIds.png')] + 'labelTrainIds.png')
        counts[src.parent.parent.name] += 1
        if dst.exists():
            counts['present'] += 1
            continue
        convert_label(src, dst, lut)
        counts['converted'] += 1
    return counts


# ------------------------------------------------------------------------------------------------ main
def require_zips(zips: Path, names) -> dict[str, Path]:
    "The paths of the zip files `names` in `zips`; a PrepareError listing every missing one and where to get it."
    paths = {n: zips / n for n in names}
    missing = [n for n, p in paths.items() if not p.is_file()]
    if missing:
        raise PrepareError(f'{zips}: missing {", ".join(f"{n} ({ZIP_SIZES[n]})" for n in missing)}. Cityscapes needs a '
                           f'login: download the file(s) from {DOWNLOAD_PAGE} into {zips} and re-run')
    return paths


def count_images(root: Path, subset: str) -> int:
    return sum(1 for _ in (root / 'leftImg8bit' / subset).glob('*/*_leftImg8bit.png'))


def prepare(args) -> int:
    root, progress = args.root, not args.no_progress
    names = [IMAGES_ZIP, LABELS_ZIP] + ([EXTRA_ZIP] if args.extra else [])
    zips = require_zips(args.zips, names)
    summary = Summary(f'Cityscapes in {root}')
    total = 3

    step(1, total, f'extract {", ".join(names)} into {root}')
    folder = {IMAGES_ZIP: 'leftImg8bit/', LABELS_ZIP: 'gtFine/', EXTRA_ZIP: 'leftImg8bit/'}
    for name in names:   # only the data folders: the zips' top-level README/license.txt files differ between zips
        stats = extract(zips[name], root, keep=lambda m, f=folder[name]: m.startswith(f), progress=progress)
        summary.add(f'extract {name}', stats.line())

    step(2, total, 'convert gtFine labelIds to labelTrainIds')
    lut, source = label_lut()
    if not np.array_equal(lut, builtin_lut()):
        summary.warn(f'the label table of {source} differs from the standard one at labelIds '
                     f'{np.flatnonzero(lut != builtin_lut()).tolist()}; using {source}')
    c = convert_labels(root, lut, progress)
    summary.add('labelTrainIds', f'{c["converted"]:,} converted, {c["present"]:,} already there (table: {source})')
    for sub in SUBSETS:
        n_img = count_images(root, sub)
        summary.add(f'{sub}', f'{n_img:,} images, {c[sub]:,} fine masks')
        if (n_img, c[sub]) != (EXPECTED[sub], EXPECTED[sub]):
            summary.warn(f'{sub}: the official release has {EXPECTED[sub]:,} images and masks')
    if args.extra:
        summary.add('train_extra', f'{count_images(root, "train_extra"):,} images (unlabeled)')

    ok = True
    proot = root / 'partitions'
    if args.no_partitions:
        step(3, total, 'partition lists: skipped (--no-partitions)')
    else:
        step(3, total, f'fetch the official partition lists into {proot}')
        try:
            status = fetch(proot, source=args.partitions_source, datasets=('cityscapes',), progress=progress)
            counts = Counter(status.values())
            summary.add('partition lists', f'{proot}: ' + ', '.join(f'{n} {s}' for s, n in sorted(counts.items())))
        except (FetchError, FileNotFoundError, ValueError) as e:
            summary.add('partition lists', f'FAILED: {e}')
            ok = False
    summary.print(next_commands('cityscapes', root, proot, ok and not args.no_partitions))
    return 0 if ok else 1


def main(argv=None) -> int:
    args = parse_args(argv)
    return run(lambda: prepare(args), 'prepare_cityscapes.py')


if __name__ == '__main__':
    sys.exit(main())
