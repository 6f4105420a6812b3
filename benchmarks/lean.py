"""What is left of the lean training step, as a `Trainer` subclass, so that the benchmark can time it beside the
library's step in one process. The library has adopted the fused optimizer (`train.build_optimizer`), the pinned
non-blocking CutMix boxes (`methods.cps_cutmix.cutmix_masks`) and `max(dim=1).indices` pseudo labels (`losses.pseudo_labels`);
one part remains a proposal (variant token `lean` or `lean:infer` in bench_step.py):

* `infer`  the four CutMix teacher passes under `torch.inference_mode()` instead of `torch.no_grad()` (no version
           counters or view tracking for tensors that never need a gradient).

The losses are unchanged: `check_lean_equivalence` trains both steps side by side and compares losses and parameters.
`torch.compile` is not a part: bench_step.py's `+compile` sets `train.compile=true`, and the trainer runs its forward
passes through `torch.compile` (`Trainer.forward_nets`)."""
from __future__ import annotations

import dataclasses
import functools

import torch

from cps_repro.cutmix import mix
from cps_repro.losses import cps_loss
from cps_repro.methods import StepContext, supervised_loss
from cps_repro.methods.cps import cps_weight
from cps_repro.methods.cps_cutmix import cps_cutmix_losses, cutmix_masks
from cps_repro.train import Trainer

PARTS = ('infer',)


def make_cps_cutmix_losses(parts: frozenset):
    "`methods.cps_cutmix.cps_cutmix_losses` with the chosen parts (same forwards, terms and order)."
    no_grad = torch.inference_mode if 'infer' in parts else torch.no_grad
    def losses(ctx: StepContext, batch: dict) -> dict:
        u0, u1 = batch['unlabeled']['image'], batch['unlabeled2']['image']
        mask = cutmix_masks(ctx, u0.shape[0], u0.shape[2], u0.shape[3], u0.device)
        with no_grad():
            t1 = mix(ctx.forward(0, u0), ctx.forward(0, u1), mask)
            t2 = mix(ctx.forward(1, u0), ctx.forward(1, u1), mask)
        x_mix = mix(u0, u1, mask)
        s1, s2 = ctx.forward(0, x_mix), ctx.forward(1, x_mix)
        cps = ctx.term(cps_loss(s1, s2, target_logits1=t1, target_logits2=t2, ignore_index=ctx.cfg.data.ignore_index),
                       cps_weight(ctx))
        xl, y = batch['labeled']['image'], batch['labeled']['label']
        sup1 = ctx.term(supervised_loss(ctx.forward(0, xl), y, ctx.cfg))
        sup2 = ctx.term(supervised_loss(ctx.forward(1, xl), y, ctx.cfg))
        return {'sup1': sup1, 'sup2': sup2, 'cps': cps}
    return losses

class LeanTrainer(Trainer):
    "The library's Trainer with the chosen lean-step `parts` (default: all of `PARTS`)."
    def __init__(self, cfg, *args, parts=PARTS, **kwargs):
        super().__init__(cfg, *args, **kwargs)
        self.parts = frozenset(parts)
        bad = self.parts - set(PARTS)
        if bad: raise ValueError(f"unknown lean part(s) {sorted(bad)}; valid: {', '.join(PARTS)}")
        if self.method.losses is cps_cutmix_losses:
            self.method = dataclasses.replace(self.method, losses=make_cps_cutmix_losses(self.parts))


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
