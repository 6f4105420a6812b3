"""The lean training step, as a `Trainer` subclass, so that the benchmark can time it beside the library's step in
one process. Each function here is the exact change recommended for `nbs/08_train.ipynb` (see BENCHMARKS.md,
"Lean step"); the numerics are unchanged (checked by `check_lean_equivalence`).

1. `lean_build_optimizer`: the fused SGD/AdamW kernel where this PyTorch has one for the device (CUDA and CPU),
   else foreach on CUDA, instead of foreach on CUDA and the per-parameter loop on CPU.
2. `lean_cutmix_masks`: the box corners are drawn and computed on the CPU generator as before (same masks), then
   copied to the device from pinned memory with `non_blocking=True`: the library's `masks_from_boxes` copies them
   from pageable memory, a copy that blocks the host until the GPU has drained the previous step's work.
3. `lean_cps_cutmix_losses`: the four teacher passes under `torch.inference_mode()` instead of `torch.no_grad()`.
4. `lean_pseudo_labels` (for `losses.pseudo_labels`, chapter 05): `logits.max(dim=1).indices` instead of
   `logits.argmax(dim=1)`: the same indices (both documented to return the first maximal value; checked with ties
   and NaN), but PyTorch's CPU argmax over the channel axis of an NCHW tensor is about 3x slower.
5. (`--variants ...+compile` in bench_step.py) `net.compile(dynamic=False)` on every network, which is what
   `cfg.train.compile` should do in `build_networks` (the flag exists in the config but nothing reads it)."""
from __future__ import annotations

import dataclasses
import functools

import torch

from cps_repro.cutmix import box_uniforms, boxes_from_uniforms, masks_from_boxes, half_masks, mix
from cps_repro.losses import cross_entropy
from cps_repro.train import (Trainer, StepContext, param_groups, build_scheduler, cps_losses, cps_cutmix_losses,
                             supervised_loss)


@functools.lru_cache(maxsize=None)
def fused_optimizer_supported(device_type: str) -> bool:
    "Whether `torch.optim.SGD(..., fused=True)` accepts parameters on `device_type` in this PyTorch."
    try:
        torch.optim.SGD([torch.zeros(1, device=device_type, requires_grad=True)], lr=0.1, momentum=0.9, fused=True)
        return True
    except (RuntimeError, TypeError, ValueError): return False

def lean_build_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    "`train.build_optimizer` with the fused kernel where available (same update, one kernel for all parameters)."
    lr, wd, _ = cfg.optim.resolved()
    groups = param_groups(model, wd)
    device = next(model.parameters()).device
    fast = {'fused': True} if fused_optimizer_supported(device.type) else ({'foreach': True} if device.type == 'cuda' else {})
    if cfg.optim.optimizer == 'adamw': return torch.optim.AdamW(groups, lr=lr, **fast)
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.optim.momentum, **fast)

def lean_cutmix_masks(ctx: StepContext, n: int, h: int, w: int, device) -> torch.Tensor:
    "`train.cutmix_masks` without a blocking host-to-device copy: same generator draws, same masks."
    t, device = ctx.cfg.train, torch.device(device)
    if t.cutmix_mask == 'half': return half_masks(n, h, w, generator=ctx.cutmix_generator, device=device)
    boxes = boxes_from_uniforms(box_uniforms(n, t.cutmix_n_boxes, ctx.cutmix_generator), h, w, tuple(t.cutmix_prop_range))
    if device.type == 'cuda': boxes = boxes.pin_memory().to(device, non_blocking=True)
    return masks_from_boxes(boxes, h, w, device)

def lean_pseudo_labels(logits: torch.Tensor) -> torch.Tensor:
    "`losses.pseudo_labels` with `max(dim=1).indices` (same first-maximum indices as argmax, faster on CPU)."
    return logits.detach().max(dim=1).indices

def lean_cps_loss(logits1, logits2, target_logits1=None, target_logits2=None, ignore_index: int = 255):
    "`losses.cps_loss` (its input checks left out: they cost nothing) with `lean_pseudo_labels`."
    t1 = logits1 if target_logits1 is None else target_logits1
    t2 = logits2 if target_logits2 is None else target_logits2
    return (cross_entropy(logits1, lean_pseudo_labels(t2), ignore_index)
            + cross_entropy(logits2, lean_pseudo_labels(t1), ignore_index))

