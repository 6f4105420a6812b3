"""The lean training step, as a `Trainer` subclass, so that the benchmark can time it beside the library's step in
one process. Each part is one change recommended for the library (see BENCHMARKS.md, "Lean step"); each can be
switched on alone (`LeanTrainer(..., parts={'labels'})`, variant token `lean:labels` or `lean:labels.opt` in bench_step.py). The losses are
unchanged: `check_lean_equivalence` trains both steps side by side and compares losses and parameters.

* `opt`    `lean_build_optimizer` (train.build_optimizer): the fused SGD/AdamW kernel where this PyTorch has one for
           the device (CUDA and CPU), instead of foreach on CUDA and the per-parameter loop on CPU.
* `masks`  `lean_cutmix_masks` (train.cutmix_masks): the boxes are drawn from the CPU generator and computed on the
           CPU as before (same masks), then copied to the device from pinned memory with `non_blocking=True`; the
           library's `masks_from_boxes` copies them from pageable memory, which makes the host wait for the GPU.
* `infer`  the four CutMix teacher passes under `torch.inference_mode()` instead of `torch.no_grad()`.
* `labels` `lean_pseudo_labels` (losses.pseudo_labels, chapter 05): `logits.max(dim=1).indices` instead of
           `logits.argmax(dim=1)`: the same indices (both documented to return the first maximal value; checked
           with ties and NaN), but PyTorch's CPU argmax over the channel axis of an NCHW tensor is about 3x slower.

`torch.compile` is not a part: bench_step.py's `+compile` sets `train.compile=true`, and the trainer runs its forward
passes through `torch.compile` (`Trainer.forward_nets`)."""
from __future__ import annotations

import contextlib
import dataclasses
import functools

import torch

from cps_repro.cutmix import box_uniforms, boxes_from_uniforms, masks_from_boxes, half_masks, mix
from cps_repro.losses import cross_entropy, cps_loss
from cps_repro.train import (Trainer, StepContext, param_groups, build_optimizer, build_scheduler, cps_losses,
                             cps_cutmix_losses, cutmix_masks, supervised_loss)

PARTS = ('opt', 'masks', 'infer', 'labels')


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
    if device.type == 'cuda': boxes = boxes.pin_memory()
    return masks_from_boxes(boxes.to(device, non_blocking=True), h, w, device)

def lean_pseudo_labels(logits: torch.Tensor) -> torch.Tensor:
    "`losses.pseudo_labels` with `max(dim=1).indices` (the same first-maximum indices as argmax; faster on CPU)."
    return logits.detach().max(dim=1).indices

def lean_cps_loss(logits1, logits2, target_logits1=None, target_logits2=None, ignore_index: int = 255):
    "`losses.cps_loss` with `lean_pseudo_labels` (its input checks left out here; they cost nothing)."
    t1 = logits1 if target_logits1 is None else target_logits1
    t2 = logits2 if target_logits2 is None else target_logits2
    return (cross_entropy(logits1, lean_pseudo_labels(t2), ignore_index)
            + cross_entropy(logits2, lean_pseudo_labels(t1), ignore_index))


def make_cps_losses(parts: frozenset):
    "`train.cps_losses` with the chosen parts."
    loss = lean_cps_loss if 'labels' in parts else cps_loss
    def losses(ctx: StepContext, labeled: dict, unlabeled: dict, unlabeled2=None) -> dict:
        xl, y, xu = labeled['image'], labeled['label'], unlabeled['image']
        l1, u1 = ctx.forward(0, xl), ctx.forward(0, xu)
        l2, u2 = ctx.forward(1, xl), ctx.forward(1, xu)
        p1, p2 = torch.cat([l1, u1]), torch.cat([l2, u2])
        return {'sup1': (supervised_loss(l1, y, ctx.cfg), 1.0), 'sup2': (supervised_loss(l2, y, ctx.cfg), 1.0),
                'cps': (loss(p1, p2, ignore_index=ctx.cfg.data.ignore_index), ctx.cps_weight())}
    return losses

