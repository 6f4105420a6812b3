#!/usr/bin/env python
"""What the mini recipe's input settings cost on the CPU: one `cps-repro train` run of a mini preset, as the table
runs it (a single-thread process), once with the settings before `data.cache` and `eval.batch_size` existed
(`data.cache=false eval.batch_size=1`) and once with the recipe's own, on the same generated data. Reports the wall
time of each run, and the mIoU of both (the two settings give the same predictions up to float rounding).

    python benchmarks/mini_input.py --data-root data/mini_seed0 --iters 300 --evals 2 --out benchmarks/results/mini_input.json

`--data-root`: a mini data folder (`python -m cps_repro.mini` / exp_mini make one with `ensure_dataset`); without it a
generated folder of `--n-images` images is made in a temporary directory first (not timed).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch

from common import machine_info, table, write_json

SETTINGS = {'before (no cache, eval batch 1)': ['data.cache=false', 'eval.batch_size=1'], 'recipe': []}


def run(preset: str, split: str, root: str, iters: int, evals: int, sets: list, out: Path) -> dict:
    every = max(iters // evals, 1)
    args = [sys.executable, '-m', 'cps_repro.cli', 'train', '--preset', preset, '--split', split, '--data-root', root,
            '--run-dir', str(out), '--no-progress', '--set', f'iters={iters}', f'eval_every={every}',
            f'checkpoint_every={iters}', *sets]
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
    t0 = time.perf_counter()
    subprocess.run(args, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    res = json.loads((out / 'result.json').read_text())
    return dict(wall_s=round(wall, 1), miou=res['miou'], miou_net2=res.get('miou_net2'))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--preset', default='mini_cps_cutmix')
    ap.add_argument('--split', default='1_16')
    ap.add_argument('--data-root', help='a mini data folder (default: generate --n-images in a temporary folder)')
    ap.add_argument('--n-images', type=int, default=None, help='images to generate without --data-root (default MINI_N_TRAIN)')
    ap.add_argument('--n-val', type=int, default=None, help='validation images to generate without --data-root (default MINI_N_VAL)')
    ap.add_argument('--iters', type=int, default=300)
    ap.add_argument('--evals', type=int, default=2, help='evaluations during the run (the recipe: 6 in 3,000 iterations)')
    ap.add_argument('--out', type=Path, default=Path('benchmarks/results/mini_input.json'))
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = a.data_root
        if root is None:
            from cps_repro.mini import ensure_dataset
            from cps_repro.presets import MINI_N_TRAIN, MINI_N_VAL
            root = str(Path(tmp) / 'data')
            ensure_dataset(root, seed=0, n=a.n_images or MINI_N_TRAIN, n_val=a.n_val or MINI_N_VAL, progress=False)
        rows = []
        for name, sets in SETTINGS.items():
            r = run(a.preset, a.split, root, a.iters, a.evals, sets, Path(tmp) / name.split()[0])
            rows.append(dict(setting=name, **r, s_per_iter=round(r['wall_s'] / a.iters, 4)))
            print(f"{name}: {r['wall_s']:.1f} s, mIoU {r['miou']:.2f}", flush=True)
    speedup = rows[0]['wall_s'] / rows[1]['wall_s']
    out = dict(machine=machine_info(torch.device('cpu')), preset=a.preset, split=a.split, iters=a.iters, evals=a.evals,
               data_root=a.data_root, rows=rows, speedup=round(speedup, 3))
    write_json(out, a.out)
    print(table(rows, [('setting', 'setting', '{}'), ('wall s', 'wall_s', '{:.1f}'), ('s/iter', 's_per_iter', '{:.4f}'),
                       ('mIoU', 'miou', '{:.2f}')]))
    print(f"speed-up {speedup:.2f}x; written {a.out}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
