#!/usr/bin/env python
"""Prepare PASCAL VOC 2012 + SBD ("train_aug") in the layout `cps_repro.data` reads.

    python data_scripts/prepare_voc.py --root data/voc

Steps (each one is skipped when a previous run finished it, so re-running resumes):
1. download VOCtrainval_11-May-2012.tar (about 2 GB) and SBD's benchmark.tgz (about 1.4 GB) into --download-dir
   (default ROOT/downloads), resuming partial `.part` files, and check their md5;
2. extract VOC into ROOT (ROOT/VOCdevkit/VOC2012/...) and SBD's class masks, images and lists into ROOT/SBD;
3. write one palette PNG per image into VOC2012/SegmentationClassAug/: VOC's own SegmentationClass PNG where VOC
   has one (it carries the 255 "boundary / ignore" labels), otherwise SBD's class mask (GTcls.Segmentation of
   dataset/cls/<id>.mat, class ids 0-20, no boundary label);
4. write ImageSets/Segmentation/train_aug.txt: the standard "train_aug" set = VOC train + SBD train + SBD val,
   minus VOC val (10,582 ids; VOC's own val.txt, 1,449 ids, is the validation set);
5. fetch the official CPS partition lists into ROOT/partitions (`cps_repro.partitions.fetch`, sha256-verified).

Finished output is never overwritten: existing masks are kept, an existing train_aug.txt must match.
Reading SBD's .mat files needs scipy (`pip install scipy`).
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DownloadError, PrepareError, Summary, create_file, download, extract, run, step, next_commands  # noqa: E402

try:
    from cps_repro.data import voc_palette
    from cps_repro.partitions import FetchError, fetch, read_list, write_id_list
    from cps_repro.partitions import train_aug_ids as official_train_aug_ids
except ImportError as e:  # pragma: no cover - exercised only without the package
    sys.exit(f'prepare_voc.py: cannot import cps_repro ({e}); install the package first: `pip install -e .` '
             f'in the repository root')

# Archives, their official URLs and md5 sums. The md5 values are the widely published ones, e.g. in torchvision's
# VOCSegmentation (DATASET_YEAR_DICT['2012']) and SBDataset (md5 attribute).
VOC_ARCHIVE = 'VOCtrainval_11-May-2012.tar'
VOC_URL = 'http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar'
VOC_MD5 = '6cd6e144f989b92b3379bac3b3de84fd'
SBD_ARCHIVE = 'benchmark.tgz'
SBD_URL = 'http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz'
SBD_MD5 = '82b4d87ceb2ed10f6038a1cba92111cb'

# Another host of the same SBD file (the www host redirects to it).
SBD_URL_WWW2 = SBD_URL.replace('//www.', '//www2.')

# Sizes the official archives give (recipe §6): train_aug 10,582 images, VOC val 1,449.
TRAIN_AUG_SIZE, VAL_SIZE = 10582, 1449
NUM_CLASSES = 21          # background + 20 object classes; 255 = ignore (VOC boundaries)
STEPS = 6


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog='prepare_voc.py', description=__doc__.split('\n\n')[0],
        epilog='Re-running the same command resumes an interrupted run; finished steps are skipped.')
    p.add_argument('--root', required=True, type=Path, help='dataset folder to create (VOCdevkit/, SBD/, partitions/)')
    p.add_argument('--download-dir', type=Path, help='where the archives are downloaded (default: ROOT/downloads); '
                                                     'an archive already there is used when its md5 matches')
    p.add_argument('--voc-url', default=VOC_URL,
                   help=f'URL of {VOC_ARCHIVE} (http(s):// or file://; default: the official host)')
    p.add_argument('--sbd-url', default=SBD_URL, help=f'URL of {SBD_ARCHIVE} (default: the official Berkeley host)')
    p.add_argument('--voc-md5', default=VOC_MD5, help='expected md5 of the VOC archive (default: the official one)')
    p.add_argument('--sbd-md5', default=SBD_MD5, help='expected md5 of the SBD archive (default: the official one)')
    p.add_argument('--no-partitions', action='store_true', help='do not fetch the official partition lists')
    p.add_argument('--partitions-source', help='base URL or folder to fetch the lists from (default: the pinned commit '
                                               'of the official repository)')
    p.add_argument('--no-progress', action='store_true', help='no progress bars')
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------------ SBD
def is_sbd_member(name: str) -> bool:
    "The members of benchmark.tgz the conversion needs: dataset/cls/*.mat, dataset/img/*.jpg, dataset/{train,val}.txt."
    return re.search(r'(^|/)dataset/(cls/[^/]+\.mat|img/[^/]+\.jpg|train\.txt|val\.txt)$', name) is not None


def sbd_dataset_dir(sbd_root: Path) -> Path:
    "The `dataset` folder of the extracted SBD (`benchmark_RELEASE/dataset` in the official archive)."
    patterns = ('dataset/train.txt', '*/dataset/train.txt')
    found = sorted({p.parent for pattern in patterns for p in sbd_root.glob(pattern)})
    if len(found) != 1:
        what = 'no dataset/train.txt' if not found else f'{len(found)} dataset folders ({", ".join(map(str, found))})'
        raise PrepareError(f'{sbd_root}: {what} in the extracted SBD archive; is {SBD_ARCHIVE} the SBD benchmark? '
                           f'Delete {sbd_root} and re-run')
    return found[0]


def require_scipy():
    "scipy.io.loadmat, or a PrepareError saying how to install scipy (checked before anything is downloaded)."
    try:
        from scipy.io import loadmat
    except ImportError:
        raise PrepareError("reading SBD's .mat masks needs scipy, which is not installed: `pip install scipy` "
                           "(or `pip install -e \".[dev]\"`), then re-run") from None
    return loadmat


def read_sbd_mask(path) -> np.ndarray:
    """The class mask of one SBD `.mat` file: field `Segmentation` of struct `GTcls`, as a uint8 (H, W) array of
    class ids 0-20. Anything else is a PrepareError naming the file."""
    loadmat = require_scipy()
    try:
        mat = loadmat(str(path), squeeze_me=True, struct_as_record=False)
        seg = np.asarray(mat['GTcls'].Segmentation)
    except (KeyError, AttributeError, ValueError, TypeError, OSError) as e:
        raise PrepareError(f'{path}: cannot read GTcls.Segmentation ({type(e).__name__}: {e}); the file is damaged '
                           f'or not an SBD class mask: delete the SBD folder and re-run') from None
    if seg.ndim != 2 or seg.dtype.kind not in 'ui':
        raise PrepareError(f'{path}: GTcls.Segmentation is a {seg.dtype} array of shape {seg.shape}, expected a 2-D '
                           f'integer mask')
    bad = np.setdiff1d(np.unique(seg), np.r_[np.arange(NUM_CLASSES), 255])
    if bad.size:
        raise PrepareError(f'{path}: class ids {bad[:10].tolist()} outside 0-{NUM_CLASSES - 1} (and 255)')
    return seg.astype(np.uint8)


# ------------------------------------------------------------------------------------------------ lists and masks
def build_train_aug(voc_train, voc_val, sbd_train, sbd_val) -> list[str]:
    "The standard train_aug ids, sorted: VOC train + SBD train + SBD val, minus VOC val (10,582 for the real data)."
    return sorted((set(voc_train) | set(sbd_train) | set(sbd_val)) - set(voc_val))


def save_palette_png(mask: np.ndarray, path) -> None:
    "Write a uint8 class mask as a PNG with the VOC palette (readers get the class ids back as palette indices)."
    im = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8))
    im.putpalette(voc_palette().tobytes())          # an 'L' image with a palette becomes a 'P' image
    im.save(path, format='PNG')


def mask_source(i: str, voc_dir: Path, sbd_dir: Path) -> tuple[str, Path]:
    "Where the mask of id `i` comes from: ('voc', VOC PNG) when VOC annotated it, else ('sbd', .mat)."
    voc_png = voc_dir / 'SegmentationClass' / f'{i}.png'
    if voc_png.is_file():
        return 'voc', voc_png
    mat = sbd_dir / 'cls' / f'{i}.mat'
    if mat.is_file():
        return 'sbd', mat
    raise PrepareError(f'no mask for id {i}: neither {voc_png} nor {mat} exists; the archives are incomplete')


def build_masks(ids, voc_dir: Path, sbd_dir: Path, progress: bool = True) -> Counter:
    """Write `SegmentationClassAug/<id>.png` for each id; existing files are kept. Returns counts by source
    ('voc' copied from SegmentationClass, 'sbd' converted from .mat, 'present' already there)."""
    out_dir = voc_dir / 'SegmentationClassAug'
    counts = Counter()
    for i in tqdm(ids, desc='SegmentationClassAug', unit='mask', disable=not progress, leave=False):
        out = out_dir / f'{i}.png'
        if out.exists():
            counts['present'] += 1
            continue
        source, path = mask_source(i, voc_dir, sbd_dir)
        if source == 'voc':
            create_file(out, lambda tmp, path=path: shutil.copyfile(path, tmp))
        else:
            mask = read_sbd_mask(path)
            create_file(out, lambda tmp, mask=mask: save_palette_png(mask, tmp))
        counts[source] += 1
    return counts


def ensure_images(ids, voc_dir: Path, sbd_dir: Path) -> int:
    """Copy SBD's JPEG into VOC2012/JPEGImages for any id VOC lacks (none for the official archives); return how many.
    An id with no image anywhere is a PrepareError."""
    copied = 0
    for i in ids:
        jpg = voc_dir / 'JPEGImages' / f'{i}.jpg'
        if jpg.is_file():
            continue
        src = sbd_dir / 'img' / f'{i}.jpg'
        if not src.is_file():
            raise PrepareError(f'no image for id {i}: neither {jpg} nor {src} exists; the archives are incomplete')
        create_file(jpg, lambda tmp, src=src: shutil.copyfile(src, tmp))
        copied += 1
    return copied


def read_ids(path: Path) -> list[str]:
    "The ids of a list file from an archive; a missing or empty one is a PrepareError (wrong or damaged archive)."
    try:
        return read_list(path)
    except (FileNotFoundError, ValueError) as e:
        raise PrepareError(f'{e}. The archive it comes from is not the expected one, or its extraction was '
                           f'interrupted outside this script: delete the extracted folder and re-run') from None


def write_list(path: Path, ids: list[str]) -> str:
    "Write a list file of ids; an existing file is kept when it holds the same ids, refused otherwise."
    if path.exists():
        if read_list(path) == ids:
            return 'already present'
        raise PrepareError(f'{path} exists but holds other ids than the {len(ids)} computed now: refusing to '
                           f'overwrite it; move it away and re-run')
    write_id_list(path, ids)
    return 'written'


# ------------------------------------------------------------------------------------------------ main
def fetch_archive(url: str, dest: Path, md5: str, progress: bool, alternative: str) -> str:
    "`download` with a hint on what to do when the host cannot be reached."
    try:
        return download(url, dest, md5, progress=progress)
    except DownloadError as e:
        raise PrepareError(f'{e}. If the host is down, get {dest.name} elsewhere (e.g. {alternative}) and either pass '
                           f'its URL (file:// for a local copy) or put it at {dest}; its md5 is checked either '
                           f'way') from None


def fetch_partitions(root: Path, source, progress: bool, summary: Summary, train_aug: list[str]) -> bool:
    "Fetch the official VOC lists into ROOT/partitions and compare their train_aug with ours; False on failure."
    proot = root / 'partitions'
    try:
        status = fetch(proot, source=source, datasets=('voc',), progress=progress)
    except (FetchError, FileNotFoundError, ValueError) as e:
        summary.add('partition lists', f'FAILED: {e}')
        return False
    counts = Counter(status.values())
    summary.add('partition lists', f'{proot}: ' + ', '.join(f'{n} {s}' for s, n in sorted(counts.items())))
    official = set(official_train_aug_ids(proot))
    if official != set(train_aug):
        diff = official ^ set(train_aug)
        summary.warn(f'the official train_aug (union of the 1/2 partition lists, {len(official)} ids) and the '
                     f'train_aug.txt built here ({len(train_aug)} ids) differ in {len(diff)} ids, '
                     f'e.g. {sorted(diff)[0]}')
    return True


def prepare(args) -> int:
    root = args.root
    downloads = args.download_dir or root / 'downloads'
    progress = not args.no_progress
    require_scipy()
    summary = Summary(f'PASCAL VOC 2012 + SBD in {root}')

    step(1, STEPS, f'download {VOC_ARCHIVE} from {args.voc_url}')
    voc_tar = downloads / VOC_ARCHIVE
    status = fetch_archive(args.voc_url, voc_tar, args.voc_md5, progress, 'a mirror of the VOC 2012 trainval tar')
    summary.add(VOC_ARCHIVE, f'{status} (md5 ok)')
    step(2, STEPS, f'download {SBD_ARCHIVE} from {args.sbd_url}')
    sbd_tgz = downloads / SBD_ARCHIVE
    status = fetch_archive(args.sbd_url, sbd_tgz, args.sbd_md5, progress, f'--sbd-url {SBD_URL_WWW2}')
    summary.add(SBD_ARCHIVE, f'{status} (md5 ok)')

    step(3, STEPS, f'extract {VOC_ARCHIVE} into {root} and the SBD masks, images and lists into {root / "SBD"}')
    summary.add(f'extract {VOC_ARCHIVE}', extract(voc_tar, root, progress=progress).line())
    summary.add(f'extract {SBD_ARCHIVE}', extract(sbd_tgz, root / 'SBD', keep=is_sbd_member, progress=progress).line())
    voc_dir, sbd_dir = root / 'VOCdevkit' / 'VOC2012', sbd_dataset_dir(root / 'SBD')
    seg_lists = voc_dir / 'ImageSets' / 'Segmentation'
    voc_train, voc_val = read_ids(seg_lists / 'train.txt'), read_ids(seg_lists / 'val.txt')
    sbd_train, sbd_val = read_ids(sbd_dir / 'train.txt'), read_ids(sbd_dir / 'val.txt')
    train_aug = build_train_aug(voc_train, voc_val, sbd_train, sbd_val)
    ids = sorted(set(train_aug) | set(voc_val))

    step(4, STEPS, f'masks for {len(ids):,} images into {voc_dir / "SegmentationClassAug"}')
    copied = ensure_images(ids, voc_dir, sbd_dir)
    if copied:
        summary.add('JPEGImages', f'{copied} images only in SBD copied from {sbd_dir / "img"}')
    c = build_masks(ids, voc_dir, sbd_dir, progress)
    summary.add('SegmentationClassAug', f'{len(ids):,} masks: {c["voc"]:,} from VOC PNGs, {c["sbd"]:,} from SBD .mat, '
                                        f'{c["present"]:,} already there')

    step(5, STEPS, f'list files in {seg_lists}')
    written = write_list(seg_lists / 'train_aug.txt', train_aug)
    summary.add('train_aug.txt', f'{len(train_aug):,} ids: union of VOC train ({len(voc_train):,}), SBD train '
                                 f'({len(sbd_train):,}) and SBD val ({len(sbd_val):,}) minus VOC val ({written})')
    summary.add('val.txt', f'{len(voc_val):,} ids (VOC val, from the archive)')
    official = (args.voc_md5, args.sbd_md5) == (VOC_MD5, SBD_MD5)
    if official and (len(train_aug), len(voc_val)) != (TRAIN_AUG_SIZE, VAL_SIZE):
        summary.warn(f'expected {TRAIN_AUG_SIZE:,} train_aug and {VAL_SIZE:,} val ids from the official archives')

    ok = True
    if args.no_partitions:
        step(6, STEPS, 'partition lists: skipped (--no-partitions)')
    else:
        step(6, STEPS, f'fetch the official partition lists into {root / "partitions"}')
        ok = fetch_partitions(root, args.partitions_source, progress, summary, train_aug)
    summary.print(next_commands('voc', root, root / 'partitions', ok and not args.no_partitions))
    return 0 if ok else 1


def main(argv=None) -> int:
    args = parse_args(argv)
    return run(lambda: prepare(args), 'prepare_voc.py')


if __name__ == '__main__':
    sys.exit(main())
