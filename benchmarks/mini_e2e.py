#!/usr/bin/env python
"""End-to-end sanity run of the mini preset (generated 32 px VOC-layout data, small DeepLabv3+ with the shipped
pretrained backbone) for a few hundred iterations through `cps_repro.train.train`, on any device: the losses stay
finite and fall, the run writes its result, and mIoU is above chance (from 100 iterations on). Meant for the GPU check; on CPU with
`--tiny` it dry-runs the same code path in seconds.

    python benchmarks/mini_e2e.py --device cuda --iters 300 --methods supervised,cps_cutmix --variants fp32,bf16+cl
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch

from common import machine_info, table, write_json


def run_one(method: str, variant: str, a, root: Path, out: Path, device: torch.device) -> dict:
    from bench_step import parse_variant
    from cps_repro.presets import preset
    from cps_repro.train import train
    v = parse_variant(variant)
    overrides = {'data_root': str(root), 'iters': a.iters, 'eval_every': a.iters, 'checkpoint_every': a.iters,
                 'log_every': max(a.iters // 20, 1), 'amp': v.amp, 'channels_last': v.channels_last,
                 'eval.save_predictions': 0, 'seed': a.seed}
    if a.no_pretrained: overrides['model.pretrained'] = None
    cfg = preset(f'mini_{method}', a.split, **overrides)
    t0 = time.perf_counter()
    res = train(cfg, out_dir=out / variant.replace('+', '_'), device=str(device), progress=False)
    total = time.perf_counter() - t0
    rows = [json.loads(l) for l in (out / variant.replace('+', '_') / cfg.run_id / 'metrics.jsonl').read_text().splitlines()]
    losses = [r['loss/total'] for r in rows if 'loss/total' in r]
    finite = all(math.isfinite(x) for x in losses)
    chance = 100.0 / cfg.data.num_classes
    learned = a.iters < 100 or (losses[-1] < losses[0] and res['miou'] > chance)   # a dry run only checks finiteness
    ok = finite and bool(losses) and learned
    return dict(method=method, variant=variant, iters=a.iters, miou=res['miou'], chance_miou=chance,
                loss_first=losses[0] if losses else None, loss_last=losses[-1] if losses else None, finite=finite,
                train_s=res['wall_seconds'], total_s=total, ms_per_iter=1000 * res['wall_seconds'] / a.iters,
                device=res['device'], ok=ok)

def main(argv=None) -> int:
    from cps_repro.mini import MINI_N_TRAIN, ensure_dataset
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--methods', default='supervised,cps_cutmix')
    p.add_argument('--variants', default='fp32', help='fp32 | bf16 | fp16, optionally +cl (as in bench_step.py)')
    p.add_argument('--split', default='1_8')
    p.add_argument('--iters', type=int, default=300)
    p.add_argument('--n', type=int, default=MINI_N_TRAIN, help='generated training images (the mini data: %(default)s)')
    p.add_argument('--data-dir', default=None, help='mini data folder (generated when empty; default: temporary)')
    p.add_argument('--no-pretrained', action='store_true', help='random backbone instead of the shipped file')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--json', default=None)
    p.add_argument('--tiny', action='store_true', help='5 iterations on 64 images: a dry run of the code path')
    a = p.parse_args(argv)
    if a.tiny: a.iters, a.n = 5, 64
    device = torch.device(a.device)
    torch.set_num_threads(a.threads or (1 if device.type == 'cpu' else torch.get_num_threads()))
    out = dict(kind='mini_e2e', machine=machine_info(device), settings=vars(a).copy(), runs=[])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(a.data_dir) if a.data_dir else Path(tmp) / 'mini_data'
        t0 = time.perf_counter()
        ensure_dataset(root, seed=a.seed, n=a.n)
        out['generate_s'] = time.perf_counter() - t0
        for v in [x.strip() for x in a.variants.split(',') if x.strip()]:
            for m in [x.strip() for x in a.methods.split(',') if x.strip()]:
                out['runs'].append(run_one(m, v, a, root, Path(tmp) / 'runs', device))
                if a.json: write_json(out, a.json)
    if a.json: write_json(out, a.json)
    print(f"\nmini preset, split {a.split}, {a.iters} iterations, {device}: data generated in {out['generate_s']:.1f} s")
    print(table(out['runs'], [('method', 'method', '{}'), ('variant', 'variant', '{}'), ('mIoU', 'miou', '{:.1f}'),
                              ('chance', 'chance_miou', '{:.1f}'), ('loss first', 'loss_first', '{:.3f}'),
                              ('loss last', 'loss_last', '{:.3f}'), ('ms/iter', 'ms_per_iter', '{:.1f}'),
                              ('train s', 'train_s', '{:.1f}'), ('ok', 'ok', '{}')]))
    return 0 if all(r['ok'] for r in out['runs']) else 1

if __name__ == '__main__':
    sys.exit(main())
