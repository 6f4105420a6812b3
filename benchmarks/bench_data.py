#!/usr/bin/env python
"""Throughput of the training data pipeline: decoded + augmented images per second, per worker and through the
library's `InfiniteStream` with K workers, for the VOC training transform (flip, random scale in
{0.5, ..., 2.0}, 512 crop with padding, normalise) on generated VOC-sized JPEGs (500 x 375, the VOC median).

Two pipelines, timed interleaved in the same process (`--pipelines new,old`): `new` is the library's (crop first,
uint8 image and mask out of the worker, mask values checked once per sample, normalisation left to the device);
`old` is the pipeline before it, kept here as the "before" reference (every load re-checks the mask values, int64
masks, the whole rescaled image normalised to float32 before padding and cropping, float32 batches).

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
    from cps_repro.evaluate import voc_palette
    from cps_repro.synthetic import SynthConfig, render_scene, scene_seed
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

class OldTrainTransform:
    "The training transform before crop-first (the reference of tests/test_data.py): normalise, pad with 0, crop; float32 out."
    def __init__(self, t):
        self.t = t

    def __call__(self, image, mask, generator):
        from torchvision.transforms.v2 import functional as TF
        from cps_repro.data import normalize
        t, p = self.t, self.t.draw(*image.shape[-2:], generator)
        img, msk = t.flip_resize(image, mask, p)            # shared by both orders: what differs is below
        img = normalize(img, t.mean, t.std)
        if any(p['pad']):
            img = TF.pad(img, list(p['pad']), fill=0.0)
            if msk is not None: msk = TF.pad(msk, list(p['pad']), fill=t.ignore_index)
        ch, cw = t.crop_size
        img = TF.crop(img, p['top'], p['left'], ch, cw).as_subclass(torch.Tensor).contiguous()
        if msk is not None: msk = TF.crop(msk, p['top'], p['left'], ch, cw).as_subclass(torch.Tensor).long().contiguous()
        return img, msk

def _old_dataset_class():
    from cps_repro.data import SegmentationDataset, load_sample
    class OldSegmentationDataset(SegmentationDataset):
        "Every load decodes the mask as int64 and re-checks its values; the old transform; float32 items."
        def __getitem__(self, key):
            index, seed = key if isinstance(key, tuple) else (key, key)
            sample = self.samples[int(index)]
            image, mask = load_sample(sample, self.num_classes, self.ignore_index)
            image, mask = self.transform(image, mask, torch.Generator().manual_seed(int(seed)))
            item = dict(image=image, id=sample.id)
            if mask is not None: item['label'] = mask
            return item
    return OldSegmentationDataset

def datasets(root: Path, ids: list[str], crop: int, num_classes: int, pipeline: str = 'new'):
    "Labeled and unlabeled datasets of the `new` (library) or `old` (reference) pipeline."
    from cps_repro.data import SegmentationDataset, TrainTransform, voc_samples
    tf = TrainTransform(crop)
    cls = SegmentationDataset if pipeline == 'new' else _old_dataset_class()
    if pipeline != 'new': tf = OldTrainTransform(tf)
    return {'labeled': cls(voc_samples(root, ids=ids, labeled=True), tf, num_classes),
            'unlabeled': cls(voc_samples(root, ids=ids, labeled=False), tf, num_classes)}

def per_worker(ds, n_items: int, seed: int = 0) -> dict:
    """Time decode and augmentation of `n_items` items in this process (one thread): one worker's throughput, from the
    process's CPU time (a shared machine's waiting left out; the wall-clock figure beside it)."""
    from cps_repro.data import load_sample
    new = not type(ds).__name__.startswith('Old')
    dec, aug, wall = [], [], []
    for k in range(n_items + 2):
        i = k % len(ds)
        w0, t0 = time.perf_counter(), time.process_time()
        if new:
            image, mask = load_sample(ds.samples[i], ds.num_classes, ds.ignore_index, check_values=i not in ds._checked,
                                      dtype=ds.mask_dtype)
            ds._checked.add(i)
        else: image, mask = load_sample(ds.samples[i], ds.num_classes, ds.ignore_index)
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
    p.add_argument('--pipelines', default='new', help="comma-separated: new (the library's), old (the reference before crop-first)")
    p.add_argument('--rounds', type=int, default=1, help='rounds, pipelines interleaved in each (figures: the best round)')
    p.add_argument('--json', default=None)
    p.add_argument('--tiny', action='store_true')
    a = p.parse_args(argv)
    if a.tiny: a.n_images, a.items, a.workers, a.seconds = 4, 4, '1', 1.0
    torch.set_num_threads(1)
    w, h = (int(x) for x in a.size.lower().split('x'))
    out = dict(kind='bench_data', finished=False, machine=machine_info(torch.device('cpu')), settings=vars(a).copy())
    def save(now: str) -> None:          # after every measurement: a run killed midway keeps what it measured
        if a.json: write_json(dict(out, now=now, partial=dict(per_worker_rounds=rounds, loader=loaders)), a.json)
    rounds, loaders = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(a.data_dir) if a.data_dir else Path(tmp)
        t0 = time.perf_counter()
        ids = make_voc_jpegs(root, a.n_images, w, h, processes=a.gen_processes)
        out['generate_s'] = time.perf_counter() - t0
        jpeg_kib = [(root / 'VOCdevkit/VOC2012/JPEGImages' / f'{i}.jpg').stat().st_size / 1024 for i in ids]
        out['jpeg_kib'] = describe(jpeg_kib)
        save('images generated')
        pipes = [x.strip() for x in a.pipelines.split(',') if x.strip()]
        dss = {pl: datasets(root, ids, a.crop, a.num_classes, pl) for pl in pipes}
        rounds.update({pl: {k: [] for k in ('labeled', 'unlabeled')} for pl in pipes})
        loaders.update({pl: [] for pl in pipes})
        pin = a.pin_if_cuda and torch.cuda.is_available()
        for r in range(a.rounds):
            order = pipes if r % 2 == 0 else pipes[::-1]
            for pl in order:
                for k, ds in dss[pl].items():
                    rounds[pl][k].append(per_worker(ds, a.items, seed=1000 * r)); save(f'round {r}: {pl} {k} one worker')
            for k in a.workers.split(','):
                for pl in order:
                    if k.strip():
                        loaders[pl].append(dict(stream='labeled', round=r, **through_loader(dss[pl]['labeled'], int(k), a.batch, a.seconds, pin)))
                        save(f'round {r}: {pl} loader with {k} workers')
        out['by_pipeline'] = {}
        for pl in pipes:
            pw = {k: max(v, key=lambda x: x['img_s']) for k, v in rounds[pl].items()}   # best round: the least disturbed
            for k in pw: pw[k] = dict(pw[k], img_s_rounds=[x['img_s'] for x in rounds[pl][k]])
            for r in loaders[pl]: r['efficiency'] = r['img_s'] / (pw['labeled']['img_s'] * max(r['workers'], 1))
            out['by_pipeline'][pl] = dict(per_worker=pw, loader=loaders[pl])
        out['per_worker'], out['loader'] = out['by_pipeline'][pipes[0]]['per_worker'], out['by_pipeline'][pipes[0]]['loader']
        if len(pipes) > 1:
            a0, b0 = out['by_pipeline'][pipes[0]]['per_worker'], out['by_pipeline'][pipes[1]]['per_worker']
            out['speedup_first_over_second'] = {k: a0[k]['img_s'] / b0[k]['img_s'] for k in a0}
    out['finished'] = True
    if a.json: write_json(out, a.json)
    print(f"\nVOC train transform, crop {a.crop}, {a.n_images} generated {w}x{h} JPEGs "
          f"(median {out['jpeg_kib']['median']:.0f} KiB), torch {out['machine']['torch']}, {out['machine']['cpu']}")
    rows = [dict(what=f'{pl}: one worker, {k}', ms=v['total_ms']['median'], dec=v['decode_ms']['median'],
                 aug=v['augment_ms']['median'], img_s=v['img_s'], img_s_wall=v['img_s_wall'])
            for pl, r in out['by_pipeline'].items() for k, v in r['per_worker'].items()]
    print(table(rows, [('', 'what', '{}'), ('median ms/img', 'ms', '{:.1f}'), ('decode ms', 'dec', '{:.1f}'),
                       ('augment ms', 'aug', '{:.1f}'), ('img/s (CPU time)', 'img_s', '{:.1f}'), ('img/s (wall)', 'img_s_wall', '{:.1f}')]))
    print(table([dict(pipeline=pl, **r) for pl, x in out['by_pipeline'].items() for r in x['loader']],
                [('pipeline', 'pipeline', '{}'), ('round', 'round', '{}'), ('loader workers', 'workers', '{}'), ('batch', 'batch', '{}'),
                 ('img/s', 'img_s', '{:.1f}'), ('vs workers x one worker', 'efficiency', '{:.0%}')]))
    if 'speedup_first_over_second' in out:
        print('per-worker speed-up of ' + ' over '.join(pipes[:2]) + ': ' +
              ', '.join(f"{k} {v:.2f}x" for k, v in out['speedup_first_over_second'].items()))
    return 0

if __name__ == '__main__':
    sys.exit(main())
