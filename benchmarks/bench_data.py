#!/usr/bin/env python
"""Throughput of the training data pipeline: decoded + augmented images per second, per worker and through the
library's `InfiniteStream` with K workers, for the VOC training transform (flip, random scale in
{0.5, ..., 2.0}, normalise, 512 crop with padding) on generated VOC-sized JPEGs (500 x 375, the VOC median).

The images are drawn by `cps_repro.synthetic.render_scene` (objects with textures, clutter and pixel noise, so the
JPEGs are about as costly to decode as photographs of that size) and written in the VOC layout with palette PNG
masks; the library's own `voc_samples`, `SegmentationDataset`, `TrainTransform` and `InfiniteStream` read them.

    python benchmarks/bench_data.py --workers 1,2 --seconds 10
    python benchmarks/bench_data.py --tiny
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
import torch

from common import describe, machine_info, table, write_json


def _write_one(job) -> str:
    from PIL import Image
    from cps_repro.synthetic import SynthConfig, render_scene, scene_seed, voc_palette
    root, i, seed, w, h, quality = job
    img, mask, _ = render_scene(scene_seed(seed, i), SynthConfig(size=max(w, h)))
    img, mask = img[:h, :w], mask[:h, :w]
    image_id = f'2007_{i:06d}'
    vroot = Path(root) / 'VOCdevkit' / 'VOC2012'
    Image.fromarray(img).save(vroot / 'JPEGImages' / f'{image_id}.jpg', quality=quality)
    m = Image.fromarray(mask, mode='P'); m.putpalette(voc_palette().flatten().tolist()); m.save(vroot / 'SegmentationClassAug' / f'{image_id}.png')
    return image_id

def make_voc_jpegs(root: Path, n: int, width: int = 500, height: int = 375, seed: int = 0, quality: int = 90,
                   processes: int = 1) -> list[str]:
    "Write `n` generated scenes of `width` x `height` as VOC JPEGs + palette masks under `root`; returns their ids."
    vroot = root / 'VOCdevkit' / 'VOC2012'
    for sub in ('JPEGImages', 'SegmentationClassAug', 'ImageSets/Segmentation'): (vroot / sub).mkdir(parents=True, exist_ok=True)
    jobs = [(str(root), i, seed, width, height, quality) for i in range(n)]
    if processes > 1:
        with multiprocessing.get_context('spawn').Pool(processes) as pool: ids = pool.map(_write_one, jobs)
    else: ids = [_write_one(j) for j in jobs]
    (vroot / 'ImageSets' / 'Segmentation' / 'train.txt').write_text('\n'.join(ids) + '\n')
    return ids

def datasets(root: Path, ids: list[str], crop: int, num_classes: int):
    from cps_repro.data import SegmentationDataset, TrainTransform, voc_samples
    tf = TrainTransform(crop)
    return {'labeled': SegmentationDataset(voc_samples(root, ids=ids, labeled=True), tf, num_classes),
            'unlabeled': SegmentationDataset(voc_samples(root, ids=ids, labeled=False), tf, num_classes)}

def per_worker(ds, n_items: int, seed: int = 0) -> dict:
    """Time decode and augmentation of `n_items` items in this process (one thread): one worker's throughput, from the
    process's CPU time (a shared machine's waiting left out; the wall-clock figure beside it)."""
    from cps_repro.data import load_sample
    dec, aug, wall = [], [], []
    for k in range(n_items + 2):
        i = k % len(ds)
        w0, t0 = time.perf_counter(), time.process_time()
        image, mask = load_sample(ds.samples[i], ds.num_classes, ds.ignore_index)
        t1 = time.process_time()
        ds.transform(image, mask, torch.Generator().manual_seed(seed + k))
        t2, w2 = time.process_time(), time.perf_counter()
        if k >= 2: dec.append(t1 - t0); aug.append(t2 - t1); wall.append(w2 - w0)     # the first two warm caches up
    tot = [a + b for a, b in zip(dec, aug)]
    return dict(clock='cpu (process time; wall in wall_ms)', decode_ms=describe([x * 1000 for x in dec]),
                augment_ms=describe([x * 1000 for x in aug]), total_ms=describe([x * 1000 for x in tot]),
                wall_ms=describe([x * 1000 for x in wall]), img_s=1.0 / (sum(tot) / len(tot)),
                img_s_wall=1.0 / (sum(wall) / len(wall)))

def through_loader(ds, workers: int, batch: int, seconds: float, pin: bool, seed: int = 0) -> dict:
    "Images per second through `InfiniteStream` with `workers` processes, after the workers' first batches."
    from cps_repro.data import InfiniteStream
    stream = InfiniteStream(ds, batch, seed, virtual_length=max(len(ds), batch * 4), num_workers=workers,
                            pin_memory=pin, persistent_workers=workers > 0, prefetch_factor=4 if workers else None)
    try:
        for _ in range(max(2 * workers, 2)): next(stream)        # start-up: workers spawn and fill their queues
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            b = next(stream); n += b['image'].shape[0]
        dt = time.perf_counter() - t0
    finally: stream.close()
    return dict(workers=workers, batch=batch, images=n, seconds=dt, img_s=n / dt)

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--data-dir', default=None, help='where to write the JPEGs (default: a temporary folder)')
    p.add_argument('--n-images', type=int, default=48)
    p.add_argument('--size', default='500x375', help='generated image size WxH (VOC: at most 500 px, median 500x375)')
    p.add_argument('--crop', type=int, default=512)
    p.add_argument('--num-classes', type=int, default=21)
    p.add_argument('--items', type=int, default=40, help='items timed in-process for the per-worker figure')
    p.add_argument('--workers', default='1,2', help='comma-separated worker counts for the loader figure (0 = in-process)')
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--seconds', type=float, default=8.0, help='timed seconds per loader figure')
    p.add_argument('--gen-processes', type=int, default=1, help='processes that write the JPEGs')
    p.add_argument('--pin-if-cuda', action='store_true', help='pin batches when CUDA is available (as the trainer does)')
    p.add_argument('--json', default=None)
    p.add_argument('--tiny', action='store_true')
    a = p.parse_args(argv)
    if a.tiny: a.n_images, a.items, a.workers, a.seconds = 4, 4, '1', 1.0
    torch.set_num_threads(1)
    w, h = (int(x) for x in a.size.lower().split('x'))
    out = dict(kind='bench_data', machine=machine_info(torch.device('cpu')), settings=vars(a).copy())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(a.data_dir) if a.data_dir else Path(tmp)
        t0 = time.perf_counter()
        ids = make_voc_jpegs(root, a.n_images, w, h, processes=a.gen_processes)
        out['generate_s'] = time.perf_counter() - t0
        jpeg_kib = [(root / 'VOCdevkit/VOC2012/JPEGImages' / f'{i}.jpg').stat().st_size / 1024 for i in ids]
        out['jpeg_kib'] = describe(jpeg_kib)
        dss = datasets(root, ids, a.crop, a.num_classes)
        out['per_worker'] = {k: per_worker(ds, a.items) for k, ds in dss.items()}
        out['loader'] = [dict(stream='labeled', **through_loader(dss['labeled'], int(k), a.batch, a.seconds, a.pin_if_cuda and torch.cuda.is_available()))
                         for k in a.workers.split(',') if k.strip()]
    pw = out['per_worker']['labeled']['img_s']
    for r in out['loader']: r['efficiency'] = r['img_s'] / (pw * max(r['workers'], 1))
    if a.json: write_json(out, a.json)
    print(f"\nVOC train transform, crop {a.crop}, {a.n_images} generated {w}x{h} JPEGs "
          f"(median {out['jpeg_kib']['median']:.0f} KiB), torch {out['machine']['torch']}, {out['machine']['cpu']}")
    rows = [dict(what=f'one worker, {k}', ms=v['total_ms']['median'], dec=v['decode_ms']['median'],
                 aug=v['augment_ms']['median'], img_s=v['img_s'], img_s_wall=v['img_s_wall']) for k, v in out['per_worker'].items()]
    print(table(rows, [('', 'what', '{}'), ('median ms/img', 'ms', '{:.1f}'), ('decode ms', 'dec', '{:.1f}'),
                       ('augment ms', 'aug', '{:.1f}'), ('img/s (CPU time)', 'img_s', '{:.1f}'), ('img/s (wall)', 'img_s_wall', '{:.1f}')]))
    print(table(out['loader'], [('loader workers', 'workers', '{}'), ('batch', 'batch', '{}'), ('img/s', 'img_s', '{:.1f}'),
                                ('vs workers x one worker', 'efficiency', '{:.0%}')]))
    return 0

if __name__ == '__main__':
    sys.exit(main())
