#!/usr/bin/env python
"""Time the real `Trainer.step()` of supervised, CPS and CPS+CutMix side by side, interleaved, in one process.

Every (variant, case) pair gets its own Trainer fed by synthetic batches of the right shapes (pinned on CUDA, so the
trainer's host-to-device copy is timed too). After `--warmup` untimed steps each, the script runs `--steps`
repetitions; each repetition times one step of every case, in an order rotated by one per repetition, so that load
from other processes hits all cases alike. On CPU the statistics use the process's CPU time by default (`--clock`):
on a shared machine the time spent waiting for a core is not the step's; wall time is recorded as well. Reported: median, quartiles and spread of the step time, images per
second, peak memory (CUDA: max allocated; CPU: RSS), and the headline ratios:

* CPS overhead    = T(cps on B_l + B_u) / (2 x T(supervised on B_l + B_u))                  ideal 1.0
* CutMix overhead = T(cps_cutmix) / (2 x T(supervised on B_l + B_u) + 4 x T(no-grad forward on B_u))   ideal 1.0
* speed-up of every variant over the first one (fp32 eager by default), per case.

The two reference cases are `sup_ref` (the supervised step with batch B_l + B_u) and `fwd_ref` (one no-grad forward
of one network on B_u images in training mode, autocast as configured: a CutMix teacher pass). `--split-ref` adds
`split_ref` (one network, B_l and B_u images in two forwards as CPS does, CE on both): 2 x split_ref / CPS separates
the cost of splitting the batch from the cost of the CPS loss terms.

Variants are `+`-joined tokens: a precision `fp32` | `bf16` | `fp16`, then any of `cl` (channels_last), `compile`
(`train.compile=true`: the trainer runs its forwards through `torch.compile`), `lean` (what is left of benchmarks/lean.py: `lean:infer`),
`cudnn` (cudnn.benchmark on for that variant's steps) and `strict` (cudnn.allow_tf32 off: convolutions in true fp32;
PyTorch's default runs fp32 convolutions in TF32). Example: `--variants fp32,bf16+cl,bf16+cl+compile`.

    python benchmarks/bench_step.py --backbone small_resnet --crop 128 --batch 8 --variants fp32,bf16 --steps 10
    python benchmarks/bench_step.py --tiny          # seconds: the smallest sizes, to check that it runs
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch

from common import (RSSSampler, bench_config, describe, machine_info, max_rss_bytes, mib, optimizer_state_tensors,
                    rss_bytes, sync, synthetic_data, table, tensor_bytes, write_json)

METHODS = ('supervised', 'cps', 'cps_cutmix')
PRECISIONS = {'fp32': 'none', 'bf16': 'bf16', 'fp16': 'fp16'}
FLAGS = ('cl', 'compile', 'lean', 'cudnn', 'strict')   # lean may name parts: lean:infer (default: all, see lean.py)


@dataclass(frozen=True)
class Variant:
    name: str
    amp: str
    channels_last: bool = False
    compile: bool = False
    lean: tuple = ()              # lean.PARTS switched on
    cudnn_benchmark: bool = False
    tf32: bool = True             # cudnn.allow_tf32 (PyTorch's default: convolutions in TF32); 'strict' turns it off

def parse_variant(text: str) -> Variant:
    "`bf16+cl+compile` -> Variant; unknown tokens are an error that lists the valid ones."
    from lean import PARTS
    tokens = [t.strip() for t in text.split('+') if t.strip()]
    if not tokens or tokens[0] not in PRECISIONS:
        raise ValueError(f"variant {text!r} must start with a precision: one of {', '.join(PRECISIONS)}")
    lean = ()
    for t in tokens[1:]:
        if t.split(':')[0] == 'lean':
            lean = tuple(x for x in t.split(':', 1)[1].split('.') if x) if ':' in t else PARTS
            bad = set(lean) - set(PARTS)
            if bad or not lean: raise ValueError(f"variant {text!r}: lean parts {sorted(bad) or '(none)'} unknown; valid: {', '.join(PARTS)}")
        elif t not in FLAGS: raise ValueError(f"variant {text!r}: unknown token {t!r}; valid: {', '.join(FLAGS)} (lean:part.part)")
    return Variant('+'.join(tokens), PRECISIONS[tokens[0]], 'cl' in tokens, 'compile' in tokens, lean, 'cudnn' in tokens,
                   'strict' not in tokens)

def apply_flags(v: Variant) -> None:
    "The process-wide cuDNN switches of variant `v` (set before each of its steps, so variants can interleave)."
    torch.backends.cudnn.benchmark = v.cudnn_benchmark
    torch.backends.cudnn.allow_tf32 = v.tf32


@dataclass
class Case:
    variant: Variant
    name: str                 # supervised | cps | cps_cutmix | sup_ref | fwd_ref
    images: int               # images that one timed unit consumes
    trainer: object
    run: object = None        # callable: one timed unit
    times: list = field(default_factory=list)       # seconds on the chosen clock (see --clock)
    wall: list = field(default_factory=list)        # wall-clock seconds, always
    warmup: list = field(default_factory=list)
    memory: dict = field(default_factory=dict)
    error: str | None = None
    rep_index: list = field(default_factory=list)   # repetition of each time (for per-repetition ratios)

    @property
    def key(self) -> str: return f"{self.variant.name}/{self.name}"


def build_cases(a, variants: list[Variant], device: torch.device, tmp: Path) -> list[Case]:
    """One Trainer per (variant, method) plus the references. With `a.share_nets` (default) all cases of the same
    memory format and compile flag train the same pair of networks (supervised: the first), each with its own
    optimizer: the timed work is the same, the memory held between steps far less."""
    import functools
    from cps_repro.train import Trainer, build_networks
    from lean import LeanTrainer
    pin = device.type == 'cuda'
    data = synthetic_data(a.batch_l, a.batch_u, a.crop, a.num_classes, pin, seed=a.seed)
    data_ref = synthetic_data(a.batch_l + a.batch_u, a.batch_u, a.crop, a.num_classes, pin, seed=a.seed + 10)
    pool: dict = {}
    def nets_for(v: Variant, method: str, cfg):
        if not a.share_nets: return None
        key = (v.channels_last, v.compile)
        if key not in pool:
            pool[key] = build_networks(bench_config('cps', batch_l=a.batch_l, batch_u=a.batch_u, **dict(kw, amp=v.amp)), device)
        return pool[key][:1] if method == 'supervised' else pool[key]
    cases = []
    for v in variants:
        cls = functools.partial(LeanTrainer, parts=v.lean) if v.lean else Trainer
        kw = dict(backbone=a.backbone, crop=a.crop, amp=v.amp, channels_last=v.channels_last, compile=v.compile,
                  num_classes=a.num_classes, output_stride=a.output_stride, cutmix_mask=a.cutmix_mask, seed=a.seed)
        made = {}
        for m in a.methods:
            cfg = bench_config(m, batch_l=a.batch_l, batch_u=a.batch_u, **kw)
            made[m] = cls(cfg, run_dir=tmp / v.name / m, device=str(device), progress=False, data=data,
                          nets=nets_for(v, m, cfg))
            n_img = a.batch_l + {'supervised': 0, 'cps': a.batch_u, 'cps_cutmix': 2 * a.batch_u}[m]
            cases.append(Case(v, m, n_img, made[m]))
        if a.refs:
            cfg = bench_config('supervised', batch_l=a.batch_l + a.batch_u, batch_u=a.batch_u, **kw)
            shared = nets_for(v, 'supervised', cfg) or (made['supervised'].nets if 'supervised' in made else None)
            ref = cls(cfg, run_dir=tmp / v.name / 'sup_ref', device=str(device), progress=False, data=data_ref, nets=shared)
            cases.append(Case(v, 'sup_ref', a.batch_l + a.batch_u, ref))
            cases.append(Case(v, 'fwd_ref', a.batch_u, ref))
        if a.split_ref:
            cfg = bench_config('supervised', batch_l=a.batch_l, batch_u=a.batch_u, **kw)
            split = cls(cfg, run_dir=tmp / v.name / 'split_ref', device=str(device), progress=False, data=data,
                        nets=nets_for(v, 'supervised', cfg))
            split.method = dataclasses.replace(split.method, losses=split_losses, views=('labeled', 'unlabeled'))
            cases.append(Case(v, 'split_ref', a.batch_l + a.batch_u, split))
    for c in cases: c.run = make_unit(c, device, a)
    return cases

def split_losses(ctx, batch: dict) -> dict:
    "Reference `split_ref`: one network, CPS's two forwards (B_l and B_u images) with CE on both, no CPS term."
    from cps_repro.methods import supervised_loss
    labeled, unlabeled = batch['labeled'], batch['unlabeled']
    y = labeled['label']
    return {'sup': (supervised_loss(ctx.forward(0, labeled['image']), y, ctx.cfg), 1.0),
            'sup_u': (supervised_loss(ctx.forward(0, unlabeled['image']), y[: unlabeled['image'].shape[0]], ctx.cfg), 1.0)}

def make_unit(c: Case, device: torch.device, a):
    "The callable timed for case `c` (the full trainer step, or one no-grad forward for `fwd_ref`)."
    from cps_repro.data import to_device
    from cps_repro.methods import StepContext
    tr, v = c.trainer, c.variant
    if c.name == 'fwd_ref':
        b = next(tr.data.unlabeled)
        x = to_device({'image': b['image'][: a.batch_u], 'valid': b['valid'][: a.batch_u]}, device,
                      channels_last=v.channels_last)['image']
        def unit():
            ctx = StepContext(getattr(tr, 'forward_nets', tr.nets), tr.cfg, tr.it, tr.cutmix_gen, tr.amp)
            with torch.no_grad(): ctx.forward(0, x)
        return unit
    def unit():
        tr.step()
    return unit

def free_grads(c: Case) -> None:
    "Drop the gradients a finished step leaves (the next step's zero_grad would): only one case's live at a time."
    for o in c.trainer.opts: o.zero_grad(set_to_none=True)

def timed(c: Case, device: torch.device) -> tuple[float, float]:
    "(wall seconds, CPU seconds of this process) of one unit of `c`."
    apply_flags(c.variant)
    sync(device); t0, p0 = time.perf_counter(), time.process_time()
    c.run()
    sync(device); dt, dp = time.perf_counter() - t0, time.process_time() - p0
    free_grads(c)
    return dt, dp

def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or 'out of memory' in str(e).lower()

def fail(c: Case, e: BaseException, where: str) -> None:
    c.error = f"{where}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]
    print(f"[bench_step] {c.key} failed during {where}: {c.error}", file=sys.stderr)
    if not is_oom(e): traceback.print_exc()
    free_grads(c); gc.collect()
    if torch.cuda.is_available(): torch.cuda.empty_cache()


def own_static_bytes(c: Case) -> int:
    "Parameters, gradients, buffers and optimizer state of the case's own trainer (what it holds between steps)."
    nets = c.trainer.nets
    ts = [p for n in nets for p in n.parameters()] + [p.grad for n in nets for p in n.parameters()]
    ts += [b for n in nets for b in n.buffers()]
    ts += [t for o in c.trainer.opts for t in optimizer_state_tensors(o)]
    return tensor_bytes(ts)

def measure_memory(c: Case, device: torch.device) -> dict:
    "Peak memory of one more (untimed) step of `c`."
    gc.collect()
    if device.type == 'cuda':
        apply_flags(c.variant)
        sync(device); torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        static = own_static_bytes(c)          # gradients of the last step are freed: params, buffers, optimizer state
        c.run(); sync(device)
        peak = torch.cuda.max_memory_allocated(device)
        grads = tensor_bytes([p.grad for n in c.trainer.nets for p in n.parameters()])
        free_grads(c)
        return dict(kind='cuda_max_allocated', step_increment=peak - before, own_static=static,
                    alone_estimate=static + peak - before, gradients=grads)
    sampler = RSSSampler().start()
    before = sampler.peak
    c.run()
    peak = sampler.stop(); free_grads(c)
    return dict(kind='cpu_rss', step_increment=peak - before, rss_peak=peak, own_static=own_static_bytes(c))


def ratios(cases: list[Case], baseline: str) -> dict:
    "Headline ratios per variant, from medians and from the per-repetition ratios (same repetition = same load)."
    by = {(c.variant.name, c.name): c for c in cases if c.error is None and c.times}
    def per_rep(c: Case) -> dict: return dict(zip(c.rep_index, c.times))
    out = {}
    for vname in dict.fromkeys(c.variant.name for c in cases):
        r = {}
        g = lambda name: by.get((vname, name))
        sup, fwd, cps, cut = g('sup_ref'), g('fwd_ref'), g('cps'), g('cps_cutmix')
        med = lambda c: describe(c.times)['median']
        lo = lambda c: min(c.times)
        if sup and cps:
            s, p = per_rep(sup), per_rep(cps)
            r['cps_overhead'] = med(cps) / (2 * med(sup))
            r['cps_overhead_of_minima'] = lo(cps) / (2 * lo(sup))
            r['cps_overhead_per_rep'] = describe([p[i] / (2 * s[i]) for i in p if i in s])
        spl = g('split_ref')
        if sup and cps and spl:
            s, q, p = per_rep(sup), per_rep(spl), per_rep(cps)
            r['split_overhead'] = med(spl) / med(sup)
            r['split_overhead_per_rep'] = describe([q[i] / s[i] for i in q if i in s])
            r['cps_loss_share'] = (med(cps) - 2 * med(spl)) / med(cps)
            r['cps_loss_share_per_rep'] = describe([(p[i] - 2 * q[i]) / p[i] for i in p if i in q])
        if sup and fwd and cut:
            s, f, k = per_rep(sup), per_rep(fwd), per_rep(cut)
            r['cutmix_overhead'] = med(cut) / (2 * med(sup) + 4 * med(fwd))
            r['cutmix_overhead_of_minima'] = lo(cut) / (2 * lo(sup) + 4 * lo(fwd))
            r['cutmix_overhead_per_rep'] = describe([k[i] / (2 * s[i] + 4 * f[i]) for i in k if i in s and i in f])
            r['cutmix_teacher_share'] = 4 * med(fwd) / med(cut)
        if vname != baseline:
            sp = {}
            for c in cases:
                b = by.get((baseline, c.name))
                if c.variant.name != vname or c.error or not c.times or b is None: continue
                pb, pc = per_rep(b), per_rep(c)
                sp[c.name] = dict(median_ratio=med(b) / med(c), min_ratio=min(b.times) / min(c.times),
                                  per_rep=describe([pb[i] / pc[i] for i in pc if i in pb]))
            r['speedup_vs_' + baseline] = sp
        out[vname] = r
    return out

def case_rows(cases: list[Case], baseline: str) -> list[dict]:
    base = {c.name: describe(c.times)['median'] for c in cases if c.variant.name == baseline and c.times and not c.error}
    rows = []
    for c in cases:
        d = describe(c.times) if c.times else {}
        m = c.memory
        row = dict(variant=c.variant.name, case=c.name, images=c.images, error=c.error, **{f't_{k}': v for k, v in d.items()},
                   first_s=c.warmup[0] if c.warmup else None)
        if c.wall: row['wall_median'] = describe(c.wall)['median']
        if d.get('median'):
            row['img_s'] = c.images / d['median']
            if c.name in base and c.variant.name != baseline: row['speedup'] = base[c.name] / d['median']
        if m:
            row['mem_step_mib'] = mib(m.get('step_increment'))
            row['mem_alone_mib'] = mib(m.get('alone_estimate', m.get('rss_peak')))
        rows.append(row)
    return rows

def report(cases, a, device, info, started, finished: bool) -> dict:
    baseline = a.variants[0]
    return dict(kind='bench_step', finished=finished, machine=info,
                settings=dict(device=str(device), backbone=a.backbone, crop=a.crop, batch_l=a.batch_l, batch_u=a.batch_u,
                              num_classes=a.num_classes, output_stride=a.output_stride, cutmix_mask=a.cutmix_mask,
                              variants=a.variants, methods=list(a.methods), refs=a.refs, steps=a.steps, warmup=a.warmup,
                              threads=torch.get_num_threads(), baseline=baseline, clock=a.clock),
                elapsed_s=round(time.perf_counter() - started, 2),
                cases=[dict(variant=c.variant.name, case=c.name, images=c.images, error=c.error, times_s=c.times, wall_s=c.wall,
                            rep_index=c.rep_index, warmup_s=c.warmup, stats=describe(c.times) if c.times else None,
                            memory=c.memory) for c in cases],
                rows=case_rows(cases, baseline), ratios=ratios(cases, baseline))


def print_report(rep: dict) -> None:
    cols = [('variant', 'variant', '{}'), ('case', 'case', '{}'), ('img', 'images', '{}'),
            ('median ms', 't_median', '{:.1f}'), ('p25 ms', 't_p25', '{:.1f}'), ('p75 ms', 't_p75', '{:.1f}'),
            ('IQR %', 't_iqr_rel', '{:.1%}'), ('wall ms', 'wall_median', '{:.1f}'), ('img/s', 'img_s', '{:.1f}'), ('x base', 'speedup', '{:.2f}'),
            ('step MiB', 'mem_step_mib', '{:.0f}'), ('peak MiB', 'mem_alone_mib', '{:.0f}'), ('first s', 'first_s', '{:.1f}'),
            ('error', 'error', '{}')]
    rows = [dict(r, **{k: r[k] * 1000 for k in ('t_median', 't_p25', 't_p75', 'wall_median') if r.get(k) is not None}) for r in rep['rows']]
    s = rep['settings']
    print(f"\n{s['backbone']}, crop {s['crop']}, batch {s['batch_l']}+{s['batch_u']}, {s['device']}, "
          f"{s['threads']} thread(s), {s['steps']} timed steps after {s['warmup']} warm-up, {s['clock']} clock, "
          f"torch {rep['machine']['torch']}, load {rep['machine'].get('load_average_1_5_15')}")
    print(table(rows, cols))
    for v, r in rep['ratios'].items():
        parts = []
        if 'cps_overhead' in r:
            q = r['cps_overhead_per_rep']
            parts.append(f"CPS overhead {r['cps_overhead']:.3f} (per rep median {q['median']:.3f}, IQR {q['p25']:.3f}-{q['p75']:.3f}; "
                         f"of minima {r['cps_overhead_of_minima']:.3f})")
        if 'cutmix_overhead' in r:
            q = r['cutmix_overhead_per_rep']
            parts.append(f"CutMix overhead {r['cutmix_overhead']:.3f} (per rep {q['median']:.3f}, IQR {q['p25']:.3f}-{q['p75']:.3f}; "
                         f"of minima {r['cutmix_overhead_of_minima']:.3f}; teacher passes {r['cutmix_teacher_share']:.0%} of the step)")
        for k, sp in r.items():
            if k.startswith('speedup_vs_'):
                parts.append(f"{k.replace('_', ' ')} (medians / per-rep median / minima): " + ', '.join(
                    f"{n} {x['median_ratio']:.2f}/{x['per_rep']['median']:.2f}/{x['min_ratio']:.2f}x" for n, x in sp.items()))
        if 'split_overhead' in r:
            parts.append(f"split forwards (split_ref / sup_ref) {r['split_overhead_per_rep']['median']:.3f}, "
                         f"CPS loss terms {r['cps_loss_share_per_rep']['median']:.1%} of the CPS step (per-rep medians)")
        if parts: print(f"[{v}] " + '; '.join(parts))
    iso = rep.get('isolated_memory')
    if iso:
        rows = [dict(r, peak=mib(r.get('cuda_max_allocated', r.get('rss_peak_step'))),
                     reserved=mib(r.get('cuda_max_reserved')), over_build=mib(r['rss_peak_step'] - r['rss_after_build'])
                     if 'rss_peak_step' in r else None) for r in iso]
        print('each case alone in a fresh process (CUDA: max allocated / reserved; CPU: peak RSS and its rise over the built model):')
        print(table(rows, [('variant', 'variant', '{}'), ('case', 'case', '{}'), ('peak MiB', 'peak', '{:.0f}'),
                           ('reserved MiB', 'reserved', '{:.0f}'), ('step rise MiB', 'over_build', '{:.0f}'), ('error', 'error', '{}')]))


def isolated_memory(a, device: torch.device) -> list[dict]:
    "Peak memory of each (variant, method) alone, each in a fresh process (no other case's memory or allocator cache)."
    out = []
    for v in a.variants:
        for m in a.methods:
            with tempfile.TemporaryDirectory() as d:
                path = Path(d) / 'mem.json'
                cmd = [sys.executable, __file__, '--memory-only', '--json', str(path), '--device', str(device),
                       '--backbone', a.backbone, '--crop', str(a.crop), '--batch-l', str(a.batch_l), '--batch-u', str(a.batch_u),
                       '--num-classes', str(a.num_classes), '--cutmix-mask', a.cutmix_mask, '--variants', v, '--methods', m,
                       '--threads', str(torch.get_num_threads())] + (['--output-stride', str(a.output_stride)] if a.output_stride else [])
                cmd += [] if a.share_nets else ['--no-share-nets']
                res = subprocess.run(cmd, capture_output=True, text=True)
                row = dict(variant=v, case=m, returncode=res.returncode)
                if res.returncode == 0 and path.exists(): row.update(json.loads(path.read_text()))
                else: row['error'] = (res.stderr.strip().splitlines() or ['?'])[-1][:300]
                out.append(row); print(f"[isolated memory] {v}/{m}: {row}", file=sys.stderr)
    return out

def memory_only(a, device: torch.device) -> None:
    "This process runs one case alone (one warm-up step, one measured step) and writes its peak memory (or the OOM)."
    with tempfile.TemporaryDirectory() as d:
        a.refs, a.share_nets, a.methods = False, False, a.methods[:1]
        res = dict(kind='bench_step_memory', variant=a.variants[0], case=a.methods[0], machine=machine_info(device),
                   settings=dict(backbone=a.backbone, crop=a.crop, batch_l=a.batch_l, batch_u=a.batch_u,
                                 num_classes=a.num_classes))
        (c,) = build_cases(a, [parse_variant(a.variants[0])], device, Path(d))
        res['rss_after_build'] = rss_bytes()
        try:
            c.run(); sync(device); free_grads(c)                 # warm-up (first-call allocations)
            if device.type == 'cuda': torch.cuda.reset_peak_memory_stats(device); sampler = None
            else: sampler = RSSSampler().start()
            c.run(); sync(device)
        except Exception as e:
            if not is_oom(e): raise
            res.update(oom=True, error=f"{type(e).__name__}: {str(e).splitlines()[0]}"[:500])
        if device.type == 'cuda':
            res.update(cuda_max_allocated=torch.cuda.max_memory_allocated(device),
                       cuda_max_reserved=torch.cuda.max_memory_reserved(device),
                       cuda_total=torch.cuda.get_device_properties(device).total_memory)
        elif not res.get('oom'): res.update(rss_peak_step=sampler.stop(), max_rss=max_rss_bytes())
        write_json(res, a.json)
        print(f"[bench_step] {res['variant']}/{res['case']} alone: " + (res.get('error') or ', '.join(
            f"{k} {v / 2**30:.2f} GiB" for k, v in res.items() if k.startswith(('cuda_', 'rss_', 'max_rss')))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--backbone', default='small_resnet')
    p.add_argument('--crop', type=int, default=128)
    p.add_argument('--batch', type=int, default=8, help='B_l = B_u (the paper: 8)')
    p.add_argument('--batch-l', type=int); p.add_argument('--batch-u', type=int)
    p.add_argument('--num-classes', type=int, default=21)
    p.add_argument('--output-stride', type=int, default=None, help='default 4 for small_resnet (the mini recipe), 16 otherwise')
    p.add_argument('--cutmix-mask', default='box', choices=('box', 'half'))
    p.add_argument('--variants', default='fp32', help="comma-separated, e.g. fp32,bf16+cl,bf16+cl+compile (first = baseline)")
    p.add_argument('--methods', default=','.join(METHODS))
    p.add_argument('--no-refs', dest='refs', action='store_false', help='skip the sup_ref / fwd_ref reference cases')
    p.add_argument('--split-ref', action='store_true',
                   help="add reference 'split_ref': one network, B_l and B_u in two forwards, CE on both (CPS without its loss)")
    p.add_argument('--no-share-nets', dest='share_nets', action='store_false',
                   help='every case builds its own networks (default: cases of one memory format share a pair)')
    p.add_argument('--steps', type=int, default=10, help='timed repetitions')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: 1 on CPU, unchanged on CUDA)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--deadline', type=float, default=None, help='stop starting repetitions after this many seconds')
    p.add_argument('--clock', choices=('wall', 'cpu'), default=None,
                   help="what the statistics and ratios use: 'cpu' = CPU seconds of this process (default on CPU: time spent "
                        "waiting for a core on a shared machine is left out), 'wall' (default on CUDA; always recorded too)")
    p.add_argument('--isolated-memory', action='store_true', help='also measure each case alone in a fresh process')
    p.add_argument('--memory-only', action='store_true',
                   help='run the first variant/method alone (one warm-up, one measured step) and write its peak memory')
    p.add_argument('--json', default=None, help='write the full results here')
    p.add_argument('--tiny', action='store_true', help='smallest sizes (small_resnet, crop 32, batch 2, 2 steps): a smoke run')
    a = p.parse_args(argv)
    if a.tiny:                                    # the smallest sizes, where not given explicitly
        for k, v in dict(backbone='small_resnet', crop=32, batch=2, steps=2, warmup=1).items():
            if getattr(a, k) == p.get_default(k): setattr(a, k, v)
    a.batch_l, a.batch_u = a.batch_l or a.batch, a.batch_u or a.batch
    a.variants = [v.strip() for v in a.variants.split(',') if v.strip()]
    a.methods = [m.strip() for m in a.methods.split(',') if m.strip()]
    for m in a.methods:
        if m not in METHODS: p.error(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    try: variants = [parse_variant(v) for v in a.variants]
    except ValueError as e: p.error(str(e))
    device = torch.device(a.device)
    if device.type == 'cuda' and not torch.cuda.is_available(): p.error('--device cuda but CUDA is not available')
    a.clock = a.clock or ('wall' if device.type == 'cuda' else 'cpu')
    torch.set_num_threads(a.threads or (1 if device.type == 'cpu' else torch.get_num_threads()))
    if a.memory_only: memory_only(a, device); return 0

    started = time.perf_counter()
    info = machine_info(device)
    with tempfile.TemporaryDirectory() as d:
        cases = build_cases(a, variants, device, Path(d))
        print(f"[bench_step] {len(cases)} cases built in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        def save(now: str) -> None:                       # the JSON of a run killed at any point: what it measured so far
            if a.json: write_json(dict(report(cases, a, device, info, started, False), now=now), a.json)
        for c in cases:                                   # warm-up (the first step includes any compilation)
            for i in range(a.warmup):
                if c.error: break
                save(f'{c.key} warm-up step {i + 1} of {a.warmup}' + (' (compiling)' if c.variant.compile and i == 0 else ''))
                try: c.warmup.append(timed(c, device)[0])
                except Exception as e: fail(c, e, 'warm-up')
            save(f'{c.key} warmed up')
        for r in range(a.steps):
            if a.deadline and time.perf_counter() - started > a.deadline:
                print(f"[bench_step] deadline reached after {r} repetitions", file=sys.stderr); break
            live = [c for c in cases if not c.error]
            k = r % max(len(live), 1)
            for c in live[k:] + live[:k]:
                try:
                    wall, cpu = timed(c, device)
                    c.times.append(cpu if a.clock == 'cpu' else wall); c.wall.append(wall); c.rep_index.append(r)
                except Exception as e: fail(c, e, f'repetition {r}')
            save(f'repetition {r + 1} of {a.steps} done')
        for c in cases:
            if c.error: continue
            try: c.memory = measure_memory(c, device)
            except Exception as e: fail(c, e, 'memory step')
        rep = report(cases, a, device, info, started, True)
    if a.isolated_memory: rep['isolated_memory'] = isolated_memory(a, device)
    if a.json: write_json(rep, a.json); print(f"[bench_step] wrote {a.json}", file=sys.stderr)
    print_report(rep)
    return 0 if all(c.error is None for c in cases) else 1

if __name__ == '__main__':
    sys.exit(main())
