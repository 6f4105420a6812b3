#!/usr/bin/env python
"""Where the time of one `Trainer.step()` goes, by the PyTorch profiler: phases (data copy, forward passes, loss
terms, backward, optimizer) and operator groups (convolution, batch norm, upsampling, cross-entropy, ...), as
shares of the step's CPU time, plus the top operators by self time.

The phases are `record_function` ranges this script wraps around the trainer's own functions (nothing in the
package changes): `Trainer.next_batch`, every `StepContext.forward`, the method's loss function minus its forwards,
`Tensor.backward`, and the optimizer/scheduler steps.

    python benchmarks/profile_step.py --backbone small_resnet --crop 128 --batch 8 --methods supervised,cps,cps_cutmix
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from torch.profiler import ProfilerActivity, profile, record_function

from common import bench_config, machine_info, synthetic_data, write_json

# operator groups: first match wins (self time of aten ops; backward ops carry 'backward' in their names)
GROUPS = [
    ('convolution', r'conv|mkldnn_convolution|_convolution|thnn_conv|slow_conv|cudnn_conv'),
    ('batch norm', r'batch_norm|native_batch_norm'),
    ('upsample (bilinear)', r'upsample|interpolate|grid_sampler'),
    ('cross-entropy / softmax', r'log_softmax|nll_loss|cross_entropy|_softmax'),
    ('argmax / pseudo labels', r'argmax|max\b'),
    ('activations', r'relu|leaky_relu|threshold|hardtanh'),
    ('optimizer', r'_foreach|_fused_sgd|sgd|lerp'),
    ('copies / cat / layout', r'copy_|cat|to_copy|_to_copy|contiguous|clone|pin_memory|empty_like|stack|narrow|slice'),
    ('elementwise / reductions', r'add|mul|sub|div|sum|mean|where|masked_fill|fill_|zero_|ne|eq|lt|ge|gt|le|bitwise|exp|log|pow|clamp|neg|rsqrt|sqrt|var'),
]
PHASES = ('data: next_batch + copy', 'forward passes', 'loss terms (no forwards)', 'backward', 'optimizer + scheduler')


def instrument(trainer) -> None:
    "Wrap the trainer's functions in record_function ranges (this instance / class only, for the profile)."
    nb = trainer.next_batch
    def next_batch():
        with record_function(PHASES[0]): return nb()
    trainer.next_batch = next_batch
    losses = trainer.method.losses
    def wrapped_losses(*args, **kw):
        with record_function('method losses'): return losses(*args, **kw)
    trainer.method = dataclasses.replace(trainer.method, losses=wrapped_losses)
    for o in trainer.opts:
        step = o.step
        def ostep(*a, _s=step, **k):
            with record_function(PHASES[4]): return _s(*a, **k)
        o.step = ostep
    for s in trainer.scheds:
        sstep = s.step
        def sched_step(*a, _s=sstep, **k):
            with record_function(PHASES[4]): return _s(*a, **k)
        s.step = sched_step

class _Patched:
    "StepContext.forward and Tensor.backward wrapped in ranges for the duration of a `with` block."
    def __enter__(self):
        from cps_repro.methods import StepContext
        self.fwd, self.bwd = StepContext.forward, torch.Tensor.backward
        fwd, bwd = self.fwd, self.bwd
        def forward(ctx, k, x):
            with record_function(PHASES[1]): return fwd(ctx, k, x)
        def backward(t, *a, **k):
            with record_function(PHASES[3]): return bwd(t, *a, **k)
        StepContext.forward, torch.Tensor.backward = forward, backward
        return self
    def __exit__(self, *exc):
        from cps_repro.methods import StepContext
        StepContext.forward, torch.Tensor.backward = self.fwd, self.bwd


def group_of(name: str) -> str:
    n = name.lower()
    for g, pat in GROUPS:
        if re.search(pat, n): return g
    return 'other'

def analyse(prof, steps: int) -> dict:
    "Phase shares (CPU total of the ranges) and operator-group shares (self CPU time of aten ops), per step."
    ev = prof.key_averages()
    total_range = next((e for e in ev if e.key == 'train step'), None)
    step_us = total_range.cpu_time_total / steps if total_range else None
    ranges = {e.key: e.cpu_time_total / steps for e in ev if e.key in PHASES or e.key == 'method losses'}
    phases = {p: ranges.get(p, 0.0) for p in PHASES}
    # loss terms = the method's loss function minus the forwards inside it
    phases[PHASES[2]] = max(ranges.get('method losses', 0.0) - ranges.get(PHASES[1], 0.0), 0.0)
    ops = [e for e in ev if e.key.startswith('aten::') or e.key.startswith('mkldnn') or 'fused' in e.key]
    groups: dict = {}
    for e in ops: groups[group_of(e.key)] = groups.get(group_of(e.key), 0.0) + e.self_cpu_time_total / steps
    top = sorted(ops, key=lambda e: -e.self_cpu_time_total)[:15]
    return dict(step_ms=step_us / 1000 if step_us else None,
                phases_ms={k: v / 1000 for k, v in phases.items()},
                phases_share={k: (v / step_us if step_us else None) for k, v in phases.items()},
                groups_ms={k: v / 1000 for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
                groups_share={k: (v / step_us if step_us else None) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
                top_ops=[dict(op=e.key, self_ms=e.self_cpu_time_total / steps / 1000, calls=e.count // steps) for e in top])

def profile_method(method: str, a, device: torch.device) -> dict:
    "Profile `a.steps` steps of `method` ('sup_ref': supervised on 2 x batch images, the overheads' reference)."
    from cps_repro.train import Trainer
    from lean import LeanTrainer
    amp = {'fp32': 'none', 'bf16': 'bf16', 'fp16': 'fp16'}[a.precision]
    bl = 2 * a.batch if method == 'sup_ref' else a.batch
    cfg = bench_config('supervised' if method == 'sup_ref' else method, a.backbone, a.crop, bl, a.batch, amp=amp,
                       channels_last=a.channels_last, num_classes=a.num_classes, output_stride=a.output_stride)
    data = synthetic_data(bl, a.batch, a.crop, a.num_classes, device.type == 'cuda', seed=a.seed)
    with tempfile.TemporaryDirectory() as d:
        cls = LeanTrainer if a.lean else Trainer
        tr = cls(cfg, run_dir=d, device=str(device), progress=False, data=data)
        for _ in range(a.warmup): tr.step()
        instrument(tr)
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
        with _Patched(), profile(activities=acts) as prof:
            for _ in range(a.steps):
                with record_function('train step'): tr.step()
                if device.type == 'cuda': torch.cuda.synchronize()
    res = analyse(prof, a.steps)
    res['table'] = prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=a.rows)
    return res

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='cpu')
    p.add_argument('--backbone', default='small_resnet')
    p.add_argument('--crop', type=int, default=128)
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--num-classes', type=int, default=21)
    p.add_argument('--output-stride', type=int, default=None)
    p.add_argument('--precision', default='fp32', choices=('fp32', 'bf16', 'fp16'))
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--lean', action='store_true', help='profile the lean step (benchmarks/lean.py, all parts)')
    p.add_argument('--methods', default='sup_ref,cps,cps_cutmix', help="supervised, cps, cps_cutmix, sup_ref (supervised on 2 x batch)")
    p.add_argument('--steps', type=int, default=3)
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--rows', type=int, default=25, help='rows of the printed operator table')
    p.add_argument('--print-table', action='store_true', help="print the profiler's operator table per method")
    p.add_argument('--json', default=None)
    p.add_argument('--tiny', action='store_true')
    a = p.parse_args(argv)
    if a.tiny: a.crop, a.batch, a.steps, a.warmup = 32, 2, 1, 1
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    out = dict(kind='profile_step', machine=machine_info(device), settings=vars(a).copy(), methods={})
    for m in [m.strip() for m in a.methods.split(',') if m.strip()]:
        r = profile_method(m, a, device)
        out['methods'][m] = {k: v for k, v in r.items() if k != 'table'}
        print(f"\n== {m}{' (lean)' if a.lean else ''}: {r['step_ms']:.1f} ms per profiled step ({a.backbone}, crop {a.crop}, "
              f"batch {2 * a.batch if m == 'sup_ref' else a.batch}{'' if m in ('supervised', 'sup_ref') else f'+{a.batch}'}, {a.precision})")
        print('  phases: ' + ', '.join(f"{k} {v:.0%}" for k, v in r['phases_share'].items()))
        print('  operator groups (self time): ' + ', '.join(f"{k} {v:.0%}" for k, v in r['groups_share'].items()))
        print('  top ops: ' + ', '.join(f"{t['op']} {t['self_ms']:.1f} ms x{t['calls']}" for t in r['top_ops'][:8]))
        if a.print_table: print(r['table'])
    if a.json: write_json(out, a.json)
    return 0

if __name__ == '__main__':
    sys.exit(main())
