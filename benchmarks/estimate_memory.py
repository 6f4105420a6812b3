#!/usr/bin/env python
"""Estimate, without a GPU and without computing anything, the peak memory of one training step: the library's own
loss function of each method runs on the `meta` device (shapes only) while a saved-tensors hook adds up what
autograd keeps for the backward pass; add the model state (fp32 parameters, gradients, SGD momentum) of the trained
networks and, under bf16, the bf16 weight copies each autocast forward keeps.

Not counted: the allocator's caching and fragmentation, cuDNN workspaces, the backward pass's transient buffers
(of the order of the largest few activations) and the batches themselves; compare with `bench_step.py
--memory-only` on the device, which measures the real peak.

    python benchmarks/estimate_memory.py --backbone resnet101 --crop 512 --batch 8
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch

from common import bench_config, machine_info, table, write_json

GIB = 2**30


def estimate(method: str, backbone: str, crop: int, batch_l: int, batch_u: int, dtype: torch.dtype,
             num_classes: int = 21, output_stride: int | None = None) -> dict:
    from cps_repro.models import count_parameters
    from cps_repro.train import StepContext, build_networks, get_method
    cfg = bench_config(method, backbone, crop, batch_l, batch_u, num_classes=num_classes, output_stride=output_stride)
    nets = [n.to(device='meta', dtype=dtype) for n in build_networks(cfg, torch.device('cpu'))]
    spec = get_method(method)
    params = {id(p) for n in nets for p in n.parameters()}
    saved: dict = {}
    def pack(t):
        if id(t) not in params:
            base = t._base if t._base is not None else t
            saved[id(base)] = (base, base.untyped_storage().nbytes())
        return t
    img = lambda b: torch.empty(b, 3, crop, crop, device='meta', dtype=dtype)
    lab = {'image': img(batch_l), 'label': torch.empty(batch_l, crop, crop, device='meta', dtype=torch.long)}
    unl = [{'image': img(batch_u)} for _ in range(spec.unlabeled_streams)] + [None, None]
    ctx = StepContext(nets, cfg, 0, torch.Generator(), None)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        terms = spec.losses(ctx, lab, unl[0], unl[1])
    activations = sum(b for _, b in saved.values())
    n_params = sum(count_parameters(nets[k]) for k in spec.trained)
    state = 3 * 4 * n_params                               # fp32 parameters + gradients + momentum
    grad_forwards = {'supervised': 1, 'cps': 4, 'cps_cutmix': 4}.get(method, 2)
    casts = 2 * grad_forwards * count_parameters(nets[0]) if dtype != torch.float32 else 0
    total = activations + state + casts
    batch = str(batch_l) if method == 'supervised' else f"{batch_l}+{batch_u}" + (f'+{batch_u}' if method == 'cps_cutmix' else '')
    return dict(method=method, dtype=str(dtype).replace('torch.', ''), batch=batch,
                activations_gib=activations / GIB, state_gib=state / GIB, weight_casts_gib=casts / GIB, total_gib=total / GIB,
                terms=sorted(terms))

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--backbone', default='resnet101')
    p.add_argument('--crop', type=int, default=512)
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--num-classes', type=int, default=21)
    p.add_argument('--output-stride', type=int, default=None)
    p.add_argument('--methods', default='supervised,cps,cps_cutmix')
    p.add_argument('--dtypes', default='fp32,bf16')
    p.add_argument('--json', default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    dts = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
    rows = [estimate(m, a.backbone, a.crop, a.batch, a.batch, dts[d], a.num_classes, a.output_stride)
            for d in a.dtypes.split(',') for m in a.methods.split(',')]
    if a.json: write_json(dict(kind='estimate_memory', machine=machine_info(torch.device('cpu')), settings=vars(a), rows=rows), a.json)
    print(f"estimated step peak, {a.backbone} DeepLabv3+, crop {a.crop} (activations saved for backward + model state; "
          "no allocator cache, workspaces or backward transients)")
    print(table(rows, [('method', 'method', '{}'), ('dtype', 'dtype', '{}'), ('batch', 'batch', '{}'),
                       ('activations GiB', 'activations_gib', '{:.1f}'), ('state GiB', 'state_gib', '{:.2f}'),
                       ('bf16 weight copies GiB', 'weight_casts_gib', '{:.2f}'), ('total GiB', 'total_gib', '{:.1f}')]))
    return 0

if __name__ == '__main__':
    sys.exit(main())
