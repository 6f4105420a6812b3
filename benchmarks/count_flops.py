#!/usr/bin/env python
"""FLOPs of the training step, counted (not estimated) with `torch.utils.flop_counter.FlopCounterMode` on the `meta`
device: no compute, no GPU, seconds on a CPU. Counted: convolutions, matrix products and their backward passes
(the operations the counter knows; elementwise work, batch norm and interpolation are not counted, as usual for MFU).

Two tables: one image's forward and forward+backward through DeepLabv3+ on each backbone (the deep 3x3 stem of the
paper's ResNets), and one training iteration of each method at the given batch through the library's own loss
functions (`methods.get_method(...).losses`) plus one backward, for both networks. MFU = counted FLOPs per step /
step time / the device's peak (H200/H100 SXM: 989 TFLOP/s dense bf16; 67 TFLOP/s fp32 without TF32).

    python benchmarks/count_flops.py --backbones resnet50,resnet101 --crop 512 --batch 8
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from torch.utils.flop_counter import FlopCounterMode

from common import bench_config, machine_info, table, write_json

PEAK_TFLOPS = {'h200_bf16': 989.0, 'h100_bf16': 989.0, 'h200_fp32': 67.0, 'h100_fp32': 67.0, 'h200_tf32': 494.0}
G = 1e9


def image_flops(backbone: str, crop: int, num_classes: int = 21, output_stride: int | None = None) -> dict:
    "Forward and forward+backward FLOPs of one `crop` x `crop` image through DeepLabv3+ on `backbone` (training mode)."
    from cps_repro.models import deeplabv3plus
    os_ = output_stride or (4 if backbone.startswith('small_resnet') else 16)
    net = deeplabv3plus(backbone, num_classes, os_).to('meta').train()
    x = torch.empty(2, 3, crop, crop, device='meta')     # 2 images (batch norm in training mode), halved below
    with FlopCounterMode(display=False) as fwd:
        out = net(x)
    with FlopCounterMode(display=False) as bwd:
        out.float().sum().backward()
    f, b = fwd.get_total_flops() / 2, bwd.get_total_flops() / 2
    return dict(backbone=backbone, crop=crop, output_stride=os_, fwd_gflop=f / G, fwd_bwd_gflop=(f + b) / G)

def step_flops(method: str, backbone: str, crop: int, batch_l: int, batch_u: int, num_classes: int = 21,
               output_stride: int | None = None) -> dict:
    "FLOPs of one training iteration of `method` (forward passes of the library's loss function + one backward)."
    from cps_repro.methods import StepContext, get_method
    from cps_repro.train import build_networks
    cfg = bench_config(method, backbone, crop, batch_l, batch_u, num_classes=num_classes, output_stride=output_stride)
    nets = [n.to(device='meta') for n in build_networks(cfg, torch.device('cpu'))]
    spec = get_method(method)
    img = lambda b: torch.empty(b, 3, crop, crop, device='meta')
    lab = {'image': img(batch_l), 'label': torch.zeros(batch_l, crop, crop, device='meta', dtype=torch.long)}
    batch = {v: lab if v == 'labeled' else {'image': img(batch_u)} for v in spec.views}
    ctx = StepContext(nets, cfg, 0, torch.Generator(), None, names=spec.nets)
    with FlopCounterMode(display=False) as fc:
        terms = spec.losses(ctx, batch)
        sum(w * v for v, w in terms.values()).backward()
    images = batch_l + batch_u * spec.unlabeled_streams
    return dict(method=method, backbone=backbone, crop=crop, batch=f"{batch_l}+" + '+'.join([str(batch_u)] * spec.unlabeled_streams)
                if spec.unlabeled_streams else str(batch_l), images=images, step_tflop=fc.get_total_flops() / 1e12)

def ms_at_mfu(tflop: float, mfu: float, peak_tflops: float = PEAK_TFLOPS['h200_bf16']) -> float:
    "Milliseconds a step of `tflop` takes at model-FLOP utilisation `mfu` of a `peak_tflops` device."
    return tflop / (peak_tflops * mfu) * 1000

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--backbones', default='small_resnet,resnet50,resnet101')
    p.add_argument('--crop', type=int, default=512)
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--methods', default='supervised,cps,cps_cutmix')
    p.add_argument('--step-backbone', default='resnet101', help='backbone of the per-iteration table')
    p.add_argument('--json', default=None)
    p.add_argument('--tiny', action='store_true')
    a = p.parse_args(argv)
    if a.tiny: a.backbones, a.crop, a.batch, a.step_backbone = 'small_resnet', 32, 2, 'small_resnet'
    torch.set_num_threads(1)
    images = [image_flops(b, a.crop) for b in a.backbones.split(',') if b]
    steps = [step_flops(m, a.step_backbone, a.crop, a.batch, a.batch) for m in a.methods.split(',') if m]
    for s in steps:
        s['ms_100pct_h200_bf16'] = ms_at_mfu(s['step_tflop'], 1.0)
        s['ms_30pct_h200_bf16'] = ms_at_mfu(s['step_tflop'], 0.3)
        s['loader_img_s_at_30pct'] = s['images'] / (s['ms_30pct_h200_bf16'] / 1000)
    out = dict(kind='count_flops', machine=machine_info(torch.device('cpu')), settings=vars(a), images=images, steps=steps,
               peak_tflops=PEAK_TFLOPS)
    if a.json: write_json(out, a.json)
    print(f"DeepLabv3+ per image at {a.crop} px (training mode; deep stem for resnet50/101)")
    print(table(images, [('backbone', 'backbone', '{}'), ('OS', 'output_stride', '{}'), ('fwd GFLOP', 'fwd_gflop', '{:.1f}'),
                         ('fwd+bwd GFLOP', 'fwd_bwd_gflop', '{:.1f}')]))
    print(f"\none training iteration, {a.step_backbone}, {a.crop} px (both networks where the method has two)")
    print(table(steps, [('method', 'method', '{}'), ('batch', 'batch', '{}'), ('TFLOP', 'step_tflop', '{:.2f}'),
                        ('ms @100% H200 bf16', 'ms_100pct_h200_bf16', '{:.1f}'), ('ms @30%', 'ms_30pct_h200_bf16', '{:.1f}'),
                        ('loader img/s for 30%', 'loader_img_s_at_30pct', '{:.0f}')]))
    return 0

if __name__ == '__main__':
    sys.exit(main())
