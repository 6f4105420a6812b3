#!/usr/bin/env python
"""Peak memory per process of one training step, estimated without a GPU and without computing anything, with a
verdict for 80 GB and 141 GB devices.

The library's own loss function of the method runs on the `meta` device (shapes only) while a saved-tensors hook
adds up what autograd keeps for the backward pass, attributed to the forward call (network k on input x) that
saved it; walking each loss term's graph tells which forward calls it needs. Two orders of the backward:

- `one`: one backward over the weighted sum of all terms (the library's step today): every forward graph of the
  micro-batch is alive at the peak;
- `per-term`: each term's graph is built and back-propagated before the next one's forwards run (or the equivalent
  order), so only the graphs of one term, plus those a later term still needs, are alive at once;
- `per-net`: the loss regrouped by network (sup_k + CE(logits_k, the other network's detached pseudo labels)) and
  each network's share back-propagated before the other network's graphs are built: the graphs of one network
  are alive at once (a lower bound for any regrouping; CPS's loss term needs both networks as one term).

Per process: saved activations of the peak (one micro-batch = batch / accum_steps) + the model state of the trained
networks (fp32 parameters, gradients and SGD momentum) + under bf16/fp16 the half-precision weight copies autocast
keeps + the batch tensors. The "planning" figure adds what the count leaves out (backward transients of the order of
the largest saved tensors, the allocator's caching and fragmentation, cuDNN workspaces, the CUDA context) as
x 1.35 + 2 GiB (1.35: the marginal measured RSS per counted byte of the CPU calibration below), and the verdict compares it with the usable memory of an 80 GB (79.1 GiB) and a 141 GB H200
(139.8 GiB) device. `--calibrate` checks the count against the process's measured RSS rise for real CPU steps at
small sizes (bench_step.py --memory-only in fresh processes).

    python benchmarks/estimate_memory.py --backbone resnet101 --crop 512 --batch 8 --accum 1,2 --precisions fp32,bf16
    python benchmarks/estimate_memory.py --calibrate
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch

from common import bench_config, machine_info, table, write_json

GIB = 2**30
CAPACITY_GIB = {'80 GB': 79.1, '141 GB': 139.8}          # usable memory reported by torch on H100 80GB / H200
PLAN_FACTOR, PLAN_EXTRA_GIB = 1.35, 2.0          # 1.35: the CPU calibration's marginal RSS per counted byte
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
ORDERS = ('one', 'per-term', 'per-net')


def _graph_nodes(t: torch.Tensor) -> set:
    "Every autograd node reachable backwards from `t`."
    seen, stack = set(), [t.grad_fn] if t.grad_fn is not None else []
    while stack:
        n = stack.pop()
        if n is None or n in seen: continue
        seen.add(n); stack.extend(f for f, _ in n.next_functions)
    return seen

def trace_step(method: str, backbone: str, crop: int, batch_l: int, batch_u: int, dtype: torch.dtype,
               num_classes: int = 21, output_stride: int | None = None) -> dict:
    """Run `method`'s loss function on the meta device for one micro-batch of `batch_l` + `batch_u` images: bytes saved
    for backward per forward call, the calls each loss term needs, and the model state."""
    from cps_repro.models import count_parameters
    from cps_repro.methods import StepContext, get_method
    from cps_repro.train import build_networks
    cfg = bench_config(method, backbone, crop, batch_l, batch_u, num_classes=num_classes, output_stride=output_stride)
    nets = [n.to(device='meta', dtype=dtype) for n in build_networks(cfg, torch.device('cpu'))]
    spec = get_method(method)
    params = {id(p) for n in nets for p in n.parameters()}
    calls: list[dict] = []          # one per forward call: {'net', 'images', 'saved': {storage id: bytes}, 'out'}
    other: dict = {}                # saved outside any forward call (the losses, CutMix mixing)
    def pack(t):
        if id(t) not in params:
            base = t._base if t._base is not None else t
            (calls[-1]['saved'] if calls and calls[-1]['open'] else other)[id(base)] = base.untyped_storage().nbytes()
        return t
    class Ctx(StepContext):
        def forward(self, k, x):
            calls.append(dict(net=self.index(k), images=int(x.shape[0]), saved={}, open=True, out=None))
            out = super().forward(k, x)
            calls[-1].update(open=False, out=out)
            return out
    img = lambda b: torch.empty(b, 3, crop, crop, device='meta', dtype=dtype)
    lab = {'image': img(batch_l), 'label': torch.zeros(batch_l, crop, crop, device='meta', dtype=torch.long)}
    batch = {v: lab if v == 'labeled' else {'image': img(batch_u)} for v in spec.views}
    ctx = Ctx(nets, cfg, 0, torch.Generator(), None, names=spec.nets)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        terms = spec.losses(ctx, batch)
    grad_calls = [c for c in calls if c['out'] is not None and c['out'].grad_fn is not None]
    needs = {}
    for name, (v, _) in terms.items():
        nodes = _graph_nodes(v)
        needs[name] = [i for i, c in enumerate(grad_calls) if c['out'].grad_fn in nodes]
    n_params = sum(count_parameters(nets[k]) for k in spec.trained)
    largest = max((b for c in grad_calls for b in c['saved'].values()), default=0)
    return dict(calls=[dict(net=c['net'], images=c['images'], bytes=sum(c['saved'].values())) for c in grad_calls],
                other_bytes=sum(other.values()), needs=needs, n_params=n_params, n_params_net=count_parameters(nets[0]),
                trained=len(spec.trained), largest_saved=largest, terms=sorted(terms))

def peak_activations(trace: dict, order: str) -> int:
    "Saved bytes alive at the peak of the backward `order` ('one', 'per-term' in the method's term order, 'per-net')."
    sizes = [c['bytes'] for c in trace['calls']]
    if order == 'one': return sum(sizes) + trace['other_bytes']
    if order == 'per-net':
        nets = {c['net'] for c in trace['calls']}
        return max((sum(c['bytes'] for c in trace['calls'] if c['net'] == k) for k in nets), default=0) + trace['other_bytes']
    names, alive, peak = list(trace['needs']), set(), 0
    for i, name in enumerate(names):
        alive |= set(trace['needs'][name])
        peak = max(peak, sum(sizes[j] for j in alive))
        later = {j for n in names[i + 1:] for j in trace['needs'][n]}
        alive &= later                                           # graphs no later term needs are freed by this backward
    return peak + trace['other_bytes']

def estimate(method: str, backbone: str, crop: int, batch_l: int, batch_u: int, precision: str = 'fp32',
             accum_steps: int = 1, order: str = 'one', num_classes: int = 21, output_stride: int | None = None,
             trace: dict | None = None) -> dict:
    "Estimated peak per process (GiB) of one step and the verdict for 80 GB / 141 GB devices."
    if batch_l % accum_steps or batch_u % accum_steps:
        raise ValueError(f"batch {batch_l}+{batch_u} does not split into {accum_steps} micro-batches")
    if order not in ORDERS: raise ValueError(f"order {order!r}: expected one of {ORDERS}")
    dtype = DTYPES[precision]
    tr = trace or trace_step(method, backbone, crop, batch_l // accum_steps, batch_u // accum_steps, dtype, num_classes, output_stride)
    act = peak_activations(tr, order)
    state = 3 * 4 * tr['n_params']                               # fp32 parameters + gradients + momentum
    casts = 2 * tr['trained'] * tr['n_params_net'] if dtype != torch.float32 else 0   # one half copy of each trained net's weights
    n_unl = {'supervised': 0, 'cps_cutmix': 2}.get(method, 1)
    batch_bytes = (batch_l + n_unl * batch_u) * 3 * crop * crop * 4 + batch_l * crop * crop * 8   # float images, int64 labels on the device
    total = act + state + casts + batch_bytes
    plan = total / GIB * PLAN_FACTOR + PLAN_EXTRA_GIB
    batch = str(batch_l) if method == 'supervised' else f"{batch_l}+{batch_u}" + (f'+{batch_u}' if method == 'cps_cutmix' else '')
    return dict(method=method, backbone=backbone, crop=crop, batch=batch, precision=precision, accum_steps=accum_steps,
                order=order, activations_gib=act / GIB, state_gib=state / GIB, weight_casts_gib=casts / GIB,
                batch_gib=batch_bytes / GIB, total_gib=total / GIB, plan_gib=plan,
                **{f'fits_{k.replace(" ", "")}': plan <= v for k, v in CAPACITY_GIB.items()},
                verdict=', '.join(f"{'fits' if plan <= v else 'does not fit'} {k}" for k, v in CAPACITY_GIB.items()))

def calibrate(cases, crop: int = 64, backbone: str = 'small_resnet') -> list[dict]:
    """Measured CPU RSS rise of one real step (bench_step.py --memory-only, fresh process each) next to the count
    (saved activations + gradients + momentum + batch; the parameters exist before the measured step)."""
    rows = []
    for method, b in cases:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / 'm.json'
            cmd = [sys.executable, str(Path(__file__).with_name('bench_step.py')), '--device', 'cpu', '--backbone', backbone,
                   '--crop', str(crop), '--batch', str(b), '--memory-only', '--variants', 'fp32', '--methods', method,
                   '--json', str(path)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode or not path.exists():
                rows.append(dict(method=method, batch=b, error=(res.stderr.strip().splitlines() or ['?'])[-1][:200])); continue
            m = json.loads(path.read_text())
        e = estimate(method, backbone, crop, b, b, 'fp32', 1, 'one')
        counted = (e['activations_gib'] + e['state_gib'] * 2 / 3 + e['batch_gib']) * GIB
        measured = m['rss_peak_step'] - m['rss_after_build']
        rows.append(dict(method=method, batch=e['batch'], crop=crop, counted_mib=counted / 2**20, measured_rss_rise_mib=measured / 2**20,
                         ratio=measured / counted if counted else None))
    return rows

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--backbone', default='resnet101')
    p.add_argument('--crop', type=int, default=512)
    p.add_argument('--batch', type=int, default=None, help='B_l = B_u per process (default 8, --tiny 2; the paper: 8 + 8 in total, over its GPUs)')
    p.add_argument('--batch-l', type=int); p.add_argument('--batch-u', type=int)
    p.add_argument('--accum', default='1', help='comma-separated accumulation steps (micro-batch = batch / accum)')
    p.add_argument('--num-classes', type=int, default=21)
    p.add_argument('--output-stride', type=int, default=None)
    p.add_argument('--methods', default='supervised,cps,cps_cutmix')
    p.add_argument('--precisions', '--dtypes', dest='precisions', default='fp32,bf16')
    p.add_argument('--orders', default='one,per-term,per-net')
    p.add_argument('--calibrate', action='store_true', help='also compare the count with measured CPU RSS at small sizes')
    p.add_argument('--json', default=None)
    p.add_argument('--tiny', action='store_true')
    a = p.parse_args(argv)
    if a.tiny: a.backbone, a.crop = 'small_resnet', 32
    a.batch = a.batch or (2 if a.tiny else 8)
    bl, bu = a.batch_l or a.batch, a.batch_u or a.batch
    torch.set_num_threads(1)
    rows, traces = [], {}
    for prec in a.precisions.split(','):
        for m in a.methods.split(','):
            for acc in (int(x) for x in a.accum.split(',')):
                key = (prec, m, acc)
                traces[key] = trace_step(m, a.backbone, a.crop, bl // acc, bu // acc, DTYPES[prec], a.num_classes, a.output_stride)
                for order in a.orders.split(','):
                    rows.append(estimate(m, a.backbone, a.crop, bl, bu, prec, acc, order, a.num_classes, a.output_stride, traces[key]))
    out = dict(kind='estimate_memory', machine=machine_info(torch.device('cpu')), settings=vars(a), rows=rows,
               capacity_gib=CAPACITY_GIB, plan=f"x{PLAN_FACTOR} + {PLAN_EXTRA_GIB} GiB")
    if a.calibrate:
        cal = out['calibration'] = calibrate([('supervised', 4), ('cps', 4), ('cps_cutmix', 4), ('cps_cutmix', 8)])
        two = [r for r in cal if r['method'] == 'cps_cutmix' and 'error' not in r]
        if len(two) == 2:
            slope = (two[1]['measured_rss_rise_mib'] - two[0]['measured_rss_rise_mib']) / (two[1]['counted_mib'] - two[0]['counted_mib'])
            out['calibration_fit'] = dict(marginal_measured_per_counted=slope,
                                          fixed_mib=two[0]['measured_rss_rise_mib'] - slope * two[0]['counted_mib'])
    if a.json: write_json(out, a.json)
    print(f"estimated peak per process, {a.backbone} DeepLabv3+, crop {a.crop}: counted = saved activations of the peak + "
          f"model state + half weight copies + batch; plan = counted x {PLAN_FACTOR} + {PLAN_EXTRA_GIB} GiB")
    print(table(rows, [('method', 'method', '{}'), ('batch', 'batch', '{}'), ('prec', 'precision', '{}'), ('accum', 'accum_steps', '{}'),
                       ('backward', 'order', '{}'), ('activations GiB', 'activations_gib', '{:.1f}'), ('state GiB', 'state_gib', '{:.2f}'),
                       ('counted GiB', 'total_gib', '{:.1f}'), ('plan GiB', 'plan_gib', '{:.1f}'), ('verdict', 'verdict', '{}')]))
    if a.calibrate:
        print('\ncalibration on CPU (fp32, small_resnet, crop 64): counted vs measured RSS rise of one step')
        print(table(out['calibration'], [('method', 'method', '{}'), ('batch', 'batch', '{}'), ('counted MiB', 'counted_mib', '{:.0f}'),
                                          ('measured MiB', 'measured_rss_rise_mib', '{:.0f}'), ('measured / counted', 'ratio', '{:.2f}'),
                                          ('error', 'error', '{}')]))
        if 'calibration_fit' in out:
            f = out['calibration_fit']
            print(f"CPS+CutMix 4 -> 8: {f['marginal_measured_per_counted']:.2f} MiB measured per counted MiB, "
                  f"{f['fixed_mib']:.0f} MiB fixed (allocator, threads, first-call buffers)")
    return 0

if __name__ == '__main__':
    sys.exit(main())