def lean_cps_losses(ctx: StepContext, labeled: dict, unlabeled: dict, unlabeled2=None) -> dict:
    "`train.cps_losses` with `lean_cps_loss`."
    xl, y, xu = labeled['image'], labeled['label'], unlabeled['image']
    l1, u1 = ctx.forward(0, xl), ctx.forward(0, xu)
    l2, u2 = ctx.forward(1, xl), ctx.forward(1, xu)
    p1, p2 = torch.cat([l1, u1]), torch.cat([l2, u2])
    return {'sup1': (supervised_loss(l1, y, ctx.cfg), 1.0), 'sup2': (supervised_loss(l2, y, ctx.cfg), 1.0),
            'cps': (lean_cps_loss(p1, p2, ignore_index=ctx.cfg.data.ignore_index), ctx.cps_weight())}

def lean_cps_cutmix_losses(ctx: StepContext, labeled: dict, unlabeled: dict, unlabeled2: dict) -> dict:
    "`train.cps_cutmix_losses` with the lean masks and the teacher passes under inference mode."
    u0, u1 = unlabeled['image'], unlabeled2['image']
    mask = lean_cutmix_masks(ctx, u0.shape[0], u0.shape[2], u0.shape[3], u0.device)
    with torch.inference_mode():
        t1 = mix(ctx.forward(0, u0), ctx.forward(0, u1), mask)
        t2 = mix(ctx.forward(1, u0), ctx.forward(1, u1), mask)
    x_mix = mix(u0, u1, mask)
    s1, s2 = ctx.forward(0, x_mix), ctx.forward(1, x_mix)
    cps = lean_cps_loss(s1, s2, target_logits1=t1, target_logits2=t2, ignore_index=ctx.cfg.data.ignore_index)
    y = labeled['label']
    return {'sup1': (supervised_loss(ctx.forward(0, labeled['image']), y, ctx.cfg), 1.0),
            'sup2': (supervised_loss(ctx.forward(1, labeled['image']), y, ctx.cfg), 1.0),
            'cps': (cps, ctx.cps_weight())}

class LeanTrainer(Trainer):
    "The library's Trainer with the lean-step changes above (same losses, same resume state)."
    def __init__(self, cfg, *args, **kwargs):
        super().__init__(cfg, *args, **kwargs)
        self.opts = [lean_build_optimizer(self.nets[k], self.cfg) for k in self.method.trained]
        self.scheds = [build_scheduler(o, self.cfg) for o in self.opts]
        lean = {cps_losses: lean_cps_losses, cps_cutmix_losses: lean_cps_cutmix_losses}.get(self.method.losses)
        if lean is not None: self.method = dataclasses.replace(self.method, losses=lean)


def check_lean_equivalence(method: str = 'cps_cutmix', steps: int = 3, device='cpu', **cfg_kw) -> dict:
    """Train the library's and the lean step from the same start on the same batches for `steps` steps; return the
    largest absolute difference of the logged losses and of the parameters (0.0 = bit-identical)."""
    from common import bench_config, synthetic_data
    kw = dict(backbone='small_resnet', crop=32, batch_l=2, batch_u=2); kw.update(cfg_kw)
    device = torch.device(device)
    out = {}
    runs = []
    for cls in (Trainer, LeanTrainer):
        cfg = bench_config(method, **kw)
        data = synthetic_data(kw['batch_l'], kw['batch_u'], kw['crop'], cfg.data.num_classes, device.type == 'cuda')
        tr = cls(cfg, run_dir='/nonexistent', device=str(device), progress=False, data=data)
        logs = [{k: float(v) for k, v in tr.step().items()} for _ in range(steps)]
        runs.append((logs, [p.detach().float().cpu() for n in tr.nets for p in n.parameters()]))
    (la, pa), (lb, pb) = runs
    out['max_loss_diff'] = max(abs(a[k] - b[k]) for a, b in zip(la, lb) for k in a)
    out['max_param_diff'] = max(float((x - y).abs().max()) for x, y in zip(pa, pb))
    return out
