#!/usr/bin/env python
"""Images per second of the library's sliding-window evaluation (`cps_repro.evaluate.sliding_window`, the
Cityscapes protocol: 800 px windows, stride ceil(800 x 2/3) = 534, logits summed) or whole-image inference
(`predict(mode='whole')`, VOC), for one network in evaluation mode on random normalised images, at the precision
the library's `evaluate(amp=...)` runs (autocast inside each forward pass, float32 sums) and with `window_batch`
windows per forward pass. `--window-batch 1,4` times both settings interleaved (1 = the one-window-at-a-time loop
of before) and checks that their argmax maps agree.

    python benchmarks/bench_eval.py --device cuda --backbone resnet101 --image 1024x2048 --crop 800 --precision bf16 --window-batch 1,4
    python benchmarks/bench_eval.py --tiny
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch

from common import describe, machine_info, sync, write_json

DTYPES = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def main(argv=None) -> int:
    from cps_repro.evaluate import default_stride, predict, window_starts
    from cps_repro.models import deeplabv3plus
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--backbone', default='small_resnet')
    p.add_argument('--num-classes', type=int, default=19)
    p.add_argument('--output-stride', type=int, default=None)
    p.add_argument('--mode', default='sliding', choices=('sliding', 'whole'))
    p.add_argument('--image', default='256x512', help='HxW of the evaluated images (Cityscapes: 1024x2048)')
    p.add_argument('--crop', type=int, default=200, help='window (sliding) or padded size (whole); Cityscapes 800, VOC 512')
    p.add_argument('--precision', default='fp32', choices=tuple(DTYPES))
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--window-batch', default='4', help='windows per forward pass; comma-separated values are timed interleaved')
    p.add_argument('--images', type=int, default=None, help='timed images (after one warm-up image; default 5, with --tiny 2)')
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--clock', choices=('wall', 'cpu'), default=None, help="default: 'cpu' (process time) on CPU, 'wall' on CUDA")
    p.add_argument('--json', default=None)
    p.add_argument('--tiny', action='store_true')
    a = p.parse_args(argv)
    if a.tiny: a.backbone, a.image, a.crop = 'small_resnet', '64x128', 48
    if a.images is None: a.images = 2 if a.tiny else 5     # an explicit --images wins, also with --tiny
    device = torch.device(a.device)
    a.clock = a.clock or ('wall' if device.type == 'cuda' else 'cpu')
    torch.set_num_threads(a.threads or (1 if device.type == 'cpu' else torch.get_num_threads()))
    h, w = (int(x) for x in a.image.lower().split('x'))
    os_ = a.output_stride or (4 if a.backbone.startswith('small_resnet') else 16)
    model = deeplabv3plus(a.backbone, a.num_classes, os_).to(device).eval()
    mem = torch.channels_last if a.channels_last else torch.contiguous_format
    model = model.to(memory_format=mem)
    g = torch.Generator().manual_seed(0)
    images = [torch.randn(1, 3, h, w, generator=g).to(device).contiguous(memory_format=mem) for _ in range(2)]
    dtype = DTYPES[a.precision]
    wbs = [int(x) for x in str(a.window_batch).split(',') if x.strip()]
    def one(x, wb):
        return predict(model, x, mode=a.mode, crop=a.crop, num_classes=a.num_classes, amp=dtype, window_batch=wb)
    s = default_stride(a.crop)
    windows = len(window_starts(max(h, a.crop), a.crop, s)) * len(window_starts(max(w, a.crop), a.crop, s)) if a.mode == 'sliding' else 1
    maps, agree, times, wall = {}, {}, {wb: [] for wb in wbs}, {wb: [] for wb in wbs}
    info = machine_info(device)

    def result(finished: bool, now: str = '') -> dict:
        "What is measured so far (a run killed midway keeps its last write): the window batches timed at least once."
        runs = []
        for wb in wbs:
            if not times[wb]: continue
            d = describe(times[wb])
            runs.append(dict(window_batch=wb, times_s=times[wb], wall_s=wall[wb], stats=d, img_s=1 / d['median'],
                             ms_per_window=d['median'] * 1000 / windows, argmax_agreement_with_first=agree.get(wb)))
        out = dict(kind='bench_eval', finished=finished, now=now, machine=info, settings=vars(a).copy(),
                   windows_per_image=windows, runs=runs)
        if runs:
            last = runs[-1]
            out.update(times_s=last['times_s'], wall_s=last['wall_s'], stats=last['stats'], img_s=last['img_s'],
                       ms_per_window=last['ms_per_window'])
        if len(runs) > 1: out['speedup_last_over_first'] = runs[0]['stats']['median'] / runs[-1]['stats']['median']
        if device.type == 'cuda': out['cuda_max_allocated'] = torch.cuda.max_memory_allocated(device)
        return out

    def save(finished: bool, now: str = '') -> None:
        if a.json: write_json(result(finished, now), a.json)

    for wb in wbs:                                                           # warm-up, and the predictions compared
        save(False, f'warm-up, window_batch={wb}')
        maps[wb] = one(images[0], wb).argmax(1); sync(device)
        agree[wb] = float((maps[wb] == maps[wbs[0]]).float().mean())
    for i in range(a.images):
        for k in range(len(wbs)):
            wb = wbs[(i + k) % len(wbs)]                                     # interleaved, order rotated
            sync(device); t0, p0 = time.perf_counter(), time.process_time()
            one(images[i % 2], wb); sync(device)
            wall[wb].append(time.perf_counter() - t0); times[wb].append(time.process_time() - p0 if a.clock == 'cpu' else wall[wb][-1])
            save(False, f'image {i + 1} of {a.images}')
    out = result(True)
    runs = out['runs']
    save(True)
    for r in runs:
        d = r['stats']
        print(f"{a.mode} evaluation, {a.backbone}, {h}x{w} images, crop {a.crop} ({windows} windows, {r['window_batch']} per forward), "
              f"{a.precision}{' channels_last' if a.channels_last else ''}, {device}, {a.clock} clock: {r['img_s']:.2f} img/s "
              f"(median {d['median'] * 1000:.0f} ms, IQR {d['iqr_rel']:.0%}, {r['ms_per_window']:.1f} ms/window; "
              f"argmax agreement with window_batch={wbs[0]}: {r['argmax_agreement_with_first']:.4f})")
    if len(runs) > 1: print(f"speed-up of window_batch={wbs[-1]} over {wbs[0]}: {out['speedup_last_over_first']:.2f}x")
    return 0

if __name__ == '__main__':
    sys.exit(main())