def make_cps_cutmix_losses(parts: frozenset):
    "`train.cps_cutmix_losses` with the chosen parts."
    loss = lean_cps_loss if 'labels' in parts else cps_loss
    masks = lean_cutmix_masks if 'masks' in parts else cutmix_masks
    no_grad = torch.inference_mode if 'infer' in parts else torch.no_grad
    def losses(ctx: StepContext, labeled: dict, unlabeled: dict, unlabeled2: dict) -> dict:
        u0, u1 = unlabeled['image'], unlabeled2['image']
        mask = masks(ctx, u0.shape[0], u0.shape[2], u0.shape[3], u0.device)
        with no_grad():
            t1 = mix(ctx.forward(0, u0), ctx.forward(0, u1), mask)
            t2 = mix(ctx.forward(1, u0), ctx.forward(1, u1), mask)
        x_mix = mix(u0, u1, mask)
        s1, s2 = ctx.forward(0, x_mix), ctx.forward(1, x_mix)
        cps = loss(s1, s2, target_logits1=t1, target_logits2=t2, ignore_index=ctx.cfg.data.ignore_index)
        y = labeled['label']
        return {'sup1': (supervised_loss(ctx.forward(0, labeled['image']), y, ctx.cfg), 1.0),
                'sup2': (supervised_loss(ctx.forward(1, labeled['image']), y, ctx.cfg), 1.0),
                'cps': (cps, ctx.cps_weight())}
    return losses

class LeanTrainer(Trainer):
    "The library's Trainer with the chosen lean-step `parts` (default: all of `PARTS`)."
    def __init__(self, cfg, *args, parts=PARTS, **kwargs):
        super().__init__(cfg, *args, **kwargs)
        self.parts = frozenset(parts)
        bad = self.parts - set(PARTS)
        if bad: raise ValueError(f"unknown lean part(s) {sorted(bad)}; valid: {', '.join(PARTS)}")
        if 'opt' in self.parts:
            self.opts = [lean_build_optimizer(self.nets[k], self.cfg) for k in self.method.trained]
            self.scheds = [build_scheduler(o, self.cfg) for o in self.opts]
        make = {cps_losses: make_cps_losses, cps_cutmix_losses: make_cps_cutmix_losses}.get(self.method.losses)
        if make is not None: self.method = dataclasses.replace(self.method, losses=make(self.parts))


def check_lean_equivalence(method: str = 'cps_cutmix', steps: int = 3, device='cpu', parts=PARTS, **cfg_kw) -> dict:
    """Train the library's and the lean step from the same start on the same batches for `steps` steps; return the
    largest absolute difference of the logged losses and of the parameters (0.0 = bit-identical)."""
    from common import bench_config, synthetic_data
    kw = dict(backbone='small_resnet', crop=32, batch_l=2, batch_u=2); kw.update(cfg_kw)
    device = torch.device(device)
    runs = []
    for cls in (Trainer, functools.partial(LeanTrainer, parts=parts)):
        cfg = bench_config(method, **kw)
        data = synthetic_data(kw['batch_l'], kw['batch_u'], kw['crop'], cfg.data.num_classes, device.type == 'cuda')
        tr = cls(cfg, run_dir='/nonexistent', device=str(device), progress=False, data=data)
        logs = [{k: float(v) for k, v in tr.step().items()} for _ in range(steps)]
        runs.append((logs, [p.detach().float().cpu() for n in tr.nets for p in n.parameters()]))
    (la, pa), (lb, pb) = runs
    return dict(max_loss_diff=max(abs(a[k] - b[k]) for a, b in zip(la, lb) for k in a),
                max_param_diff=max(float((x - y).abs().max()) for x, y in zip(pa, pb)))

def check_pseudo_labels(device='cpu') -> bool:
    "argmax(1) and max(1).indices agree on bf16-rounded logits with forced ties and a NaN, on `device`."
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 21, 33, 47, generator=g).bfloat16().float()
    x[:, 3] = x[:, 7]; x[0, 2, 0, 0] = float('nan')
    x = x.to(device)
    return bool(torch.equal(x.argmax(1), x.max(1).indices))
